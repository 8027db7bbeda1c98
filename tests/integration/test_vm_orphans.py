"""Orphans over a real ZooKeeper (issue #17): remove vs an in-flight start, the cluster id, and
a marked domain destroyed once its VM is gone (libvirt's test driver keeps the live metadata)."""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.hypervisor.fake import FakeHypervisor, FakeHypervisorNetwork
from pvc.cluster import clusterinfo
from pvc.cluster import vms as vms_mod
from pvc.core import domainxml, schema
from pvc.core.errors import Conflict
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.zk import ZK, encode
from pvc.node.vms import ReconcilerSettings, VMReconciler, ZKStore


def domain(name: str, uuid: str) -> str:
    return f"""<domain type='kvm'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='pty'><target port='0'/></serial></devices>
</domain>"""


def wait(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def define(zk: ZK, name: str, state: str = "start") -> str:
    uuid = str(uuidlib.uuid4())
    record = VMRecord(uuid=uuid, name=name, xml=domain(name, uuid), state=state, node="hv1")
    tx = zk.transaction()
    tx.create(schema.vm(uuid), encode(record.doc()))
    tx.create(schema.vm_name(name), encode(uuid))
    zk.commit(tx)
    return uuid


class GatedHypervisor(FakeHypervisor):
    """A start that blocks until the test lets it finish (a slow QEMU, a slow Ceph)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def start(self, xml: str) -> None:
        self.entered.set()
        assert self.release.wait(30), "the test never released the start"
        super().start(xml)


def reconciler(zk: ZK, hv: Any, tmp_path: Path) -> VMReconciler:
    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run", domain_state="ready").doc())
    if not zk.exists(schema.node_alive("hv1")):
        zk.create(schema.node_alive("hv1"), {"pid": 1}, ephemeral=True)
    settings = ReconcilerSettings(interval=0.5, shutdown_timeout=2, poll_s=0.05, start_lock_timeout=2,
                                  console_dir=str(tmp_path / "console"))
    rec = VMReconciler(ZKStore(zk), hv, "hv1", settings, zk=zk)
    rec.start()
    return rec


@pytest.fixture
def gated(zk: ZK, tmp_path: Path) -> Iterator[tuple[ZK, GatedHypervisor, VMReconciler]]:
    hv = GatedHypervisor(uri="fake:///hv1", network=FakeHypervisorNetwork())
    rec = reconciler(zk, hv, tmp_path)
    yield zk, hv, rec
    hv.release.set()
    rec.stop()


def test_cluster_id_is_made_once_and_kept(zk: ZK) -> None:
    first = clusterinfo.cluster_id(zk)
    assert first and clusterinfo.cluster_id(zk) == first
    assert clusterinfo.ensure_cluster(zk, "renamed").id == first
    assert clusterinfo.get_cluster(zk).name == "renamed"


def test_a_remove_waits_for_the_start_in_flight_and_leaves_nothing_running(gated: Any) -> None:
    zk, hv, _rec = gated
    uuid = define(zk, "orph1")
    assert hv.entered.wait(15), "the node never began the start"
    outcome: dict[str, Any] = {}

    def remove() -> None:
        try:
            outcome["message"] = vms_mod.undefine(zk, uuid, timeout=30)
        except Exception as exc:       # reported below
            outcome["error"] = exc
    remover = threading.Thread(target=remove)
    remover.start()
    wait("the remove to write stop", lambda: zk.get(schema.vm(uuid))["state"] == "stop")
    # The start holds the VM's start lock: the remove cannot delete the VM while it runs.
    assert remover.is_alive() and zk.exists(schema.vm(uuid))
    hv.release.set()
    remover.join(40)
    assert not remover.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["message"] == 'Undefined VM "orph1" from the cluster.'
    assert not zk.exists(schema.vm(uuid))
    wait("no domain left", lambda: not hv.is_running(uuid))
    assert uuid not in hv.list_domains()


def test_the_remove_of_a_vm_whose_start_never_finishes_is_refused(gated: Any) -> None:
    zk, hv, _rec = gated
    uuid = define(zk, "orph2")
    assert hv.entered.wait(15)
    with pytest.raises(Conflict, match="is being started on node hv1"):
        vms_mod.undefine(zk, uuid, timeout=1)
    assert zk.get(schema.vm(uuid))["state"] == "stop"          # stopped, not removed
    hv.release.set()
    wait("the late start torn down", lambda: not hv.is_running(uuid) and hv.entered.is_set())


def test_the_start_lock_is_queued_for_again_when_its_parent_vanishes(zk: ZK) -> None:
    """The holder before us deletes the lock's parent as it lets go: a contender that made sure of
    the parent just before must queue again, not give up at once (CI: a remove right behind a
    start was refused as 'did not finish within 60 s' in well under a second)."""
    from kazoo.exceptions import NoNodeError

    from pvc.cluster.vms import startlock
    uuid = str(uuidlib.uuid4())
    real_lock = zk.lock
    vanished = {"times": 0}

    def lock(path: str, identifier: str) -> Any:
        made = real_lock(path, identifier)
        if vanished["times"] < 2:                        # the first two tries lose the race
            vanished["times"] += 1

            def acquire(**_kw: Any) -> bool:
                raise NoNodeError()
            made.acquire = acquire
        return made
    zk.lock = lock                                       # type: ignore[method-assign]
    try:
        began = time.monotonic()
        with startlock.start_lock(zk, uuid, 5, "remove") as got:
            assert got and vanished["times"] == 2
            assert zk.children(startlock.start_lock_path(uuid))      # held: our contender node
        assert time.monotonic() - began < 5
    finally:
        zk.lock = real_lock                              # type: ignore[method-assign]
    assert not zk.exists(startlock.start_lock_path(uuid))


def test_a_marked_domain_whose_vm_is_gone_is_destroyed(zk: ZK, tmp_path: Path) -> None:
    libvirt_hv = pytest.importorskip("pvc.adapters.hypervisor").LibvirtHypervisor
    pytest.importorskip("libvirt")
    hv = libvirt_hv("test:///default", kvm=False)
    rec = reconciler(zk, hv, tmp_path)
    try:
        uuid = define(zk, "orph3")
        wait("start", lambda: hv.is_running(uuid))
        mark = domainxml.owner_of(hv.live_xml(uuid))
        assert mark == domainxml.OwnerMark(clusterinfo.cluster_id(zk), uuid)
        zk.delete(schema.vm(uuid))                  # gone behind the API's back (no stop first)
        zk.delete(schema.vm_name("orph3"))
        wait("the orphan destroyed", lambda: not hv.is_running(uuid))
        assert rec.orphans_destroyed == 1
    finally:
        rec.stop()
        for u, info in hv.list_domains().items():
            if info.name.startswith("orph"):
                hv.destroy(u)
        hv.close()
