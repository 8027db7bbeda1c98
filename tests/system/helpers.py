"""What the system tests share: API calls that ride out a primary change, waits, the tiny guest."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pvc.adapters.ceph import CephStorage
from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.lab import ceph, guest, netns, proc
from pvc.lab.plan import STATE_ROOT, LabPlan


def guest_xml(plan: LabPlan, name: str, uuid: str, disks: str = "", cmdline: str = "") -> str:
    """The lab's tiny guest (direct kernel boot); `disks` are extra <disk> elements."""
    files = plan.extra["guest_files"]
    assert isinstance(files, dict)
    return guest.domain_xml(name, guest.from_files(files), uuid=uuid, devices=disks,
                            cmdline_extra=f"vmdhcp=0 {cmdline}".strip())


def call(api: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """An API call that must succeed, riding out a primary change (the API moves with it)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = api.request(method, path, **kwargs)
            if response.status_code < 500 or time.monotonic() > deadline:
                assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
                return response.json()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def wait(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    return proc.wait_until(check, timeout, what, interval=0.2)


def wait_task(api: httpx.Client, accepted: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Wait for a 202-accepted task to finish; returns its final status document."""
    task_id = accepted["task_id"]

    def done() -> dict[str, Any] | None:
        status = call(api, "GET", f"/tasks/{task_id}")
        return status if status.get("state") in ("SUCCESS", "FAILURE", "CANCELLED") else None

    return dict(wait(f"task {task_id} ({accepted.get('task_name')})", done, timeout))


def console(api: httpx.Client, name: str) -> str:
    return str(call(api, "GET", f"/vm/{name}/console", params={"lines": 1000})["data"])


def heartbeats(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"PVC-GUEST-HEARTBEAT name=\S+ n=(\d+)", text)]


def where(hvs: dict[str, LibvirtHypervisor], uuid: str) -> list[str]:
    """The nodes whose libvirt runs the domain (the answer must never have two entries)."""
    found = []
    for name, hv in hvs.items():
        domains = hv.list_domains()
        if uuid in domains and domains[uuid].running:
            found.append(name)
    return sorted(found)


def qemu_pids(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and f"guest={name},".encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def vm_exists(api: httpx.Client, name: str) -> bool:
    """Whether the VM is defined, riding out a primary change like call()."""
    deadline = time.monotonic() + 60
    while True:
        try:
            status = api.get(f"/vm/{name}").status_code
            if status < 500:
                return status == 200
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def nic_xml(plan: LabPlan, name: str, uuid: str, mac: str, vni: int) -> str:
    """The tiny guest with one NIC on vmbr<vni>, taking its address by DHCP."""
    files = plan.extra["guest_files"]
    assert isinstance(files, dict)
    nic = (f"<interface type='bridge'><mac address='{mac}'/><source bridge='vmbr{vni}'/>"
           f"<model type='virtio'/></interface>")
    return guest.domain_xml(name, guest.from_files(files), uuid=uuid, devices=nic)


def primary(api: httpx.Client) -> str:
    return str(call(api, "GET", "/status")["primary_node"])


def probe(lab: LabPlan, api: httpx.Client, ip: str, cgi: str, arg: str = "", timeout: float = 20) -> str:
    """Run one guest CGI probe from the primary's namespace (it routes to the guests)."""
    node = lab.node(primary(api))
    url = f"http://{ip}/cgi-bin/{cgi}" + (f"?{arg.replace(' ', '+')}" if arg else "")
    result = proc.run(["timeout", str(int(timeout)), "busybox", "wget", "-q", "-O", "-", url],
                      netns=node.netns, check=False)
    return result.stdout.strip()


def links(lab: LabPlan, node: str) -> dict[str, dict[str, Any]]:
    out = proc.run(["ip", "-j", "-d", "addr", "show"], netns=lab.node(node).netns).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def booted_ip(api: httpx.Client, name: str) -> str | None:
    found = re.findall(r"PVC-GUEST-BOOT-OK name=\S+ ip=(\S+)", console(api, name))
    return found[-1] if found and found[-1] != "none" else None


def ping_gaps(log: str, interval: float = 0.05) -> tuple[float, int]:
    """(longest outage in seconds, replies) from busybox ping output: missing seqs x interval."""
    seqs = sorted(int(s) for s in re.findall(r"seq=(\d+)", log))
    if len(seqs) < 2:
        return float("inf"), len(seqs)
    worst = max(b - a for a, b in itertools.pairwise(seqs))
    return (worst - 1) * interval, len(seqs)


def has_address(plan: LabPlan, node: str, device: str, ip: str) -> bool:
    return any(a.get("local") == ip for a in links(plan, node).get(device, {}).get("addr_info", []))


def lab_traces(name: str) -> list[str]:
    """Everything of lab `name` that could survive a down: namespaces, processes, mounts, files."""
    found = [f"netns {ns}" for ns in netns.list_lab_netns(name)]
    state = str(STATE_ROOT / name)
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            blob = (pid_dir / "cmdline").read_bytes() + (pid_dir / "environ").read_bytes()
        except OSError:
            continue
        if state.encode() in blob and int(pid_dir.name) != os.getpid():
            found.append(f"process {pid_dir.name}: {(pid_dir / 'cmdline').read_bytes()[:80]!r}")
    found += [f"mount {line}" for line in Path("/proc/mounts").read_text().splitlines() if state in line]
    if Path(state).exists():
        found.append(f"directory {state}")
    return found


def storage_in(plan: LabPlan) -> CephStorage:
    """A librados client living in the lab's namespace (its first call is made from there)."""
    storage = CephStorage(str(plan.ceph_conf), str(ceph.admin_keyring(plan)))
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            proc.enter_netns(plan.coordinators[0].netns)
            storage.list_pools()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return storage


def heal_lab(plan: LabPlan, timeout: float = 300) -> list[str]:
    """Bring the lab back to health after a test failed half-way (a node left fenced, killed,
    frozen or cut off, maintenance left on), so one failure stays one failure instead of failing
    every lab test after it. Returns what was found unhealthy (empty: nothing was done); raises
    when the lab is not healthy again within `timeout` seconds."""
    from pvc.lab import main as labmain
    from pvc.lab.chaos import faults

    found = faults.healthy(plan.name)
    with labmain._api(plan) as api:
        try:
            maintenance = api.get("/status").json().get("maintenance") in (True, "true", "True")
        except (httpx.HTTPError, ValueError):
            maintenance = False
        if maintenance:
            found.append("cluster left in maintenance")
        for node in plan.nodes:
            if any(node.name in problem for problem in found):
                faults.restore_node(plan, node, timeout=timeout)
        if maintenance:
            call(api, "POST", "/status", params={"state": "false"})
    if found:
        wait("the lab healthy again", lambda: not faults.healthy(plan.name), timeout)
    return found


# -- what a failed lab test leaves in its report --------------------------------------------------
# The lab goes down with the run, its logs too: a failure seen only in CI (a primary that moved
# after a fence) could not be explained afterwards. So a failed lab test's report carries what the
# node daemons logged while it ran, and ZooKeeper's changes of role (which member led).

_ZK_ROLE = re.compile(r" - (LEADING|FOLLOWING|LOOKING)\b|LEADER ELECTION TOOK")


def lab_log_marks(log_dir: Path) -> dict[str, int]:
    """How far each node daemon and ZooKeeper log of the lab reaches now (bytes)."""
    marks: dict[str, int] = {}
    for path in sorted(log_dir.glob("*-pvcnoded.log")) + sorted(log_dir.glob("*-zookeeper.log")):
        try:
            marks[path.name] = path.stat().st_size
        except OSError:
            continue
    return marks


def lab_log_news(log_dir: Path, marks: dict[str, int], lines: int = 80) -> list[tuple[str, str]]:
    """Report sections: the last `lines` lines each node daemon logged since `marks`, and every
    change of role ZooKeeper's members logged since then."""
    sections: list[tuple[str, str]] = []
    for name, mark in marks.items():
        try:
            with open(log_dir / name, "rb") as log:
                log.seek(mark if os.fstat(log.fileno()).st_size >= mark else 0)   # truncated: all
                new = log.read().decode(errors="replace").splitlines()
        except OSError as exc:
            sections.append((f"lab log {name}", f"(unreadable: {exc})"))
            continue
        if name.endswith("-zookeeper.log"):
            new = [line for line in new if _ZK_ROLE.search(line)]
            title = f"lab log {name}: changes of role during the test"
        else:
            title = f"lab log {name}: the last {min(lines, len(new))} of {len(new)} lines of the test"
            new = new[-lines:]
        if new:
            sections.append((title, "\n".join(new)))
    return sections
