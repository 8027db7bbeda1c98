"""The ZooKeeper state layer against a real server: migrations, CAS, pipelined reads, ACLs."""

from __future__ import annotations

import threading

import pytest
from kazoo.exceptions import NoAuthError

from pvc.cluster import backup, state
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer


def test_migrations_run_once_under_concurrency(zk_server: ZooKeeperServer, zk_root: str) -> None:
    clients = [ZK([zk_server.address], zk_root).start() for _ in range(4)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda c=c: results.append(schema.migrate(c))) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [schema.SCHEMA_VERSION] * 4
    for path in schema.BASE_PATHS:
        assert clients[0].exists(path)
    assert clients[0].get(schema.PRIMARY_NODE) == "none"
    for client in clients:
        client.stop()


def test_v5_moves_stats_out_of_status(zk_server: ZooKeeperServer, zk_root: str) -> None:
    client = ZK([zk_server.address], zk_root).start()
    try:
        assert schema.migrate(client, 4) == 4
        client.put(schema.vm_status("u1"), {"node": "hv1", "running": True, "stats": {"cpus": 1}})
        client.put(schema.vm_status("u2"), {"node": "hv1", "running": False})
        assert schema.migrate(client) == schema.SCHEMA_VERSION == 8
        assert client.exists(schema.VM_STATS)
        assert client.exists(schema.FENCING) and client.exists(schema.FENCE_INFO)     # v7
        assert client.exists(schema.VM_SNAPSHOTS) and client.exists(schema.BACKUPS)    # v8
        assert client.get(schema.vm_status("u1")) == {"node": "hv1", "running": True}
        assert client.get(schema.vm_status("u2")) == {"node": "hv1", "running": False}
    finally:
        client.stop()


def test_compare_and_set_under_contention(zk: ZK) -> None:
    zk.put("/counter", 0)

    def bump() -> None:
        for _ in range(25):
            zk.update("/counter", lambda n: n + 1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert zk.get("/counter") == 100


def test_update_can_abort_without_writing(zk: ZK) -> None:
    zk.put("/doc", {"a": 1})

    def refuse(_doc: dict) -> dict:
        raise Conflict("no")

    with pytest.raises(Conflict):
        zk.update("/doc", refuse)
    assert zk.get("/doc") == {"a": 1}


def test_get_many_is_one_pipelined_round(zk: ZK) -> None:
    for i in range(50):
        zk.put(f"/many/{i}", {"i": i})
    docs = zk.get_many([f"/many/{i}" for i in range(50)] + ["/many/missing"])
    assert docs["/many/7"] == {"i": 7} and docs["/many/missing"] is None


def test_backup_wipe_restore_is_identical(zk: ZK) -> None:
    state.ensure_cluster(zk, "c1")
    zk.put("/faults/abc", {"id": "abc", "message": "x"})
    zk.create("/nodes/hv1", {"name": "hv1"})
    zk.create("/nodes/hv1/alive", {"pid": 1}, ephemeral=True)
    dump = backup.backup(zk)
    assert "/nodes/hv1/alive" not in dump  # session markers are not data
    for child in zk.children("/"):
        zk.delete("/" + child)
    assert zk.children("/") == []
    assert backup.restore(zk, dump) == "Restore completed successfully"
    assert backup.backup(zk) == dump


def test_digest_acls(zk_server: ZooKeeperServer, zk_root: str) -> None:
    secured = ZK([zk_server.address], zk_root, auth=("pvc", "s3cret")).start()
    schema.migrate(secured)
    secured.put("/config/cluster", {"name": "locked"})
    assert secured.get("/config/cluster") == {"name": "locked"}
    anonymous = ZK([zk_server.address], zk_root).start()
    try:
        with pytest.raises(NoAuthError):
            anonymous.client.get("/config/cluster")
    finally:
        anonymous.stop()
        secured.stop()
