"""LibvirtHypervisor against real namespaced libvirtds and QEMU (TCG) on a two-node lab fragment.

The tiny guest boots through the adapter on hv1 from XML that says type='kvm' (as a PVC VM
definition may), so the adapter's KVM detection must turn it into TCG here. Its stats move; a
NIC is hot-plugged in and out; the adapter rides out a libvirtd restart. The guest live-migrates
to hv2 peer-to-peer with a 100 ms max downtime, the adapter reports the downtime libvirt
measured, and the guest's heartbeat counter carries on. A migration that outlives its timeout is
aborted and leaves the guest where it was. ACPI shutdown powers it off, destroy stops it, and
nothing is left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from pvc.adapters.hypervisor import DomainNotFound, HypervisorError, LibvirtHypervisor
from pvc.lab import guest as labguest
from pvc.lab import labtls, proc
from pvc.lab import libvirt as lablibvirt

from .labinfra import lab

pytest.importorskip("libvirt")

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, bind mounts)"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("libvirtd", "qemu-system-x86_64", "tini")),
                       reason="needs libvirtd, qemu-system-x86 and tini"),
]


def serial_lines(path: Path, pattern: str, offset: int = 0) -> list[str]:
    try:
        text = path.read_bytes()[offset:].decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if re.search(pattern, line)]


def wait_line(path: Path, pattern: str, timeout: float, offset: int = 0) -> str:
    return proc.wait_until(lambda: next(iter(serial_lines(path, pattern, offset)), None), timeout,
                           f"{pattern!r} in {path.name}", interval=0.05)


def heartbeat(line: str) -> int:
    return int(re.search(r" n=(\d+)", line).group(1))  # type: ignore[union-attr]


def guest_xml(name: str, uuid: str, image: labguest.GuestImage, disk: Path, serial: Path) -> str:
    """The lab guest as PVC would define it: its own UUID, type='kvm', a virtio NIC (a plain tap)."""
    xml = labguest.domain_xml(name, image, disk=disk, serial_log=serial, cmdline_extra="vmdhcp=0")
    xml = xml.replace("<domain type='qemu'>", "<domain type='kvm'>", 1)
    xml = xml.replace("</name>", f"</name>\n  <uuid>{uuid}</uuid>", 1)
    return xml.replace("<controller type='usb'",
                       "<interface type='ethernet'><model type='virtio'/></interface>\n    "
                       "<controller type='usb'", 1)


def test_boot_stats_migrate_shutdown_destroy() -> None:
    image = labguest.build_guest()
    with lab(2) as plan:
        n1, n2 = plan.nodes
        for node in plan.nodes:
            lablibvirt.start_libvirtd(plan, node)
        for node in plan.nodes:
            lablibvirt.wait_libvirtd(plan, node)
        hv1, hv2 = LibvirtHypervisor(n1.libvirt_uri), LibvirtHypervisor(n2.libvirt_uri)
        try:
            kvm = hv1.kvm_available()
            print(f"\nkvm_available: {kvm} ({hv1.kvm_reason})")
            serial, disk = plan.state_dir / "hvt1.serial.log", plan.state_dir / "hvt1.raw"
            proc.run(["cp", "--sparse=always", str(image.disk_raw), str(disk)])
            uuid = str(uuidlib.uuid4())
            xml = guest_xml("hvt1", uuid, image, disk, serial)

            # boot on hv1 through the adapter; type='kvm' runs as TCG when KVM does not work
            t0 = time.monotonic()
            hv1.start(xml)
            wait_line(serial, r"PVC-GUEST-BOOT-OK name=hvt1", 60)
            print(f"boot to marker {time.monotonic() - t0:.2f}s")
            assert hv1.live_xml(uuid).startswith(f"<domain type='{'kvm' if kvm else 'qemu'}'")
            info = hv1.list_domains()[uuid]
            assert (info.name, info.state, info.reason, info.vcpus, info.memory_mib) == (
                "hvt1", "running", "booted", 1, 128)
            assert hv2.list_domains() == {}
            resources = hv1.host_resources()
            assert resources["cpus"] >= 1 and resources["memory_mib"] > 1024

            # statistics in PVC's shape: cputime grows, the disk and the NIC are there
            first = hv1.stats(uuid)
            wait_line(serial, r"PVC-GUEST-HEARTBEAT name=hvt1 n=2 ", 30)
            later = hv1.all_stats()[uuid]
            print(f"cputime {first['cputime'] / 1e9:.2f}s -> {later['cputime'] / 1e9:.2f}s; "
                  f"disk {later['disk_stats']}; nic {later['net_stats']}")
            assert later["cputime"] > first["cputime"] > 0
            assert (later["state"], later["maxmem"], later["cpus"]) == ("RUNNING", 131072, 1)
            assert [(d["name"], d["dev"]) for d in later["disk_stats"]] == [(str(disk), "vda")]
            assert later["disk_stats"][0]["rd_bytes"] > 0          # the guest's root filesystem
            assert [n["name"][:4] for n in later["net_stats"]] == ["vnet"]

            # hot-plug a second NIC and take it out again (the guest's ACPI hotplug acknowledges)
            nic = ("<interface type='ethernet'><mac address='52:54:00:aa:bb:01'/>"
                   "<model type='virtio'/></interface>")
            hv1.attach_device(uuid, nic)
            assert "52:54:00:aa:bb:01" in hv1.live_xml(uuid)
            assert len(hv1.stats(uuid)["net_stats"]) == 2
            hv1.detach_device(uuid, nic)
            proc.wait_until(lambda: "52:54:00:aa:bb:01" not in hv1.live_xml(uuid), 15, "the NIC to go")
            assert len(hv1.all_stats()[uuid]["net_stats"]) == 1

            # libvirtd restarts under us: the adapter reconnects, the VM never noticed
            proc.stop(lablibvirt.pidfile(plan, n1))
            lablibvirt.start_libvirtd(plan, n1)
            lablibvirt.wait_libvirtd(plan, n1)
            assert hv1.is_running(uuid)

            # live migration hv1 -> hv2, peer-to-peer, max downtime 100 ms. It runs where pvcnoded
            # would: inside hv1's namespace, from where hv2's libvirtd is reachable over TLS.
            beat = heartbeat(serial_lines(serial, r"PVC-GUEST-HEARTBEAT")[-1])
            offset = serial.stat().st_size
            progress: list[dict[str, int]] = []
            result = proc.netns_call(n1.netns, hv1.migrate, uuid, labtls.migration_uri(plan, n2.address),
                                     f"tcp://{n2.address}", max_downtime_ms=100, timeout=60,
                                     progress=progress.append)
            print(f"migration: {result.duration_s:.2f}s, downtime {result.downtime_ms} ms (libvirt), "
                  f"{len(progress)} progress reports; job: {result.details}")
            assert result.downtime_ms is not None and result.downtime_ms > 0
            assert not hv1.is_running(uuid) and hv1.list_domains() == {}
            assert hv2.list_domains()[uuid].reason == "migrated"
            after = wait_line(serial, r"PVC-GUEST-HEARTBEAT name=hvt1", 30, offset)
            assert heartbeat(after) > beat                         # same boot: the counter continued
            assert len(serial_lines(serial, r"PVC-GUEST-BOOT-OK")) == 1
            assert hv2.stats(uuid)["cputime"] > 0

            # a migration that outlives its timeout is aborted and the domain stays where it was
            with pytest.raises(HypervisorError, match="aborted"):
                proc.netns_call(n2.netns, lambda: hv2.migrate(
                    uuid, labtls.migration_uri(plan, n1.address), None, max_downtime_ms=100, timeout=0.3))
            assert hv2.is_running(uuid)
            proc.wait_until(lambda: hv1.list_domains() == {}, 10, "the aborted incoming domain to go")

            # ACPI shutdown: the guest's acpid powers off; the transient domain is gone
            t1 = time.monotonic()
            hv2.shutdown(uuid)
            wait_line(serial, r"PVC-GUEST-POWEROFF", 30)
            proc.wait_until(lambda: not hv2.is_running(uuid), 30, "hvt1 to power off")
            print(f"ACPI shutdown {time.monotonic() - t1:.2f}s")
            assert hv2.list_domains() == {}
            with pytest.raises(DomainNotFound):
                hv2.shutdown(uuid)

            # destroy: start it again on hv2 and pull the plug
            hv2.start(xml)
            assert hv2.is_running(uuid)
            t2 = time.monotonic()
            hv2.destroy(uuid)
            print(f"destroy {time.monotonic() - t2:.2f}s")
            assert not hv2.is_running(uuid)
            assert hv1.list_domains() == {} and hv2.list_domains() == {}
            assert hv1.all_stats() == {} and hv2.all_stats() == {}
        finally:
            hv1.close()
            hv2.close()
            for node in plan.nodes:
                lablibvirt.stop_libvirtd(plan, node)
        for node in plan.nodes:
            assert proc.pid_of(lablibvirt.pidfile(plan, node)) is None
