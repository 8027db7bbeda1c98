"""The ZK write helpers against a real server: pipelined CAS writes, puts, deletes, stat, guards."""

from __future__ import annotations

import pytest
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from pvc.core.zk import ZK


def test_write_many_reports_a_lost_version_race(zk: ZK) -> None:
    zk.put("/w/a", {"n": 1})
    zk.put("/w/b", {"n": 1})
    zk.put("/w/taken", {"n": 1})
    a, b = zk.get_doc("/w/a"), zk.get_doc("/w/b")
    assert a is not None and b is not None
    zk.set_doc("/w/b", {"n": 2}, b.version)                  # another writer wins the race on b
    results = zk.write_many([("/w/a", {"n": 10}, a.version), ("/w/b", {"n": 10}, b.version),
                             ("/w/new", {"n": 10}, None), ("/w/taken", {"n": 10}, None)])
    assert results["/w/a"] is None and results["/w/new"] is None
    assert isinstance(results["/w/b"], BadVersionError)
    assert isinstance(results["/w/taken"], NodeExistsError)
    assert zk.get("/w/a") == {"n": 10} and zk.get("/w/new") == {"n": 10}
    assert zk.get("/w/b") == {"n": 2} and zk.get("/w/taken") == {"n": 1}
    assert zk.write_many([]) == {}


def test_write_many_without_makepath_never_recreates_a_removed_parent(zk: ZK) -> None:
    zk.put("/vm/alive", {"x": 1})
    results = zk.write_many([("/vm/gone/status", {"running": True}, None),
                             ("/vm/alive/status", {"running": True}, None)], makepath=False)
    assert isinstance(results["/vm/gone/status"], NoNodeError)
    assert results["/vm/alive/status"] is None
    assert not zk.exists("/vm/gone")
    assert zk.get("/vm/alive/status") == {"running": True}
    assert zk.write_many([("/vm/gone2/status", {}, None)], makepath=True) == {"/vm/gone2/status": None}
    assert zk.exists("/vm/gone2")


def test_put_many_sets_and_creates(zk: ZK) -> None:
    zk.put("/s/0", {"old": True})
    zk.put_many({"/s/0": {"v": 0}, "/s/deep/1": {"v": 1}})
    assert zk.get("/s/0") == {"v": 0} and zk.get("/s/deep/1") == {"v": 1}


def test_delete_many_skips_missing_paths(zk: ZK) -> None:
    zk.put("/d/a", 1)
    zk.put("/d/b", 2)
    zk.delete_many(["/d/a", "/d/missing", "/nowhere/at/all", "/d/b"])
    assert zk.children("/d") == []
    zk.delete_many([])
    zk.put("/d/parent/child", 3)
    with pytest.raises(NotEmptyError):                       # not recursive
        zk.delete_many(["/d/parent"])
    assert zk.get("/d/parent/child") == 3


def test_stat(zk: ZK) -> None:
    assert zk.stat("/nothing") is None
    assert zk.stat("/nothing", retry=False) is None
    zk.put("/st", {"a": 1})
    stat = zk.stat("/st")
    assert stat is not None and stat.version == 0 and stat.ephemeralOwner == 0
    zk.put("/st", {"a": 2})
    assert zk.stat("/st", retry=False).version == 1
    zk.create("/eph", {"a": 1}, ephemeral=True)
    assert zk.stat("/eph").ephemeralOwner == zk.session_id


def test_delete_not_recursive_keeps_a_parent_with_children(zk: ZK) -> None:
    zk.put("/lock/queued", "")
    with pytest.raises(NotEmptyError):
        zk.delete("/lock", recursive=False)
    assert zk.exists("/lock/queued")
    assert zk.delete("/lock/queued", recursive=False)
    assert zk.delete("/lock", recursive=False)
    assert not zk.delete("/lock", recursive=False)


def test_put_guarded_writes_only_while_the_guard_exists(zk: ZK) -> None:
    zk.put("/g/vm", {})
    zk.put_guarded("/g/vm-console", "hello", guard="/g/vm")
    assert zk.get("/g/vm-console") == "hello"
    zk.put_guarded("/g/vm-console", "again", guard="/g/vm")
    assert zk.get("/g/vm-console") == "again"
    zk.put_guarded("/g/gone-console", "hello", guard="/g/gone")
    assert not zk.exists("/g/gone-console")
