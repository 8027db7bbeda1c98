"""This node's OSD daemons and their devices, and the fio storage benchmark (DESIGN D6, D11).

The only code in PVC that runs ceph-volume, ceph-osd, systemctl, LVM, sfdisk, wipefs and fio; always
with argument lists, never a shell, and never with a secret on a command line. Cluster-side steps
(`osd new`, CRUSH, purge) go through the Storage adapter; this module only does what must happen
on the node that owns the disk. Two ways of running OSDs (settings.storage.osd_service):

* ``systemd`` (real nodes, as upstream PVC): ceph-volume turns a whole block device into LVM-backed
  bluestore OSDs (`lvm zap --destroy`, `lvm batch --prepare`, `lvm activate`), systemd runs
  `ceph-osd@<id>`, optional bluestore DB volumes live in the `osd-db` volume group. Devices may be
  given as `detect:<name>:<size>:<index>` strings, resolved with lsscsi and `nvme list`.
* ``direct`` (the lab, hosts without systemd): one bluestore OSD on a regular file (or a raw block
  device) without LVM. `file:<path>:<size>` creates a sparse file (a relative path is taken under
  osd_data_directory), a plain path uses an existing file. The OSD's data lives in
  `<osd_data_directory>/ceph-<id>` with its keyring and a launch file (`pvc-osd.json`: argv, log
  and pid file) so anything on the node (the lab's `node start`) can start it again the same way;
  `ceph-osd -f` runs detached in its own session with `<osd_pid_directory>/<node>-ceph-osd.<id>.pid`
  and every option it needs on its command line, so ceph.conf needs no section for it.

The decisions (argument lists, detect-string matching, partition-table and ceph-volume output
parsing, DB sizes, fio jobs) are pure functions, unit-tested in tests/unit/test_osd_adapter.py.

fio: the benchmark needs fio's `rbd` ioengine (Debian's fio has it). fio reads the cluster and the
key from CEPH_CONF/CEPH_KEYRING in its environment. Where fio lacks the engine (`fio --enghelp`
does not list it) the benchmark fails at once with a message saying so; there is no fallback that
would measure something else under the same name.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_VG = "osd-db"                      # the volume group holding external bluestore DB volumes
LAUNCH_FILE = "pvc-osd.json"          # a direct-mode OSD's launch description, in its data dir
BLUESTORE_LABEL = b"bluestore block device"
MIB = 1 << 20


class OsdError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ------------------------------------------------------------------------------------ commands

@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stderr or self.stdout).strip()


Runner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float = 600.0) -> CommandResult:
    """Run one command; a missing program or a timeout is an OsdError naming it."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise OsdError(f"{argv[0]} is not installed on this node") from None
    except subprocess.TimeoutExpired:
        raise OsdError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _check(result: CommandResult, what: str) -> CommandResult:
    if result.returncode != 0:
        raise OsdError(f"{what} failed (exit {result.returncode}): {_tail(result.output) or 'no output'}")
    return result


# ---------------------------------------------------------------------------------- pure parts

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(i?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str, binary: bool = True) -> int:
    """'10G' -> bytes; binary (K=1024) as PVC sizes are given, or decimal as lsscsi/nvme print."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise OsdError(f"'{text}' is not a size (e.g. 10G, 512M)")
    base = 1024 if binary else 1000
    power = " KMGTPE".index(match.group(2).upper() or " ")
    size = int(float(match.group(1)) * base ** power)
    if size <= 0:
        raise OsdError(f"'{text}' must be greater than zero")
    return size


@dataclass(frozen=True)
class DetectSpec:
    """`detect:<name>:<size>:<index>`: the index-th disk whose model contains name, size ±3 %."""

    name: str
    size: int
    index: int


def parse_detect(device: str) -> DetectSpec | None:
    """The detect spec of a `detect:` device string, None for anything else."""
    if not device.startswith("detect:"):
        return None
    parts = device.split(":")
    if len(parts) != 4 or not all(parts[1:]):
        raise OsdError(f"'{device}' is not a detect string (detect:NAME:SIZE:INDEX)")
    _, name, size, index = parts
    if not index.isdigit():
        raise OsdError(f"'{device}': the index '{index}' is not a whole number")
    # lsscsi and nvme print decimal sizes (480GB, 1.92TB): a detect size is read the same way
    return DetectSpec(name, parse_bytes(size, binary=False), int(index))


@dataclass(frozen=True)
class DiskCandidate:
    description: str     # what the name is matched against (the lsscsi line, the NVMe model)
    device: str
    size: int


def parse_lsscsi(text: str) -> list[DiskCandidate]:
    """`lsscsi -s` lines of type disk: '[0:0:0:0] disk ATA INTEL SSD 0100 /dev/sda 480GB'."""
    found = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 4 or tokens[1] != "disk":
            continue
        try:
            size = parse_bytes(tokens[-1], binary=False)
        except OsdError:
            continue
        found.append(DiskCandidate(line, tokens[-2], size))
    return found


def parse_nvme_list(text: str) -> list[DiskCandidate]:
    """`nvme list --output-format json`: Devices[] with ModelNumber, DevicePath, PhysicalSize."""
    try:
        devices = json.loads(text or "{}").get("Devices", [])
    except (json.JSONDecodeError, AttributeError):
        return []
    return [DiskCandidate(str(d.get("ModelNumber", "")), str(d.get("DevicePath", "")),
                          int(d.get("PhysicalSize", 0)))
            for d in devices if isinstance(d, dict)]


def pick_detect_device(spec: DetectSpec, candidates: list[DiskCandidate]) -> str | None:
    """The spec.index-th candidate (in listing order) whose description contains the name and whose
    size is within 3 % of the spec's; None if there is no such disk."""
    matches = [c.device for c in candidates
               if spec.name.lower() in c.description.lower() and c.device.startswith("/dev/")
               and abs(c.size - spec.size) <= 0.03 * spec.size]
    return matches[spec.index] if spec.index < len(matches) else None


def partition_table(returncode: int, dump: str) -> str | None:
    """The label ('gpt', 'dos', ...) if `sfdisk --dump` found a partition table, else None."""
    if returncode != 0:
        return None
    for line in dump.splitlines():
        if line.startswith("label:"):
            return line.split(":", 1)[1].strip() or "unknown"
    return "unknown"


def device_class(device: str) -> str:
    """The CRUSH device class upstream PVC gives an OSD: nvme for NVMe devices, else ssd."""
    return "nvme" if "nvme" in device else "ssd"


def db_size_bytes(osd_bytes: int, ext_db_ratio: float | None, ext_db_size: int | None) -> int | None:
    """The bluestore DB volume size: a ratio of the OSD's size, or an explicit size, or None."""
    if ext_db_ratio is not None and ext_db_size is not None:
        raise OsdError("give either ext_db_ratio or ext_db_size, not both")
    if ext_db_ratio is not None:
        if not 0 < ext_db_ratio < 1:
            raise OsdError(f"ext_db_ratio {ext_db_ratio} must be between 0 and 1")
        size = int(osd_bytes * ext_db_ratio)
    elif ext_db_size is not None:
        size = int(ext_db_size)
    else:
        return None
    if size < MIB:
        raise OsdError(f"the OSD DB volume would be {size} bytes; it needs at least 1 MiB")
    return size


@dataclass(frozen=True)
class PreparedOsd:
    """An OSD as ceph-volume (or the direct mode) made it: enough to activate and record it."""

    id: int
    fsid: str                   # the OSD's own uuid
    cluster_fsid: str = ""
    lv_path: str = ""
    vg: str = ""
    lv: str = ""
    db_device: str = ""


def parse_lvm_list(text: str) -> list[PreparedOsd]:
    """`ceph-volume lvm list --format json` ({"<id>": [{type, tags, lv_path, ...}]}) by id."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise OsdError(f"unreadable ceph-volume lvm list output: {exc}") from None
    found = []
    for key, entries in (data.items() if isinstance(data, dict) else []):
        block = next((e for e in entries if e.get("type") == "block"), entries[0] if entries else None)
        if not block:
            continue
        tags = block.get("tags", {})
        found.append(PreparedOsd(id=int(tags.get("ceph.osd_id", key)), fsid=tags.get("ceph.osd_fsid", ""),
                                 cluster_fsid=tags.get("ceph.cluster_fsid", ""),
                                 lv_path=block.get("lv_path", ""), vg=block.get("vg_name", ""),
                                 lv=block.get("lv_name", ""), db_device=tags.get("ceph.db_device", "")))
    return sorted(found, key=lambda o: o.id)


# systemd mode argv (ceph-volume/LVM/systemd on a real node)

def sfdisk_dump_argv(device: str) -> list[str]:
    return ["sfdisk", "--dump", device]


def zap_argv(device: str) -> list[str]:
    return ["ceph-volume", "lvm", "zap", "--destroy", device]


def batch_argv(device: str, count: int, crush_class: str) -> list[str]:
    split = ["--osds-per-device", str(count)] if count > 1 else []
    return ["ceph-volume", "lvm", "batch", "--yes", "--prepare", "--bluestore", *split,
            "--crush-device-class", crush_class, device]


def lvm_list_argv(device: str) -> list[str]:
    return ["ceph-volume", "lvm", "list", "--format", "json", device]


def activate_argv(osd_id: int, fsid: str) -> list[str]:
    return ["ceph-volume", "lvm", "activate", "--bluestore", str(osd_id), fsid]


def prepare_existing_argv(osd_id: int, fsid: str, data: str) -> list[str]:
    """Re-create an OSD with its old id and fsid on a new LV (replace keeps CRUSH and the id)."""
    return ["ceph-volume", "lvm", "prepare", "--bluestore", "--osd-id", str(osd_id), "--osd-fsid", fsid,
            "--data", data]


def db_lv_name(osd_id: int) -> str:
    return f"{DB_VG}/osd-{osd_id}"


def lvcreate_db_argv(osd_id: int, size: int) -> list[str]:
    return ["lvcreate", "-L", f"{size // MIB}M", "-n", f"osd-{osd_id}", "--yes", DB_VG]


def new_db_argv(osd_id: int, fsid: str, db_lv: str) -> list[str]:
    return ["ceph-volume", "lvm", "new-db", "--osd-id", str(osd_id), "--osd-fsid", fsid, "--target", db_lv]


def lvremove_argv(lv: str) -> list[str]:
    return ["lvremove", "--yes", "--force", lv]


def lvcreate_block_argv(vg: str, fsid: str, size_mb: int) -> list[str]:
    return ["lvcreate", "-L", f"{size_mb}M", "-n", f"osd-block-{fsid}", "--yes", vg]


def systemctl_argv(action: str, osd_id: int) -> list[str]:
    return ["systemctl", action, f"ceph-osd@{osd_id}"]


def blockdev_size_argv(path: str) -> list[str]:
    return ["blockdev", "--getsize64", path]


# direct mode argv (ceph-osd on a file, options on the command line)

@dataclass(frozen=True)
class DirectOsd:
    """Everything a direct-mode ceph-osd needs on its command line."""

    id: int
    conffile: str
    data_dir: str
    node: str
    address: str | None = None

    def common_args(self) -> list[str]:
        args = ["-i", str(self.id), "--conf", self.conffile, "--osd-data", self.data_dir,
                "--keyring", f"{self.data_dir}/keyring", "--osd-objectstore", "bluestore"]
        if self.address:
            args += ["--public-addr", self.address, "--cluster-addr", self.address]
        # all lab namespaces share one hostname: the OSD must not move itself to a bucket by that name
        return [*args, "--crush-location", f"root=default host={self.node}"]

    def mkfs_argv(self, osd_uuid: str, block: str) -> list[str]:
        return ["ceph-osd", *self.common_args(), "--mkfs", "--osd-uuid", osd_uuid, "--no-mon-config",
                "--bluestore-block-path", block, "--bluestore-block-create", "false"]

    def run_argv(self) -> list[str]:
        return ["ceph-osd", "-f", *self.common_args()]


@dataclass(frozen=True)
class FileDevice:
    path: Path
    size: int | None      # create a sparse file of this size; None: use what exists


def parse_file_device(device: str, base_dir: str | Path) -> FileDevice:
    """`file:<path>:<size>`, `file:<path>` or a plain path; a relative path is under base_dir."""
    text = device.strip()
    size: int | None = None
    if text.startswith("file:"):
        body = text[len("file:"):]
        path_part, sep, size_part = body.rpartition(":")
        if sep and _SIZE_RE.match(size_part):
            body, size = path_part, parse_bytes(size_part)
        text = body
    if text.startswith("detect:"):
        raise OsdError(f"'{device}': detect strings name LVM block devices; a direct-mode OSD needs a file "
                       f"(file:<path>:<size>) or a block device path")
    if not text or "\0" in text or any(part == ".." for part in Path(text).parts):
        raise OsdError(f"'{device}' is not a file path (file:<path>:<size>)")
    path = Path(text) if text.startswith("/") else Path(base_dir) / text
    return FileDevice(path, size)


def holds_bluestore(head: bytes) -> bool:
    """Does a device's first bytes carry a bluestore label (it belongs to some OSD)?"""
    return head.startswith(BLUESTORE_LABEL)


def pidfile_name(node: str, osd_id: int) -> str:
    """The lab's naming (`pvc-lab down` globs *-ceph-osd.*.pid in its pid dir)."""
    return f"{node}-ceph-osd.{osd_id}.pid"


# ------------------------------------------------------------------------------------- services

class OsdService(abc.ABC):
    """Starting and stopping this node's OSD daemons; the mode-specific preparation is in the
    subclasses, whose task flows differ (see pvc.worker.kinds.storage)."""

    mode: str

    @abc.abstractmethod
    def start(self, osd_id: int) -> None: ...

    @abc.abstractmethod
    def stop(self, osd_id: int, timeout: float = 60.0) -> None: ...

    @abc.abstractmethod
    def running(self, osd_id: int) -> bool: ...

    def describe_failure(self, osd_id: int) -> str:
        """Why the daemon might have died (a log tail), for error messages."""
        return ""


class SystemdOsdService(OsdService):
    """ceph-volume + LVM + systemd units, as on upstream PVC nodes."""

    mode = "systemd"

    def __init__(self, run: Runner = run_command, settle: float = 1.0) -> None:
        self.run = run
        self.settle = settle        # ceph-volume returns before systemd has the unit running

    def _do(self, argv: list[str], what: str, timeout: float = 600.0) -> CommandResult:
        return _check(self.run(argv, timeout), what)

    # devices
    def resolve(self, device: str) -> str:
        """The block device a `detect:` string names (lsscsi first, then `nvme list`)."""
        spec = parse_detect(device)
        if spec is None:
            return device
        lsscsi = self.run(["lsscsi", "-s"], 60)
        found = pick_detect_device(spec, parse_lsscsi(lsscsi.stdout)) if lsscsi.returncode == 0 else None
        if found is None:
            with contextlib.suppress(OsdError):
                nvme = self.run(["nvme", "list", "--output-format", "json"], 60)
                if nvme.returncode == 0:
                    found = pick_detect_device(spec, parse_nvme_list(nvme.stdout))
        if found is None:
            raise OsdError(f"Failed to determine block device from detect string {device}")
        return found

    def check_unpartitioned(self, device: str) -> None:
        result = self.run(sfdisk_dump_argv(device), 60)
        label = partition_table(result.returncode, result.stdout)
        if label is not None:
            raise OsdError(f"Device {device} has a partition table ({label}) and is unsuitable for an OSD")

    def size_of(self, path: str) -> int:
        out = self._do(blockdev_size_argv(path), f"blockdev --getsize64 {path}").stdout.strip()
        try:
            return int(out)
        except ValueError:
            raise OsdError(f"blockdev --getsize64 {path} printed '{out}', not a size") from None

    def zap(self, device: str) -> None:
        self._do(zap_argv(device), f"ceph-volume lvm zap on {device}")

    def batch_prepare(self, device: str, count: int, crush_class: str) -> None:
        self._do(batch_argv(device, count, crush_class), f"ceph-volume lvm batch on {device}", timeout=1800)

    def list_osds(self, device: str) -> list[PreparedOsd]:
        result = self.run(lvm_list_argv(device), 120)
        if result.returncode != 0:
            return []
        return parse_lvm_list(result.stdout)

    # DB volumes
    def db_vg_exists(self) -> bool:
        return self.run(["vgs", DB_VG], 60).returncode == 0

    def create_db_vg(self, device: str) -> None:
        self._do(["wipefs", "--all", device], f"wipefs on {device}")
        self._do(["pvcreate", "--force", device], f"pvcreate on {device}")
        self._do(["vgcreate", "--force", DB_VG, device], f"vgcreate {DB_VG} on {device}")

    def remove_db_vg(self, device: str) -> None:
        self._do(["vgremove", "--yes", "--force", DB_VG], f"vgremove {DB_VG}")
        self._do(["pvremove", "--yes", "--force", device], f"pvremove {device}")

    def create_db_lv(self, osd_id: int, size: int) -> str:
        self._do(lvcreate_db_argv(osd_id, size), f"lvcreate for the DB of OSD {osd_id}")
        return db_lv_name(osd_id)

    def remove_db_lv(self, db_lv: str) -> None:
        self._do(lvremove_argv(db_lv), f"lvremove {db_lv}")

    def attach_db(self, osd_id: int, fsid: str, db_lv: str) -> None:
        self._do(new_db_argv(osd_id, fsid, db_lv), f"ceph-volume lvm new-db for OSD {osd_id}")

    # replacement of a whole block device, keeping ids (upstream's osd.replace)
    def make_block_vg(self, device: str, vg: str) -> None:
        self.zap(device)
        self._do(["pvcreate", device], f"pvcreate on {device}")
        self._do(["vgcreate", vg, device], f"vgcreate {vg} on {device}")

    def create_block_lv(self, vg: str, fsid: str, size_mb: int) -> str:
        self._do(lvcreate_block_argv(vg, fsid, size_mb), f"lvcreate of the block volume for OSD {fsid}")
        return f"{vg}/osd-block-{fsid}"

    def prepare_existing(self, osd_id: int, fsid: str, data: str) -> None:
        self._do(prepare_existing_argv(osd_id, fsid, data), f"ceph-volume lvm prepare for OSD {osd_id}",
                 timeout=1800)

    # daemons
    def activate(self, osd_id: int, fsid: str) -> None:
        """ceph-volume enables and starts ceph-osd@<id>; then the unit must be active."""
        self._do(activate_argv(osd_id, fsid), f"ceph-volume lvm activate for OSD {osd_id}")
        time.sleep(self.settle)
        if not self.running(osd_id):
            raise OsdError(f"OSD {osd_id} did not start (systemctl is-active ceph-osd@{osd_id})")

    def start(self, osd_id: int) -> None:
        self._do(systemctl_argv("start", osd_id), f"systemctl start ceph-osd@{osd_id}")

    def stop(self, osd_id: int, timeout: float = 60.0) -> None:
        self._do(systemctl_argv("stop", osd_id), f"systemctl stop ceph-osd@{osd_id}", timeout=timeout + 30)

    def running(self, osd_id: int) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", f"ceph-osd@{osd_id}"], 30).returncode == 0


class DirectOsdService(OsdService):
    """ceph-osd on a file, started detached with a pid file; no systemd, no LVM."""

    mode = "direct"

    def __init__(self, node: str, conffile: str, data_root: str | Path, pid_dir: str | Path,
                 log_dir: str | Path, address: str | None = None, run: Runner = run_command,
                 start_check: float = 1.0) -> None:
        self.node = node
        self.conffile = conffile
        self.data_root = Path(data_root)
        self.pid_dir = Path(pid_dir)
        self.log_dir = Path(log_dir)
        self.address = address
        self.run = run
        self.start_check = start_check

    def data_dir(self, osd_id: int) -> Path:
        return self.data_root / f"ceph-{osd_id}"

    def pidfile(self, osd_id: int) -> Path:
        return self.pid_dir / pidfile_name(self.node, osd_id)

    def log_file(self, osd_id: int) -> Path:
        return self.log_dir / f"ceph-osd.{osd_id}.out"

    def spec(self, osd_id: int) -> DirectOsd:
        return DirectOsd(osd_id, self.conffile, str(self.data_dir(osd_id)), self.node, self.address)

    def launch_info(self, osd_id: int) -> dict[str, Any]:
        """The OSD's launch file ({} if it has none): argv, log, pidfile, block, block_created."""
        try:
            data = json.loads((self.data_dir(osd_id) / LAUNCH_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def known_osds(self) -> list[int]:
        """Ids of the direct-mode OSDs with a data dir here (to start them at boot, for instance)."""
        ids = []
        for launch in self.data_root.glob(f"ceph-*/{LAUNCH_FILE}"):
            suffix = launch.parent.name.removeprefix("ceph-")
            if suffix.isdigit():
                ids.append(int(suffix))
        return sorted(ids)

    # the block file
    def resolve(self, device: str) -> FileDevice:
        return parse_file_device(device, self.data_root)

    def prepare_block(self, device: FileDevice) -> bool:
        """Make sure the block file exists and is free; True if it was created here."""
        path = device.path
        if path.exists():
            mode = path.stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise OsdError(f"{path} is neither a regular file nor a block device")
            with open(path, "rb") as handle:
                if holds_bluestore(handle.read(len(BLUESTORE_LABEL))):
                    raise OsdError(f"{path} already holds a bluestore OSD; remove that OSD first")
            if stat.S_ISREG(mode) and device.size is not None and path.stat().st_size < device.size:
                raise OsdError(f"{path} exists with {path.stat().st_size} bytes, smaller than the "
                               f"{device.size} bytes asked for")
            return False
        if device.size is None:
            raise OsdError(f"{path} does not exist; give a size to create it (file:{path}:<size>)")
        if str(path).startswith("/dev/"):
            raise OsdError(f"{path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as handle:
            handle.truncate(device.size)       # sparse: uses no space until written
        return True

    def discard_block(self, path: Path, created: bool) -> None:
        """Undo prepare_block/mkfs on the file: delete it if PVC created it, else wipe the label."""
        if created:
            path.unlink(missing_ok=True)
        elif path.exists():
            with open(path, "r+b") as handle:
                handle.write(b"\0" * 8192)

    # the OSD
    def mkfs(self, osd_id: int, osd_uuid: str, key: str, block: Path, block_created: bool) -> None:
        """Data dir with keyring and launch file, then bluestore on the block file."""
        data = self.data_dir(osd_id)
        if data.exists() and any(data.iterdir()):
            raise OsdError(f"{data} already exists and is not empty (a left-over OSD {osd_id}?)")
        data.mkdir(parents=True, exist_ok=True, mode=0o750)
        keyring = data / "keyring"
        fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"[osd.{osd_id}]\n\tkey = {key}\n")
        spec = self.spec(osd_id)
        self._write_launch(osd_id, uuid=osd_uuid, block=str(block), block_created=block_created)
        result = self.run(spec.mkfs_argv(osd_uuid, str(block)), 600)
        if result.returncode != 0:
            raise OsdError(f"ceph-osd --mkfs for OSD {osd_id} failed (exit {result.returncode}): "
                           f"{_tail(result.stdout + result.stderr)}")

    def _write_launch(self, osd_id: int, **extra: Any) -> None:
        info = {**self.launch_info(osd_id), **extra, "id": osd_id, "node": self.node,
                "argv": self.spec(osd_id).run_argv(), "log": str(self.log_file(osd_id)),
                "pidfile": str(self.pidfile(osd_id))}
        path = self.data_dir(osd_id) / LAUNCH_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        tmp.replace(path)

    def remove_data(self, osd_id: int) -> None:
        """Delete the OSD's data dir and its block file if PVC created it (zap, direct-mode style)."""
        info = self.launch_info(osd_id)
        if info.get("block"):
            self.discard_block(Path(info["block"]), bool(info.get("block_created")))
        shutil.rmtree(self.data_dir(osd_id), ignore_errors=True)
        self.pidfile(osd_id).unlink(missing_ok=True)

    def pid(self, osd_id: int) -> int | None:
        """The live ceph-osd of this id, from its pid file (a recycled pid is not it)."""
        try:
            pid = int(self.pidfile(osd_id).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split(") ", 1)[1][0] == "Z":
                    return None
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return None
        if not any(arg.endswith(b"ceph-osd") for arg in cmdline[:1]) or str(osd_id).encode() not in cmdline:
            return None
        return pid

    def running(self, osd_id: int) -> bool:
        return self.pid(osd_id) is not None

    def start(self, osd_id: int) -> None:
        """Run ceph-osd -f detached (own session, so stopping the worker leaves it running)."""
        if self.running(osd_id):
            return
        if not (self.data_dir(osd_id) / "keyring").exists():
            raise OsdError(f"OSD {osd_id} has no data directory here ({self.data_dir(osd_id)})")
        self._write_launch(osd_id)
        argv = self.spec(osd_id).run_argv()
        log = self.log_file(osd_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, close_fds=True)
            except FileNotFoundError:
                raise OsdError("ceph-osd is not installed on this node") from None
        self.pidfile(osd_id).write_text(f"{child.pid}\n")
        # reap it whenever it exits, so a dead OSD is not left a zombie that looks alive
        threading.Thread(target=child.wait, name=f"reap-osd.{osd_id}", daemon=True).start()
        deadline = time.monotonic() + self.start_check
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise OsdError(f"OSD {osd_id} exited at once (exit {child.returncode}): "
                               f"{self.describe_failure(osd_id)}")
            time.sleep(0.1)

    def stop(self, osd_id: int, timeout: float = 60.0) -> None:
        """SIGTERM (the OSD tells the mons it is going down), SIGKILL after timeout."""
        pid = self.pid(osd_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid(osd_id) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid(osd_id) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        self.pidfile(osd_id).unlink(missing_ok=True)

    def describe_failure(self, osd_id: int) -> str:
        try:
            lines = self.log_file(osd_id).read_text(errors="replace").splitlines()
        except OSError:
            return f"no output (see {self.log_file(osd_id)})"
        return _tail("\n".join(lines[-8:]), 800) or f"no output (see {self.log_file(osd_id)})"


def service_for(settings: Any) -> OsdService:
    """This node's OSD service as configured (settings: pvc.core.config.Settings)."""
    storage = settings.storage
    if storage.osd_service == "systemd":
        return SystemdOsdService()
    return DirectOsdService(
        node=settings.node_name, conffile=storage.ceph_config_file, data_root=storage.osd_data_directory,
        pid_dir=storage.osd_pid_directory or settings.path.dynamic_directory,
        log_dir=settings.path.system_log_directory, address=settings.hypervisor.migration_address)


# -------------------------------------------------------------------------------- fio benchmark

BENCHMARK_VOLUME = "pvcbenchmark"
# upstream PVC's 8 tests (daemon-common/benchmark.py, test format 2)
BENCHMARK_TESTS: dict[str, dict[str, str]] = {
    "seq_read": {"direction": "read", "iodepth": "64", "bs": "4M", "rw": "read"},
    "seq_write": {"direction": "write", "iodepth": "64", "bs": "4M", "rw": "write"},
    "rand_read_4M": {"direction": "read", "iodepth": "64", "bs": "4M", "rw": "randread"},
    "rand_write_4M": {"direction": "write", "iodepth": "64", "bs": "4M", "rw": "randwrite"},
    "rand_read_4K": {"direction": "read", "iodepth": "64", "bs": "4K", "rw": "randread"},
    "rand_write_4K": {"direction": "write", "iodepth": "64", "bs": "4K", "rw": "randwrite"},
    "rand_read_4K_lowdepth": {"direction": "read", "iodepth": "1", "bs": "4K", "rw": "randread"},
    "rand_write_4K_lowdepth": {"direction": "write", "iodepth": "1", "bs": "4K", "rw": "randwrite"},
}


def fio_argv(test: str, pool: str, volume: str, client: str, runtime: int) -> list[str]:
    spec = BENCHMARK_TESTS[test]
    return ["fio", f"--name={test}", "--ioengine=rbd", f"--clientname={client}", f"--pool={pool}",
            f"--rbdname={volume}", "--output-format=json", "--direct=1", "--randrepeat=1", "--numjobs=1",
            "--time_based", f"--runtime={runtime}", "--group_reporting", f"--iodepth={spec['iodepth']}",
            f"--bs={spec['bs']}", f"--readwrite={spec['rw']}"]


def fio_env(conffile: str, keyring: str) -> dict[str, str]:
    """librados inside fio finds the cluster and the key through these, not through argv."""
    return {**os.environ, "CEPH_CONF": conffile, "CEPH_KEYRING": keyring}


def fio_engines(enghelp: str) -> set[str]:
    """The ioengines `fio --enghelp` lists."""
    return {line.strip() for line in enghelp.splitlines()[1:] if line.strip()}


def parse_fio_output(stdout: str) -> dict[str, Any]:
    """fio's JSON report; it may print warnings before the JSON starts."""
    start = stdout.find("{")
    if start < 0:
        raise OsdError(f"fio printed no JSON report: {_tail(stdout) or 'no output'}")
    try:
        data = json.loads(stdout[start:])
    except json.JSONDecodeError as exc:
        raise OsdError(f"fio's report is not JSON ({exc})") from None
    if not isinstance(data, dict) or not data.get("jobs"):
        raise OsdError("fio's report has no jobs")
    return data


class ResourceSampler:
    """Average CPU, memory and network use while a test runs (upstream's test format 2 fields)."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.ticks = 0
        self.sums: dict[str, float] = {}
        self.cpus = psutil.cpu_count(logical=True) or 1
        self.last_net = self._net()
        self.last_time = time.monotonic()
        self.procs: dict[int, Any] = {}

    def _net(self) -> tuple[int, int]:
        counters = self.psutil.net_io_counters(pernic=True)
        sent = sum(c.bytes_sent for name, c in counters.items() if name != "lo")
        recv = sum(c.bytes_recv for name, c in counters.items() if name != "lo")
        return sent, recv

    def sample(self) -> None:
        ps = self.psutil
        values = {"total_cpu": ps.cpu_percent(interval=None), "total_mem": ps.virtual_memory().percent}
        for name in ("ceph-osd", "ceph-mon"):
            values[f"{name}_cpu"] = values[f"{name}_mem"] = 0.0
        for proc in ps.process_iter(["name"]):
            name = proc.info.get("name")
            if name not in ("ceph-osd", "ceph-mon"):
                continue
            tracked = self.procs.setdefault(proc.pid, proc)   # cpu_percent needs the same object
            with contextlib.suppress(ps.Error):
                values[f"{name}_cpu"] += tracked.cpu_percent(interval=None)
                values[f"{name}_mem"] += tracked.memory_percent()
        now, net = time.monotonic(), self._net()
        elapsed = max(1e-3, now - self.last_time)
        values["sent"] = (net[0] - self.last_net[0]) * 8 / elapsed
        values["recv"] = (net[1] - self.last_net[1]) * 8 / elapsed
        self.last_net, self.last_time = net, now
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.ticks += 1

    def result(self) -> dict[str, Any]:
        n = max(1, self.ticks)

        def avg(key: str, per_cpu: bool = False) -> float:
            return round(self.sums.get(key, 0.0) / n / (self.cpus if per_cpu else 1), 2)

        return {
            "avg_cpu_util_percent": {"total": avg("total_cpu"), "ceph-mon": avg("ceph-mon_cpu", True),
                                     "ceph-osd": avg("ceph-osd_cpu", True)},
            "avg_memory_util_percent": {"total": avg("total_mem"), "ceph-mon": avg("ceph-mon_mem"),
                                        "ceph-osd": avg("ceph-osd_mem")},
            "avg_network_util_bps": {"sent": avg("sent"), "recv": avg("recv"),
                                     "total": round(avg("sent") + avg("recv"), 2)},
        }


class FioRunner:
    """Runs the benchmark's fio jobs against an RBD image on this node."""

    def __init__(self, conffile: str, keyring: str, client: str = "admin", run: Runner = run_command) -> None:
        self.conffile = conffile
        self.keyring = keyring
        self.client = client
        self.run = run

    def check(self) -> None:
        """Fail early and clearly where fio cannot benchmark RBD."""
        result = self.run(["fio", "--enghelp"], 30)
        if "rbd" not in fio_engines(result.stdout):
            raise OsdError("fio on this node has no rbd ioengine (fio --enghelp does not list it): install a "
                           "fio built with librbd (Debian's fio package is) to run storage benchmarks")

    def run_test(self, test: str, pool: str, volume: str, runtime: int,
                 poll: Callable[[], None] | None = None) -> dict[str, Any]:
        """One test; poll() is called about every second and may raise to abort (fio is killed).
        Returns the resource averages merged with fio's JSON report."""
        argv = fio_argv(test, pool, volume, self.client, runtime)
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, env=fio_env(self.conffile, self.keyring))
        except FileNotFoundError:
            raise OsdError("fio is not installed on this node") from None
        sampler = ResourceSampler()
        out: dict[str, str] = {}
        reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), child.communicate(),
                                                                strict=True)),
                                  name=f"fio-{test}", daemon=True)
        reader.start()
        deadline = time.monotonic() + runtime + 300
        try:
            while reader.is_alive():
                reader.join(1.0)
                if reader.is_alive():
                    sampler.sample()
                    if poll is not None:
                        poll()
                    if time.monotonic() > deadline:
                        raise OsdError(f"fio test {test} did not finish within {runtime + 300}s")
        except BaseException:
            child.terminate()           # fio closes the image on SIGTERM: no watch left behind
            reader.join(10)
            if reader.is_alive():
                child.kill()
                reader.join(5)
            raise
        if child.returncode != 0:
            raise OsdError(f"fio test {test} failed (exit {child.returncode}): "
                           f"{_tail(out.get('stderr', '') or out.get('stdout', ''))}")
        return {**sampler.result(), **parse_fio_output(out.get("stdout", ""))}
