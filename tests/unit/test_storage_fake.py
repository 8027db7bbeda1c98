"""The Storage contract (pvc.adapters.ceph.Storage), run against FakeStorage here and against a
real Ceph 16 cluster in tests/lab/test_ceph_adapter.py (which imports StorageContract).

One suite for both keeps the fake honest: what the API, worker and node tests learn from the fake
holds for CephStorage too. Then the fake's own hooks (failure injection, set-up helpers).
"""

from __future__ import annotations

import calendar
import io
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from pvc.adapters.ceph import (
    CephStorage,
    Locker,
    Storage,
    StorageError,
    StorageExists,
    StorageNotFound,
    StorageUnavailable,
)
from pvc.adapters.ceph import librados as ceph_module
from pvc.adapters.ceph.fake import FakeStorage

MiB = 1 << 20
VOLUME_INFO_KEYS = {"name", "id", "size", "objects", "order", "object_size", "snapshot_count",
                    "block_name_prefix", "format", "features", "op_features", "flags", "create_timestamp",
                    "access_timestamp", "modify_timestamp"}
TIMESTAMP = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
POOL_STATS_KEYS = {"stored", "objects", "kb_used", "bytes_used", "percent_used", "max_avail"}

Reader = Callable[[str, str, int], bytes]
T = TypeVar("T")


class Peer(Protocol):
    """Another Ceph client (a QEMU elsewhere): holds locks, has volumes open."""

    def lock(self, pool: str, volume: str, cookie: str) -> None: ...

    def watch(self, pool: str, volume: str) -> None: ...

    def release(self) -> None: ...


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], T | None], timeout: float = 20, what: str = "condition") -> T:
    """Poll until check() returns something truthy (real Ceph reports some changes with a lag)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        time.sleep(0.2)


def _pool_entry(storage: Storage, name: str) -> dict[str, Any]:
    return next(p for p in storage.mon_command("osd dump")["pools"] if p["pool_name"] == name)


class StorageContract:
    """Subclass and provide the fixtures `storage` (a Storage), `pool` (an existing RBD pool the test
    may fill), `read` (pool, volume, length -> the volume's first bytes), `peer` (a Peer) and
    `osd_id` (an OSD the test may mark out and in again)."""

    # ---- cluster ------------------------------------------------------------------------------

    def test_fsid_and_mons(self, storage: Storage) -> None:
        assert re.fullmatch(r"[0-9a-f-]{36}", storage.fsid())
        mons = storage.mon_addresses()
        assert mons and all(isinstance(h, str) and isinstance(p, int) for h, p in mons)
        assert {p for _, p in mons} == {6789}
        assert [h for h, _ in mons] == [m["public_addr"].split(":")[0]
                                        for m in storage.mon_command("mon dump")["mons"]]

    def test_mon_command_shapes(self, storage: Storage, pool: str) -> None:
        status = storage.mon_command("status")
        assert status["fsid"] == storage.fsid()
        assert status["health"]["status"].startswith("HEALTH_")
        assert {"num_osds", "num_up_osds", "num_in_osds"} <= set(status["osdmap"])
        assert {"num_pgs", "bytes_used", "bytes_avail", "bytes_total"} <= set(status["pgmap"])
        assert set(storage.mon_command("health")) >= {"status", "checks"}

        # a real cluster's df comes from the mgr's stats digest and lags a new pool by seconds
        def df_with_pool() -> dict[str, Any] | None:
            df = storage.mon_command("df")
            return df if any(p["name"] == pool and p["stats"]["max_avail"] > 0 for p in df["pools"]) else None

        df = eventually(df_with_pool, what=f"pool {pool} in df")
        assert {"total_bytes", "total_avail_bytes", "total_used_bytes"} <= set(df["stats"])
        entry = next(p for p in df["pools"] if p["name"] == pool)
        assert set(entry["stats"]) >= POOL_STATS_KEYS

        dump = storage.mon_command("osd dump")
        assert dump["osds"] and {"osd", "up", "in", "public_addr"} <= set(dump["osds"][0])
        assert {"pool_name", "size", "min_size", "pg_num", "crush_rule"} <= set(_pool_entry(storage, pool))
        osd_df = storage.mon_command("osd df")
        assert {"id", "name", "kb", "kb_used", "kb_avail", "utilization", "pgs", "status"} <= set(
            osd_df["nodes"][0])
        tree = storage.mon_command("osd tree")
        assert {n["type"] for n in tree["nodes"]} >= {"root", "host", "osd"}

        text = storage.mon_command_text("status")
        assert "cluster:" in text and storage.fsid() in text
        assert "POOLS" in storage.mon_command_text("df")

    def test_unknown_mon_command_is_a_storage_error(self, storage: Storage) -> None:
        with pytest.raises(StorageError):
            storage.mon_command("no such command")

    # ---- volumes ------------------------------------------------------------------------------

    def test_volume_lifecycle(self, storage: Storage, pool: str) -> None:
        name = unique("vol")
        storage.create_volume(pool, name, 8 * MiB)
        assert name in storage.list_volumes(pool)
        info = storage.volume_info(pool, name)
        assert set(info) >= VOLUME_INFO_KEYS
        assert (info["name"], info["size"], info["format"], info["snapshot_count"]) == (name, 8 * MiB, 2, 0)
        assert info["object_size"] == 1 << info["order"] and info["objects"] == 8 * MiB // info["object_size"]
        assert info["block_name_prefix"] == f"rbd_data.{info['id']}"
        assert "layering" in info["features"] and isinstance(info["op_features"], list)
        for key in ("create_timestamp", "access_timestamp", "modify_timestamp"):
            assert TIMESTAMP.match(info[key]), info[key]

        storage.resize_volume(pool, name, 16 * MiB)
        assert storage.volume_info(pool, name)["size"] == 16 * MiB
        storage.resize_volume(pool, name, 4 * MiB)
        assert storage.volume_info(pool, name)["size"] == 4 * MiB

        new = unique("ren")
        storage.rename_volume(pool, name, new)
        names = storage.list_volumes(pool)
        assert new in names and name not in names
        storage.remove_volume(pool, new)
        assert new not in storage.list_volumes(pool)

    def test_write_copy_and_read_back(self, storage: Storage, pool: str, read: Reader) -> None:
        name, copy = unique("src"), unique("cpy")
        storage.create_volume(pool, name, 4 * MiB)
        data = os.urandom(MiB + 12345)
        assert storage.write_volume(pool, name, io.BytesIO(data), chunk=256 << 10) == len(data)
        assert read(pool, name, len(data) + 10) == data + b"\0" * 10
        storage.copy_volume(pool, name, copy)
        assert storage.volume_info(pool, copy)["size"] == 4 * MiB
        assert read(pool, copy, len(data)) == data
        # the copy is independent
        storage.write_volume(pool, name, io.BytesIO(b"\xff" * 4096))
        assert read(pool, copy, 4096) == data[:4096]
        with pytest.raises(StorageExists, match=re.escape(f"{pool}/{copy}")):
            storage.copy_volume(pool, name, copy)
        for vol in (name, copy):
            storage.remove_volume(pool, vol)

    def test_write_refuses_more_than_the_volume(self, storage: Storage, pool: str) -> None:
        name = unique("small")
        storage.create_volume(pool, name, MiB)
        with pytest.raises(StorageError, match=re.escape(f"{pool}/{name}")):
            storage.write_volume(pool, name, io.BytesIO(b"x" * (MiB + 1)), chunk=64 << 10)
        assert storage.write_volume(pool, name, io.BytesIO(b"y" * MiB)) == MiB
        storage.remove_volume(pool, name)

    def test_volume_errors(self, storage: Storage, pool: str) -> None:
        name, other = unique("err"), unique("err")
        missing = unique("missing")
        storage.create_volume(pool, name, MiB)
        storage.create_volume(pool, other, MiB)
        with pytest.raises(StorageExists, match=re.escape(f"volume {pool}/{name}: already exists")):
            storage.create_volume(pool, name, MiB)
        with pytest.raises(StorageExists, match=re.escape(f"{pool}/{other}")):
            storage.rename_volume(pool, name, other)
        not_found: list[Callable[[], Any]] = [
            lambda: storage.volume_info(pool, missing), lambda: storage.resize_volume(pool, missing, MiB),
            lambda: storage.rename_volume(pool, missing, unique()),
            lambda: storage.remove_volume(pool, missing),
            lambda: storage.copy_volume(pool, missing, unique()), lambda: storage.watchers(pool, missing),
            lambda: storage.lockers(pool, missing), lambda: storage.list_snapshots(pool, missing),
            lambda: storage.create_snapshot(pool, missing, "s"),
            lambda: storage.write_volume(pool, missing, io.BytesIO(b"x")),
        ]
        for call in not_found:
            with pytest.raises(StorageNotFound, match=re.escape(f"volume {pool}/{missing}: not found")):
                call()
        nopool = unique("tstnopool")
        for call in (lambda: storage.list_volumes(nopool), lambda: storage.create_volume(nopool, "v", MiB)):
            with pytest.raises(StorageNotFound, match=re.escape(f"pool {nopool}: not found")):
                call()
        storage.remove_volume(pool, name)
        storage.remove_volume(pool, other)

    # ---- snapshots ----------------------------------------------------------------------------

    def test_snapshots(self, storage: Storage, pool: str, read: Reader) -> None:
        name = unique("snap")
        storage.create_volume(pool, name, 2 * MiB)
        first = os.urandom(64 << 10)
        storage.write_volume(pool, name, io.BytesIO(first))
        storage.create_snapshot(pool, name, "s1")
        storage.write_volume(pool, name, io.BytesIO(b"\x01" * (64 << 10)))
        storage.create_snapshot(pool, name, "s2")
        assert storage.list_snapshots(pool, name) == ["s1", "s2"]
        assert storage.volume_info(pool, name)["snapshot_count"] == 2
        with pytest.raises(StorageExists, match=re.escape(f"snapshot {pool}/{name}@s1: already exists")):
            storage.create_snapshot(pool, name, "s1")

        storage.rename_snapshot(pool, name, "s1", "before")
        assert storage.list_snapshots(pool, name) == ["before", "s2"]
        with pytest.raises(StorageExists, match=re.escape(f"{pool}/{name}@s2")):
            storage.rename_snapshot(pool, name, "before", "s2")

        storage.write_volume(pool, name, io.BytesIO(b"\x02" * (64 << 10)))
        storage.rollback_snapshot(pool, name, "before")
        assert read(pool, name, len(first)) == first
        storage.rollback_snapshot(pool, name, "s2")
        assert read(pool, name, 64 << 10) == b"\x01" * (64 << 10)

        storage.remove_snapshot(pool, name, "s2")
        assert storage.list_snapshots(pool, name) == ["before"]
        for call in (lambda: storage.remove_snapshot(pool, name, "s2"),
                     lambda: storage.rollback_snapshot(pool, name, "s2"),
                     lambda: storage.rename_snapshot(pool, name, "s2", "s3")):
            with pytest.raises(StorageNotFound, match=re.escape(f"snapshot {pool}/{name}@s2: not found")):
                call()
        # a renamed volume keeps its snapshots; removing it purges them
        renamed = unique("snapren")
        storage.rename_volume(pool, name, renamed)
        assert storage.list_snapshots(pool, renamed) == ["before"]
        storage.remove_volume(pool, renamed)
        assert renamed not in storage.list_volumes(pool)

    # ---- clients ------------------------------------------------------------------------------

    def test_lockers_and_break_lock(self, storage: Storage, pool: str, peer: Peer) -> None:
        name = unique("lock")
        storage.create_volume(pool, name, MiB)
        assert storage.lockers(pool, name) == []
        peer.lock(pool, name, "peer-cookie")
        lockers = storage.lockers(pool, name)
        assert len(lockers) == 1 and lockers[0].cookie == "peer-cookie"
        assert lockers[0].client.startswith("client.") and ":" in lockers[0].address
        storage.break_lock(pool, name, lockers[0])
        assert storage.lockers(pool, name) == []
        with pytest.raises(StorageNotFound, match=re.escape(f"volume {pool}/{name}")):
            storage.break_lock(pool, name, lockers[0])
        peer.release()
        storage.remove_volume(pool, name)

    def test_watchers(self, storage: Storage, pool: str, peer: Peer) -> None:
        name = unique("watch")
        storage.create_volume(pool, name, MiB)
        assert storage.watchers(pool, name) == []
        peer.watch(pool, name)
        watchers = storage.watchers(pool, name)
        assert len(watchers) == 1 and ":" in watchers[0]
        # an open volume cannot be removed
        with pytest.raises(StorageError, match=re.escape(f"volume {pool}/{name}")) as err:
            storage.remove_volume(pool, name)
        assert not isinstance(err.value, StorageNotFound)
        peer.release()
        assert storage.watchers(pool, name) == []
        storage.remove_volume(pool, name)

    def test_blocklist(self, storage: Storage) -> None:
        storage.blocklist("10.200.0.250:0/3141592", seconds=120)
        storage.blocklist("10.200.0.251", seconds=120)   # a whole host
        listed = storage.mon_command("osd dump")["blocklist"]
        assert "10.200.0.250:0/3141592" in listed and "10.200.0.251:0/0" in listed

    # ---- pools, rules, OSDs -------------------------------------------------------------------

    def test_pool_lifecycle(self, storage: Storage) -> None:
        name = unique("tstp")
        storage.create_pool(name, 8, 2, 1)
        try:
            assert name in storage.list_pools()
            entry = _pool_entry(storage, name)
            assert (entry["size"], entry["min_size"], entry["pg_num"]) == (2, 1, 8)
            assert "rbd" in entry["application_metadata"]
            assert storage.list_volumes(name) == []
            with pytest.raises(StorageExists, match=re.escape(f"pool {name}: already exists")):
                storage.create_pool(name, 8, 2, 1)
            storage.set_pool_pgs(name, 16)
            assert _pool_entry(storage, name)["pg_num_target"] == 16
        finally:
            storage.remove_pool(name)
        assert name not in storage.list_pools()
        for call in (lambda: storage.remove_pool(name), lambda: storage.set_pool_pgs(name, 8)):
            with pytest.raises(StorageNotFound, match=re.escape(f"pool {name}: not found")):
                call()

    def test_tier_rule(self, storage: Storage) -> None:
        assert storage.ensure_tier_rule("default") == "replicated_rule"
        rule = storage.ensure_tier_rule("hdd")
        assert rule == "hdd_tier" and storage.ensure_tier_rule("hdd") == rule
        dumped = {r["rule_name"]: r for r in storage.mon_command("osd crush rule dump")}
        assert dumped[rule]["steps"][0]["item_name"] == "default~hdd"
        name = unique("tstr")
        storage.create_pool(name, 8, 2, 1, rule=rule)
        try:
            assert _pool_entry(storage, name)["crush_rule"] == dumped[rule]["rule_id"]
        finally:
            storage.remove_pool(name)
        with pytest.raises(StorageNotFound):
            storage.create_pool(unique("tstr"), 8, 2, 1, rule="no_such_rule")
        with pytest.raises(StorageNotFound, match="nvme"):
            storage.ensure_tier_rule("nvme")

    def test_flags(self, storage: Storage) -> None:
        try:
            storage.set_flag("noout", True)
            assert "noout" in storage.mon_command("osd dump")["flags"].split(",")
        finally:
            storage.set_flag("noout", False)
        assert "noout" not in storage.mon_command("osd dump")["flags"].split(",")
        with pytest.raises(StorageError, match="nosuchflag"):
            storage.set_flag("nosuchflag", True)

    def test_osd_out_and_in(self, storage: Storage, osd_id: int) -> None:
        def is_in() -> int:
            return next(o["in"] for o in storage.mon_command("osd dump")["osds"] if o["osd"] == osd_id)

        try:
            storage.set_osd_in(osd_id, False)
            assert is_in() == 0
        finally:
            storage.set_osd_in(osd_id, True)
        assert is_in() == 1
        with pytest.raises(StorageNotFound, match=re.escape("osd.999: not found")):
            storage.set_osd_in(999, False)

    # ---- images -------------------------------------------------------------------------------

    def test_convert_raw_into_volume(self, storage: Storage, pool: str, read: Reader, tmp_path: Path) -> None:
        name = unique("conv")
        storage.create_volume(pool, name, 2 * MiB)
        data = os.urandom(MiB)
        raw = tmp_path / "disk.raw"
        raw.write_bytes(data)
        storage.convert_into_volume(pool, name, str(raw), "raw")
        assert read(pool, name, MiB) == data

        big = tmp_path / "big.raw"
        big.write_bytes(b"\1" * (3 * MiB))
        with pytest.raises(StorageError, match=f"{3 * MiB}.*{2 * MiB}"):
            storage.convert_into_volume(pool, name, str(big), "raw")
        with pytest.raises(StorageError, match="nosuchformat"):
            storage.convert_into_volume(pool, name, str(raw), "nosuchformat")
        with pytest.raises(StorageError, match="nothere"):
            storage.convert_into_volume(pool, name, str(tmp_path / "nothere.raw"), "raw")
        with pytest.raises(StorageNotFound):
            storage.convert_into_volume(pool, unique("missing"), str(raw), "raw")
        storage.remove_volume(pool, name)


# ================================================================================== the fake

@pytest.fixture
def fake() -> FakeStorage:
    storage = FakeStorage()
    storage.create_pool("vms", 16, 3, 2)
    return storage


class FakePeer:
    def __init__(self, fake: FakeStorage) -> None:
        self.fake = fake
        self.held: list[tuple[str, str]] = []

    def lock(self, pool: str, volume: str, cookie: str) -> None:
        self.fake.add_locker(pool, volume, Locker("client.9999", cookie, "10.200.0.9:0/2718"))
        self.held.append((pool, volume))

    def watch(self, pool: str, volume: str) -> None:
        self.fake.set_watchers(pool, volume, ["10.200.0.9:0/2718"])
        self.held.append((pool, volume))

    def release(self) -> None:
        for pool, volume in self.held:
            self.fake.set_watchers(pool, volume, [])
        self.held.clear()


class TestFakeStorage(StorageContract):
    @pytest.fixture
    def storage(self, fake: FakeStorage) -> FakeStorage:
        return fake

    @pytest.fixture
    def pool(self) -> str:
        return "vms"

    @pytest.fixture
    def read(self, fake: FakeStorage) -> Reader:
        return lambda pool, name, length: fake.read_volume(pool, name, 0, length)

    @pytest.fixture
    def peer(self, fake: FakeStorage) -> Iterator[FakePeer]:
        peer = FakePeer(fake)
        yield peer
        peer.release()

    @pytest.fixture
    def osd_id(self) -> int:
        return 1


# ---- the fake's own hooks ---------------------------------------------------------------------

def test_fail_next_raises_once_for_the_target(fake: FakeStorage) -> None:
    fake.create_volume("vms", "a", MiB)
    fake.fail_next("volume_info", StorageUnavailable, target="vms/a")
    with pytest.raises(StorageUnavailable, match="volume_info vms/a: injected failure"):
        fake.volume_info("vms", "a")
    assert fake.volume_info("vms", "a")["size"] == MiB
    fake.fail_next("create_volume", times=2)
    for _ in range(2):
        with pytest.raises(StorageError):
            fake.create_volume("vms", "b", MiB)
    fake.create_volume("vms", "b", MiB)
    assert ("create_volume", "vms/b") in fake.calls


def test_unavailable_fails_every_call(fake: FakeStorage) -> None:
    fake.available = False
    with pytest.raises(StorageUnavailable):
        fake.list_pools()
    with pytest.raises(StorageUnavailable):
        fake.mon_command("status")
    fake.available = True
    assert fake.list_pools() == ["vms"]


def test_health_reflects_flags_and_down_osds(fake: FakeStorage) -> None:
    assert fake.mon_command("health")["status"] == "HEALTH_OK"
    fake.set_flag("noout", True)
    assert "OSDMAP_FLAGS" in fake.mon_command("health")["checks"]
    fake.set_flag("noout", False)
    fake.set_osd_up(2, False)
    status = fake.mon_command("status")
    assert status["health"]["status"] == "HEALTH_WARN" and status["osdmap"]["num_up_osds"] == 2
    assert "1 osds down" in fake.mon_command_text("status")


def test_df_tracks_written_data(fake: FakeStorage) -> None:
    fake.create_volume("vms", "a", 64 * MiB)
    fake.write_volume("vms", "a", io.BytesIO(b"z" * (5 * MiB)))
    stats = fake.mon_command("df")["pools"][0]["stats"]
    assert stats["stored"] == 5 * MiB and stats["bytes_used"] == 15 * MiB and stats["objects"] == 2
    assert 0 < stats["percent_used"] < 1


def test_break_lock_blocklists_the_holder(fake: FakeStorage) -> None:
    fake.create_volume("vms", "a", MiB)
    locker = fake.add_locker("vms", "a")
    fake.break_lock("vms", "a", locker)
    assert locker.address in fake.blocklisted()


def test_tier_rule_for_added_device_class(fake: FakeStorage) -> None:
    fake.add_osd("hv1", "ssd")
    assert fake.ensure_tier_rule("ssd") == "ssd_tier"
    assert "ssd" in fake.mon_command("df")["stats_by_class"]


# ================================================ CephStorage's own logic, without a cluster

class _StubClient:
    def __init__(self) -> None:
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CephStorage:
    """A CephStorage whose 'connections' are stubs (counted), for the connection lifecycle."""
    storage = CephStorage(str(tmp_path / "ceph.conf"), str(tmp_path / "keyring"))
    made: list[_StubClient] = []

    def client() -> _StubClient:
        made.append(_StubClient())
        return made[-1]

    monkeypatch.setattr(storage, "_client", client)
    storage.made = made  # type: ignore[attr-defined]
    return storage


def test_ceph_not_configured(tmp_path: Path) -> None:
    storage = CephStorage(str(tmp_path / "ceph.conf"), str(tmp_path / "keyring"))
    with pytest.raises(StorageUnavailable, match="not configured"):
        storage.list_pools()


def test_ceph_errors_map_to_classes(offline: CephStorage) -> None:
    rados = pytest.importorskip("rados")
    rbd = pytest.importorskip("rbd")
    cases: list[tuple[Exception, type[StorageError], str]] = [
        (rbd.ImageNotFound("x", errno=2), StorageNotFound, "volume vms/a: not found"),
        (rbd.ImageExists("x", errno=17), StorageExists, "volume vms/a: already exists"),
        (rados.TimedOut("x", errno=110), StorageUnavailable, "volume vms/a: the Ceph cluster did not answer"),
        (rbd.InvalidArgument("x", errno=22), StorageError, "volume vms/a: [errno 22]"),
    ]
    for exc, cls, message in cases:
        with pytest.raises(cls) as err, offline._call("volume vms/a"):
            raise exc
        assert type(err.value) is cls and err.value.message.startswith(message)
    assert len(offline.made) == 1   # none of those drops the connection
    with pytest.raises(ValueError), offline._call("volume vms/a"):
        raise ValueError("not ours: passes through")


def test_ceph_broken_session_reconnects_after_the_last_call(offline: CephStorage) -> None:
    rbd = pytest.importorskip("rbd")
    with offline._call("outer") as first:
        # another thread's call is still using the client when this one finds the session gone
        with pytest.raises(StorageUnavailable, match="lost the connection"), offline._call("volume vms/a"):
            raise rbd.ConnectionShutdown("x", errno=108)
        assert not first.shut   # shutting it down now would pull it from under "outer"
        with offline._call("next") as second:
            assert second is not first
    assert first.shut and not second.shut
    offline.close()
    assert second.shut
    with offline._call("after close") as third:
        assert third is not second


def test_ceph_helpers() -> None:
    import datetime

    assert ceph_module._ctime(datetime.datetime(2026, 11, 2, 15, 31, 50)) == time.ctime(
        calendar.timegm((2026, 11, 2, 15, 31, 50, 0, 0, 0)))
    assert ceph_module._names(61, ceph_module._FEATURES) == [
        "layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]
    assert ceph_module._qemu_rbd_escape("/etc/ceph:x") == "/etc/ceph\\:x"
