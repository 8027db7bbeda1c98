"""The chaos workload: seeded operations through the API by a few worker threads, the ledger of
what the API accepted, and the tracker that follows every accepted request until it ends.

Every name the run makes starts with `cx-` (VMs `cx-v007`, provisioned `cx-p003`, volumes
`cx-d012`, networks described `cx-n4`), so the final checks and the clean-up find them. Each worker
draws from its own random stream (Context.rng), so a seed replays the same choices for the same
cluster answers; what the cluster answers under faults is timing, recorded in the report.

A request ends in one of: `done`; `failed` (with the reason the cluster gives: a task's status, a
VM's failed_reason, or where the VM ended up); `refused` (4xx, with the API's message: nothing
happened); `not-sent` (the connection failed); `unknown` (sent, no answer: the ledger then accepts
either outcome); `superseded` (a later accepted request on the same object, e.g. a remove, made
it moot). A request still `pending` when the run's bounded wait ends is an invariant violation.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc.lab import guest
from pvc.lab.chaos.context import Answer, Api, Context, rbd_images

PREFIX = "cx-"
POOL = "vms"                       # pvc.lab.main.BASE_POOL
BASE_IMAGE = "pvc-lab-guest"       # pvc.lab.main.BASE_IMAGE
MIB = 1024 * 1024
PROV_VNI = 3100                    # the provisioning profile's network (made by the fixture)
NET_VNI_BASE = 3200                # networks the workload adds and removes
PROFILE = "cx-prof"
# the fixture's provisioner documents, in the order the clean-up removes them (then its network)
FIXTURE_PATHS = (f"/provisioner/profile/{PROFILE}", "/provisioner/script/cx-clone",
                 "/provisioner/userdata/cx-ud", "/provisioner/template/storage/cx-clone",
                 "/provisioner/template/network/cx-net", "/provisioner/template/system/cx-tiny")

# operation -> weight; an operation with no eligible object is not drawn
WEIGHTS: dict[str, int] = {
    "vm_define": 6, "vm_start": 6, "vm_stop": 4, "vm_restart": 1, "vm_migrate": 6, "vm_move": 3,
    "vm_remove": 3, "provision": 2, "volume_add": 3, "volume_resize": 3, "volume_remove": 2,
    "volume_snapshot_add": 3, "volume_snapshot_remove": 2, "vm_snapshot_create": 3,
    "vm_snapshot_remove": 2, "network_add": 2, "network_remove": 2,
}
FINISHED = ("done", "failed", "refused", "not-sent", "unknown", "superseded")


@dataclass
class Thing:
    """One object the run made, as the ledger expects it. `exists` None: unknown (a request on it
    was sent and never answered), so either outcome is right, but never half of one."""

    kind: str                      # vm, volume, vsnap, vmsnap, network
    key: str                       # vm name, volume name, "volume@snap", "vm@snap", vni
    exists: bool | None = True
    busy: str = ""                 # the pending request on it
    info: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """What the API accepted, to compare with ZooKeeper and Ceph at the end."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.things: dict[tuple[str, str], Thing] = {}
        self.counters: dict[str, int] = {}

    def next_number(self, kind: str) -> int:
        with self.lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1
            return self.counters[kind]

    def put(self, kind: str, key: str, exists: bool | None = True, **info: Any) -> Thing:
        with self.lock:
            thing = self.things.get((kind, key))
            if thing is None:
                thing = self.things[(kind, key)] = Thing(kind, key, exists)
            thing.exists = exists
            thing.info.update(info)
            return thing

    def get(self, kind: str, key: str) -> Thing | None:
        with self.lock:
            return self.things.get((kind, key))

    def all(self, kind: str) -> list[Thing]:
        with self.lock:
            return sorted((t for t in self.things.values() if t.kind == kind), key=lambda t: t.key)

    def ready(self, kind: str, where: Callable[[Thing], bool] = lambda _t: True) -> list[Thing]:
        """Things of `kind` that exist for sure and have no pending request, in key order."""
        return [t for t in self.all(kind) if t.exists is True and not t.busy and where(t)]

    def forget_vm(self, name: str, exists: bool | None = False) -> None:
        """A VM removed (or whose removal is unknown): with it its volumes and snapshots."""
        with self.lock:
            vm = self.get("vm", name)
            volumes = list(vm.info.get("volumes", [])) if vm else []
            if vm:
                vm.exists = exists
            for volume in volumes:
                self.forget_volume(volume, exists)
            for snap in self.all("vmsnap"):
                if snap.info.get("vm") == name and snap.exists is not False:
                    snap.exists = exists

    def forget_volume(self, volume: str, exists: bool | None = False) -> None:
        with self.lock:
            thing = self.get("volume", volume)
            if thing is not None:
                thing.exists = exists
            for snap in self.all("vsnap"):
                if snap.info.get("volume") == volume and snap.exists is not False:
                    snap.exists = exists


@dataclass
class Request:
    """One API request of the workload, as the report shows it."""

    id: str
    t: float
    worker: str
    op: str
    subject: str
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    message: str = ""
    task_id: str = ""
    expect: str = ""               # what "done" means: task, running, stopped, on:<node>, gone
    outcome: str = ""
    outcome_t: float | None = None
    reason: str = ""
    after: Callable[[str], None] | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "after"}


BOOTED = 30.0        # seconds a VM runs before a restart is drawn (a guest still booting ignores the
                     # ACPI button, and the node then waits its whole shutdown timeout)


def choose(rng: Any, ledger: Ledger, nodes: list[str], max_vms: int, now: float = 0.0
           ) -> tuple[str, Thing | None] | None:
    """The next operation and its object, drawn from the ledger's ready objects (pure: the same
    ledger, time and random stream give the same choice)."""
    vms = ledger.ready("vm")
    live_vms = [t for t in ledger.all("vm") if t.exists is not False]
    running = [t for t in vms if t.info.get("desired") == "start"]
    stopped = [t for t in vms if t.info.get("desired") in ("stop", None)]
    with_disks = [t for t in vms if t.info.get("volumes")]
    plain_volumes = ledger.ready("volume", lambda t: not t.info.get("vm"))
    volumes = ledger.ready("volume")
    free_vsnaps = ledger.ready("vsnap", lambda t: not t.info.get("owner")
                               and ledger.get("volume", t.info.get("volume", "")) is not None
                               and not ledger.get("volume", t.info["volume"]).busy)
    candidates: dict[str, list[Thing | None]] = {
        "vm_define": [None] if len(live_vms) < max_vms else [],
        "provision": [None] if len(live_vms) < max_vms else [],
        "vm_start": list(stopped), "vm_stop": list(running),
        "vm_restart": [t for t in running if now - t.info.get("since", now) >= BOOTED],
        "vm_migrate": list(running) if len(nodes) > 1 else [],
        "vm_move": list(running) if len(nodes) > 1 else [],
        "vm_remove": [t for t in live_vms if t.exists is True],
        "volume_add": [None], "volume_resize": list(volumes), "volume_remove": list(plain_volumes),
        "volume_snapshot_add": list(volumes), "volume_snapshot_remove": list(free_vsnaps),
        "vm_snapshot_create": list(with_disks),
        "vm_snapshot_remove": list(ledger.ready("vmsnap")),
        "network_add": [None] if len(ledger.ready("network")) < 4 else [],
        "network_remove": list(ledger.ready("network")),
    }
    ops = [op for op in WEIGHTS if candidates[op]]
    if not ops:
        return None
    op = rng.choices(ops, weights=[WEIGHTS[o] for o in ops])[0]
    return op, rng.choice(candidates[op])


class Workload:
    """The workers, the tracker and the fixture of one run."""

    def __init__(self, ctx: Context, workers: int = 3, max_vms: int = 5, pace: tuple[float, float] = (1, 4)
                 ) -> None:
        self.ctx = ctx
        self.workers = workers
        self.max_vms = max_vms
        self.pace = pace
        self.ledger = Ledger()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.nodes = [n.name for n in ctx.plan.nodes]
        self.where: Callable[[], dict[str, list[str]] | None] = lambda: None   # set by the runner
        self.items: dict[str, dict[str, Any]] | None = None     # the last VM list (name -> API item)
        self.base_size = 64 * MIB
        self.stopping = threading.Event()        # workers only; the tracker runs until drained

    # -- requests ------------------------------------------------------------------------------

    def submit(self, api: Api, worker: str, op: str, subject: str, method: str, path: str,
               params: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
               expect: str = "", accepted: Callable[[Answer], None] | None = None,
               unknown: Callable[[], None] | None = None, after: Callable[[str], None] | None = None,
               busy: Thing | None = None, timeout: float | None = None) -> Request:
        """Send one request and record it; `accepted` updates the ledger on a 2xx, `unknown` when
        no answer came, `after(outcome)` when a pending request ends; `busy` is held meanwhile."""
        with self.lock:
            request = Request(id=f"op{len(self.requests) + 1:04d}", t=self.ctx.clock.now(), worker=worker,
                              op=op, subject=subject, method=method, path=path, params=dict(params or {}))
            self.requests.append(request)
        request.outcome = "sending"
        answer = api.send(method, path, params=params, data=data, timeout=timeout)
        request.status, request.message, request.task_id = answer.status, answer.message, answer.task_id
        if answer.accepted:
            with self.ledger.lock:
                if accepted is not None:
                    accepted(answer)
                if expect or request.task_id:
                    request.expect = expect or "task"
                    request.outcome, request.after = "pending", after
                    if busy is not None:
                        busy.busy = request.id
                else:
                    self._end(request, "done")
        elif not answer.sent:
            self._end(request, "not-sent", answer.message)
        elif answer.unknown:
            if unknown is not None:
                with self.ledger.lock:
                    unknown()
            self._end(request, "unknown", answer.message)
        else:
            self._end(request, "refused", answer.message)
        self.ctx.events.add("op", id=request.id, op=op, subject=subject, status=answer.status,
                            outcome=request.outcome, task=request.task_id or None)
        return request

    def _end(self, request: Request, outcome: str, reason: str = "") -> None:
        request.outcome, request.reason, request.outcome_t = outcome, reason, self.ctx.clock.now()
        with self.ledger.lock:
            for thing in self.ledger.things.values():
                if thing.busy == request.id:
                    thing.busy = ""
            if request.after is not None:
                request.after(outcome)

    LIFECYCLE = ("vm_define", "vm_start", "vm_stop", "vm_restart", "vm_migrate", "vm_move", "vm_remove",
                 "provision")

    def asked(self, vm: str, since: float) -> bool:
        """Whether a request that may start, stop or move VM `vm` was sent since `since` (run
        clock; with a margin for the request's own duration) or is still pending."""
        with self.lock:
            return any(r.subject == vm and r.op in self.LIFECYCLE
                       and (r.outcome == "pending" or (r.outcome_t or r.t) >= since - 5)
                       for r in self.requests)

    def active_subjects(self) -> set[str]:
        """Subjects of the requests sent and not answered yet, or accepted and not ended."""
        with self.lock:
            return {r.subject for r in self.requests if r.outcome in ("sending", "pending")}

    def pending(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.outcome == "pending"]

    def supersede(self, subject: str, by: str) -> None:
        for request in self.pending():
            if request.subject == subject and request.expect != "task" and request.id != by:
                self._end(request, "superseded", f"{by} (a later request) made it moot")

    # -- the tracker ---------------------------------------------------------------------------

    def track_once(self, api: Api) -> None:
        """Resolve what can be resolved of the pending requests."""
        answer = api.read("/vm", deadline=10)
        items: dict[str, dict[str, Any]] | None = None
        if answer.status == 404:
            items = {}
        elif answer.status == 200 and isinstance(answer.body, list):
            items = {str(i["name"]): i for i in answer.body}
        if items is not None:
            self.items = items
        pending = self.pending()
        where = self.where()
        for request in pending:
            if request.expect == "task":
                self._track_task(api, request)
            elif items is not None and where is not None:
                found = resolve_vm(request.expect, items.get(request.subject), where)
                if found is not None:
                    self._end(request, *found)

    def _track_task(self, api: Api, request: Request) -> None:
        answer = api.read(f"/tasks/{request.task_id}", deadline=10)
        if answer.status == 404:
            self._end(request, "failed", "LOST: the task vanished from the cluster")
            request.outcome = "lost"
            return
        if answer.status != 200 or not isinstance(answer.body, dict):
            return
        state = answer.body.get("state")
        if state == "SUCCESS":
            self._end(request, "done")
        elif state in ("FAILURE", "CANCELLED"):
            self._end(request, "failed", f"{state}: {answer.body.get('status', '')}".strip())

    def tracker(self, drained: threading.Event) -> None:
        """Thread body: track until `drained` is set."""
        api = self.ctx.api()
        try:
            while not drained.is_set():
                try:
                    self.track_once(api)
                except Exception as exc:  # a probe error is not the cluster's: note it, go on
                    self.ctx.events.add("note", what=f"tracker: {type(exc).__name__}: {exc}"[:300])
                drained.wait(2)
        finally:
            api.close()

    # -- the workers ---------------------------------------------------------------------------

    def worker(self, index: int) -> None:
        """Thread body: draw and run operations until stopped."""
        name = f"w{index}"
        rng = self.ctx.rng(f"worker{index}")
        api = self.ctx.api()
        try:
            while not self.stopping.is_set():
                with self.ledger.lock:
                    picked = choose(rng, self.ledger, self.nodes, self.max_vms, time.monotonic())
                    if picked is not None and picked[1] is not None and picked[0] != "vm_remove":
                        picked[1].busy = f"{name}-choosing"
                if picked is not None:
                    op, thing = picked
                    try:
                        getattr(self, f"op_{op}")(api, name, rng, thing)
                    except Exception as exc:  # a bug of the runner: recorded, the run goes on
                        self.ctx.events.add("note", what=f"{name} {op}: {type(exc).__name__}: {exc}"[:300])
                    finally:
                        with self.ledger.lock:
                            if thing is not None and thing.busy == f"{name}-choosing":
                                thing.busy = ""
                self.stopping.wait(rng.uniform(*self.pace))
        finally:
            api.close()

    # -- operations: VMs -----------------------------------------------------------------------

    def _xml(self, name: str, uuid: str, volume: str | None) -> str:
        files = self.ctx.plan.extra["guest_files"]
        assert isinstance(files, dict)
        disk = "" if volume is None else (
            f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk>")
        extra = "vmdhcp=0 vmroot=/dev/vda" if volume else "vmdhcp=0"
        return guest.domain_xml(name, guest.from_files(files), uuid=uuid, devices=disk, cmdline_extra=extra)

    def op_vm_define(self, api: Api, worker: str, rng: Any, _thing: Thing | None) -> None:
        name = f"{PREFIX}v{self.ledger.next_number('vm'):03d}"
        volume = f"{name}_vda" if rng.random() < 0.75 else None
        node = rng.choice([*self.nodes, ""])
        uuid = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        start = rng.random() < 0.7
        if volume is not None:
            clone = self.submit(
                api, worker, "volume_clone", volume, "POST",
                f"/storage/ceph/volume/{POOL}/{BASE_IMAGE}/clone",
                params={"new_volume": volume},
                accepted=lambda _a: self.ledger.put("volume", volume, size=self.base_size, vm=""),
                unknown=lambda: self.ledger.put("volume", volume, None, size=None, vm=""))
            if clone.outcome != "done":
                return
        data = {"xml": self._xml(name, uuid, volume), **({"node": node} if node else {})}

        def defined(_a: Answer) -> None:
            self.ledger.put("vm", name, uuid=uuid, volumes=[volume] if volume else [], desired="stop",
                            node=node)
            if volume:
                self.ledger.put("volume", volume, vm=name)

        volumes = [volume] if volume else []
        request = self.submit(api, worker, "vm_define", name, "POST", "/vm",
                              params={"node": node} if node else {}, data=data, accepted=defined,
                              unknown=lambda: self.ledger.put("vm", name, None, uuid=uuid, volumes=volumes,
                                                              desired=None))
        request.params["xml"] = f"<tiny guest {uuid}{' on RBD ' + volume if volume else ''}>"
        vm = self.ledger.get("vm", name)
        if start and request.outcome == "done" and vm is not None:
            self.op_vm_start(api, worker, rng, vm)

    def _state(self, api: Api, worker: str, op: str, vm: Thing, state: str, expect: str) -> None:
        desired = "stop" if state == "stop" else "start"

        def after(outcome: str) -> None:
            if outcome == "failed" and state != "stop":
                vm.info["desired"] = None      # the node put it in `fail`, with its reason
            if outcome == "done" and state != "stop":
                vm.info["since"] = time.monotonic()

        self.submit(api, worker, op, vm.key, "POST", f"/vm/{vm.key}/state", params={"state": state},
                    expect=expect, busy=vm, after=after,
                    accepted=lambda _a: vm.info.update(desired=desired),
                    unknown=lambda: vm.info.update(desired=None))

    def op_vm_start(self, api: Api, worker: str, _rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        self._state(api, worker, "vm_start", vm, "start", "running")

    def op_vm_stop(self, api: Api, worker: str, _rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        self._state(api, worker, "vm_stop", vm, "stop", "stopped")

    def op_vm_restart(self, api: Api, worker: str, _rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        self._state(api, worker, "vm_restart", vm, "restart", "running")

    def _node_change(self, api: Api, worker: str, rng: Any, vm: Thing, action: str) -> None:
        others = [n for n in self.nodes if n != vm.info.get("node")]
        target = rng.choice(others or self.nodes)
        params: dict[str, Any] = {"action": action, "node": target}
        if action == "migrate" and rng.random() < 0.5:
            params["force"] = "true"
        self.submit(api, worker, f"vm_{action}", vm.key, "POST", f"/vm/{vm.key}/node", params=params,
                    expect=f"on:{target}", busy=vm,
                    accepted=lambda _a: vm.info.update(node=target))

    def op_vm_migrate(self, api: Api, worker: str, rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        self._node_change(api, worker, rng, vm, "migrate")

    def op_vm_move(self, api: Api, worker: str, rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        self._node_change(api, worker, rng, vm, "move")

    def op_vm_remove(self, api: Api, worker: str, _rng: Any, vm: Thing | None) -> None:
        """Also while a start or migration of the VM is in flight (issue #17: remove vs start)."""
        assert vm is not None
        request = self.submit(api, worker, "vm_remove", vm.key, "DELETE", f"/vm/{vm.key}",
                              params={"delete_disks": "true"}, expect=f"gone:{vm.info.get('uuid', '')}",
                              accepted=lambda _a: self.ledger.forget_vm(vm.key, False),
                              unknown=lambda: self.ledger.forget_vm(vm.key, None), timeout=180)
        if request.outcome in ("pending", "unknown"):
            # sent, maybe (unknown: no answer) in effect: a start or a migration still pending on
            # the VM may now never finish (the remove wrote stop before the API died)
            self.supersede(vm.key, request.id)
        elif request.outcome == "refused" and "was undefined, but removing its volumes failed" in (
                request.reason or ""):
            # the API says what it did: the VM is gone, its volumes (named) are still there with
            # their snapshots (forget_vm marked those removed: mark them unknown again)
            volumes = list(vm.info.get("volumes", []))
            self.ledger.forget_vm(vm.key, False)
            with self.ledger.lock:
                for volume in volumes:
                    thing = self.ledger.get("volume", volume)
                    if thing is not None:
                        thing.exists = None
                    for snap in self.ledger.all("vsnap"):
                        if snap.info.get("volume") == volume:
                            snap.exists = None

    def op_provision(self, api: Api, worker: str, _rng: Any, _thing: Thing | None) -> None:
        name = f"{PREFIX}p{self.ledger.next_number('prov'):03d}"
        volume = f"{name}_vda"
        vm = self.ledger.put("vm", name, None, uuid="", volumes=[volume], desired="start", provisioned=True)
        self.ledger.put("volume", volume, None, size=None, vm=name)

        def after(outcome: str) -> None:
            self.ledger.forget_vm(name, True if outcome == "done" else False if outcome == "failed" else None)
            if outcome == "done":
                vm.info.update(desired="start", uuid=str((self.items or {}).get(name, {}).get("uuid", "")),
                               since=time.monotonic())

        request = self.submit(api, worker, "provision", name, "POST", "/provisioner/create",
                              params={"name": name, "profile": PROFILE}, after=after, busy=vm,
                              unknown=lambda: None)
        if request.outcome in ("refused", "not-sent"):
            self.ledger.forget_vm(name, False)

    # -- operations: volumes and snapshots -------------------------------------------------------

    def op_volume_add(self, api: Api, worker: str, rng: Any, _thing: Thing | None) -> None:
        name = f"{PREFIX}d{self.ledger.next_number('volume'):03d}"
        mib = rng.choice([16, 32, 48])
        self.submit(api, worker, "volume_add", name, "POST", "/storage/ceph/volume",
                    params={"volume": name, "pool": POOL, "size": f"{mib}M"},
                    accepted=lambda _a: self.ledger.put("volume", name, size=mib * MIB, vm=""),
                    unknown=lambda: self.ledger.put("volume", name, None, size=None, vm=""))

    def op_volume_resize(self, api: Api, worker: str, rng: Any, volume: Thing | None) -> None:
        assert volume is not None
        size = volume.info.get("size")
        if not size:
            return
        new = size + rng.choice([8, 16, 32]) * MIB
        self.submit(api, worker, "volume_resize", volume.key, "PUT",
                    f"/storage/ceph/volume/{POOL}/{volume.key}",
                    params={"new_size": f"{new // MIB}M"}, timeout=180,
                    accepted=lambda _a: volume.info.update(size=new),
                    unknown=lambda: volume.info.update(size=None))

    def op_volume_remove(self, api: Api, worker: str, _rng: Any, volume: Thing | None) -> None:
        assert volume is not None
        self.submit(api, worker, "volume_remove", volume.key, "DELETE",
                    f"/storage/ceph/volume/{POOL}/{volume.key}",
                    accepted=lambda _a: self.ledger.forget_volume(volume.key, False),
                    unknown=lambda: self.ledger.forget_volume(volume.key, None))

    def op_volume_snapshot_add(self, api: Api, worker: str, _rng: Any, volume: Thing | None) -> None:
        assert volume is not None
        snap = f"cs{self.ledger.next_number('vsnap'):03d}"
        key = f"{volume.key}@{snap}"
        self.submit(api, worker, "volume_snapshot_add", key, "POST", "/storage/ceph/snapshot",
                    params={"snapshot": snap, "volume": volume.key, "pool": POOL},
                    accepted=lambda _a: self.ledger.put("vsnap", key, volume=volume.key, owner=""),
                    unknown=lambda: self.ledger.put("vsnap", key, None, volume=volume.key, owner=""))

    def op_volume_snapshot_remove(self, api: Api, worker: str, _rng: Any, snap: Thing | None) -> None:
        assert snap is not None
        volume, name = snap.key.split("@", 1)
        self.submit(api, worker, "volume_snapshot_remove", snap.key, "DELETE",
                    f"/storage/ceph/snapshot/{POOL}/{volume}/{name}",
                    accepted=lambda _a: self.ledger.put("vsnap", snap.key, False),
                    unknown=lambda: self.ledger.put("vsnap", snap.key, None))

    def op_vm_snapshot_create(self, api: Api, worker: str, _rng: Any, vm: Thing | None) -> None:
        assert vm is not None
        name = f"vs{self.ledger.next_number('vmsnap'):03d}"
        key = f"{vm.key}@{name}"
        volumes = list(vm.info.get("volumes", []))
        snap = self.ledger.put("vmsnap", key, None, vm=vm.key, volumes=volumes)

        def after(outcome: str) -> None:
            exists = True if outcome == "done" else False if outcome == "failed" else None
            if self.ledger.get("vm", vm.key) is not None and self.ledger.get("vm", vm.key).exists is False:
                exists = False if exists is False else None    # the VM went meanwhile
            snap.exists = exists
            for volume in volumes:
                self.ledger.put("vsnap", f"{volume}@{name}", exists, volume=volume, owner=key)

        request = self.submit(api, worker, "vm_snapshot_create", key, "POST", f"/vm/{vm.key}/snapshot",
                              params={"snapshot_name": name}, after=after, busy=snap)
        if request.outcome in ("refused", "not-sent"):
            snap.exists = False

    def op_vm_snapshot_remove(self, api: Api, worker: str, _rng: Any, snap: Thing | None) -> None:
        assert snap is not None
        vm, name = snap.key.split("@", 1)

        def after(outcome: str) -> None:
            exists = False if outcome == "done" else True if outcome == "failed" else None
            gone = self.ledger.get("vm", vm)
            if gone is not None and gone.exists is False:
                exists = False              # the VM was removed meanwhile, its snapshots with it
            snap.exists = exists
            for volume in snap.info.get("volumes", []):
                self.ledger.put("vsnap", f"{volume}@{name}", exists)

        self.submit(api, worker, "vm_snapshot_remove", snap.key, "DELETE", f"/vm/{vm}/snapshot",
                    params={"snapshot_name": name}, after=after, busy=snap)

    # -- operations: networks --------------------------------------------------------------------

    def op_network_add(self, api: Api, worker: str, _rng: Any, _thing: Thing | None) -> None:
        number = self.ledger.next_number("network")
        vni = NET_VNI_BASE + number
        octet = number % 250
        self.submit(api, worker, "network_add", str(vni), "POST", "/network",
                    params={"vni": vni, "description": f"{PREFIX}n{number}", "nettype": "managed",
                            "domain": f"cxn{number}.chaos", "ip4_network": f"10.231.{octet}.0/24",
                            "ip4_gateway": f"10.231.{octet}.1", "dhcp4": "false"},
                    accepted=lambda _a: self.ledger.put("network", str(vni)),
                    unknown=lambda: self.ledger.put("network", str(vni), None))

    def op_network_remove(self, api: Api, worker: str, _rng: Any, net: Thing | None) -> None:
        assert net is not None
        self.submit(api, worker, "network_remove", net.key, "DELETE", f"/network/{net.key}",
                    accepted=lambda _a: self.ledger.put("network", net.key, False),
                    unknown=lambda: self.ledger.put("network", net.key, None))

    # -- fixture and clean-up ----------------------------------------------------------------------

    def fixture_steps(self) -> list[tuple[str, str, dict[str, Any]]]:
        """What provisioning needs (made before the faults, removed after): a managed network, the
        templates, userdata, the shipped clone script and profile cx-prof (the tiny guest)."""
        from pvc.worker import provisioner

        files = self.ctx.plan.extra["guest_files"]
        assert isinstance(files, dict)
        script = (Path(provisioner.__file__).parent / "examples" / "2-clone.py").read_text()
        return [
            ("POST", "/network", {"vni": PROV_VNI, "description": "cx-prov", "nettype": "managed",
                                  "domain": "cxprov.chaos", "ip4_network": "10.230.100.0/24",
                                  "ip4_gateway": "10.230.100.1", "dhcp4": "true",
                                  "dhcp4_start": "10.230.100.100", "dhcp4_end": "10.230.100.199"}),
            ("POST", "/provisioner/template/system", {"name": "cx-tiny", "vcpus": 1, "vram": 128,
                                                      "serial": "true", "vnc": "false"}),
            ("POST", "/provisioner/template/network", {"name": "cx-net"}),
            ("POST", "/provisioner/template/network/cx-net/net", {"vni": PROV_VNI}),
            ("POST", "/provisioner/template/storage", {"name": "cx-clone"}),
            ("POST", "/provisioner/template/storage/cx-clone/disk", {"disk_id": "vda", "pool": POOL,
                                                                    "source_volume": BASE_IMAGE}),
            ("POST", "/provisioner/userdata", {"name": "cx-ud", "data": "#!/bin/sh\necho PVC-CHAOS\n"}),
            ("POST", "/provisioner/script", {"name": "cx-clone", "data": script}),
            ("POST", "/provisioner/profile", {"name": PROFILE, "profile_type": "provisioner",
                                              "system_template": "cx-tiny", "network_template": "cx-net",
                                              "storage_template": "cx-clone", "userdata": "cx-ud",
                                              "script": "cx-clone",
                                              "arg": [f"kernel={files['kernel']}",
                                                      f"initrd={files['initrd']}"]}),
        ]


    def setup(self, api: Api) -> None:
        """The fixture, before any fault (a refusal here stops the run: nothing was tested yet)."""
        images = self.ctx.probes.in_ceph(lambda client: rbd_images(client, POOL))
        if not images or BASE_IMAGE not in images:
            raise RuntimeError(f"chaos fixture: cannot read the size of {POOL}/{BASE_IMAGE} from Ceph")
        self.base_size = int(images[BASE_IMAGE]["size"])
        for method, path, params in self.fixture_steps():
            deadline = time.monotonic() + 60
            while True:
                answer = api.send(method, path, params=params)
                if answer.accepted or (answer.sent and not answer.unknown) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            if not answer.accepted:
                raise RuntimeError(f"chaos fixture: {method} {path} failed: {answer.status} {answer.message}")

    def teardown(self, api: Api) -> list[str]:
        """Remove everything the run made (VMs with their disks, volumes, networks, the fixture);
        what could not be removed, by name."""
        errors: list[str] = []

        def do(method: str, path: str, **params: Any) -> None:
            answer = Answer(None)
            for _ in range(3):
                answer = api.send(method, path, params=params or None, timeout=180)
                if answer.accepted or answer.status == 404:
                    return
                time.sleep(2)
            errors.append(f"{method} {path}: {answer.status} {answer.message}")

        vms = api.read("/vm")
        names = [str(v["name"]) for v in vms.body] if vms.status == 200 and isinstance(vms.body, list) else []
        for name in names:
            if name.startswith(PREFIX):
                do("DELETE", f"/vm/{name}", delete_disks="true")
        volumes = api.read("/storage/ceph/volume", params={"pool": POOL})
        for item in volumes.body if volumes.status == 200 and isinstance(volumes.body, list) else []:
            if str(item.get("name", "")).startswith(PREFIX):
                do("DELETE", f"/storage/ceph/volume/{POOL}/{item['name']}")
        for path in FIXTURE_PATHS:
            do("DELETE", path)
        nets = api.read("/network")
        for item in nets.body if nets.status == 200 and isinstance(nets.body, list) else []:
            if str(item.get("description", "")).startswith(PREFIX):
                do("DELETE", f"/network/{item['vni']}")
        return errors


def resolve_vm(expect: str, item: dict[str, Any] | None, where: dict[str, list[str]]
               ) -> tuple[str, str] | None:
    """How a pending VM request ended, from the VM's API item and where its domain executes
    (uuid -> nodes); None while it has not ended."""
    if expect.startswith("gone:"):
        if item is None and not where.get(expect[5:]):
            return "done", "undefined, its domain runs nowhere"
        return None
    if item is None:
        return "superseded", "the VM is gone (removed meanwhile)"
    uuid, state, node = str(item.get("uuid")), str(item.get("state")), str(item.get("node"))
    on = where.get(uuid, [])
    settled = state == "start" and bool(item.get("running")) and on == [node]
    if state == "fail":
        return "failed", str(item.get("failed_reason") or "")
    if expect == "running" and settled:
        return "done", f"runs on {node}"
    if expect == "stopped" and state == "stop" and not item.get("running") and not on:
        return "done", ""
    if expect.startswith("on:") and settled:
        target = expect[3:]
        if node == target:
            return "done", f"runs on {node}"
        return "failed", f"the VM runs on {node}, not {target} (migration aborted, or recovered elsewhere)"
    return None
