"""Mapping RBD volumes as local block devices, for provisioner scripts that write into them (D6).

Tried in order: the kernel rbd driver (`rbd map`, real nodes), `rbd-nbd` (the nbd module), and
`rbd-fuse` + a loop device. Machines with none of these (our dev machines have no kernel rbd or
nbd) get RbdMapError saying so; scripts then build a filesystem image instead (`mkfs.ext4 -d`)
and import it (Storage.convert_into_volume). The keyring is always a file: no secret on a
command line. What was mapped is recorded under /run/pvc/rbdmap so unmap (and a job's general
cleanup) finds it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/run/pvc/rbdmap")
FUSE_DIR = Path("/run/pvc/rbd-fuse")
TIMEOUT = 120.0


class RbdMapError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Ceph:
    conffile: str = "/etc/ceph/ceph.conf"
    keyring: str = "/etc/ceph/ceph.client.admin.keyring"
    user: str = "admin"

    def args(self) -> list[str]:
        out = ["--id", self.user, "-c", self.conffile]
        if os.path.exists(self.keyring):
            out += ["--keyring", self.keyring]
        return out


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RbdMapError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if done.returncode != 0:
        raise RbdMapError(f"{what}: {cmd[0]} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def methods() -> list[str]:
    """The mapping methods this machine supports, best first."""
    found = []
    if os.path.isdir("/sys/bus/rbd") and shutil.which("rbd"):
        found.append("krbd")
    if (os.path.exists("/sys/module/nbd") or os.path.exists("/dev/nbd0")) and shutil.which("rbd-nbd"):
        found.append("nbd")
    if os.path.exists("/dev/fuse") and os.path.exists("/dev/loop-control") and shutil.which("rbd-fuse") \
            and shutil.which("losetup"):
        found.append("fuse")
    return found


def _state(pool: str, name: str) -> Path:
    return STATE_DIR / f"{pool}__{name}.json"


def mapped(pool: str, name: str) -> dict[str, str] | None:
    try:
        data = json.loads(_state(pool, name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def map_volume(pool: str, name: str, ceph: Ceph | None = None) -> str:
    """Map pool/name; returns the block device path (the same one if it is already mapped)."""
    ceph = ceph or Ceph()
    known = mapped(pool, name)
    if known and os.path.exists(known.get("device", "")):
        return known["device"]
    what = f"map RBD volume {pool}/{name}"
    available = methods()
    if not available:
        raise RbdMapError(f"Cannot {what}: this machine has no kernel rbd driver, no nbd module and no "
                          f"rbd-fuse with loop devices; build a filesystem image instead "
                          f"(mkfs.ext4 -d) and import it into the volume")
    method = available[0]
    record: dict[str, str] = {"method": method, "pool": pool, "name": name}
    if method == "krbd":
        record["device"] = _run(["rbd", "map", f"{pool}/{name}", *ceph.args()], what).splitlines()[-1]
    elif method == "nbd":
        record["device"] = _run(["rbd-nbd", "map", f"{pool}/{name}", *ceph.args()], what).splitlines()[-1]
    else:
        mount = FUSE_DIR / f"{pool}__{name}"
        mount.mkdir(parents=True, exist_ok=True)
        _run(["rbd-fuse", "-c", ceph.conffile, "-p", pool, "-r", name, str(mount)], what)
        try:
            record["device"] = _run(["losetup", "--find", "--show", str(mount / name)], what)
        except RbdMapError:
            _run(["fusermount", "-u", str(mount)], f"unmount {mount}")
            raise
        record["mount"] = str(mount)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _state(pool, name).write_text(json.dumps(record))
    return record["device"]


def unmap_volume(pool: str, name: str) -> bool:
    """Unmap pool/name if this machine mapped it; False if it was not mapped."""
    record = mapped(pool, name)
    if record is None:
        return False
    what = f"unmap RBD volume {pool}/{name}"
    device = record.get("device", "")
    if record.get("method") == "krbd":
        _run(["rbd", "unmap", device], what)
    elif record.get("method") == "nbd":
        _run(["rbd-nbd", "unmap", device], what)
    else:
        if device:
            try:
                _run(["losetup", "-d", device], what)
            except RbdMapError:
                pass          # already detached (autoclear), or detached by the script itself
        if record.get("mount"):
            try:
                _run(["fusermount", "-u", record["mount"]], what)
            except RbdMapError:
                pass
            # The mount may live in a provisioning sandbox's mount namespace that this process
            # cannot see; the rbd-fuse daemon keeps the image open (and locked) until it exits.
            _stop_fuse(record["mount"])
            try:
                os.rmdir(record["mount"])
            except OSError:
                pass
    _state(pool, name).unlink(missing_ok=True)
    return True


def _stop_fuse(mount: str, timeout: float = 5.0) -> None:
    """Stop every rbd-fuse serving `mount` (SIGTERM, then SIGKILL)."""
    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"rbd-fuse" and mount.encode() in argv:
                found.append(int(entry.name))
        return found

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids():
            return
