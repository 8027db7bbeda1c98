"""Orphans (issue #17): the ownership mark a node puts on every domain it starts, and the
reconciler destroying the domains of this cluster whose VM is gone, over the in-memory store and
FakeHypervisor of test_vm_reconciler (no ZooKeeper)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import pytest

from pvc.adapters.hypervisor.fake import FakeHypervisor, FakeHypervisorNetwork
from pvc.core import domainxml
from pvc.core.domainxml import DomainEditError, OwnerMark, owner_of
from pvc.node.vms import ReconcilerSettings, VMReconciler
from pvc.node.vms.orphans import Verdict, verdict
from tests.unit.test_vm_reconciler import FAST, MemoryStore, settle, xml

UUID = "6f1b3c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e"
OTHER = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def definition(uuid: str = UUID, metadata: str = "") -> domainxml.Definition:
    return domainxml.parse_definition(
        f"<domain type='kvm'><name>m1</name><uuid>{uuid}</uuid>{metadata}"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices/></domain>")


# -- the mark (pure) ------------------------------------------------------------------------------

def test_start_xml_bears_the_mark_and_it_reads_back() -> None:
    out = domainxml.prepare_for_host(definition(), False, owner=OwnerMark("c-1", UUID))
    assert owner_of(out) == OwnerMark("c-1", UUID)
    assert domainxml.parse(out).uuid == UUID          # still a domain PVC parses


def test_without_owner_nothing_is_added() -> None:
    assert "metadata" not in domainxml.prepare_for_host(definition(), False)


def test_a_definition_cannot_forge_the_mark_and_keeps_its_own_metadata() -> None:
    forged = (f"<metadata><app:x xmlns:app='urn:app'>keep</app:x>"
              f"<o:owner xmlns:o='{domainxml.OWNER_NS}' cluster='evil' vm='{OTHER}'/></metadata>")
    out = domainxml.prepare_for_host(definition(metadata=forged), False, owner=OwnerMark("c-1", UUID))
    assert owner_of(out) == OwnerMark("c-1", UUID)
    assert out.count(domainxml.OWNER_NS) == 1
    assert "urn:app" in out and ">keep<" in out


def test_the_mark_must_name_the_definitions_uuid() -> None:
    with pytest.raises(DomainEditError, match="ownership mark names VM"):
        domainxml.prepare_for_host(definition(), False, owner=OwnerMark("c-1", OTHER))


@pytest.mark.parametrize("cluster", ["", "has space", "<x>", "a" * 200])
def test_bad_cluster_ids_are_refused(cluster: str) -> None:
    with pytest.raises(DomainEditError, match="cluster id"):
        OwnerMark(cluster, UUID)


@pytest.mark.parametrize("text", [
    "not xml",
    f"<domain><uuid>{UUID}</uuid></domain>",
    f"<domain><metadata><o:owner xmlns:o='{domainxml.OWNER_NS}' cluster='c' vm='nope'/></metadata></domain>",
    f"<domain><metadata><owner cluster='c' vm='{UUID}'/></metadata></domain>",     # no namespace
    f"<domain><metadata><o:owner xmlns:o='{domainxml.OWNER_NS}' cluster='c' vm='{UUID}'/>"
    f"<p:owner xmlns:p='{domainxml.OWNER_NS}' cluster='d' vm='{UUID}'/></metadata></domain>",  # two
])
def test_unreadable_or_missing_marks_read_as_none(text: str) -> None:
    assert owner_of(text) is None


def test_verdicts() -> None:
    mine = OwnerMark("c-1", UUID)
    assert verdict(None, "c-1", UUID, False) is Verdict.UNMARKED
    assert verdict(OwnerMark("c-2", UUID), "c-1", UUID, False) is Verdict.OTHER_CLUSTER
    assert verdict(OwnerMark("c-1", OTHER), "c-1", UUID, False) is Verdict.OTHER_CLUSTER
    assert verdict(mine, "", UUID, False) is Verdict.OTHER_CLUSTER      # this cluster has no id yet
    assert verdict(mine, "c-1", UUID, True) is Verdict.OWNED
    assert verdict(mine, "c-1", UUID, False) is Verdict.ORPHAN


# -- the reconciler ------------------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Any) -> Iterator[tuple[MemoryStore, FakeHypervisor, VMReconciler]]:
    store, net = MemoryStore(), FakeHypervisorNetwork()
    hv = FakeHypervisor(uri="fake:///hv1", network=net)
    store.add_node("hv1", hv)
    settings = ReconcilerSettings(**{**FAST.__dict__, "console_dir": str(tmp_path)})
    rec = VMReconciler(store, hv, "hv1", settings)
    yield store, hv, rec
    rec.stop()


def foreign(hv: FakeHypervisor, name: str, cluster: str | None) -> str:
    """Start a domain straight on the hypervisor, with a mark of `cluster` (None: unmarked)."""
    uuid = str(uuidlib.uuid4())
    owner = OwnerMark(cluster, uuid) if cluster else None
    hv.start(domainxml.prepare_for_host(domainxml.parse_definition(xml(name, uuid)), False, owner=owner))
    return uuid


def test_a_started_vm_bears_this_clusters_mark(node: Any) -> None:
    store, hv, rec = node
    uuid = store.add_vm("vm1", state="start")
    settle(rec)
    assert owner_of(hv.live_xml(uuid)) == OwnerMark("test-cluster", uuid)


def test_the_domain_of_a_removed_vm_is_destroyed_and_counted(node: Any) -> None:
    store, hv, rec = node
    uuid = store.add_vm("vm1", state="start")
    settle(rec)
    assert hv.is_running(uuid)
    with store.lock:
        del store.vms[uuid]                  # removed behind the node's back
    rec.full_pass()
    assert not hv.is_running(uuid)
    assert rec.orphans_destroyed == 1


def test_unmarked_and_other_clusters_domains_are_left_alone(node: Any) -> None:
    _store, hv, rec = node
    unmarked = foreign(hv, "manual", None)
    theirs = foreign(hv, "theirs", "another-cluster")
    for _ in range(3):
        rec.full_pass()
    assert hv.is_running(unmarked) and hv.is_running(theirs)
    assert rec.orphans_destroyed == 0
    # their marks are read once, not at every pass
    assert sum(1 for op, u in hv.calls if op == "live_xml" and u in (unmarked, theirs)) == 2


def test_a_miss_in_the_list_alone_destroys_nothing(node: Any) -> None:
    """The VM exists, but the pass's bulk read did not have it (defined after the list was read):
    the znode is read again, and the domain stays."""
    store, hv, rec = node
    uuid = store.add_vm("vm1", state="start")
    settle(rec)
    rec.full_pass(records={}, statuses={})
    assert hv.is_running(uuid)
    assert rec.orphans_destroyed == 0


def test_a_vm_removed_while_its_start_runs_is_torn_down(node: Any) -> None:
    store, hv, rec = node
    uuid = store.add_vm("vm1", state="start")
    real_start = hv.start

    def start_then_removed(text: str) -> None:
        real_start(text)
        with store.lock:
            store.vms.pop(uuid, None)        # the remove lands while the start is in flight
    hv.start = start_then_removed            # type: ignore[method-assign]
    rec.kick(uuid)
    settle(rec)
    assert not hv.is_running(uuid)
    assert rec.orphans_destroyed == 1
