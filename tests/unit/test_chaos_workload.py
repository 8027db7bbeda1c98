"""The chaos workload's pure parts: the draw of operations, the ledger, how a request ends."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pvc.lab.chaos.context import Answer, Clock, Context, Events, Probes
from pvc.lab.chaos.workload import Ledger, Workload, choose, resolve_vm
from pvc.lab.plan import make_plan

NODES = ["hv1", "hv2", "hv3"]


def ledger_with_vms() -> Ledger:
    ledger = Ledger()
    ledger.put("vm", "cx-v001", uuid="u1", volumes=["cx-v001_vda"], desired="start", node="hv1")
    ledger.put("vm", "cx-v002", uuid="u2", volumes=[], desired="stop", node="hv2")
    ledger.put("volume", "cx-v001_vda", size=64 << 20, vm="cx-v001")
    ledger.put("volume", "cx-d001", size=16 << 20, vm="")
    ledger.put("vsnap", "cx-d001@cs001", volume="cx-d001", owner="")
    ledger.put("network", "3201")
    return ledger


def draws(seed: int, ledger: Ledger, n: int = 30) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        picked = choose(rng, ledger, NODES, 5)
        assert picked is not None
        out.append((picked[0], picked[1].key if picked[1] else None))
    return out


def test_the_same_seed_draws_the_same_operations() -> None:
    assert draws(7, ledger_with_vms()) == draws(7, ledger_with_vms())
    assert draws(7, ledger_with_vms()) != draws(8, ledger_with_vms())


def test_an_empty_ledger_only_creates() -> None:
    ops = {op for op, _ in draws(1, Ledger(), 200)}
    assert ops == {"vm_define", "provision", "volume_add", "network_add"}


def test_operations_fit_their_objects() -> None:
    for op, key in draws(3, ledger_with_vms(), 400):
        if op in ("vm_stop", "vm_migrate", "vm_move", "vm_restart"):
            assert key == "cx-v001"                 # the one that should run
        if op == "vm_start":
            assert key == "cx-v002"
        if op == "volume_remove":
            assert key == "cx-d001"                 # never a VM's disk
        if op == "vm_snapshot_create":
            assert key == "cx-v001"                 # only a VM with an RBD disk


def test_no_define_beyond_max_vms_and_busy_objects_are_left_alone() -> None:
    ledger = ledger_with_vms()
    for thing in ledger.all("vm"):
        thing.busy = "op0001"
    rng = random.Random(5)
    for _ in range(300):
        picked = choose(rng, ledger, NODES, 2)
        assert picked is not None
        op, thing = picked
        assert op not in ("vm_define", "provision", "vm_start", "vm_stop", "vm_migrate")
        if op == "vm_remove":           # a remove may hit a VM with a request in flight
            assert thing is not None and thing.kind == "vm"


def test_forgetting_a_vm_takes_its_disks_and_snapshots() -> None:
    ledger = ledger_with_vms()
    ledger.put("vsnap", "cx-v001_vda@vs001", volume="cx-v001_vda", owner="cx-v001@vs001")
    ledger.put("vmsnap", "cx-v001@vs001", vm="cx-v001", volumes=["cx-v001_vda"])
    ledger.forget_vm("cx-v001")
    assert ledger.get("vm", "cx-v001").exists is False
    assert ledger.get("volume", "cx-v001_vda").exists is False
    assert ledger.get("vsnap", "cx-v001_vda@vs001").exists is False
    assert ledger.get("vmsnap", "cx-v001@vs001").exists is False
    assert ledger.get("volume", "cx-d001").exists is True
    ledger.forget_volume("cx-d001", None)
    assert ledger.get("vsnap", "cx-d001@cs001").exists is None


ITEM = {"uuid": "u1", "name": "cx-v001", "state": "start", "node": "hv2", "running": True,
        "failed_reason": ""}


@pytest.mark.parametrize(("expect", "item", "where", "outcome"), [
    ("running", ITEM, {"u1": ["hv2"]}, "done"),
    ("running", ITEM, {"u1": ["hv1"]}, None),                       # the node has not caught up
    ("running", {**ITEM, "state": "restart"}, {"u1": ["hv2"]}, None),
    ("running", {**ITEM, "state": "fail", "failed_reason": "no memory"}, {}, "failed"),
    ("stopped", {**ITEM, "state": "stop", "running": False}, {}, "done"),
    ("stopped", {**ITEM, "state": "stop", "running": False}, {"u1": ["hv2"]}, None),
    ("on:hv2", ITEM, {"u1": ["hv2"]}, "done"),
    ("on:hv3", ITEM, {"u1": ["hv2"]}, "failed"),                    # aborted, or recovered elsewhere
    ("on:hv2", {**ITEM, "state": "migrate"}, {"u1": ["hv1"]}, None),
    ("running", None, {}, "superseded"),
    ("gone:u1", None, {}, "done"),
    ("gone:u1", None, {"u1": ["hv3"]}, None),                       # undefined, but still running
])
def test_how_a_vm_request_ends(expect: str, item: dict[str, Any] | None, where: dict[str, list[str]],
                               outcome: str | None) -> None:
    found = resolve_vm(expect, item, where)
    assert (found[0] if found else None) == outcome
    if outcome == "failed":
        assert found is not None and found[1]


class FakeApi:
    """Answers queued per (method, path)."""

    def __init__(self, answers: dict[tuple[str, str], list[Answer]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []

    def send(self, method: str, path: str, params: dict[str, Any] | None = None, data: Any = None,
             timeout: float | None = None) -> Answer:
        self.sent.append((method, path, params))
        return self.answers[(method, path)].pop(0)

    def read(self, path: str, params: Any = None, deadline: float | None = None) -> Answer:
        return self.send("GET", path, params)

    def close(self) -> None:
        pass


@pytest.fixture
def workload(tmp_path: Any) -> Workload:
    clock = Clock()
    plan = make_plan("t", 3)
    ctx = Context(plan, 1, clock, Events(clock, tmp_path / "events.jsonl"), Probes(plan))
    return Workload(ctx)


def test_requests_end_by_their_answer(workload: Workload) -> None:
    api = FakeApi({
        ("POST", "/storage/ceph/volume"): [Answer(200, {"message": "ok"}),
                                           Answer(400, {"message": "bad size"}),
                                           Answer(None, sent=False, error="not sent: refused"),
                                           Answer(None, error="no answer: read timeout")],
    })
    rng = random.Random(1)
    for _ in range(4):
        workload.op_volume_add(api, "w0", rng, None)    # type: ignore[arg-type]
    outcomes = [(r.outcome, r.subject) for r in workload.requests]
    assert [o for o, _ in outcomes] == ["done", "refused", "not-sent", "unknown"]
    assert workload.requests[1].reason == "bad size"
    ledger = workload.ledger
    assert ledger.get("volume", outcomes[0][1]).exists is True
    assert ledger.get("volume", outcomes[1][1]) is None          # refused: nothing to expect
    assert ledger.get("volume", outcomes[3][1]).exists is None   # unknown: either outcome


def test_a_task_is_followed_until_it_ends(workload: Workload) -> None:
    workload.ledger.put("vm", "cx-v001", uuid="u1", volumes=["cx-v001_vda"], desired="start")
    vm = workload.ledger.get("vm", "cx-v001")
    api = FakeApi({
        ("POST", "/vm/cx-v001/snapshot"): [Answer(202, {"task_id": "t1"})],
        ("GET", "/vm"): [Answer(200, [ITEM]), Answer(200, [ITEM])],
        ("GET", "/tasks/t1"): [Answer(200, {"state": "RUNNING"}), Answer(200, {"state": "SUCCESS"})],
    })
    workload.op_vm_snapshot_create(api, "w0", random.Random(1), vm)   # type: ignore[arg-type]
    request = workload.requests[0]
    snap = workload.ledger.get("vmsnap", "cx-v001@vs001")
    assert request.outcome == "pending" and snap.busy == request.id and snap.exists is None
    workload.track_once(api)                                            # type: ignore[arg-type]
    assert request.outcome == "pending"
    workload.track_once(api)                                            # type: ignore[arg-type]
    assert request.outcome == "done" and not snap.busy and snap.exists is True
    assert workload.ledger.get("vsnap", "cx-v001_vda@vs001").info["owner"] == "cx-v001@vs001"


def test_a_failed_task_keeps_its_reason_and_a_vanished_one_is_lost(workload: Workload) -> None:
    api = FakeApi({
        ("POST", "/provisioner/create"): [Answer(202, {"task_id": "t1"}), Answer(202, {"task_id": "t2"})],
        ("GET", "/vm"): [Answer(404, {"message": "VM not found."})] * 2,
        ("GET", "/tasks/t1"): [Answer(200, {"state": "FAILURE", "status": "script failed: no space"})],
        ("GET", "/tasks/t2"): [Answer(404, {"message": "no such task"})],
    })
    rng = random.Random(1)
    workload.op_provision(api, "w0", rng, None)      # type: ignore[arg-type]
    workload.op_provision(api, "w0", rng, None)      # type: ignore[arg-type]
    workload.track_once(api)                         # type: ignore[arg-type]
    first, second = workload.requests
    assert (first.outcome, first.reason) == ("failed", "FAILURE: script failed: no space")
    assert workload.ledger.get("vm", "cx-p001").exists is False          # a failed job leaves nothing
    assert workload.ledger.get("volume", "cx-p001_vda").exists is False
    assert second.outcome == "lost"


def test_a_remove_supersedes_a_start_in_flight(workload: Workload) -> None:
    workload.ledger.put("vm", "cx-v001", uuid="u1", volumes=[], desired="stop")
    vm = workload.ledger.get("vm", "cx-v001")
    api = FakeApi({
        ("POST", "/vm/cx-v001/state"): [Answer(200, {"message": "started"})],
        ("DELETE", "/vm/cx-v001"): [Answer(200, {"message": "removed"})],
    })
    workload.op_vm_start(api, "w0", None, vm)        # type: ignore[arg-type]
    start = workload.requests[0]
    assert start.outcome == "pending" and vm.busy == start.id
    workload.op_vm_remove(api, "w1", None, vm)       # type: ignore[arg-type]
    remove = workload.requests[1]
    assert start.outcome == "superseded" and remove.outcome == "pending"
    assert remove.expect == "gone:u1" and vm.exists is False


def test_a_restart_waits_until_the_guest_has_booted() -> None:
    ledger = ledger_with_vms()
    ledger.get("vm", "cx-v001").info["since"] = 100.0

    def ops(now: float) -> set[str]:
        rng = random.Random(2)
        return {picked[0] for _ in range(400) if (picked := choose(rng, ledger, NODES, 5, now))}

    assert "vm_restart" not in ops(110.0)
    assert "vm_restart" in ops(140.0)


def test_a_snapshot_removal_failing_after_its_vm_went_does_not_bring_it_back(workload: Workload) -> None:
    ledger = workload.ledger
    ledger.put("vm", "cx-v001", uuid="u1", volumes=["cx-v001_vda"], desired="stop")
    ledger.put("volume", "cx-v001_vda", size=1, vm="cx-v001")
    snap = ledger.put("vmsnap", "cx-v001@vs001", vm="cx-v001", volumes=["cx-v001_vda"])
    ledger.put("vsnap", "cx-v001_vda@vs001", volume="cx-v001_vda", owner="cx-v001@vs001")
    api = FakeApi({
        ("DELETE", "/vm/cx-v001/snapshot"): [Answer(202, {"task_id": "t1"})],
        ("DELETE", "/vm/cx-v001"): [Answer(200, {"message": "removed"})],
        ("GET", "/vm"): [Answer(404, {"message": "VM not found."})],
        ("GET", "/tasks/t1"): [Answer(200, {"state": "FAILURE", "status": "Could not find snapshot"})],
    })
    workload.op_vm_snapshot_remove(api, "w0", None, snap)                        # type: ignore[arg-type]
    workload.op_vm_remove(api, "w1", None, ledger.get("vm", "cx-v001"))          # type: ignore[arg-type]
    workload.track_once(api)                                                     # type: ignore[arg-type]
    assert workload.requests[0].outcome == "failed"
    assert snap.exists is False and ledger.get("vsnap", "cx-v001_vda@vs001").exists is False
