"""Crash safety on a real ZooKeeper: a resumable task whose worker died is queued again, and the
per-image locks keep two of PVC's operations on one RBD image apart (issue #17: a worker aborted
inside librbd with a snapshot removal and a live resize of the same image in flight)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from pvc.adapters.ceph.base import StorageInUse, image_guarded, set_image_guard
from pvc.cluster import tasks as tasks_mod
from pvc.cluster.storage import imagelock
from pvc.core import schema, taskkinds
from pvc.core.taskkinds import SnapshotRemoveArgs
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer


def _claim_and_die(zk_server: ZooKeeperServer, zk_root: str, task_id: str) -> None:
    """Claim the task from a session of its own, then lose that session (the worker died)."""
    worker = ZK([zk_server.address], zk_root, session_timeout=6).start()
    try:
        [(task, version)] = [(t, v) for t, v in tasks_mod.load_tasks(worker) if t.id == task_id]
        assert tasks_mod.claim(worker, task, version, "hv2") is not None
    finally:
        worker.stop()        # the ephemeral owner goes with the session


def test_a_resumable_task_is_queued_again_until_its_attempts_run_out(zk: ZK, zk_server: ZooKeeperServer,
                                                                      zk_root: str) -> None:
    args = SnapshotRemoveArgs(uuid="0" * 8 + "-0000-0000-0000-" + "0" * 12, snapshot_name="s")
    task = tasks_mod.submit(zk, taskkinds.VM_REMOVE_SNAPSHOT, args)
    for attempt in range(1, taskkinds.MAX_ATTEMPTS + 1):
        _claim_and_die(zk_server, zk_root, task.id)
        assert tasks_mod.reap_orphans(zk) == [task.id]
        record = tasks_mod.get_task(zk, task.id)
        assert record.attempts == attempt
        if attempt < taskkinds.MAX_ATTEMPTS:
            assert record.state == "PENDING" and record.worker == ""
            assert "Worker on node hv2 stopped" in record.status and "queued again" in record.status
    assert record.state == "FAILURE" and "queued again" not in record.status


def test_any_other_task_fails_when_its_worker_dies(zk: ZK, zk_server: ZooKeeperServer, zk_root: str) -> None:
    task = tasks_mod.submit(zk, taskkinds.CLUSTER_SELFTEST, {})
    _claim_and_die(zk_server, zk_root, task.id)
    assert tasks_mod.reap_orphans(zk) == [task.id]
    record = tasks_mod.get_task(zk, task.id)
    assert record.state == "FAILURE" and "Worker on node hv2 stopped" in record.status


@pytest.fixture
def guarded(zk: ZK) -> Iterator[None]:
    set_image_guard(imagelock.guard(zk, "test process"))
    yield
    set_image_guard(None)


def test_two_operations_on_one_image_take_turns(zk: ZK, guarded: None) -> None:
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with image_guarded([("vms", "a")], "remove snapshot vms/a@s"):
            inside.set()
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with image_guarded([("vms", "a")], "resize volume vms/a"):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    # another image is not held up, and the lock's znode is tidied away by its last holder
    assert not zk.exists(imagelock.image_lock_path("vms", "a"))


def test_a_held_image_is_refused_naming_its_holder(zk: ZK, guarded: None) -> None:
    other = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with imagelock.image_locks(zk, [("vms", "b")], "roll back to snapshot vms/b@s (pvcworkerd on hv2)"):
            other.set()
            done.wait(20)

    thread = threading.Thread(target=hold)
    thread.start()
    assert other.wait(10)
    try:
        mine = "remove snapshot vms/b@t (pvcapid on hv1)"
        with pytest.raises(StorageInUse) as refused, \
                imagelock.image_locks(zk, [("vms", "b")], mine, timeout=1):
            pass
        held = "volume vms/b is busy with roll back to snapshot vms/b@s (pvcworkerd on hv2)"
        assert held in refused.value.message
        assert "nothing was changed" in refused.value.message
    finally:
        done.set()
        thread.join()


def test_the_guard_is_reentrant_within_a_thread(zk: ZK, guarded: None) -> None:
    """An undo inside a guarded block (removing the snapshot just made) does not wait for itself."""
    with image_guarded([("vms", "c"), ("vms", "d")], "snapshot vms/c, vms/d"), \
            image_guarded([("vms", "c")], "remove snapshot vms/c@x"):
        assert zk.exists(imagelock.image_lock_path("vms", "c"))
    assert not zk.exists(imagelock.image_lock_path("vms", "c"))
    assert schema.LOCKS in imagelock.image_lock_path("vms", "c")
