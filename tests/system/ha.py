"""High-availability helpers shared by tests/system/test_ha.py and bench/failover.py: guests whose
root lives on RBD (so a restart elsewhere is the same disk), where they run, fencing records,
and bringing a fenced lab node back into service."""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import signal
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from pvc.adapters.hypervisor import HypervisorError, LibvirtHypervisor
from pvc.lab import main as labmain
from pvc.lab import netns
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, wait

POOL, BASE = labmain.BASE_POOL, labmain.BASE_IMAGE


def rbd_guest(lab: LabPlan, api: httpx.Client, name: str, node: str, boot: bool = True) -> str:
    """A tiny guest on `node` with its root on a clone of the lab's guest disk; its UUID."""
    volume = f"{name}_vda"
    call(api, "POST", f"/storage/ceph/volume/{POOL}/{BASE}/clone", params={"new_volume": volume})
    disk = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk>")
    uuid = str(uuidlib.uuid4())
    call(api, "POST", "/vm", data={"xml": guest_xml(lab, name, uuid, disk, "vmroot=/dev/vda"), "node": node})
    call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
    if boot:
        wait(f"{name} booted from its RBD root", lambda: boots(api, name) >= 1, 180)
    return uuid


def boots(api: httpx.Client, name: str) -> int:
    """How many times the guest booted from its disk (the guest counts boots on the disk itself)."""
    counts = [int(n) for n in re.findall(r"PVC-GUEST-ROOT dev=/dev/vda boots=(\d+)", console(api, name))]
    return max(counts, default=0)


def remove_guest(api: httpx.Client, name: str) -> None:
    with contextlib.suppress(Exception):
        api.post(f"/vm/{name}/state", params={"state": "stop"})
        api.delete(f"/vm/{name}", params={"delete_disks": "true"})


def running_on(lab: LabPlan, uuid: str) -> list[str]:
    """Every node whose libvirtd runs the domain; nodes whose libvirtd is gone count as not."""
    found = []
    for node in lab.nodes:
        try:
            hv = LibvirtHypervisor(node.libvirt_uri)
            try:
                domains = hv.list_domains()
            finally:
                hv.close()
        except HypervisorError:
            continue
        if uuid in domains and domains[uuid].running:
            found.append(node.name)
    return found


def fencing(api: httpx.Client, node: str) -> dict[str, Any]:
    return dict(call(api, "GET", f"/node/{node}")[0].get("fencing") or {})


def event_times(record: dict[str, Any]) -> dict[str, float]:
    """The first time of each phase of a fencing chain."""
    out: dict[str, float] = {}
    for event in record.get("events") or []:
        out.setdefault(str(event["phase"]), float(event["time"]))
    return out


def other_than(api: httpx.Client, lab: LabPlan, avoid: str) -> str:
    """Make sure `avoid` is not the primary (hand over if it is); the primary's name."""
    current = str(call(api, "GET", "/status")["primary_node"])
    if current != avoid:
        return current
    target = next(n.name for n in lab.coordinators if n.name != avoid)
    call(api, "POST", f"/node/{target}/coordinator-state", params={"state": "primary"})
    wait(f"{target} primary", lambda: call(api, "GET", "/status")["primary_node"] == target, 60)
    return target


def restore(lab: LabPlan, api: httpx.Client, name: str) -> None:
    """Cable a fenced node back in, start its services, ready it; until it is in service."""
    node = lab.node(name)
    netns.rejoin(lab, node)
    labmain.node_start(lab, node)

    def back() -> bool:
        doc = call(api, "GET", f"/node/{name}")[0]
        return doc["daemon_state"] in ("run", "fenced", "dead") and time.time() - doc["keepalive"] < 15

    wait(f"{name}'s daemon back", back, 180)
    if call(api, "GET", f"/node/{name}")[0]["daemon_state"] in ("dead", "fenced"):
        wait(f"{name} readied", lambda: api.post(f"/node/{name}/domain-state",
                                                 params={"state": "ready"}).status_code == 200, 60)
    wait(f"{name} in service", lambda: call(api, "GET", f"/node/{name}")[0]["daemon_state"] == "run"
         and call(api, "GET", f"/node/{name}")[0]["domain_state"] == "ready", 300)


# -- the HA guards (issue #17): a primary's threads frozen, daemons killed, the lease -----------------

def daemon_pid(lab: LabPlan, name: str) -> int:
    from pvc.lab import proc, pvcnodes

    pid = proc.pid_of(pvcnodes.pidfile(lab, lab.node(name), "pvcnoded"))
    assert pid is not None, f"{name}'s pvcnoded does not run"
    return pid


def kill_daemon(lab: LabPlan, name: str) -> None:
    """SIGKILL pvcnoded alone: its VMs run on under libvirt, its ZooKeeper member serves on."""
    pid = daemon_pid(lab, name)
    os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        try:
            return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True

    wait(f"{name}'s pvcnoded gone", gone, 20)


def start_daemon(lab: LabPlan, name: str) -> None:
    from pvc.lab import pvcnodes

    pvcnodes.restart_daemon(lab, lab.node(name), "pvcnoded")


def lease(lab: LabPlan) -> dict[str, Any]:
    """The primary lease document (pvc.node.election.PRIMARY_LEASE)."""
    from pvc.lab import pvcnodes
    from pvc.node.election import PRIMARY_LEASE

    zk = pvcnodes.lab_zk(lab)
    try:
        return dict(zk.get(PRIMARY_LEASE, None) or {})
    finally:
        zk.stop()


def log_has(lab: LabPlan, node: str, text: str) -> int:
    """How many lines of the node's pvcnoded log contain `text`."""
    path = Path(lab.log_dir) / f"{node}-pvcnoded.log"
    return sum(1 for line in path.read_text(errors="replace").splitlines() if text in line)


def fault(api: httpx.Client, fid: str) -> dict[str, Any] | None:
    """The fault `fid`, resolved ones too (None when there is none)."""
    found = [f for f in call(api, "GET", "/faults", params={"all": "true"}) if f["id"] == fid]
    return found[0] if found else None


def thread_ids(pid: int, name: str) -> list[int]:
    """The kernel thread ids of `pid`'s live threads named `name` (pvc.node.election.name_thread).
    An exiting thread is left out: ptrace refuses it (EPERM), and one of that name may still be
    on its way out just after a primary change started its successor."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name and _thread_alive(task):
                out.append(int(task.name))
        except OSError:
            continue
    return out


def _thread_alive(task: Path) -> bool:
    try:
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X", "x")


class ThreadFreezer:
    """Stops single threads of a process with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT stop the one
    thread, not its process: SIGSTOP would stop every thread, kazoo's pings too, and the session
    would expire). All ptrace calls come from one tracer thread, as the kernel requires; thawing
    (PTRACE_DETACH) lets the thread run on where it stopped."""

    SEIZE, INTERRUPT, DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self._libc.ptrace.restype = ctypes.c_long
        self._jobs: queue.Queue[tuple[str, int, queue.Queue[str]]] = queue.Queue()
        self._frozen: set[int] = set()
        self._thread = threading.Thread(target=self._tracer, daemon=True)
        self._thread.start()

    def _ptrace(self, request: int, tid: int) -> str:
        if self._libc.ptrace(request, tid, None, None) == -1:
            return os.strerror(ctypes.get_errno())
        return ""

    @staticmethod
    def tracer_of(tid: int) -> int | None:
        """The thread that traces `tid` (TracerPid; 0: none), None when it is gone."""
        try:
            for line in Path(f"/proc/{tid}/status").read_text().splitlines():
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return 0

    def _stop(self, tid: int) -> str:
        error = self._ptrace(self.INTERRUPT, tid)
        if not error:
            os.waitpid(tid, self.WALL)
        return error

    def _tracer(self) -> None:
        me = threading.get_native_id()
        while True:
            verb, tid, answer = self._jobs.get()
            if verb == "freeze":
                error = self._ptrace(self.SEIZE, tid)
                if error and self.tracer_of(tid) == me:
                    error = ""                  # still ours: a detach that did not take (below)
                error = error or self._stop(tid)
                if not error:
                    self._frozen.add(tid)
                elif self.tracer_of(tid) not in (0, None):
                    error += f" (traced by {self.tracer_of(tid)}; this tracer is {me})"
                answer.put(error)
            elif verb == "thaw":
                self._frozen.discard(tid)
                error = self._ptrace(self.DETACH, tid)
                if error and self.tracer_of(tid) == me and not self._stop(tid):
                    # ESRCH: not in a ptrace-stop at that moment (a stop it was woken from);
                    # stop it again so the detach can take
                    error = self._ptrace(self.DETACH, tid)
                answer.put(error)
            else:
                answer.put("")
                return

    def _do(self, verb: str, tid: int = 0) -> str:
        answer: queue.Queue[str] = queue.Queue()
        self._jobs.put((verb, tid, answer))
        return answer.get(timeout=30)

    def freeze(self, tid: int) -> bool:
        """Stop the thread; False when it exited (or is exiting) meanwhile."""
        error = self._do("freeze", tid)
        if error and not _thread_alive(Path(f"/proc/{tid}")):
            return False
        assert not error, f"cannot stop thread {tid}: {error}"
        return True

    def thaw(self, tid: int) -> None:
        self._do("thaw", tid)          # the process may be gone (fenced): nothing to thaw then

    def close(self) -> None:
        for tid in list(self._frozen):
            self.thaw(tid)
        self._do("stop")
        self._thread.join(10)           # its exit detaches whatever it still traced


def _keepalive_goes_on(api: httpx.Client, node: str, since: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if call(api, "GET", f"/node/{node}")[0]["keepalive"] > since + 0.5:
            return True
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def frozen_threads(lab: LabPlan, api: httpx.Client, node: str, names: tuple[str, ...]) -> Iterator[
        Callable[[str], None]]:
    """Freeze these threads of `node`'s pvcnoded while its other threads (keepalive, kazoo) go
    on; yields thaw(name). A thread is frozen at a moment it may hold Python's GIL, which would
    stop the whole daemon: then the keepalive stops, and the threads are thawed and frozen again."""
    pid = daemon_pid(lab, node)
    tids = {name: thread_ids(pid, name) for name in names}
    assert all(tids.values()), f"threads {names} of {node}'s pvcnoded: {tids}"
    freezer = ThreadFreezer()
    try:
        for _attempt in range(5):
            # the threads as they are now; one that exited meanwhile is not frozen
            tids = {name: [t for t in thread_ids(pid, name) if freezer.freeze(t)] for name in names}
            if all(tids.values()) and _keepalive_goes_on(api, node, time.time(), 15):
                break
            for tid in [t for ts in tids.values() for t in ts]:
                freezer.thaw(tid)
            time.sleep(0.3)
        else:
            raise AssertionError(f"could not freeze {names} of {node} without stopping its keepalive")

        def thaw(name: str) -> None:
            for tid in tids[name]:
                freezer.thaw(tid)

        yield thaw
    finally:
        freezer.close()
