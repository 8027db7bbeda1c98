"""The lane's whole run, shared by tests/hosts/test_lane.py and bench/hosts.py.

Build two package builds (the "previous" and a newer one, PVC_DEB_VERSION suffixes), boot the
lane, install the cluster with site.yml from the previous build, run it again (nothing may
change), then do what an administrator does through the `pvc` connection the playbook wrote:
one primary among running nodes, a managed network with DHCP, a VM on RBD defined, started and
live-migrated, its node flushed and readied; then a rolling upgrade to the newer build while the
VM keeps running. Every phase is timed; a failed check raises ScenarioError naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc.lab import guest, proc
from pvc.lab.hosts import image, lane

OLD_SUFFIX = "lane1"
NEW_SUFFIX = "lane2"
VM = "lanevm1"
VNI = 4100
SUBNET = "10.214.0"
POOL = "vms"
KERNELS = Path("/var/lib/pvc/kernels")


class ScenarioError(AssertionError):
    """A check of the lane failed; the message says which and what was seen."""


@dataclass
class Report:
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - start, 1)
            print(f"[lane] {name}: {self.seconds[name]:.1f}s", flush=True)


# -- packages ---------------------------------------------------------------------------------------


# The lab's own code (this lane included) is packaged too but never runs on a node: left out,
# so work on the lane does not rebuild the packages it installs.
BUILD_INPUTS = (
    "src",
    ":(exclude)src/pvc/lab",
    "deploy/debian",
    "deploy/systemd",
    "deploy/pvc.conf.in",
    "pyproject.toml",
    "requirements.lock",
    "Makefile",
)


def _sources_key() -> str:
    """A digest of what `make deb` builds from: the committed blobs of its inputs and the diff
    of their uncommitted changes (a commit elsewhere in the tree keeps the cached builds)."""
    import hashlib

    digest = hashlib.sha256()
    for args in (
        ["ls-files", "-s", "--", *BUILD_INPUTS],
        ["diff", "HEAD", "--", *BUILD_INPUTS],
        ["ls-files", "--others", "--exclude-standard", "--", *BUILD_INPUTS],
    ):
        result = subprocess.run(["git", "-C", str(lane.REPO), *args], capture_output=True)
        digest.update(result.stdout)
    return digest.hexdigest()[:12]


def build_packages(suffix: str) -> Path:
    """`make deb` with PVC_DEB_VERSION=suffix, cached per source revision (a rebuild only when
    the code or packaging changed); returns the directory holding that build's .deb files."""
    target = image.CACHE_DIR / "debs" / f"{_sources_key()}-{suffix}"
    if target.is_dir() and any(target.glob("*.deb")):
        return target
    out = lane.REPO / "build" / "deb"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        ["make", "-C", str(lane.REPO), "deb"],
        capture_output=True,
        text=True,
        env={**os.environ, "PVC_DEB_VERSION": suffix},
        timeout=1800,
    )
    if result.returncode != 0:
        raise ScenarioError(
            f"make deb (PVC_DEB_VERSION={suffix}) failed: {(result.stdout + result.stderr)[-2000:]}"
        )
    debs = sorted(out.glob("*.deb"))
    if not debs:
        raise ScenarioError(f"make deb wrote no package into {out}")
    target.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, target / deb.name)
    return target


def deb_version(deb_dir: Path, package: str = "pvc-daemon-common") -> str:
    found = sorted(deb_dir.glob(f"{package}_*.deb"))
    if not found:
        raise ScenarioError(f"no {package} package in {deb_dir}")
    return found[0].name.split("_")[1].replace("%3a", ":")


# -- the administrator's seat ---------------------------------------------------------------------


class Admin:
    """The cluster's API as the administrator reaches it: the connection the playbook wrote
    (host, token, CA), used from the switch namespace where the workstation sits."""

    def __init__(self, client_dir: Path, name: str = "lane") -> None:
        import httpx

        store = json.loads((client_dir / "pvc.json").read_text())
        if name not in store:
            raise ScenarioError(f"the playbook wrote no connection {name!r} into {client_dir / 'pvc.json'}")
        entry = store[name]
        self.client_dir, self.name = client_dir, name
        self.base = f"{entry['scheme']}://{entry['host']}:{entry['port']}/api/v1"
        self.client = httpx.Client(
            base_url=self.base, headers={"X-Api-Key": entry["api_key"]}, verify=entry["ca_file"], timeout=120
        )

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202), **kwargs: Any) -> Any:
        """One API call that must succeed, riding out a primary change (the API moves with it)."""
        import httpx

        deadline = time.monotonic() + 90
        while True:
            try:
                response = proc.netns_call(
                    lane.SWITCH, self.client.request, method, path, timeout=150, **kwargs
                )
                if response.status_code in ok:
                    return response.json() if response.content else None
                if response.status_code < 500 or time.monotonic() > deadline:
                    raise ScenarioError(f"{method} {path}: {response.status_code} {response.text[:500]}")
            except (httpx.HTTPError, proc.LabError, OSError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def cli(self, *args: str) -> str:
        """The `pvc` CLI with the administrator's connection store, from the workstation."""
        env = {**os.environ, "PVC_CLIENT_DIR": str(self.client_dir)}
        pvc = str(Path(sys.executable).parent / "pvc")
        result = subprocess.run(
            ["ip", "netns", "exec", lane.SWITCH, pvc, "--connection", self.name, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if result.returncode != 0:
            raise ScenarioError(f"pvc {' '.join(args)}: {(result.stderr or result.stdout).strip()[-800:]}")
        return result.stdout


def wait(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    try:
        return proc.wait_until(check, timeout, what, interval=1)
    except proc.LabError as exc:
        raise ScenarioError(str(exc)) from None


# -- checks -----------------------------------------------------------------------------------------


def nodes_state(admin: Admin) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in admin.call("GET", "/node")}


def check_nodes(admin: Admin, names: list[str]) -> str:
    def ready() -> str | None:
        nodes = nodes_state(admin)
        # site.yml readies every node it brought in (a node registers itself flushed)
        running = [n for n in names if nodes.get(n, {}).get("daemon_state") == "run"
                   and nodes.get(n, {}).get("domain_state") == "ready"]
        primaries = [n for n, d in nodes.items() if d.get("coordinator_state") == "primary"]
        return primaries[0] if len(running) == len(names) and len(primaries) == 1 else None

    return str(wait(f"nodes {names} running and ready with one primary", ready, 240))


def console(admin: Admin) -> str:
    return str(admin.call("GET", f"/vm/{VM}/console", params={"lines": 1000})["data"])


def heartbeat(admin: Admin) -> int:
    counts = [int(n) for n in re.findall(r"PVC-GUEST-HEARTBEAT name=\S+ n=(\d+)", console(admin))]
    return max(counts, default=0)


def boots(admin: Admin) -> int:
    """The guest's boot count from its console (0 when the boot line is not in it: the console
    log is kept by the node that runs the VM, so after a migration it starts at the handover;
    the heartbeat going on from where it was is what shows the guest was not restarted)."""
    counts = [int(n) for n in re.findall(r"PVC-GUEST-ROOT dev=/dev/vda boots=(\d+)", console(admin))]
    return max(counts, default=0)


def vm_node(admin: Admin) -> str:
    return str(admin.call("GET", f"/vm/{VM}")[0]["node"])


def vm_state(admin: Admin) -> str:
    return str(admin.call("GET", f"/vm/{VM}")[0]["state"])


def put_guest_files(hosts: list[lane.Host]) -> guest.GuestImage:
    """The tiny guest's kernel and initramfs where the domain XML policy allows them
    (/var/lib/pvc/kernels, its default kernel directory) on every host."""
    built = guest.build_guest()
    for h in hosts:
        directory = h.root / KERNELS.relative_to("/")
        directory.mkdir(parents=True, exist_ok=True)
        for source in (built.kernel, built.initrd):
            shutil.copy2(source, directory / source.name)
    return built


def define_vm(admin: Admin, built: guest.GuestImage, node: str) -> str:
    volume = f"{VM}_vda"
    admin.call(
        "POST",
        "/storage/ceph/volume",
        params={"pool": POOL, "volume": volume, "size": f"{guest.DISK_SIZE_MIB}M"},
    )
    with open(built.disk_raw, "rb") as handle:
        data = handle.read()
    admin.call(
        "POST",
        f"/storage/ceph/volume/{POOL}/{volume}/upload",
        params={"image_format": "raw"},
        files={"file": ("disk.raw", data)},
    )
    disk = (
        f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
        f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk>"
    )
    mac = "52:54:00:4c:41:01"
    nic = (
        f"<interface type='bridge'><mac address='{mac}'/><source bridge='vmbr{VNI}'/>"
        f"<model type='virtio'/></interface>"
    )
    on_host = guest.GuestImage(
        kernel=KERNELS / built.kernel.name, initrd=KERNELS / built.initrd.name, disk_raw=built.disk_raw
    )
    uuid = str(uuidlib.uuid4())
    xml = guest.domain_xml(VM, on_host, uuid=uuid, devices=disk + nic, cmdline_extra="vmroot=/dev/vda")
    admin.call("POST", "/vm", data={"xml": xml, "node": node})
    return uuid


JOURNAL_UNITS = ("pvcnoded", "pvcworkerd", "pvcapid", "libvirtd", "zookeeper", "ceph-mon@*", "ceph-osd@*")


def _save_journals(logs: Path) -> None:
    """Each host's journal of PVC's and its services' units beside the consoles (best effort: a
    failed run is read from these after the lane is gone)."""
    units = [arg for unit in JOURNAL_UNITS for arg in ("-u", unit)]
    try:
        hosts = lane.lane_hosts()
    except Exception:           # the lane never came up
        return
    for host in hosts:
        try:
            text = lane.ssh(host, "journalctl", "--no-pager", "-o", "short-iso", *units,
                            check=False, timeout=60)
            (logs / f"{host.name}.journal.log").write_text(text)
        except Exception:       # the logs of a failed run must not hide its failure
            continue


def recover_coordinator(report: Report, admin: Admin, hosts: list[lane.Host], inventory: Path) -> None:
    """docs/install.md "Recovery from a lost coordinator", as written: a coordinator that runs
    neither the VM nor the primary loses power and its disks; the survivors forget its OSDs,
    monitor and manager key; a reinstalled host of the same name gets site.yml."""
    facts = report.facts
    with report.phase("lost coordinator rebuilt by site.yml"):
        busy = {vm_node(admin), check_nodes(admin, [h.name for h in hosts])}
        lost = next(h for h in hosts if h.name not in busy)
        survivor = next(h for h in hosts if h != lost)
        before = heartbeat(admin)
        lane.power_off(lost)
        check_nodes(admin, [h.name for h in hosts if h != lost])
        for osd in lane.ssh(survivor, "ceph", "osd", "ls-tree", lost.name).split():
            # Ceph marks a dead OSD down only after its heartbeat grace: purge refuses one not down
            lane.ssh(survivor, "ceph", "osd", "down", osd)
            lane.ssh(survivor, "ceph", "osd", "purge", osd, "--yes-i-really-mean-it")
        lane.ssh(survivor, "ceph", "mon", "remove", lost.name)
        lane.ssh(survivor, "ceph", "auth", "del", f"mgr.{lost.name}")
        lane.reinstall_host(lost)
        rebuilt = lane.playbook("site.yml", inventory)
        facts["recovery"] = {"host": lost.name, "rc": rebuilt.returncode, "log": str(rebuilt.log)}
        if rebuilt.returncode != 0:
            raise ScenarioError(
                f"site.yml did not rebuild {lost.name} (rc {rebuilt.returncode}); see {rebuilt.log}"
            )
        check_nodes(admin, [h.name for h in hosts])
        quorum = json.loads(lane.ssh(survivor, "ceph", "quorum_status", "--format", "json"))
        facts["recovery"]["mon_quorum"] = quorum.get("quorum_names")
        if lost.name not in quorum.get("quorum_names", []):
            raise ScenarioError(
                f"{lost.name}'s rebuilt monitor is not in the quorum: {quorum.get('quorum_names')}"
            )
        wait(f"{VM} still heartbeating", lambda: heartbeat(admin) > before, 60)
        if boots(admin) > 1:
            raise ScenarioError(f"{VM} rebooted while a coordinator was lost (boots={boots(admin)})")


def add_and_remove_node(report: Report, admin: Admin, deb_dir: Path) -> None:
    """add-node.yml then remove-node.yml with a fourth host (a hypervisor): it runs and takes
    an OSD, then its OSD is drained and purged and the cluster forgets it."""
    facts = report.facts
    with report.phase("add-node.yml (hv4)"):
        new = lane.add_host("hv4")
        added = lane.playbook("add-node.yml", lane.inventory(deb_dir), extra_vars={"node": new.name})
        facts["add_node"] = {"rc": added.returncode, "log": str(added.log)}
        if added.returncode != 0:
            raise ScenarioError(f"add-node.yml failed (rc {added.returncode}); see {added.log}")
        check_nodes(admin, [h.name for h in lane.lane_hosts()])
    with report.phase("remove-node.yml (hv4)"):
        removed = lane.playbook("remove-node.yml", lane.inventory(deb_dir), extra_vars={"node": new.name})
        facts["remove_node"] = {"rc": removed.returncode, "log": str(removed.log)}
        if removed.returncode != 0:
            raise ScenarioError(f"remove-node.yml failed (rc {removed.returncode}); see {removed.log}")
        if new.name in nodes_state(admin):
            raise ScenarioError(f"{new.name} is still a node of the cluster after remove-node.yml")
        lane.remove_host(new.name)


def run(report: Report, keep_up: bool = False, recovery: bool = False, nodes: bool = False) -> Report:
    """The whole lane run; brings the lane down at the end (unless keep_up) and on failure.
    `recovery` adds the lost-coordinator rebuild (bench/hosts.py --recovery)."""
    facts = report.facts
    with report.phase("packages (make deb x2, cached per revision)"):
        old, new = build_packages(OLD_SUFFIX), build_packages(NEW_SUFFIX)
        facts["old_version"], facts["new_version"] = deb_version(old), deb_version(new)
        newer = subprocess.run(
            ["dpkg", "--compare-versions", facts["new_version"], "gt", facts["old_version"]]
        )
        if newer.returncode != 0:
            raise ScenarioError(
                f"the newer build {facts['new_version']} does not sort after {facts['old_version']}"
            )
    lane.down()
    try:
        with report.phase("lane up (image cached, 3 hosts booted)"):
            marks = lane.up(3, image.deb_dependencies(sorted(old.glob("*.deb"))))
            facts["lane_up"] = marks
        hosts = lane.lane_hosts()
        names = [h.name for h in hosts]
        inventory = lane.inventory(old)
        with report.phase("site.yml, first run"):
            first = lane.playbook("site.yml", inventory)
            facts["first_run"] = {"rc": first.returncode, "changed": first.changed, "log": str(first.log)}
            if first.returncode != 0:
                raise ScenarioError(f"site.yml failed (rc {first.returncode}); see {first.log}")
        with report.phase("site.yml, second run"):
            second = lane.playbook("site.yml", inventory)
            facts["second_run"] = {"rc": second.returncode, "changed": second.changed, "log": str(second.log)}
            if second.returncode != 0 or second.changed != 0:
                raise ScenarioError(
                    f"second site.yml run: rc {second.returncode}, changed={second.changed} "
                    f"(must be 0); see {second.log}"
                )
        admin = Admin(lane.STATE_DIR / "inventory" / "client")
        with report.phase("nodes run with one primary"):
            facts["primary"] = check_nodes(admin, names)
            facts["cli_node_list"] = json.loads(admin.cli("node", "list", "--format", "json"))
        with report.phase("managed network with DHCP"):
            admin.call(
                "POST",
                "/network",
                params={
                    "vni": VNI,
                    "description": "lane",
                    "nettype": "managed",
                    "domain": "lane.test",
                    "ip4_network": f"{SUBNET}.0/24",
                    "ip4_gateway": f"{SUBNET}.1",
                    "dhcp4": True,
                    "dhcp4_start": f"{SUBNET}.100",
                    "dhcp4_end": f"{SUBNET}.199",
                },
            )
        with report.phase("VM on RBD defined and booted (TCG)"):
            built = put_guest_files(hosts)
            first_node = next(n for n in names if n != facts["primary"])
            define_vm(admin, built, first_node)
            admin.call("POST", f"/vm/{VM}/state", params={"state": "start"})
            wait(f"{VM} booted from its RBD root", lambda: boots(admin) >= 1, 300)
            ip = wait(
                f"{VM} got a DHCP lease",
                lambda: next(
                    iter(re.findall(r"PVC-GUEST-BOOT-OK name=\S+ ip=(10\.214\.0\.\d+)", console(admin))), None
                ),
                120,
            )
            facts["vm_ip"] = ip
            leases = admin.call("GET", f"/network/{VNI}/lease")
            facts["leases"] = [lease.get("ip4_address") for lease in leases]
        with report.phase("live migration"):
            target = next(n for n in names if n != first_node)
            before = heartbeat(admin)
            admin.call("POST", f"/vm/{VM}/node", params={"action": "migrate", "node": target, "wait": "true"})
            wait(
                f"{VM} runs on {target}", lambda: vm_node(admin) == target and vm_state(admin) == "start", 180
            )
            wait(f"{VM} heartbeats after the migration", lambda: heartbeat(admin) > before, 60)
            if boots(admin) > 1:
                raise ScenarioError(f"{VM} rebooted during the live migration (boots={boots(admin)})")
        with report.phase("flush and ready a node"):
            # The migration above was a temporary one: the VM's home is still first_node, and a
            # ready node takes back only the VMs whose home it is (as PVC 1.0's). Make it
            # permanent first, so the flush sends the VM away from its home and the ready brings
            # it back.
            admin.call("POST", f"/vm/{VM}/node", params={"action": "move", "node": target})
            admin.call("POST", f"/node/{target}/domain-state", params={"state": "flush", "wait": "true"})
            wait(f"{VM} left {target}", lambda: vm_node(admin) != target and vm_state(admin) == "start", 300)
            admin.call("POST", f"/node/{target}/domain-state", params={"state": "ready", "wait": "true"})
            wait(
                f"{VM} back on {target}", lambda: vm_node(admin) == target and vm_state(admin) == "start", 300
            )
            facts["flush_ready"] = target
        with report.phase("rolling upgrade to the newer build"):
            before = heartbeat(admin)
            upgrade = lane.playbook("upgrade.yml", lane.inventory(new))
            facts["upgrade"] = {"rc": upgrade.returncode, "changed": upgrade.changed, "log": str(upgrade.log)}
            if upgrade.returncode != 0:
                raise ScenarioError(f"upgrade.yml failed (rc {upgrade.returncode}); see {upgrade.log}")
            versions = {
                h.name: lane.ssh(h, "dpkg-query", "-W", "-f=${Version}", "pvc-daemon-common").strip()
                for h in hosts
            }
            facts["versions_after"] = versions
            if set(versions.values()) != {facts["new_version"]}:
                raise ScenarioError(f"after the upgrade the nodes run {versions}, not {facts['new_version']}")
            wait(f"{VM} still heartbeating", lambda: heartbeat(admin) > before, 60)
            if boots(admin) > 1 or vm_state(admin) != "start":
                raise ScenarioError(
                    f"{VM} did not keep running through the upgrade "
                    f"(boots={boots(admin)}, state={vm_state(admin)})"
                )
        with report.phase("site.yml after the upgrade (changes nothing)"):
            again = lane.playbook("site.yml", lane.inventory(new))
            facts["after_upgrade_run"] = {
                "rc": again.returncode,
                "changed": again.changed,
                "log": str(again.log),
            }
            if again.returncode != 0 or again.changed != 0:
                raise ScenarioError(
                    f"site.yml after the upgrade: rc {again.returncode}, changed={again.changed}; "
                    f"see {again.log}"
                )
        if nodes:
            add_and_remove_node(report, admin, new)
        if recovery:
            recover_coordinator(report, admin, hosts, lane.inventory(new))
    finally:
        if not keep_up:
            logs = lane.STATE_DIR / "logs"
            _save_journals(logs)
            keep = image.CACHE_DIR / "last-run-logs"
            shutil.rmtree(keep, ignore_errors=True)
            with contextlib.suppress(OSError):
                shutil.copytree(logs, keep)
            with report.phase("lane down"):
                lane.down()
    return report
