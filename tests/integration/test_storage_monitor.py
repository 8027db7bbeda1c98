"""StorageMonitor against a real ZooKeeper and FakeStorage: the /ceph documents it keeps.

What matters here is the ZooKeeper side: documents created, merged (the OSD's device, the pool's
tier survive), removed when their object is gone for two passes, written only when they change,
and volume_info called only for volumes the monitor has not seen before.
"""

from __future__ import annotations

from typing import Any

import pytest

from pvc.adapters.ceph import StorageUnavailable
from pvc.adapters.ceph.fake import FakeStorage
from pvc.core import schema
from pvc.core.zk import ZK
from pvc.node.services.clusterhealth import ClusterChecks
from pvc.node.storage import SETTLE_PASSES, StorageMonitor


def version(zk: ZK, path: str) -> int:
    raw = zk.get_raw(path)
    assert raw is not None, path
    return int(raw[1].version)


def passes(monitor: StorageMonitor, n: int = SETTLE_PASSES) -> None:
    for _ in range(n):
        monitor.run_once()


@pytest.fixture
def ceph() -> FakeStorage:
    storage = FakeStorage(clock=lambda: 1_800_000_000.0)
    storage.create_pool("vms", 16, 3, 2)
    storage.create_volume("vms", "web1_vda", 10 << 30)
    storage.create_volume("vms", "web1_vdb", 1 << 30)
    return storage


@pytest.fixture
def monitor(zk: ZK, ceph: FakeStorage) -> StorageMonitor:
    return StorageMonitor(zk, ceph, "hv1", clock=lambda: 1234.5)


def test_first_passes_fill_the_ceph_tree(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    duration = monitor.run_once()
    assert duration == monitor.last_duration and duration > 0
    status = zk.get(schema.CEPH_STATUS)
    assert (status["node"], status["time"]) == ("hv1", 1234.5)
    assert status["status"]["fsid"] == ceph.cluster_fsid and status["health"]["status"] == "HEALTH_OK"
    assert "cluster:" in status["status_text"] and "RAW STORAGE" in status["util_text"]
    assert status["util"]["pools"][0]["name"] == "vms"
    assert zk.children(schema.CEPH_OSDS) == ["0", "1", "2"]
    osd = zk.get(schema.osd(1))
    assert (osd["id"], osd["node"], osd["device"], osd["db_device"]) == ("1", "hv2", "", "")
    assert osd["stats"]["node"] == "hv2" and osd["stats"]["up"] == 1 and osd["stats"]["state"] == "exists,up"
    assert zk.children(schema.CEPH_POOLS) == []            # an API operation may be writing it right now
    monitor.run_once()
    pool = zk.get(schema.pool("vms"))
    assert (pool["name"], pool["tier"], pool["pgs"], pool["copies"], pool["mincopies"]) == (
        "vms", "default", 16, 3, 2)
    assert pool["stats"]["id"] == 1 and set(pool["stats"]) >= {"stored_bytes", "free_bytes", "read_ops"}
    assert zk.children(schema.pool_volumes("vms")) == []
    monitor.run_once()
    assert zk.children(schema.pool_volumes("vms")) == ["web1_vda", "web1_vdb"]
    vol = zk.get(schema.volume("vms", "web1_vda"))
    assert (vol["name"], vol["pool"], vol["stats"]["size"]) == ("web1_vda", "vms", 10 << 30)


def test_existing_documents_keep_their_own_fields(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    zk.put(schema.osd(0), {"id": "0", "node": "hv1", "device": "/dev/sdb", "db_device": "osd-db/osd-0",
                           "service": "direct", "stats": {}})
    ceph.ensure_tier_rule("hdd")
    ceph.create_pool("fast", 32, 2, 1, "hdd_tier")
    zk.put(schema.pool("vms"), {"name": "vms", "pgs": 16, "tier": "ssd", "copies": 3, "mincopies": 2,
                                "stats": {}})
    passes(monitor)
    osd = zk.get(schema.osd(0))
    assert (osd["device"], osd["db_device"], osd["service"]) == ("/dev/sdb", "osd-db/osd-0", "direct")
    assert osd["stats"]["class"] == "hdd"
    assert zk.get(schema.pool("vms"))["tier"] == "ssd" and zk.get(schema.pool("vms"))["stats"]["id"] == 1
    assert zk.get(schema.pool("fast"))["tier"] == "hdd"           # found in Ceph: tier from its CRUSH rule
    assert zk.get(schema.pool("fast"))["copies"] == 2


def test_only_changed_documents_are_written(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    passes(monitor, 3)
    paths = [schema.osd(0), schema.osd(2), schema.pool("vms"), schema.volume("vms", "web1_vda")]
    before = {p: version(zk, p) for p in paths}
    status = version(zk, schema.CEPH_STATUS)
    monitor.run_once()
    assert {p: version(zk, p) for p in paths} == before
    assert version(zk, schema.CEPH_STATUS) == status + 1          # the status always (its time moves)
    ceph.set_osd_in(2, False)
    monitor.run_once()
    assert version(zk, schema.osd(2)) == before[schema.osd(2)] + 1
    assert zk.get(schema.osd(2))["stats"]["in"] == 0
    assert version(zk, schema.osd(0)) == before[schema.osd(0)]


def test_volume_info_only_for_new_volumes(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    for i in range(200):
        ceph.create_volume("vms", f"bulk{i:03d}", 1 << 20)
    passes(monitor, 3)
    assert len(zk.children(schema.pool_volumes("vms"))) == 202
    ceph.calls.clear()
    passes(monitor, 3)
    ops = [op for op, _ in ceph.calls]
    assert "volume_info" not in ops and ops.count("list_volumes") == 3


def test_vanished_objects_lose_their_documents(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    ceph.create_snapshot("vms", "web1_vdb", "s1")
    passes(monitor, 3)
    zk.put(schema.snapshot("vms", "web1_vdb", "s1"), {"pool": "vms", "volume": "web1_vdb", "snapshot": "s1",
                                                       "stats": {}})
    zk.put(schema.osd(7), {"id": "7", "node": "hv9", "device": "/dev/sdx", "db_device": "", "stats": {}})
    ceph.remove_volume("vms", "web1_vdb")
    monitor.run_once()
    assert zk.exists(schema.volume("vms", "web1_vdb")) and zk.exists(schema.osd(7))   # not yet: settle
    monitor.run_once()
    assert not zk.exists(schema.volume("vms", "web1_vdb")) and not zk.exists(schema.osd(7))
    assert not zk.exists(schema.volume_snapshots("vms", "web1_vdb"))
    assert zk.exists(schema.volume("vms", "web1_vda"))
    ceph.remove_pool("vms")
    passes(monitor)
    assert zk.children(schema.CEPH_POOLS) == [] and not zk.exists(schema.pool_volumes("vms"))


def test_a_volume_back_in_time_is_not_removed(zk: ZK, ceph: FakeStorage, monitor: StorageMonitor) -> None:
    """A document whose volume is missing for one pass only (a rename in flight) stays."""
    passes(monitor, 3)
    ceph.rename_volume("vms", "web1_vdb", "tmp")
    monitor.run_once()
    ceph.rename_volume("vms", "tmp", "web1_vdb")
    passes(monitor, 3)
    assert zk.children(schema.pool_volumes("vms")) == ["web1_vda", "web1_vdb"]


def test_unreachable_ceph_raises_and_writes_nothing(zk: ZK, ceph: FakeStorage,
                                                    monitor: StorageMonitor) -> None:
    ceph.available = False
    with pytest.raises(StorageUnavailable):
        monitor.run_once()
    assert not zk.exists(schema.CEPH_STATUS)


def test_the_monitor_takes_a_storage_factory(zk: ZK, ceph: FakeStorage) -> None:
    """The daemon hands it NodeCeph's one connection, created on first use."""
    made: list[Any] = []
    monitor = StorageMonitor(zk, lambda: made.append(1) or ceph, "hv2")
    monitor.run_once()
    assert zk.get(schema.CEPH_STATUS)["node"] == "hv2" and made


def test_cluster_status_counts_storage_and_ceph_faults(zk: ZK, ceph: FakeStorage,
                                                       monitor: StorageMonitor) -> None:
    from pvc.cluster import faults, state

    passes(monitor, SETTLE_PASSES + 1)
    summary = state.storage_summary(zk)
    assert summary["osds"] == {"total": 3, "up,in": 3}
    assert (summary["pools"], summary["volumes"], summary["snapshots"]) == (1, 2, 0)
    assert summary["disk"]["total"] > 0 and [d["id"] for d in summary["detail"]] == ["0", "1", "2"]
    assert faults.load_faults(zk) == []
    ceph.set_osd_up(2, False)
    monitor.run_once()
    assert state.storage_summary(zk)["osds"] == {"total": 3, "up,in": 2, "down,in": 1}
    # the primary's cluster checks raise them from the status the pass keeps in /ceph/status
    ClusterChecks(zk, clock=lambda: 1234.5).run_once()
    (fault,) = faults.load_faults(zk)           # one per health check, named as upstream names them
    assert fault.id == "CEPH_WARN_OSD_DOWN" and fault.health_delta == 10
    assert fault.message.startswith("HEALTH_WARN OSD_DOWN: ")
