"""Per-node libvirtd in node namespaces; the tiny guest boots under TCG and live-migrates."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pvc.lab import guest as labguest
from pvc.lab import labtls, proc
from pvc.lab import libvirt as lablibvirt

from .labinfra import lab, temp_plan

libvirt = pytest.importorskip("libvirt")

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, bind mounts)"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("libvirtd", "qemu-system-x86_64", "tini")),
                       reason="needs libvirtd, qemu-system-x86 and tini"),
]
MIGRATE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_UNSAFE


def wait_line(path: Path, pattern: str, timeout: float, offset: int = 0) -> str:
    rx = re.compile(pattern)

    def find() -> str | None:
        try:
            text = path.read_bytes()[offset:].decode(errors="replace")
        except FileNotFoundError:
            return None
        return next((line.strip() for line in text.splitlines() if rx.search(line)), None)

    return proc.wait_until(find, timeout, f"{pattern!r} in {path.name}", interval=0.05)


def host_uuid_of(conn: libvirt.virConnect) -> str:
    return ET.fromstring(conn.getCapabilities()).findtext("host/uuid") or ""


def migrate(dom: libvirt.virDomain, dst: libvirt.virConnect, uri: str, serial: Path,
            flags: int = MIGRATE) -> str:
    """Live-migrate peer-to-peer over qemu+tls (the lab's client certificate); check the guest
    kept running; return a summary."""
    name = dom.name()
    offset = serial.stat().st_size
    t0 = time.monotonic()
    dom.migrateToURI3(uri, {}, flags)
    took = time.monotonic() - t0
    moved = dst.lookupByName(name)
    assert moved.isActive()
    downtime = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED).get("downtime")
    beat = wait_line(serial, r"PVC-GUEST-HEARTBEAT", 30, offset)
    assert int(re.search(r" n=(\d+)", beat).group(1)) > 1       # same boot: the counter continues
    assert serial.read_text(errors="replace").count("PVC-GUEST-BOOT-OK") == 1
    return f"{name} -> {uri}: {took:.2f}s, downtime {downtime} ms"


def refused_without_the_lab_client_certificate(plan, src, dst) -> None:
    """From a peer's namespace: the lab's client certificate opens dst's libvirtd over TLS;
    plain TCP, a certificate of another CA, and another certificate of the lab CA are refused."""
    from pvc.core import pki

    def version(uri: str) -> int:
        conn = libvirt.open(uri)
        try:
            return conn.getLibVersion()
        finally:
            conn.close()

    assert proc.netns_call(src.netns, version, labtls.migration_uri(plan, dst.address)) > 0
    with pytest.raises(libvirt.libvirtError):
        proc.netns_call(src.netns, version, f"qemu+tcp://{dst.address}/system")

    def client_dir(name: str, ca: pki.KeyPair, cn: str) -> Path:
        directory = plan.state_dir / name
        directory.mkdir(mode=0o700)
        pair = pki.issue_client(ca, cn)
        # trusts the server's CA and its own (the client checks its own certificate first)
        (directory / "cacert.pem").write_bytes(labtls.lab_ca(plan).certificate + ca.certificate)
        (directory / "clientcert.pem").write_bytes(pair.certificate)
        pki.write_private(directory / "clientkey.pem", pair.key)
        return directory

    stranger = client_dir("stranger", pki.make_ca("not the lab"), labtls.MIGRATION_CLIENT_CN)
    other = client_dir("other-cn", labtls.lab_ca(plan), "some-other-client")
    for directory in (stranger, other):
        with pytest.raises(libvirt.libvirtError):
            proc.netns_call(src.netns, version, f"qemu+tls://{dst.address}/system?pkipath={directory}")
    log = lablibvirt.log_path(plan, dst).read_text(errors="replace")
    # the server refused both: the stranger's certificate (not of its CA) is not even offered
    assert "authentication failed: Failed to verify peer's certificate" in log, log[-2000:]
    assert "Distinguished Name is not on the list of allowed clients" in log, log[-2000:]


def test_socket_path_limit_fails_clearly() -> None:
    plan = temp_plan(1)
    try:
        deep = plan.state_dir / ("x" * 80)
        node = dataclasses.replace(plan.nodes[0], dir=deep / "hv1")
        with pytest.raises(proc.LabError, match="socket path too long"):
            lablibvirt.prepare(plan, node)
    finally:
        shutil.rmtree(plan.state_dir, ignore_errors=True)


def test_libvirtd_per_node_boot_and_live_migration() -> None:
    t0 = time.monotonic()
    image = labguest.build_guest()
    print(f"\nguest image ready in {time.monotonic() - t0:.2f}s: {image}")
    with lab(2) as plan:
        hv1, hv2 = plan.nodes
        t1 = time.monotonic()
        for node in plan.nodes:
            lablibvirt.start_libvirtd(plan, node)
        for node in plan.nodes:
            lablibvirt.wait_libvirtd(plan, node)
        print(f"two libvirtds answering after {time.monotonic() - t1:.2f}s")
        conn1, conn2 = libvirt.open(hv1.libvirt_uri), libvirt.open(hv2.libvirt_uri)
        try:
            uuids = host_uuid_of(conn1), host_uuid_of(conn2)
            assert uuids == (lablibvirt.host_uuid(hv1), lablibvirt.host_uuid(hv2))
            assert uuids[0] != uuids[1]
            # each daemon listens for migrations on its own underlay address only, over TLS only
            listening = proc.run(["ss", "-Hltn"], netns=hv2.netns).stdout
            assert f"{hv2.address}:{labtls.LIBVIRT_TLS_PORT}" in listening
            assert ":16509 " not in listening                      # no plain TCP listener
            refused_without_the_lab_client_certificate(plan, hv1, hv2)

            # tiny1: initramfs only, on hv1; tiny2: switch_root into a copy of the ext4 disk, on hv2
            serial1, serial2 = plan.state_dir / "tiny1.serial.log", plan.state_dir / "tiny2.serial.log"
            disk = plan.state_dir / "tiny2.raw"
            proc.run(["cp", "--sparse=always", str(image.disk_raw), str(disk)])
            t2 = time.monotonic()
            dom1 = conn1.createXML(labguest.domain_xml("tiny1", image, serial_log=serial1), 0)
            dom2 = conn2.createXML(labguest.domain_xml("tiny2", image, disk=disk, serial_log=serial2), 0)
            marker1 = wait_line(serial1, r"PVC-GUEST-BOOT-OK", 60)
            boot1 = time.monotonic() - t2
            marker2 = wait_line(serial2, r"PVC-GUEST-BOOT-OK", 60)
            boot2 = time.monotonic() - t2
            print(f"boot to marker (two VMs booting at once): initramfs {boot1:.2f}s, disk {boot2:.2f}s")
            assert marker1 == "PVC-GUEST-BOOT-OK name=tiny1 ip=none"
            assert marker2 == "PVC-GUEST-BOOT-OK name=tiny2 ip=none"
            assert "PVC-GUEST-ROOT dev=/dev/vda boots=1" in serial2.read_text(errors="replace")
            wait_line(serial1, r"PVC-GUEST-HEARTBEAT name=tiny1 n=1 ", 30)
            wait_line(serial2, r"PVC-GUEST-HEARTBEAT name=tiny2 n=1 ", 30)

            print("live migration", migrate(dom1, conn2, labtls.migration_uri(plan, hv2.address), serial1))
            # the memory stream encrypted too (QEMU's own TLS, the lab's qemu x509 directory);
            # with VIR_MIGRATE_TLS libvirt fails rather than send it in clear
            print("live migration, TLS stream", migrate(dom2, conn1, labtls.migration_uri(plan, hv1.address),
                                                       serial2, MIGRATE | libvirt.VIR_MIGRATE_TLS))
            assert [d.name() for d in conn1.listAllDomains()] == ["tiny2"]
            assert [d.name() for d in conn2.listAllDomains()] == ["tiny1"]

            t3 = time.monotonic()
            conn1.lookupByName("tiny2").shutdown()                 # ACPI power button -> acpid
            wait_line(serial2, r"PVC-GUEST-POWEROFF", 30)
            proc.wait_until(lambda: conn1.listAllDomains() == [], 30, "tiny2 to power off")
            print(f"ACPI shutdown {time.monotonic() - t3:.2f}s")

            t4 = time.monotonic()
            assert lablibvirt.kill_domains(plan, hv2) == ["tiny1"]
            print(f"kill_domains {time.monotonic() - t4:.2f}s")
            assert conn2.listAllDomains() == []
        finally:
            conn1.close()
            conn2.close()
            for node in plan.nodes:
                lablibvirt.stop_libvirtd(plan, node)      # destroys tiny2 on hv1 first
        for node in plan.nodes:
            assert proc.pid_of(lablibvirt.pidfile(plan, node)) is None
