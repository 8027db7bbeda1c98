"""OSDs without systemd or LVM (the lab): one bluestore OSD on a regular file or a raw block device.

The OSD's data lives in `<osd_data_directory>/ceph-<id>` with its keyring and a launch file
(`pvc-osd.json`: argv, log and pid file) so anything on the node (the lab's `node start`) can start
it again the same way; `ceph-osd -f` runs detached in its own session with
`<osd_pid_directory>/<node>-ceph-osd.<id>.pid` and every option it needs on its command line, so
ceph.conf needs no section for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.adapters.osd.base import OsdError, OsdService, Runner, run_command, tail
from pvc.adapters.osd.devices import FileDevice, parse_file_device

LAUNCH_FILE = "pvc-osd.json"          # a direct-mode OSD's launch description, in its data dir
BLUESTORE_LABEL = b"bluestore block device"


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


def holds_bluestore(head: bytes) -> bool:
    """Does a device's first bytes carry a bluestore label (it belongs to some OSD)?"""
    return head.startswith(BLUESTORE_LABEL)


def pidfile_name(node: str, osd_id: int) -> str:
    """The lab's naming (`pvc-lab down` globs *-ceph-osd.*.pid in its pid dir)."""
    return f"{node}-ceph-osd.{osd_id}.pid"


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
        """The block file or device; a file must lie inside the OSD data directory
        (storage.osd_data_directory), checked on its real path so no symlink leads out of it.

        Why: the device string comes from an API caller; without the confinement an OSD's mkfs
        could be pointed at any host file (pvc.conf, a keyring) and overwrite it. A plain /dev/
        path names a block device, as in systemd mode.
        """
        found = parse_file_device(device, self.data_root)
        text = device.strip()
        if not text.startswith("file:") and str(found.path).startswith("/dev/"):
            return found
        root = os.path.realpath(self.data_root)
        real = os.path.realpath(found.path)
        if real == root or os.path.commonpath([root, real]) != root:
            raise OsdError(f"'{device}': the file {found.path} is outside the OSD data directory "
                           f"{self.data_root} (storage.osd_data_directory); give a path inside it, "
                           f"e.g. file:<name>.img:<size>")
        return FileDevice(Path(real), found.size)

    def prepare_block(self, device: FileDevice) -> bool:
        """Make sure the block file exists and is free; True if it was created here. An existing
        regular file is never taken (it could be another OSD's keyring or launch file): only a
        file created here, or an existing block device."""
        path = device.path
        if path.exists():
            mode = path.stat().st_mode
            if stat.S_ISREG(mode):
                raise OsdError(f"{path} already exists; PVC creates an OSD's block file itself and never "
                               f"overwrites one (remove it, or name a new file)")
            if not stat.S_ISBLK(mode):
                raise OsdError(f"{path} is neither a regular file nor a block device")
            with open(path, "rb") as handle:
                if holds_bluestore(handle.read(len(BLUESTORE_LABEL))):
                    raise OsdError(f"{path} already holds a bluestore OSD; remove that OSD first")
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
                           f"{tail(result.stdout + result.stderr)}")

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
        return tail("\n".join(lines[-8:]), 800) or f"no output (see {self.log_file(osd_id)})"
