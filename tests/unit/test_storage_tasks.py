"""The worker's storage tasks (pvc.worker.kinds.storage, vm.flush_locks, vm.block_resize) over
FakeStorage, fake OSD services and a fake task context: flows, progress, revert and cancel."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters import osd as osd_adapter
from pvc.adapters.ceph import Locker, StorageError
from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.osd import CommandResult, DirectOsdService, FileDevice, OsdError, SystemdOsdService
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.records import VMRecord
from pvc.worker.kinds import vm as vmk
from pvc.worker.kinds.storage import common as sk
from pvc.worker.kinds.storage.osds import OSD_CAPS
from pvc.worker.registry import KINDS, TaskCancelled, TaskFailed

# ------------------------------------------------------------------------------------ fakes


class MemoryZK:
    """The part of pvc.core.zk.ZK the tasks use, in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, path: str, default: Any = None) -> Any:
        return self.data.get(path, default)

    def put(self, path: str, value: Any, version: int = -1) -> None:
        self.data[path] = json.loads(json.dumps(value))

    def exists(self, path: str) -> bool:
        return path in self.data

    def delete(self, path: str, recursive: bool = True) -> bool:
        gone = [p for p in self.data if p == path or p.startswith(path + "/")]
        for p in gone:
            del self.data[p]
        return bool(gone)

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.data if p.startswith(prefix)})


class FakeContext:
    """A TaskContext: records progress and log; cancels when `cancel_at(status)` matches."""

    def __init__(self, settings: Settings, node: str = "hv3") -> None:
        self.zk = MemoryZK()
        self.settings = settings
        self.node = node
        self.progress_log: list[tuple[int, int, str]] = []
        self.lines: list[str] = []
        self.cancel_when: Callable[[str], bool] = lambda status: False
        self.cancelled = False

    def cancel_at(self, pattern: str) -> None:
        self.cancel_when = lambda status: re.search(pattern, status) is not None

    def progress(self, current: int, total: int, status: str) -> None:
        self.progress_log.append((current, total, status))
        self.lines.append(status)
        if self.cancel_when(status):
            self.cancelled = True
        if self.cancelled:
            raise TaskCancelled(status)

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise TaskCancelled("cancel requested")

    def log(self, line: str) -> None:
        self.lines.append(line)

    @property
    def statuses(self) -> list[str]:
        return [s for _c, _t, s in self.progress_log]


class FakeCeph(FakeStorage):
    """FakeStorage plus the OSD lifecycle the tasks drive through mon commands, in its own table."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.table: dict[int, dict[str, Any]] = {
            i: {"osd": i, "uuid": f"uuid-{i}", "up": 1, "in": 1, "host": f"hv{i + 1}", "weight": 1.0,
                "destroyed": False} for i in range(3)}
        self.keys: dict[int, str] = {}
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.safe_after = 0                    # safe-to-destroy answers "safe" after this many asks
        self.fail_commands: dict[str, str] = {}

    def boot(self, osd_id: int) -> None:
        self.table[osd_id].update(up=1, **{"in": 1})

    def mon_command(self, prefix: str, **args: Any) -> Any:
        self.commands.append((prefix, args))
        if prefix in self.fail_commands:
            raise StorageError(f"ceph {prefix}: {self.fail_commands[prefix]}")
        handler = getattr(self, "_" + prefix.replace(" ", "_").replace("-", "_"), None)
        if handler is None:
            return super().mon_command(prefix, **args)
        return handler(**args)

    def _osd_dump(self) -> dict[str, Any]:
        return {"epoch": 1, "osds": [{k: v for k, v in o.items() if k in ("osd", "uuid", "up", "in")}
                                     for o in self.table.values()]}

    def _osd_tree(self) -> dict[str, Any]:
        return {"nodes": [{"id": o["osd"], "type": "osd", "crush_weight": o["weight"]}
                          for o in self.table.values() if o.get("host")]}

    def _osd_new(self, uuid: str) -> dict[str, int]:
        osd_id = next(i for i in range(100) if i not in self.table)
        self.table[osd_id] = {"osd": osd_id, "uuid": uuid, "up": 0, "in": 0, "host": None, "weight": 0.0,
                              "destroyed": False}
        return {"osdid": osd_id}

    def _auth_get_or_create(self, entity: str, caps: list[str]) -> list[dict[str, Any]]:
        osd_id = int(entity.split(".")[1])
        key = self.keys.setdefault(osd_id, f"AQB-key-{osd_id}==")
        return [{"entity": entity, "key": key, "caps": dict(zip(caps[::2], caps[1::2], strict=True))}]

    def _osd_crush_add(self, id: int, weight: float, args: list[str]) -> None:
        self.table[id].update(weight=weight, host=args[1].split("=")[1])

    def _osd_crush_rm(self, name: str) -> None:
        osd_id = int(name.split(".")[1])
        if osd_id in self.table:
            self.table[osd_id]["host"] = None

    def _osd_safe_to_destroy(self, ids: list[str]) -> dict[str, Any]:
        self.safe_after -= 1
        osd_id = int(ids[0])
        if self.safe_after >= 0:
            return {"safe_to_destroy": [], "active": [osd_id], "missing_stats": [], "stored_pgs": []}
        return {"safe_to_destroy": [osd_id], "active": [], "missing_stats": [], "stored_pgs": []}

    def _osd_down(self, ids: list[str]) -> None:
        for i in ids:
            self.table[int(i)]["up"] = 0

    def _osd_destroy_actual(self, id: int, yes_i_really_mean_it: bool) -> None:
        if id in self.table:
            self.table[id]["destroyed"] = True
            self.keys.pop(id, None)

    def _osd_purge_actual(self, id: int, yes_i_really_mean_it: bool) -> None:
        self.table.pop(id, None)
        self.keys.pop(id, None)

    def set_osd_in(self, osd_id: int, is_in: bool) -> None:
        self.calls.append(("set_osd_in", f"osd.{osd_id}"))
        self.table[osd_id]["in"] = int(is_in)


class FakeDirect(DirectOsdService):
    """A direct-mode service whose daemons and files are entries in a dict."""

    def __init__(self, ceph: FakeCeph, tmp: Path) -> None:
        super().__init__("hv3", "/etc/ceph/ceph.conf", tmp / "osd", tmp / "pids", tmp / "log")
        self.ceph = ceph
        self.blocks: dict[str, bool] = {}      # path -> created by us
        self.daemons: dict[int, bool] = {}     # id -> running
        self.datadirs: dict[int, dict[str, Any]] = {}
        self.fail: set[str] = set()            # "start", "mkfs", "prepare"
        self.boots = True                      # a started OSD comes up in the fake cluster
        self.actions: list[str] = []

    def prepare_block(self, device: FileDevice) -> bool:
        if "prepare" in self.fail:
            raise OsdError(f"{device.path} already holds a bluestore OSD; remove that OSD first")
        self.blocks[str(device.path)] = device.size is not None
        self.actions.append(f"prepare {device.path}")
        return device.size is not None

    def discard_block(self, path: Path, created: bool) -> None:
        self.blocks.pop(str(path), None)
        self.actions.append(f"discard {path}")

    def mkfs(self, osd_id: int, osd_uuid: str, key: str, block: Path, block_created: bool) -> None:
        if "mkfs" in self.fail:
            raise OsdError(f"ceph-osd --mkfs for OSD {osd_id} failed (exit 1): bluestore says no")
        assert key == self.ceph.keys[osd_id]
        self.datadirs[osd_id] = {"uuid": osd_uuid, "block": str(block), "block_created": block_created}
        self.actions.append(f"mkfs {osd_id}")

    def launch_info(self, osd_id: int) -> dict[str, Any]:
        return dict(self.datadirs.get(osd_id, {}))

    def remove_data(self, osd_id: int) -> None:
        info = self.datadirs.pop(osd_id, None)
        if info:
            self.blocks.pop(info["block"], None)
        self.actions.append(f"remove_data {osd_id}")

    def start(self, osd_id: int) -> None:
        if "start" in self.fail:
            raise OsdError(f"OSD {osd_id} exited at once (exit 1): fake log")
        self.daemons[osd_id] = True
        self.actions.append(f"start {osd_id}")
        if self.boots:
            self.ceph.boot(osd_id)

    def stop(self, osd_id: int, timeout: float = 60.0) -> None:
        self.daemons[osd_id] = False
        self.actions.append(f"stop {osd_id}")
        if osd_id in self.ceph.table:
            self.ceph.table[osd_id]["up"] = 0

    def running(self, osd_id: int) -> bool:
        return self.daemons.get(osd_id, False)

    def describe_failure(self, osd_id: int) -> str:
        return "fake log tail"


class FakeHost:
    """ceph-volume, LVM and systemd of one node, as a command runner for SystemdOsdService."""

    def __init__(self, ceph: FakeCeph) -> None:
        self.ceph = ceph
        self.calls: list[list[str]] = []
        self.devices: dict[str, list[dict[str, Any]]] = {}     # device -> ceph-volume list entries
        self.partitioned: set[str] = set()
        self.units: dict[int, bool] = {}
        self.db_vg = False
        self.fail: dict[tuple[str, ...], int] = {}

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        for prefix, code in self.fail.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return CommandResult(tuple(argv), code, "", f"{argv[0]}: injected failure")
        out, code = self.answer(argv)
        return CommandResult(tuple(argv), code, out, "")

    def answer(self, argv: list[str]) -> tuple[str, int]:
        match argv:
            case ["lsscsi", "-s"]:
                return "[0:0:0:0] disk ATA INTEL SSDSC2KB48 0100 /dev/sdb 480GB\n", 0
            case ["sfdisk", "--dump", dev]:
                return ("label: gpt\n", 0) if dev in self.partitioned else ("", 1)
            case ["ceph-volume", "lvm", "zap", "--destroy", dev]:
                self.devices.pop(dev, None)
                return "", 0
            case ["ceph-volume", "lvm", "batch", *rest]:
                dev = rest[-1]
                count = int(rest[rest.index("--osds-per-device") + 1]) if "--osds-per-device" in rest else 1
                for n in range(count):
                    uuid = f"fsid-{dev[-3:]}-{n}"
                    osd_id = self.ceph.mon_command("osd new", uuid=uuid)["osdid"]
                    self.devices.setdefault(dev, []).append({
                        "type": "block", "lv_path": f"/dev/ceph-x/osd-block-{uuid}", "vg_name": "ceph-x",
                        "lv_name": f"osd-block-{uuid}",
                        "tags": {"ceph.osd_id": str(osd_id), "ceph.osd_fsid": uuid,
                                 "ceph.cluster_fsid": "c"}})
                return "", 0
            case ["ceph-volume", "lvm", "list", "--format", "json", dev]:
                entries = self.devices.get(dev, [])
                return json.dumps({e["tags"]["ceph.osd_id"]: [e] for e in entries}), 0
            case ["ceph-volume", "lvm", "new-db", "--osd-id", osd_id, "--osd-fsid", _fsid, "--target", lv]:
                for entries in self.devices.values():
                    for e in entries:
                        if e["tags"]["ceph.osd_id"] == osd_id:
                            e["tags"]["ceph.db_device"] = f"/dev/{lv}"
                return "", 0
            case ["ceph-volume", "lvm", "activate", "--bluestore", osd_id, _fsid]:
                self.units[int(osd_id)] = True
                self.ceph.boot(int(osd_id))
                return "", 0
            case ["ceph-volume", "lvm", "prepare", "--bluestore", "--osd-id", osd_id, "--osd-fsid", fsid,
                  "--data", data]:
                dev = self.vg_device
                self.devices.setdefault(dev, []).append({
                    "type": "block", "lv_path": f"/dev/{data}", "vg_name": data.split("/")[0],
                    "lv_name": data.split("/")[1],
                    "tags": {"ceph.osd_id": osd_id, "ceph.osd_fsid": fsid, "ceph.cluster_fsid": "c"}})
                return "", 0
            case ["blockdev", "--getsize64", _path]:
                return str(400 << 30), 0
            case ["systemctl", "is-active", "--quiet", unit]:
                return "", 0 if self.units.get(int(unit.split("@")[1])) else 3
            case ["systemctl", "stop", unit]:
                osd_id = int(unit.split("@")[1])
                self.units[osd_id] = False
                if osd_id in self.ceph.table:
                    self.ceph.table[osd_id]["up"] = 0
                return "", 0
            case ["systemctl", "start", unit]:
                self.units[int(unit.split("@")[1])] = True
                return "", 0
            case ["vgs", "osd-db"]:
                return "", 0 if self.db_vg else 5
            case ["vgcreate", "--force", "osd-db", _dev]:
                self.db_vg = True
                return "", 0
            case ["vgcreate", _vg, dev]:
                self.vg_device = dev
                return "", 0
        return "", 0

    def ran(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.calls if tuple(c[:len(prefix)]) == prefix]


# --------------------------------------------------------------------------------- fixtures


def _settings(tmp_path: Path, mode: str = "direct") -> Settings:
    return Settings.model_validate({
        "cluster": {"name": "t", "coordinator_nodes": ["hv1", "hv2", "hv3"]},
        "zookeeper": {"hosts": ["127.0.0.1:2181"], "acl": False},
        "node": {"name": "hv3"},
        "storage": {"osd_service": mode, "osd_data_directory": str(tmp_path / "osd"),
                    "osd_pid_directory": str(tmp_path / "pids"), "benchmark_size": "64M",
                    "benchmark_runtime": 1},
    })


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "POLL", 0.001)


@pytest.fixture
def ceph() -> FakeCeph:
    storage = FakeCeph()
    storage.create_pool("vms", 16, 3, 2)
    return storage


@pytest.fixture
def direct(ceph: FakeCeph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDirect:
    service = FakeDirect(ceph, tmp_path)
    monkeypatch.setattr(sk, "storage_for", lambda settings: ceph)
    monkeypatch.setattr(sk, "osd_service_for", lambda settings: service)
    return service


@pytest.fixture
def host(ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost(ceph)
    service = SystemdOsdService(fake, settle=0)
    monkeypatch.setattr(sk, "storage_for", lambda settings: ceph)
    monkeypatch.setattr(sk, "osd_service_for", lambda settings: service)
    return fake


@pytest.fixture
def ctx(tmp_path: Path) -> FakeContext:
    return FakeContext(_settings(tmp_path))


def test_every_storage_kind_is_registered() -> None:
    assert {"osd.add", "osd.remove", "osd.replace", "osd.refresh", "osd.add_db_vg", "storage.benchmark",
            "vm.flush_locks", "vm.block_resize"} <= set(KINDS)


# ----------------------------------------------------------------------- osd.add (direct)

def test_add_direct_osd(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect, tmp_path: Path) -> None:
    result = KINDS["osd.add"](ctx, node="hv3", device="file:disk3.img:1G", weight=0.5, ext_db_ratio=None,
                              ext_db_size=None, osd_count=1)
    assert result["osds"] == [3] and "Successfully created 1 new OSD(s) 3" in result["status"]
    assert ceph.table[3] | {} == {"osd": 3, "uuid": direct.datadirs[3]["uuid"], "up": 1, "in": 1,
                                  "host": "hv3", "weight": 0.5, "destroyed": False}
    assert ("auth get-or-create", {"entity": "osd.3", "caps": OSD_CAPS}) in ceph.commands
    assert direct.actions == [f"prepare {tmp_path}/osd/disk3.img", "mkfs 3", "start 3"]
    doc = ctx.zk.get(schema.osd(3))
    assert doc == {"id": "3", "node": "hv3", "device": f"{tmp_path}/osd/disk3.img", "db_device": "",
                   "fsid": direct.datadirs[3]["uuid"], "is_split": False, "service": "direct", "stats": {}}
    assert ctx.progress_log[0] == (0, 8, "Adding 1 new OSD(s) on device file:disk3.img:1G with weight 0.5")
    assert ctx.progress_log[-1][:2] == (8, 8)
    assert [c for c, _t, _s in ctx.progress_log] == list(range(9))
    assert "Adding OSD 3 to CRUSH map" in ctx.statuses


def _assert_nothing_left(ceph: FakeCeph, direct: FakeDirect, ctx: FakeContext, osd_id: int = 3) -> None:
    assert osd_id not in ceph.table and osd_id not in ceph.keys
    assert not direct.blocks and not direct.datadirs and not direct.running(osd_id)
    assert not ctx.zk.exists(schema.osd(osd_id))


def _osd_file(ctx: FakeContext, name: str) -> str:
    """Where a relative file: device lands: in storage.osd_data_directory (nothing outside it)."""
    return str(Path(ctx.settings.storage.osd_data_directory) / name)


def test_add_reverts_everything_when_the_daemon_fails(ctx: FakeContext, ceph: FakeCeph,
                                                      direct: FakeDirect) -> None:
    direct.fail.add("start")
    with pytest.raises(TaskFailed, match="OSD 3 exited at once"):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0)
    _assert_nothing_left(ceph, direct, ctx)
    assert direct.actions[-2:] == ["remove_data 3", f"discard {_osd_file(ctx, 'a.img')}"]
    assert "reverted: purge OSD 3" in ctx.lines


def test_add_reverts_when_the_osd_never_comes_up(ctx: FakeContext, ceph: FakeCeph,
                                                  direct: FakeDirect) -> None:
    direct.boots = False
    with pytest.raises(TaskFailed, match=r"did not come up and in within 0s \(osd.3 down/out\)"):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0, timeout=0)
    _assert_nothing_left(ceph, direct, ctx)
    assert "stop 3" in direct.actions
    assert "reverted: delete OSD 3 from PVC" in ctx.lines


def test_add_reverts_when_mkfs_fails(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    direct.fail.add("mkfs")
    with pytest.raises(TaskFailed, match="bluestore says no"):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0)
    _assert_nothing_left(ceph, direct, ctx)


def test_add_refuses_a_used_file_without_touching_the_cluster(ctx: FakeContext, ceph: FakeCeph,
                                                              direct: FakeDirect) -> None:
    direct.fail.add("prepare")
    with pytest.raises(TaskFailed, match="already holds a bluestore OSD"):
        KINDS["osd.add"](ctx, node="hv3", device="a.img", weight=1.0)
    assert not [c for c in ceph.commands if c[0] == "osd new"]


def test_cancel_during_add_reverts(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    ctx.cancel_at("Adding OSD 3 to PVC")
    with pytest.raises(TaskCancelled):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0)
    _assert_nothing_left(ceph, direct, ctx)
    assert any(line.startswith("cancelled; reverting") for line in ctx.lines)


def test_add_direct_refusals(ctx: FakeContext, direct: FakeDirect) -> None:
    with pytest.raises(TaskFailed, match="ran on node hv3"):
        KINDS["osd.add"](ctx, node="hv1", device="file:a.img:1G", weight=1.0)
    with pytest.raises(TaskFailed, match="splitting a device"):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0, osd_count=2)
    with pytest.raises(TaskFailed, match="external OSD DB volume needs LVM"):
        KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=1.0, ext_db_ratio=0.05)
    with pytest.raises(TaskFailed, match="both an ext_db_size and ext_db_ratio"):
        KINDS["osd.add"](ctx, node="hv3", device="/dev/sdb", weight=1.0, ext_db_ratio=0.05,
                         ext_db_size=1 << 30)
    with pytest.raises(TaskFailed, match="needs LVM block devices"):
        KINDS["osd.add_db_vg"](ctx, node="hv3", device="/dev/sdc")
    assert not direct.actions


# -------------------------------------------------------------------- osd.remove (direct)

def _added(ctx: FakeContext) -> int:
    result = KINDS["osd.add"](ctx, node="hv3", device="file:a.img:1G", weight=0.25)
    ctx.progress_log.clear()
    ctx.lines.clear()
    return int(result["osds"][0])


def test_remove_waits_until_safe_then_purges(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ceph.safe_after = 3
    result = KINDS["osd.remove"](ctx, osd_id=osd_id, force=False)
    assert result["status"] == "Successfully removed OSD 3"
    _assert_nothing_left(ceph, direct, ctx)
    asked = [c for c in ceph.commands if c[0] == "osd safe-to-destroy"]
    assert len(asked) == 4 and asked[0][1] == {"ids": ["3"]}
    assert ctx.statuses == ["Removing OSD 3", "Setting OSD 3 out", "Waiting for OSD 3 to be safe to remove",
                            "Stopping OSD 3", "Destroying OSD 3", "Removing OSD 3 from CRUSH map",
                            "Purging OSD 3", "Removing the data of OSD 3", "Deleting OSD 3 from PVC", "Done"]
    assert ctx.progress_log[-1][:2] == (9, 9)


def test_remove_that_never_becomes_safe_puts_the_osd_back(ctx: FakeContext, ceph: FakeCeph,
                                                          direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ceph.safe_after = 10**6
    with pytest.raises(TaskFailed, match=r"did not become safe to remove.*remove it with force"):
        KINDS["osd.remove"](ctx, osd_id=osd_id, safe_timeout=0)
    assert ceph.table[3]["in"] == 1 and direct.running(3) and ctx.zk.exists(schema.osd(3))


def test_cancel_while_waiting_to_be_safe_puts_the_osd_back(ctx: FakeContext, ceph: FakeCeph,
                                                           direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ceph.safe_after = 10**6
    ctx.cancel_at("to be safe to remove")
    with pytest.raises(TaskCancelled):
        KINDS["osd.remove"](ctx, osd_id=osd_id)
    assert ceph.table[3]["in"] == 1 and direct.running(3) and ctx.zk.exists(schema.osd(3))


def test_cancel_past_the_point_of_no_return_is_ignored(ctx: FakeContext, ceph: FakeCeph,
                                                       direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ctx.cancel_at("Destroying OSD")
    KINDS["osd.remove"](ctx, osd_id=osd_id, force=True)
    _assert_nothing_left(ceph, direct, ctx)
    assert any("past the point of no return" in line for line in ctx.lines)


def test_force_removal_carries_on_past_failures(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ceph.fail_commands["osd crush rm"] = "EIO"
    result = KINDS["osd.remove"](ctx, osd_id=osd_id, force=True)
    assert result["status"] == "Successfully removed OSD 3"
    assert not [c for c in ceph.commands if c[0] == "osd safe-to-destroy"]
    skipped = "remove OSD 3 from the CRUSH map (ceph osd crush rm: EIO); ignoring"
    assert any(skipped in line for line in ctx.lines)
    _assert_nothing_left(ceph, direct, ctx)


def test_unforced_failure_after_destroy_says_how_to_finish(ctx: FakeContext, ceph: FakeCeph,
                                                           direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ceph.fail_commands["osd purge-actual"] = "EIO"
    ceph.fail_commands["osd purge"] = "EINVAL"
    with pytest.raises(TaskFailed, match=r"Failed to purge OSD 3.*retry the removal of OSD 3 with force"):
        KINDS["osd.remove"](ctx, osd_id=osd_id)
    assert ceph.table[3]["destroyed"] and not direct.running(3)     # no revert past that point


def test_remove_unknown_osd(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    with pytest.raises(TaskFailed, match="OSD 7 not found in Ceph"):
        KINDS["osd.remove"](ctx, osd_id=7)
    ctx.zk.put(schema.osd(7), {"id": 7, "node": "hv3", "device": "/srv/x.img"})
    KINDS["osd.remove"](ctx, osd_id=7, force=True)
    assert not ctx.zk.exists(schema.osd(7))
    ctx.zk.put(schema.osd(1), {"id": 1, "node": "hv2", "device": "/srv/x.img"})
    with pytest.raises(TaskFailed, match="OSD 1 is on node hv2"):
        KINDS["osd.remove"](ctx, osd_id=1)


# ---------------------------------------------------------- osd.replace / refresh (direct)

def test_replace_direct_keeps_the_weight(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    result = KINDS["osd.replace"](ctx, osd_id=osd_id, new_device="file:b.img:2G", old_device=None,
                                  weight=None, ext_db_ratio=None, ext_db_size=None)
    (new_id,) = result["osds"]
    assert ceph.table[new_id]["weight"] == 0.25 and ceph.table[new_id]["up"] == 1
    assert ctx.zk.get(schema.osd(new_id))["device"] == _osd_file(ctx, "b.img")
    assert list(direct.blocks) == [_osd_file(ctx, "b.img")]
    assert ctx.progress_log[-1][0] == ctx.progress_log[-1][1]


def test_refresh_direct_restarts_and_reimports(ctx: FakeContext, ceph: FakeCeph, direct: FakeDirect) -> None:
    osd_id = _added(ctx)
    ctx.zk.delete(schema.osd(osd_id))
    direct.stop(osd_id)
    result = KINDS["osd.refresh"](ctx, osd_id=osd_id, device="")
    assert result["osds"] == [3] and direct.running(3) and ceph.table[3]["up"] == 1
    doc = ctx.zk.get(schema.osd(3))
    assert doc["device"] == _osd_file(ctx, "a.img")
    assert doc["fsid"] == ceph.table[3]["uuid"] and doc["node"] == "hv3"
    with pytest.raises(TaskFailed, match="Could not find OSD 9 in the cluster"):
        KINDS["osd.refresh"](ctx, osd_id=9, device="")
    with pytest.raises(TaskFailed, match="OSD 0 has no data directory on node hv3"):
        KINDS["osd.refresh"](ctx, osd_id=0, device="")


# ----------------------------------------------------------------------------- systemd mode

@pytest.fixture
def sctx(tmp_path: Path) -> FakeContext:
    return FakeContext(_settings(tmp_path, "systemd"))


def test_add_systemd_with_detect_split_and_db(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    host.db_vg = True
    result = KINDS["osd.add"](sctx, node="hv3", device="detect:INTEL:480GB:0", weight=0.4, ext_db_ratio=0.05,
                              ext_db_size=None, osd_count=2)
    assert result["osds"] == [3, 4] and "on device /dev/sdb" in result["status"]
    assert host.ran("sfdisk") == [["sfdisk", "--dump", "/dev/sdb"]]
    assert host.ran("ceph-volume", "lvm", "batch") == [[
        "ceph-volume", "lvm", "batch", "--yes", "--prepare", "--bluestore", "--osds-per-device", "2",
        "--crush-device-class", "ssd", "/dev/sdb"]]
    assert host.ran("lvcreate") == [["lvcreate", "-L", "20480M", "-n", "osd-3", "--yes", "osd-db"],
                                    ["lvcreate", "-L", "20480M", "-n", "osd-4", "--yes", "osd-db"]]
    assert [c[:5] for c in host.ran("ceph-volume", "lvm", "activate")] == [
        ["ceph-volume", "lvm", "activate", "--bluestore", "3"],
        ["ceph-volume", "lvm", "activate", "--bluestore", "4"]]
    doc = sctx.zk.get(schema.osd(4))
    assert doc["device"] == "/dev/sdb" and doc["db_device"] == "/dev/osd-db/osd-4" and doc["is_split"] is True
    assert doc["service"] == "systemd" and doc["vg"] == "ceph-x"
    assert ceph.table[3]["host"] == "hv3" and ceph.table[4]["up"] == 1
    total = 5 + 3 * 2 + 3 * 2 + 1
    assert sctx.progress_log[0][1] == total and sctx.progress_log[-1][:2] == (total, total)
    assert "Attaching Bluestore DB volume to OSD 4" in sctx.statuses


def test_add_systemd_refuses_a_partitioned_disk(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    host.partitioned.add("/dev/sdc")
    with pytest.raises(TaskFailed, match="Device /dev/sdc has a partition table"):
        KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0)
    assert not host.ran("ceph-volume")


def test_add_systemd_needs_the_db_vg_for_db_volumes(sctx: FakeContext, host: FakeHost) -> None:
    with pytest.raises(TaskFailed, match="create it first"):
        KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0, ext_db_size=1 << 30)


def test_add_systemd_reverts_when_activation_fails(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    host.db_vg = True
    host.fail[("ceph-volume", "lvm", "activate")] = 1
    with pytest.raises(TaskFailed, match="ceph-volume lvm activate for OSD 3 failed"):
        KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0, ext_db_size=1 << 30)
    assert 3 not in ceph.table and not host.devices
    assert host.ran("lvremove") == [["lvremove", "--yes", "--force", "osd-db/osd-3"]]
    assert host.ran("ceph-volume", "lvm", "zap")[-1] == ["ceph-volume", "lvm", "zap", "--destroy", "/dev/sdc"]
    assert not sctx.zk.exists(schema.osd(3))


def test_remove_systemd_zaps_a_disk_left_empty(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    host.db_vg = True
    KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0, ext_db_size=1 << 30)
    KINDS["osd.remove"](sctx, osd_id=3, force=False)
    assert host.ran("systemctl", "stop") == [["systemctl", "stop", "ceph-osd@3"]]
    assert host.ran("lvremove") == [["lvremove", "--yes", "--force", "/dev/osd-db/osd-3"]]
    assert host.ran("ceph-volume", "lvm", "zap")[-1] == ["ceph-volume", "lvm", "zap", "--destroy", "/dev/sdc"]
    assert 3 not in ceph.table and not sctx.zk.exists(schema.osd(3))
    assert "Removing OSD DB logical volume /dev/osd-db/osd-3" in sctx.statuses


def test_remove_systemd_keeps_a_disk_shared_with_other_osds(sctx: FakeContext, ceph: FakeCeph,
                                                             host: FakeHost) -> None:
    KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0, osd_count=2)
    zaps = len(host.ran("ceph-volume", "lvm", "zap"))
    KINDS["osd.remove"](sctx, osd_id=3, force=False)
    assert len(host.ran("ceph-volume", "lvm", "zap")) == zaps
    assert any("1 OSD(s) still remaining on /dev/sdc" in line for line in sctx.lines)


def test_replace_systemd_keeps_ids(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=0.7)
    fsid = ceph.table[3]["uuid"]
    result = KINDS["osd.replace"](sctx, osd_id=3, new_device="/dev/sdd")
    assert result["osds"] == [3] and ceph.table[3]["up"] == 1 and ceph.table[3]["weight"] == 0.7
    assert host.ran("ceph-volume", "lvm", "prepare")[0][-6:] == [
        "--osd-id", "3", "--osd-fsid", fsid, "--data", f"{host.ran('vgcreate')[0][1]}/osd-block-{fsid}"]
    assert ("osd destroy-actual", {"id": 3, "yes_i_really_mean_it": True}) in ceph.commands
    assert sctx.zk.get(schema.osd(3))["device"] == "/dev/sdd"


def test_refresh_systemd_checks_the_fsid(sctx: FakeContext, ceph: FakeCeph, host: FakeHost) -> None:
    KINDS["osd.add"](sctx, node="hv3", device="/dev/sdc", weight=1.0)
    sctx.zk.delete(schema.osd(3))
    result = KINDS["osd.refresh"](sctx, osd_id=3, device="/dev/sdc")
    assert result["osds"] == [3] and sctx.zk.get(schema.osd(3))["device"] == "/dev/sdc"
    ceph.table[3]["uuid"] = "someone-else"
    with pytest.raises(TaskFailed, match="does not match volume FSID"):
        KINDS["osd.refresh"](sctx, osd_id=3, device="/dev/sdc")
    with pytest.raises(TaskFailed, match="Could not find OSD 0 on device /dev/sdc"):
        KINDS["osd.refresh"](sctx, osd_id=0, device="/dev/sdc")


def test_db_vg_systemd(sctx: FakeContext, host: FakeHost) -> None:
    result = KINDS["osd.add_db_vg"](sctx, node="hv3", device="/dev/nvme0n1")
    assert "Successfully created new OSD DB volume group" in result["status"]
    assert [c[0] for c in host.calls[-3:]] == ["wipefs", "pvcreate", "vgcreate"]
    with pytest.raises(TaskFailed, match="VG already exists"):
        KINDS["osd.add_db_vg"](sctx, node="hv3", device="/dev/nvme0n1")


# ------------------------------------------------------------------------- storage.benchmark

class FakeFio:
    def __init__(self, engines: bool = True, fail_at: str | None = None) -> None:
        self.engines, self.fail_at = engines, fail_at
        self.ran: list[str] = []

    def check(self) -> None:
        if not self.engines:
            raise OsdError("fio on this node has no rbd ioengine (fio --enghelp does not list it)")

    def run_test(self, test: str, pool: str, volume: str, runtime: int,
                 poll: Callable[[], None] | None = None) -> dict[str, Any]:
        self.ran.append(test)
        assert volume == osd_adapter.BENCHMARK_VOLUME and runtime == 1
        if poll:
            poll()
        if test == self.fail_at:
            raise OsdError(f"fio test {test} failed (exit 1): rbd_open failed")
        return {"avg_cpu_util_percent": {"total": 1.0}, "jobs": [{"jobname": test, "read": {"iops": 10}}]}


Bench = Callable[[FakeFio], FakeFio]


@pytest.fixture
def bench(ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> Bench:
    monkeypatch.setattr(sk, "storage_for", lambda settings: ceph)

    def use(fio: FakeFio) -> FakeFio:
        monkeypatch.setattr(sk, "fio_runner_for", lambda settings: fio)
        return fio

    return use


def test_benchmark_runs_the_8_tests_and_stores_results(ctx: FakeContext, ceph: FakeCeph,
                                                       bench: Bench) -> None:
    fio = bench(FakeFio())
    result = KINDS["storage.benchmark"](ctx, pool="vms", name=None)
    job = result["job"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d_hv3", job)
    doc = ctx.zk.get(schema.benchmark(job))
    assert doc["id"] == job and doc["test_format"] == 2 and doc["pool"] == "vms"
    assert list(doc["benchmark_result"]) == list(osd_adapter.BENCHMARK_TESTS) == fio.ran
    assert doc["benchmark_result"]["seq_read"]["jobs"][0]["jobname"] == "seq_read"
    assert ceph.list_volumes("vms") == []
    assert ("create_volume", "vms/pvcbenchmark") in ceph.calls
    assert ctx.progress_log[0] == (0, 13, f"Running storage benchmark '{job}' on pool 'vms'")
    assert ctx.progress_log[-1][:2] == (13, 13)
    assert "Running benchmark job 'rand_write_4K_lowdepth'" in ctx.statuses


def test_benchmark_failure_cleans_up(ctx: FakeContext, ceph: FakeCeph, bench: Bench) -> None:
    bench(FakeFio(fail_at="rand_read_4M"))
    with pytest.raises(TaskFailed, match="Storage benchmark b1 failed: fio test rand_read_4M failed"):
        KINDS["storage.benchmark"](ctx, pool="vms", name="b1")
    assert not ctx.zk.exists(schema.benchmark("b1")) and ceph.list_volumes("vms") == []


def test_benchmark_cancel_cleans_up(ctx: FakeContext, ceph: FakeCeph, bench: Bench) -> None:
    fio = bench(FakeFio())
    ctx.cancel_at("rand_write_4M")
    with pytest.raises(TaskCancelled):
        KINDS["storage.benchmark"](ctx, pool="vms", name="b2")
    assert fio.ran == ["seq_read", "seq_write", "rand_read_4M"]
    assert not ctx.zk.exists(schema.benchmark("b2")) and ceph.list_volumes("vms") == []


def test_benchmark_refusals(ctx: FakeContext, ceph: FakeCeph, bench: Bench) -> None:
    bench(FakeFio(engines=False))
    with pytest.raises(TaskFailed, match="no rbd ioengine"):
        KINDS["storage.benchmark"](ctx, pool="vms", name="b3")
    assert not ctx.zk.exists(schema.benchmark("b3"))
    bench(FakeFio())
    ctx.zk.put(schema.benchmark("b4"), {"id": "b4"})
    with pytest.raises(TaskFailed, match='"b4" already exists'):
        KINDS["storage.benchmark"](ctx, pool="vms", name="b4")
    assert ctx.zk.get(schema.benchmark("b4")) == {"id": "b4"}                  # not clobbered
    with pytest.raises(TaskFailed, match="pool nope: not found"):
        KINDS["storage.benchmark"](ctx, pool="nope", name="b5")
    assert not ctx.zk.exists(schema.benchmark("b5"))


def test_benchmark_replaces_a_left_over_volume_but_not_a_busy_one(ctx: FakeContext, ceph: FakeCeph,
                                                                  bench: Bench) -> None:
    bench(FakeFio())
    ceph.create_volume("vms", "pvcbenchmark", 1 << 20)
    KINDS["storage.benchmark"](ctx, pool="vms", name="b6")
    assert ceph.list_volumes("vms") == []
    ceph.create_volume("vms", "pvcbenchmark", 1 << 20)
    ceph.set_watchers("vms", "pvcbenchmark", ["10.200.0.1:0/99"])
    with pytest.raises(TaskFailed, match="already running"):
        KINDS["storage.benchmark"](ctx, pool="vms", name="b7")


# ------------------------------------------------------------------------ VM tasks on storage

def _vm(ctx: FakeContext, state: str, volumes: list[str]) -> str:
    uuid = "2f7b1c3e-0000-4000-8000-000000000001"
    ctx.zk.put(schema.vm(uuid), VMRecord(uuid=uuid, name="web1", xml="<domain/>", state=state, node="hv3",
                                         rbd_volumes=volumes).doc())
    return uuid


def test_flush_locks_frees_every_lock_and_reports_them(ctx: FakeContext, ceph: FakeCeph,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "storage_for", lambda settings: ceph)
    for name in ("web1_disk0", "web1_disk1"):
        ceph.create_volume("vms", name, 1 << 20)
    held = ceph.add_locker("vms", "web1_disk0")
    uuid = _vm(ctx, "fail", ["vms/web1_disk0", "vms/web1_disk1", "vms/gone"])
    result = KINDS["vm.flush_locks"](ctx, uuid=uuid, domain="web1", force_unlock=False)
    assert result["freed"] == [{"volume": "vms/web1_disk0", "client": held.client, "cookie": held.cookie,
                                "address": held.address}]
    assert ceph.lockers("vms", "web1_disk0") == [] and held.address in ceph.blocklisted()
    assert result["status"] == "Flushed 1 lock(s) on 3 volume(s) of VM web1"
    assert any("vms/gone does not exist" in line for line in ctx.lines)


def test_flush_locks_refuses_a_vm_that_may_run(ctx: FakeContext, ceph: FakeCeph,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sk, "storage_for", lambda settings: ceph)
    ceph.create_volume("vms", "web1_disk0", 1 << 20)
    ceph.add_locker("vms", "web1_disk0", Locker("client.9", "auto 1", "10.200.0.2:0/9"))
    uuid = _vm(ctx, "start", ["vms/web1_disk0"])
    with pytest.raises(TaskFailed, match="state start"):
        KINDS["vm.flush_locks"](ctx, uuid=uuid)
    assert len(ceph.lockers("vms", "web1_disk0")) == 1
    result = KINDS["vm.flush_locks"](ctx, uuid=uuid, force_unlock=True)
    assert len(result["freed"]) == 1
    ceph.fail_next("lockers", times=1)
    uuid2 = _vm(ctx, "stop", ["vms/web1_disk0"])
    with pytest.raises(TaskFailed, match="Could not flush all RBD locks") as info:
        KINDS["vm.flush_locks"](ctx, uuid=uuid2)
    assert info.value.result["errors"]


class StubHypervisor:
    def __init__(self, running: bool) -> None:
        self.is_running_value = running
        self.resized: list[tuple[str, str, int]] = []
        self.closed = False

    def is_running(self, uuid: str) -> bool:
        return self.is_running_value

    def block_resize(self, uuid: str, disk: str, size: int) -> None:
        self.resized.append((uuid, disk, size))

    def close(self) -> None:
        self.closed = True


def test_block_resize_on_a_running_vm(ctx: FakeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    hv = StubHypervisor(True)
    monkeypatch.setattr(vmk, "hypervisor_for", lambda c: hv)
    uuid = _vm(ctx, "start", ["vms/web1_disk0"])
    result = KINDS["vm.block_resize"](ctx, uuid=uuid, domain="web1", pool="vms", volume="web1_disk0",
                                      size="2G")
    assert hv.resized == [(uuid, "vms/web1_disk0", 2 << 30)] and hv.closed
    assert "Resized disk vms/web1_disk0 of running VM web1" in result["status"]
    hv.is_running_value = False
    with pytest.raises(TaskFailed, match="not running on node hv3; it sees the new size"):
        KINDS["vm.block_resize"](ctx, uuid=uuid, pool="vms", volume="web1_disk0", size=4 << 30)
    with pytest.raises(TaskFailed, match="size"):
        KINDS["vm.block_resize"](ctx, uuid=uuid, pool="vms", volume="web1_disk0", size="lots")
