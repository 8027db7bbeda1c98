"""pvc.adapters.osd: the pure decisions (argv, detect strings, partition tables, ceph-volume and
fio output) and the direct-mode service's file handling, with a scripted command runner."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pvc.adapters import osd
from pvc.adapters.osd import CommandResult, DirectOsdService, OsdError, SystemdOsdService

LSSCSI = """\
[0:0:0:0]    disk    ATA      INTEL SSDSC2KB48 0100  /dev/sda   480GB
[1:0:0:0]    disk    ATA      INTEL SSDSC2KB48 0100  /dev/sdb   480GB
[2:0:0:0]    disk    ATA      INTEL SSDSC2KB96 0100  /dev/sdc   960GB
[3:0:0:0]    cd/dvd  QEMU     QEMU DVD-ROM     2.5+  /dev/sr0       -
[4:0:0:0]    disk    SEAGATE  ST4000NM0023     0004  /dev/sdd  4.00TB
"""
NVME = json.dumps({"Devices": [
    {"DevicePath": "/dev/nvme0n1", "ModelNumber": "Micron_7450_MTFDKCC1T9TFR", "PhysicalSize": 1920383410176},
    {"DevicePath": "/dev/nvme1n1", "ModelNumber": "Micron_7450_MTFDKCC1T9TFR", "PhysicalSize": 1920383410176},
]})
LVM_LIST = json.dumps({
    "3": [{"type": "block", "lv_path": "/dev/ceph-a/osd-block-f3", "vg_name": "ceph-a",
           "lv_name": "osd-block-f3",
           "tags": {"ceph.osd_id": "3", "ceph.osd_fsid": "f3", "ceph.cluster_fsid": "cf",
                    "ceph.db_device": "/dev/osd-db/osd-3"}},
          {"type": "db", "lv_path": "/dev/osd-db/osd-3", "tags": {"ceph.osd_id": "3"}}],
    "2": [{"type": "block", "lv_path": "/dev/ceph-a/osd-block-f2", "vg_name": "ceph-a",
           "lv_name": "osd-block-f2",
           "tags": {"ceph.osd_id": "2", "ceph.osd_fsid": "f2", "ceph.cluster_fsid": "cf"}}],
})


# ------------------------------------------------------------------------------- pure helpers

def test_parse_bytes_binary_and_decimal() -> None:
    assert osd.parse_bytes("1G") == 1 << 30
    assert osd.parse_bytes("512M") == 512 << 20
    assert osd.parse_bytes("2GiB") == 2 << 30
    assert osd.parse_bytes("4096") == 4096
    assert osd.parse_bytes("480GB", binary=False) == 480 * 10**9
    assert osd.parse_bytes("1.92TB", binary=False) == 1_920_000_000_000
    for bad in ("", "ten", "-1G", "0", "1X"):
        with pytest.raises(OsdError):
            osd.parse_bytes(bad)


def test_parse_detect() -> None:
    assert osd.parse_detect("/dev/sdb") is None
    spec = osd.parse_detect("detect:INTEL:480GB:1")
    assert spec == osd.DetectSpec("INTEL", 480 * 10**9, 1)
    for bad in ("detect:INTEL:480GB", "detect::480GB:0", "detect:INTEL:480GB:x", "detect:INTEL:big:0"):
        with pytest.raises(OsdError):
            osd.parse_detect(bad)


def test_detect_matches_name_size_within_3_percent_and_index() -> None:
    disks = osd.parse_lsscsi(LSSCSI)
    assert [d.device for d in disks] == ["/dev/sda", "/dev/sdb", "/dev/sdc", "/dev/sdd"]   # no cd-rom
    pick = osd.pick_detect_device
    assert pick(osd.DetectSpec("intel", 480 * 10**9, 0), disks) == "/dev/sda"
    assert pick(osd.DetectSpec("INTEL", 480 * 10**9, 1), disks) == "/dev/sdb"
    assert pick(osd.DetectSpec("INTEL", 480 * 10**9, 2), disks) is None
    assert pick(osd.DetectSpec("INTEL", 470 * 10**9, 0), disks) == "/dev/sda"      # -2 %: still a match
    assert pick(osd.DetectSpec("INTEL", 500 * 10**9, 0), disks) is None            # +4 %: no
    assert pick(osd.DetectSpec("SSDSC2KB96", 960 * 10**9, 0), disks) == "/dev/sdc"
    assert pick(osd.DetectSpec("ST4000", 4 * 10**12, 0), disks) == "/dev/sdd"
    nvme = osd.parse_nvme_list(NVME)
    assert pick(osd.DetectSpec("Micron", 1_920_000_000_000, 1), nvme) == "/dev/nvme1n1"
    assert osd.parse_nvme_list("not json") == []


def test_partition_table_from_sfdisk_dump() -> None:
    gpt = ("label: gpt\nlabel-id: 1C5F...\ndevice: /dev/sdb\nunit: sectors\n\n"
           "/dev/sdb1 : start=2048, size=100\n")
    assert osd.partition_table(0, gpt) == "gpt"
    assert osd.partition_table(0, "label: dos\n") == "dos"
    assert osd.partition_table(0, "") == "unknown"
    assert osd.partition_table(1, "") is None     # "does not contain a recognized partition table"


def test_device_class_and_db_sizes() -> None:
    assert osd.device_class("/dev/nvme0n1") == "nvme"
    assert osd.device_class("/dev/sdb") == "ssd"
    assert osd.db_size_bytes(100 << 30, 0.05, None) == 5 << 30
    assert osd.db_size_bytes(100 << 30, None, 20 << 30) == 20 << 30
    assert osd.db_size_bytes(100 << 30, None, None) is None
    with pytest.raises(OsdError, match="not both"):
        osd.db_size_bytes(1, 0.1, 1)
    with pytest.raises(OsdError, match="between 0 and 1"):
        osd.db_size_bytes(1 << 30, 1.5, None)
    with pytest.raises(OsdError, match="1 MiB"):
        osd.db_size_bytes(1 << 30, None, 1000)


def test_parse_lvm_list_takes_block_entries_by_id() -> None:
    found = osd.parse_lvm_list(LVM_LIST)
    assert [o.id for o in found] == [2, 3]
    assert found[1] == osd.PreparedOsd(id=3, fsid="f3", cluster_fsid="cf", lv_path="/dev/ceph-a/osd-block-f3",
                                       vg="ceph-a", lv="osd-block-f3", db_device="/dev/osd-db/osd-3")
    assert osd.parse_lvm_list("{}") == []
    with pytest.raises(OsdError):
        osd.parse_lvm_list("{")


def test_systemd_argv() -> None:
    assert osd.zap_argv("/dev/sdb") == ["ceph-volume", "lvm", "zap", "--destroy", "/dev/sdb"]
    assert osd.batch_argv("/dev/sdb", 1, "ssd") == [
        "ceph-volume", "lvm", "batch", "--yes", "--prepare", "--bluestore", "--crush-device-class", "ssd",
        "/dev/sdb"]
    split = osd.batch_argv("/dev/nvme0n1", 4, "nvme")
    assert split[6:9] == ["--osds-per-device", "4", "--crush-device-class"]
    assert osd.activate_argv(3, "f3") == ["ceph-volume", "lvm", "activate", "--bluestore", "3", "f3"]
    assert osd.lvcreate_db_argv(3, (10 << 30) + 123) == ["lvcreate", "-L", "10240M", "-n", "osd-3", "--yes",
                                                         "osd-db"]
    assert osd.new_db_argv(3, "f3", "osd-db/osd-3") == [
        "ceph-volume", "lvm", "new-db", "--osd-id", "3", "--osd-fsid", "f3", "--target", "osd-db/osd-3"]
    assert osd.systemctl_argv("stop", 3) == ["systemctl", "stop", "ceph-osd@3"]
    assert osd.prepare_existing_argv(3, "f3", "vg/lv")[-2:] == ["--data", "vg/lv"]
    assert osd.sfdisk_dump_argv("/dev/sdb") == ["sfdisk", "--dump", "/dev/sdb"]


def test_direct_osd_argv_has_everything_on_the_command_line() -> None:
    spec = osd.DirectOsd(7, "/etc/ceph/ceph.conf", "/var/lib/ceph/osd/ceph-7", "hv3", "10.0.0.3")
    run = spec.run_argv()
    assert run[:4] == ["ceph-osd", "-f", "-i", "7"]
    assert run[run.index("--osd-data") + 1] == "/var/lib/ceph/osd/ceph-7"
    assert run[run.index("--keyring") + 1] == "/var/lib/ceph/osd/ceph-7/keyring"
    assert run[run.index("--public-addr") + 1] == run[run.index("--cluster-addr") + 1] == "10.0.0.3"
    assert run[run.index("--crush-location") + 1] == "root=default host=hv3"
    mkfs = spec.mkfs_argv("u-u-i-d", "/srv/osd7.img")
    assert "-f" not in mkfs and "--mkfs" in mkfs and "--no-mon-config" in mkfs
    assert mkfs[mkfs.index("--osd-uuid") + 1] == "u-u-i-d"
    assert mkfs[mkfs.index("--bluestore-block-path") + 1] == "/srv/osd7.img"
    assert "--key" not in mkfs          # the key goes in the keyring file, never on argv
    bare = osd.DirectOsd(7, "/c", "/d", "hv3").run_argv()
    assert "--public-addr" not in bare


def test_parse_file_device() -> None:
    parse = osd.parse_file_device
    assert parse("file:/srv/a.img:2G", "/base") == osd.FileDevice(Path("/srv/a.img"), 2 << 30)
    assert parse("file:/srv/a.img", "/base") == osd.FileDevice(Path("/srv/a.img"), None)
    assert parse("file:disk3.img:512M", "/base") == osd.FileDevice(Path("/base/disk3.img"), 512 << 20)
    assert parse("/srv/b.img", "/base") == osd.FileDevice(Path("/srv/b.img"), None)
    assert parse("/dev/sdb", "/base") == osd.FileDevice(Path("/dev/sdb"), None)
    assert parse("file:/srv/odd:name.img", "/base").path == Path("/srv/odd:name.img")
    for bad in ("file:", "file:../x.img:1G", "detect:INTEL:480GB:0", "file:/a/../b:1G"):
        with pytest.raises(OsdError):
            parse(bad, "/base")


def test_small_helpers() -> None:
    assert osd.holds_bluestore(b"bluestore block device\n2e1f...")
    assert not osd.holds_bluestore(b"\0" * 32)
    assert osd.pidfile_name("hv3", 4) == "hv3-ceph-osd.4.pid"


# ------------------------------------------------------------------------------------- fio

def test_fio_argv_env_and_engines() -> None:
    argv = osd.fio_argv("rand_write_4K_lowdepth", "vms", "pvcbenchmark", "admin", 75)
    assert argv[0] == "fio" and "--ioengine=rbd" in argv and "--clientname=admin" in argv
    assert {"--pool=vms", "--rbdname=pvcbenchmark", "--output-format=json", "--time_based", "--runtime=75",
            "--iodepth=1", "--bs=4K", "--readwrite=randwrite", "--direct=1"} <= set(argv)
    assert list(osd.BENCHMARK_TESTS) == ["seq_read", "seq_write", "rand_read_4M", "rand_write_4M",
                                         "rand_read_4K", "rand_write_4K", "rand_read_4K_lowdepth",
                                         "rand_write_4K_lowdepth"]
    assert osd.fio_argv("seq_read", "p", "v", "c", 1)[-3:] == ["--iodepth=64", "--bs=4M", "--readwrite=read"]
    env = osd.fio_env("/etc/ceph/ceph.conf", "/etc/ceph/k")
    assert env["CEPH_CONF"] == "/etc/ceph/ceph.conf" and env["CEPH_KEYRING"] == "/etc/ceph/k"
    assert "rbd" in osd.fio_engines("Available IO engines:\n\tsync\n\trbd\n\tlibaio\n")
    assert "rbd" not in osd.fio_engines("Available IO engines:\n\tsync\n\trbd_x\n")


def test_parse_fio_output() -> None:
    report = {"fio version": "fio-3.33", "jobs": [{"jobname": "seq_read", "read": {"iops": 12.5}}]}
    assert osd.parse_fio_output("note: both iodepth >= 1 and synchronous I/O engine\n" + json.dumps(report)) \
        == report
    for bad in ("", "error", "{nope", json.dumps({"jobs": []})):
        with pytest.raises(OsdError):
            osd.parse_fio_output(bad)


def test_fio_check_fails_clearly_without_rbd_engine() -> None:
    runner = osd.FioRunner("/c", "/k", run=lambda argv, timeout: CommandResult(
        tuple(argv), 0, "Available IO engines:\n\tsync\n\tlibaio\n", ""))
    with pytest.raises(OsdError, match="no rbd ioengine"):
        runner.check()
    ok = osd.FioRunner("/c", "/k", run=lambda argv, timeout: CommandResult(
        tuple(argv), 0, "Available IO engines:\n\trbd\n", ""))
    ok.check()


# ------------------------------------------------------------------- systemd with a script

class Script:
    """A command runner answering from a table of argv prefixes; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(argv))
        for prefix, (code, out) in sorted(self.answers.items(), key=lambda kv: -len(kv[0])):
            if tuple(argv[:len(prefix)]) == prefix:
                return CommandResult(tuple(argv), code, out, "" if code == 0 else f"{argv[0]}: failed")
        return CommandResult(tuple(argv), 0, "", "")


def test_systemd_resolve_prefers_lsscsi_then_nvme() -> None:
    script = Script({("lsscsi",): (0, LSSCSI), ("nvme",): (0, NVME)})
    service = SystemdOsdService(script, settle=0)
    assert service.resolve("/dev/sdq") == "/dev/sdq" and script.calls == []
    assert service.resolve("detect:INTEL:480GB:1") == "/dev/sdb"
    assert service.resolve("detect:Micron:1.92TB:0") == "/dev/nvme0n1"
    assert script.calls[-1] == ["nvme", "list", "--output-format", "json"]
    with pytest.raises(OsdError, match="Failed to determine block device"):
        service.resolve("detect:Samsung:1TB:0")


def test_systemd_checks_and_activation() -> None:
    script = Script({("sfdisk", "--dump", "/dev/sdb"): (0, "label: gpt\n"),
                     ("sfdisk", "--dump", "/dev/sdc"): (1, ""),
                     ("systemctl", "is-active"): (3, ""),
                     ("ceph-volume", "lvm", "list"): (0, LVM_LIST),
                     ("blockdev",): (0, "480103981056\n")})
    service = SystemdOsdService(script, settle=0)
    with pytest.raises(OsdError, match="has a partition table"):
        service.check_unpartitioned("/dev/sdb")
    service.check_unpartitioned("/dev/sdc")
    assert [o.id for o in service.list_osds("/dev/sdc")] == [2, 3]
    assert service.size_of("/dev/ceph-a/osd-block-f3") == 480103981056
    with pytest.raises(OsdError, match="did not start"):
        service.activate(3, "f3")
    assert script.calls[-2] == ["ceph-volume", "lvm", "activate", "--bluestore", "3", "f3"]
    script.answers[("ceph-volume", "lvm", "zap")] = (1, "")
    with pytest.raises(OsdError, match="ceph-volume lvm zap on /dev/sdc failed"):
        service.zap("/dev/sdc")


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(OsdError, match="is not installed"):
        osd.run_command(["pvc-no-such-program-xyz"])


# --------------------------------------------------------------------------- direct mode files

def _direct(tmp_path: Path, run: osd.Runner | None = None) -> DirectOsdService:
    return DirectOsdService("hv3", "/etc/ceph/ceph.conf", tmp_path / "osd", tmp_path / "pids",
                            tmp_path / "log", "10.0.0.3", run=run or Script({}), start_check=0.3)


def test_prepare_block_creates_a_sparse_file_and_refuses_a_used_one(tmp_path: Path) -> None:
    service = _direct(tmp_path)
    device = service.resolve("file:disks/a.img:1G")
    assert device.path == tmp_path / "osd" / "disks" / "a.img"
    assert service.prepare_block(device) is True
    st = device.path.stat()
    assert st.st_size == 1 << 30 and st.st_blocks * 512 < 1 << 20       # sparse
    for again in (f"file:{device.path}", f"file:{device.path}:2G", str(device.path)):
        with pytest.raises(OsdError, match=r"already exists.*never overwrites"):  # never reused
            service.prepare_block(service.resolve(again))
    with pytest.raises(OsdError, match="give a size"):
        service.prepare_block(service.resolve(str(tmp_path / "osd" / "missing.img")))
    for outside in (f"file:{tmp_path / 'elsewhere.img'}:1G", "file:/etc/passwd"):
        with pytest.raises(OsdError, match="outside the OSD data directory"):
            service.resolve(outside)
    service.discard_block(device.path, created=False)               # wipes the label, keeps the file
    with open(device.path, "rb") as handle:
        assert not osd.holds_bluestore(handle.read(32))
    service.discard_block(device.path, created=True)
    assert not device.path.exists()


def test_mkfs_writes_keyring_and_launch_file(tmp_path: Path) -> None:
    script = Script({})
    service = _direct(tmp_path, script)
    block = tmp_path / "a.img"
    service.mkfs(5, "uuid-5", "AQBkey==", block, True)
    data = tmp_path / "osd" / "ceph-5"
    keyring = data / "keyring"
    assert keyring.read_text() == "[osd.5]\n\tkey = AQBkey==\n"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    launch = json.loads((data / osd.LAUNCH_FILE).read_text())
    assert launch["argv"] == service.spec(5).run_argv()
    assert launch["pidfile"] == str(tmp_path / "pids" / "hv3-ceph-osd.5.pid")
    assert launch["block"] == str(block) and launch["block_created"] is True and launch["uuid"] == "uuid-5"
    (mkfs,) = script.calls
    assert mkfs == service.spec(5).mkfs_argv("uuid-5", str(block)) and "AQBkey==" not in " ".join(mkfs)
    assert service.known_osds() == [5]
    with pytest.raises(OsdError, match="not empty"):
        service.mkfs(5, "uuid-5", "AQBkey==", block, True)
    failing = _direct(tmp_path, Script({("ceph-osd",): (1, "bluestore mkfs failed: no space")}))
    with pytest.raises(OsdError, match="ceph-osd --mkfs for OSD 6 failed"):
        failing.mkfs(6, "uuid-6", "k", block, False)
    block.write_bytes(b"x" * 64)
    service.remove_data(5)
    assert not data.exists() and not block.exists()                 # created by PVC: deleted


def _fake_ceph_osd(tmp_path: Path, body: str) -> None:
    """A stand-in `ceph-osd` on PATH whose command line looks like the real one's."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "ceph-osd"
    script.write_text(f"#!/bin/bash\nexec -a \"$0\" /bin/bash -c '{body}' \"$@\"\n")
    script.chmod(0o755)
    os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"


def test_start_and_stop_a_detached_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.environ["PATH"])
    _fake_ceph_osd(tmp_path, 'trap "exit 0" TERM; echo started; sleep 60 & wait')
    service = _direct(tmp_path)
    with pytest.raises(OsdError, match="no data directory"):
        service.start(8)
    service.mkfs(8, "uuid-8", "key", tmp_path / "a.img", True)
    service.start(8)
    pid = service.pid(8)
    assert pid and service.running(8)
    assert os.getsid(pid) == pid                          # its own session: survives the worker
    service.start(8)                                      # already running: nothing new
    assert service.pid(8) == pid
    service.stop(8, timeout=5)
    assert not service.running(8) and not service.pidfile(8).exists()
    deadline = time.monotonic() + 5
    while "started" not in service.log_file(8).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "started" in service.log_file(8).read_text()


def test_a_daemon_that_dies_at_once_is_reported_with_its_log(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.environ["PATH"])
    _fake_ceph_osd(tmp_path, 'echo "unable to open OSD superblock"; exit 1')
    service = _direct(tmp_path)
    service.mkfs(9, "uuid-9", "key", tmp_path / "a.img", True)
    with pytest.raises(OsdError, match=r"exited at once.*unable to open OSD superblock"):
        service.start(9)
    assert not service.running(9)


def test_a_stale_pidfile_is_not_a_running_osd(tmp_path: Path) -> None:
    service = _direct(tmp_path)
    service.pid_dir.mkdir(parents=True)
    service.pidfile(4).write_text(f"{os.getpid()}\n")     # alive, but not a ceph-osd
    assert service.pid(4) is None
    service.pidfile(4).write_text("garbage\n")
    assert not service.running(4)
