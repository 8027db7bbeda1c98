"""The chaos invariants, on made-up observations: what counts as twice, as two writers, as lost."""

from __future__ import annotations

import json
from typing import Any

from pvc.lab.chaos import invariants
from pvc.lab.chaos.context import Clock, Context, Events, Probes, address_node
from pvc.lab.chaos.invariants import Sampler, executing, rbd_suspects
from pvc.lab.chaos.workload import Ledger, Request, Workload
from pvc.lab.plan import make_plan

PLAN = make_plan("t", 3)


def test_executing_reads_libvirt_and_falls_back_to_processes() -> None:
    domains = {"hv1": {"a": "running", "b": "paused"}, "hv2": {"b": "running", "c": "shutoff"}, "hv3": None}
    qemus = {"hv3": {"a": "T", "d": "S"}}        # hv3 frozen: its QEMU for a is stopped
    assert executing(domains, qemus) == {"a": ["hv1"], "b": ["hv2"], "d": ["hv3"]}


def test_ceph_addresses_name_lab_nodes() -> None:
    assert address_node(PLAN, "v1:10.200.0.2:0/4242") == "hv2"
    assert address_node(PLAN, "10.200.0.3:6800/12") == "hv3"
    assert address_node(PLAN, "10.9.9.9:0/1") == "10.9.9.9"


def node_of(address: str) -> str:
    return address_node(PLAN, address)


def test_two_nodes_watching_an_image_is_suspect_unless_its_vm_migrates() -> None:
    images = {"cx-v001_vda": {"watchers": ["10.200.0.1:0/1", "10.200.0.2:0/2"],
                              "lockers": ["10.200.0.1:0/1"]},
              "cx-v002_vda": {"watchers": ["10.200.0.1:0/3", "10.200.0.1:0/4"], "lockers": []},
              "cx-d001": {"watchers": [], "lockers": []}}
    vm = {"name": "cx-v001", "state": "start", "node": "hv1", "disks": [{"name": "vms/cx-v001_vda"}]}
    found = rbd_suspects(images, node_of, {"cx-v001": vm})
    assert list(found) == ["cx-v001_vda"]
    assert "hv1, hv2" in found["cx-v001_vda"] and "cx-v001" in found["cx-v001_vda"]
    assert rbd_suspects(images, node_of, {"cx-v001": {**vm, "state": "migrate"}}) == {}


class FakeProbes(Probes):
    """Answers of the nodes' libvirtds, one list per call of all_domains."""

    def __init__(self, answers: list[dict[str, dict[str, str] | None]]) -> None:
        super().__init__(PLAN)
        self.answers = answers

    def all_domains(self, nodes: Any = None) -> dict[str, dict[str, str] | None]:
        answer = self.answers.pop(0)
        names = [n.name for n in nodes] if nodes is not None else list(answer)
        return {n: answer.get(n) for n in names}

    def qemus(self, node: Any) -> dict[str, str]:
        return {}


def sampler(tmp_path: Any, answers: list[dict[str, dict[str, str] | None]]) -> Sampler:
    clock = Clock()
    ctx = Context(PLAN, 1, clock, Events(clock, tmp_path / "e.jsonl"), FakeProbes(answers))
    return Sampler(ctx, Workload(ctx))


def test_a_vm_seen_twice_twice_is_a_violation(tmp_path: Any) -> None:
    both = {"hv1": {"a": "running"}, "hv2": {"a": "running"}, "hv3": {}}
    s = sampler(tmp_path, [both, both])
    s.sample_once()
    assert [v.invariant for v in s.violations] == ["vm-twice"]
    assert s.where() == {"a": ["hv1", "hv2"]}


def test_a_migration_completing_between_two_questions_is_not(tmp_path: Any) -> None:
    both = {"hv1": {"a": "running"}, "hv2": {"a": "running"}, "hv3": {}}
    moved = {"hv1": {}, "hv2": {"a": "running"}}
    s = sampler(tmp_path, [both, moved])
    s.sample_once()
    assert s.violations == []
    assert s.where() == {"a": ["hv2"]}


def request(outcome: str, reason: str = "", **kw: Any) -> Request:
    return Request(id="op0001", t=1.0, worker="w0", op="vm_start", subject="cx-v001", method="POST",
                   path="/vm/cx-v001/state", status=200, outcome=outcome, reason=reason, **kw)


def test_requests_must_end_and_failures_need_a_reason() -> None:
    found = invariants.check_requests([request("pending", expect="running"), request("failed"),
                                       request("failed", "no node has memory"), request("lost", task_id="t1"),
                                       request("done"), request("refused", "409")], 9.0)
    assert [v.invariant for v in found] == ["request-unfinished", "failed-without-reason", "task-lost"]


def test_documents_must_parse_and_fit_their_model() -> None:
    raw = {"/vms/u1": (json.dumps({"uuid": "u1", "name": "x", "xml": "<domain/>"}).encode(), False),
           "/vms/u1/status": (b'{"running": "maybe"}', False),
           "/networks/3201": (b"{not json", False),
           "/tasks": (b"", False)}
    docs, bad = invariants.parse_documents(raw, 1.0)
    assert sorted(docs) == ["/vms/u1", "/vms/u1/status"]
    assert sorted((v.invariant, v.subject) for v in bad) == [("document-unparsable", "/networks/3201"),
                                                             ("document-unparsable", "/vms/u1/status")]


def test_the_ledger_against_zookeeper_and_ceph() -> None:
    ledger = Ledger()
    ledger.put("vm", "cx-v001", uuid="u1", volumes=["cx-v001_vda"], desired="start")
    ledger.put("vm", "cx-v002", False, uuid="u2", volumes=[])
    ledger.put("vm", "cx-v003", uuid="u3", volumes=[])
    ledger.put("volume", "cx-v001_vda", size=64, vm="cx-v001")
    ledger.put("volume", "cx-d001", size=32, vm="")
    ledger.put("volume", "cx-d002", None, size=None, vm="")
    ledger.put("network", "3201", False)
    docs = {"/vmnames/cx-v001": "u1", "/vms/u1": {"name": "cx-v001"},
            "/vmnames/cx-v002": "u2", "/vms/u2": {"name": "cx-v002"},                 # removed, still there
            "/ceph/volumes/vms/cx-v001_vda": {}, "/ceph/volumes/vms/cx-d001": {},
            "/ceph/volumes/vms/cx-d002": {},                                          # unknown: doc only
            "/networks/3201": {}}
    images = {"cx-v001_vda": {"size": 64, "snapshots": []}, "cx-d001": {"size": 48, "snapshots": []}}
    found = {(v.invariant, v.subject) for v in invariants.compare_ledger(ledger, docs, images, 1.0)}
    assert found == {("document-leftover", "vm cx-v002"), ("document-lost", "vm cx-v003"),
                     ("document-half-written", "volume cx-d001"),                    # 48 in Ceph, 32 accepted
                     ("document-half-written", "volume cx-d002"), ("document-leftover", "network 3201")}


def test_a_snapshot_left_in_librbds_trash_is_a_leftover() -> None:
    """librbd renames a snapshot to a UUID in its trash namespace as removal's first step: one left
    there is a removal cut short (the name the workload knows is its original one)."""
    images = {"cx-p005_vda": {"size": 64, "snapshots": [], "trashed": ["cs003"]},
              "other": {"size": 1, "snapshots": [], "trashed": ["x"]}}
    docs = {"/ceph/volumes/vms/cx-p005_vda": {}}
    found = {(v.invariant, v.subject) for v in invariants.compare_ledger(Ledger(), docs, images, 1.0)}
    assert found == {("document-leftover", "snapshot cx-p005_vda@cs003")}


def test_vms_run_where_their_documents_say() -> None:
    ledger = Ledger()
    ledger.put("vm", "a", desired="start")
    ledger.put("vm", "b", desired="stop")
    docs = {"u1": {"name": "a", "state": "start", "node": "hv1"},
            "u2": {"name": "b", "state": "start", "node": "hv2"},
            "u3": {"name": "c", "state": "stop", "node": "hv3"},
            "u4": {"name": "d", "state": "start", "node": "hv1"},
            "u5": {"name": "e", "state": "fail", "node": "hv1"}}
    where = {"u1": ["hv1"], "u2": ["hv2"], "u3": ["hv3"], "u4": ["hv2"]}
    found = {(v.invariant, v.subject) for v in invariants.check_vms(docs, {}, where, ledger, 1.0)}
    assert found == {("vm-state-lost", "vm b"), ("vm-running-but-stopped", "vm c"),
                     ("vm-running-elsewhere", "vm d"), ("failed-without-reason", "vm e")}


def test_orphan_domains() -> None:
    found = invariants.check_orphans({"hv1": {"u1": "running", "zz": "shutoff"}, "hv2": None}, {"u1"}, 1.0)
    assert [(v.invariant, v.subject) for v in found] == [("orphan-domain", "zz"), ("orphan-domain", "hv2")]


def test_a_qemu_replaced_without_request_or_fault_is_a_violation(tmp_path: Any) -> None:
    s = sampler(tmp_path, [])
    s.workload.items = {"cx-v001": {"uuid": "a", "name": "cx-v001"}}
    s.check_restarts({"hv1": {"a": (100, "S")}})
    s.check_restarts({"hv1": {"a": (100, "S")}, "hv2": {}})
    assert s.violations == []
    s.check_restarts({"hv2": {"a": (150, "S")}})            # elsewhere: a migration or a recovery
    s.check_restarts({"hv2": {"a": (200, "S")}})            # same node, new QEMU, nobody asked
    assert [(v.invariant, v.subject) for v in s.violations] == [("vm-restarted-unasked", "cx-v001")]


def test_a_qemu_replaced_after_a_request_or_during_a_fault_is_not(tmp_path: Any) -> None:
    s = sampler(tmp_path, [])
    s.workload.items = {"cx-v001": {"uuid": "a", "name": "cx-v001"},
                        "cx-v002": {"uuid": "b", "name": "cx-v002"}}
    s.check_restarts({"hv1": {"a": (100, "S"), "b": (101, "S")}})
    s.workload.requests.append(Request(id="op0001", t=s.ctx.clock.now(), worker="w0", op="vm_restart",
                                       subject="cx-v001", method="POST", path="/vm/cx-v001/state",
                                       status=200, outcome="done"))
    s.ctx.fault_began("1:kill_pvcnoded:hv1", s.ctx.clock.now())
    s.check_restarts({"hv1": {"a": (200, "S"), "b": (201, "S")}})
    assert s.violations == []


def test_an_accepted_snapshot_missing_from_ceph_is_lost_unless_a_request_is_on_it(tmp_path: Any) -> None:
    s = sampler(tmp_path, [])
    ledger = s.workload.ledger
    ledger.put("volume", "cx-d001", size=1, vm="")
    ledger.put("vsnap", "cx-d001@cs001", volume="cx-d001", owner="")
    ledger.put("volume", "cx-v001_vda", size=1, vm="cx-v001")
    ledger.put("vsnap", "cx-v001_vda@vs001", volume="cx-v001_vda", owner="cx-v001@vs001")
    images = {"cx-d001": {"snapshots": []}, "cx-v001_vda": {"snapshots": []}}
    s.workload.requests.append(Request(id="op0001", t=0.0, worker="w0", op="vm_snapshot_remove",
                                       subject="cx-v001@vs001", method="DELETE", path="/vm/cx-v001/snapshot",
                                       status=202, outcome="pending", expect="task"))
    s.check_vanished(images, 10.0)
    s.check_vanished(images, 20.0)
    assert s.violations == []
    s.check_vanished(images, 30.0)
    assert [(v.invariant, v.subject) for v in s.violations] == [("document-lost", "vms/cx-d001@cs001")]
    s.check_vanished(images, 60.0)
    assert len(s.violations) == 1


def test_a_watch_no_domain_explains_is_stale() -> None:
    images = {"cx-v001_vda": {"watchers": ["10.200.0.1:0/1", "10.200.0.2:0/2"]},
              "cx-d001": {"watchers": ["10.200.0.3:0/3"]}, "cx-d002": {"watchers": []}}
    vms = {"cx-v001": {"name": "cx-v001", "uuid": "a", "state": "stop",
                       "disks": [{"name": "vms/cx-v001_vda"}]}}
    found = invariants.stale_watchers(images, node_of, vms, {"a": {"hv1"}})
    assert sorted(found) == ["cx-d001", "cx-v001_vda"]
    assert "hv2 (10.200.0.2:0/2)" in found["cx-v001_vda"] and "hv1 (" not in found["cx-v001_vda"]


def test_stale_watches_count_after_the_grace_unless_a_request_is_on_them(tmp_path: Any) -> None:
    s = sampler(tmp_path, [])
    s.present = {"a": {"hv1"}}
    images = {"cx-v001_vda": {"watchers": ["10.200.0.2:0/2"]}}
    vms = {"cx-v001": {"name": "cx-v001", "uuid": "a", "state": "stop",
                       "disks": [{"name": "vms/cx-v001_vda"}]}}
    s.check_stale(images, vms, 10.0)
    s.check_stale(images, vms, 50.0)
    assert s.violations == []
    s.check_stale(images, vms, 80.0)
    assert [v.invariant for v in s.violations] == ["rbd-stale-watch"]
    s.workload.requests.append(request("sending"))          # a request on cx-v001 in flight
    s._reported_stale.clear()
    s._stale.clear()
    s.check_stale(images, vms, 100.0)
    s.check_stale(images, vms, 200.0)
    assert len(s.violations) == 1


def test_the_stale_watch_grace_starts_over_at_each_heal(tmp_path: Any) -> None:
    """A SIGKILLed client's watch lasts Ceph's watch timeout from the last re-peering (30-min
    bench, seed 4242: the watch of a QEMU killed by a self-fence outlived an OSD's return)."""
    s = sampler(tmp_path, [])
    s.present = {"a": {"hv1"}}
    images = {"cx-v001_vda": {"watchers": ["10.200.0.2:0/2"]}}
    vms = {"cx-v001": {"name": "cx-v001", "uuid": "a", "state": "stop",
                       "disks": [{"name": "vms/cx-v001_vda"}]}}
    s.check_stale(images, vms, 10.0)
    s.ctx.events.items.append({"t": 40.0, "event": "heal", "kind": "osd_kill"})
    s.check_stale(images, vms, 80.0)
    assert s.violations == []                      # 40 s after the heal
    s.check_stale(images, vms, 101.0)
    assert [v.invariant for v in s.violations] == ["rbd-stale-watch"]
    assert "no PVC daemon logged that client" in s.violations[0].detail


def test_a_paused_domain_left_behind_is_reported() -> None:
    ledger = Ledger()
    docs = {"u1": {"name": "a", "state": "stop", "node": "hv1"},
            "u2": {"name": "b", "state": "start", "node": "hv2"},
            "u3": {"name": "c", "state": "start", "node": "hv3"}}
    where = {"u2": ["hv2"], "u3": []}
    held = invariants.present({"libvirt": {"hv1": {"u1": "paused"}, "hv2": {"u2": "running"},
                                           "hv3": {"u2": "paused", "u3": "paused", "zz": "shutoff"}}})
    found = {(v.invariant, v.subject) for v in invariants.check_vms(docs, {}, where, ledger, 1.0, held)}
    assert found == {("vm-running-elsewhere", "vm a"), ("vm-running-elsewhere", "vm b"),
                     ("vm-not-running", "vm c")}
