"""The parent's side of the provisioner sandbox (issue #13): what a script may ask for, checked
and done by the worker on its behalf, so the script never holds a credential or a privilege.

- Volume requests (the daemon_lib.ceph helpers inside the sandbox, pvc.worker.provisioner.scriptapi)
  arrive on a socket: create, clone, resize, remove, map, unmap and import of *this VM's*
  volumes (`<vm>_<disk_id>` of the profile's storage template, in the template's pool). A clone
  may read, and a map may show read-only, the source volumes the profile names (clone sources,
  OVA disks). Anything else is refused with the reason. A mapped volume's block device node
  (and upstream's /dev/rbd/<pool>/<name> link) is created in the sandbox's /dev by the worker;
  the sandbox cannot create block devices itself.
- mount(), umount2() and mknod() of character devices by any process of the sandbox reach the
  MountSupervisor through seccomp user notification. It performs, in the sandbox's mount
  namespace and as seen from the calling process's root and working directory, new mounts only
  under the sandbox's /tmp (nothing the sandbox runs from can be covered): bind mounts
  (always recursive, so read-only submounts come along), proc/sysfs/devpts/devtmpfs requests as
  binds of the sandbox's own /proc, /sys, /dev/pts and /dev, tmpfs, and file systems on the VM's
  own mapped block devices (nodev, nosuid; read-only for source volumes); remounts only with
  nodev and nosuid; unmounts only of mounts it made; character devices only from a short list
  (null, zero, full, random, urandom, tty, console, ptmx). Everything else is EPERM, logged.
  Each is carried out by a forked helper that enters the sandbox's mount namespace and refuses
  to import anything there (a script could plant modules where a lazy import would look).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import select
import socket
import stat
import struct
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pvc.worker.provisioner import confine, vmdata

Log = Callable[[str], None]

# struct seccomp_notif / seccomp_notif_resp and their ioctls (linux/seccomp.h)
NOTIF = struct.Struct("=QIIiIQ6Q")
NOTIF_RESP = struct.Struct("=QqiI")
IOCTL_NOTIF_RECV = 0xC0502100
IOCTL_NOTIF_SEND = 0xC0182101
IOCTL_NOTIF_ID_VALID = 0x40082102
AT_FDCWD = -100
UMOUNT_NOFOLLOW = 8
MNT_FORCE = 1
BLKROSET = 0x125D
O_PATH = getattr(os, "O_PATH", 0o10000000)
PATH_MAX = 4096
BLOCK_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "fat", "exfat", "ntfs3",
                     "f2fs", "jfs", "reiserfs", "iso9660", "udf")
PSEUDO_BINDS = {"proc": "proc", "sysfs": "sys", "devpts": "dev/pts", "devtmpfs": "dev"}
CHAR_DEVICES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
SANDBOX_NODES = {(1, 3): "dev/null", (1, 5): "dev/zero", (1, 7): "dev/full", (1, 8): "dev/random",
                 (1, 9): "dev/urandom", (5, 0): "dev/tty", (5, 2): "dev/pts/ptmx"}
PROPAGATION = confine.MS_SHARED | confine.MS_PRIVATE | confine.MS_SLAVE | confine.MS_UNBINDABLE
# mount flags a new file system may carry (the rest are the kernel's or mean something else)
# (rdonly, nosuid, nodev, noexec, synchronous, mandlock, dirsync, nosymfollow, noatime, nodiratime,
# silent, relatime, strictatime, lazytime)
NEW_MOUNT_FLAGS = 0x3208DDF
# options that name another device (by number or path) or stop the host on an error
REFUSED_OPTIONS = ("journal_dev", "journal_path", "logdev", "rtdev", "device", "errors=panic",
                   "errors=continue,panic")


class Refused(Exception):
    """A request the sandbox may not make; the message says what and why."""

    def __init__(self, message: str, code: int = errno.EPERM) -> None:
        super().__init__(message)
        self.message, self.code = message, code


# ======================================================================= acting in the sandbox

class _Helper:
    """What a helper process has in hand: the host's /proc and the sandbox's root."""

    def __init__(self, host_proc: int, sandbox_root: int) -> None:
        self.host_proc, self.sandbox_root = host_proc, sandbox_root

    def fd_path(self, fd: int) -> str:
        """A path (relative to the host /proc, our working directory) naming exactly `fd`."""
        return f"self/fd/{fd}"

    def mount_ids(self) -> dict[int, int]:
        """{mount id: parent id} of the sandbox's mount namespace."""
        fd = os.open("self/mountinfo", os.O_RDONLY, dir_fd=self.host_proc)
        with os.fdopen(fd) as info:
            return {int(line.split()[0]): int(line.split()[1]) for line in info if line.strip()}

    def mount_id_of(self, fd: int) -> int:
        info = os.open(f"self/fdinfo/{fd}", os.O_RDONLY, dir_fd=self.host_proc)
        with os.fdopen(info) as text:
            for line in text:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
        raise Refused("cannot tell which mount that is", errno.EINVAL)


class _NoImports:
    """A meta path finder that refuses every import (see run_in_sandbox)."""

    def find_spec(self, name: str, *_args: Any) -> None:
        raise ImportError(f"no imports inside the sandbox helper ({name})")


def run_in_sandbox(pid: int, action: Callable[[_Helper], Any], caller_root: bool = False,
                   extra_fds: dict[str, int] | None = None) -> Any:
    """Run action in a forked helper inside pid's mount namespace (and, with caller_root, chrooted
    to pid's root and in its working directory, so every path resolves as it does for pid).
    Returns action's JSON-able result; raises Refused with the helper's errno."""
    fds: dict[str, int] = {}
    try:
        fds["ns"] = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        if caller_root:
            fds["root"] = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
            fds["cwd"] = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY)
        fds["proc"] = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        for fd in fds.values():
            os.close(fd)
        raise Refused(f"the calling process is gone ({exc.strerror})", errno.ESRCH) from None
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover - runs in the forked helper
        answer: dict[str, Any]
        # From here on every path is the sandbox's: no module may be imported (the script could
        # have planted one where a lazy import would look, e.g. in its chroot).
        sys.meta_path.insert(0, _NoImports())
        try:
            os.close(read_end)
            if confine._LIBC.setns(fds["ns"], confine.CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            sandbox_root = os.open("/", O_PATH | os.O_DIRECTORY)
            if caller_root:
                os.fchdir(fds["root"])
                os.chroot(".")
                os.fchdir(fds["cwd"])
            os.umask(0o022)
            answer = {"ok": action(_Helper(fds["proc"], sandbox_root))}
        except Refused as exc:
            answer = {"errno": exc.code, "message": exc.message}
        except OSError as exc:
            answer = {"errno": exc.errno or errno.EPERM, "message": str(exc.strerror or exc)}
        except BaseException as exc:
            answer = {"errno": errno.EPERM, "message": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(write_end, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(child, 0)
    for fd in fds.values():
        os.close(fd)
    try:
        answer = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        answer = {}
    if "ok" in answer:
        return answer["ok"]
    raise Refused(str(answer.get("message") or "the sandbox helper failed"),
                  int(answer.get("errno") or errno.EPERM))


# ======================================================================= mount decisions (pure)

@dataclass(frozen=True)
class MountPlan:
    kind: str            # propagation, remount, bind, pseudo, tmpfs, block
    flags: int
    pseudo: str = ""     # for pseudo: the sandbox path bound instead (proc, sys, dev/pts, dev)


def plan_mount(source: str | None, fstype: str | None, flags: int, data: str | None) -> MountPlan:
    """What a mount() request becomes in the sandbox, or Refused (pure, for tests)."""
    c = confine
    if flags & c.MS_MOVE:
        raise Refused("moving a mount")
    if flags & c.MS_REMOUNT:
        # Only the mount's own flags change (never the file system's, which the host may share),
        # and nodev/nosuid stay: a remount replaces the flags it does not name. Making a mount
        # writable is allowed only for mounts the script made (checked when it is carried out).
        return MountPlan("remount", (flags & ~PROPAGATION) | c.MS_BIND | c.MS_NODEV | c.MS_NOSUID)
    if flags & PROPAGATION and not flags & c.MS_BIND:
        return MountPlan("propagation", flags & (PROPAGATION | c.MS_REC))
    if flags & c.MS_BIND:
        return MountPlan("bind", c.MS_BIND | c.MS_REC)
    kind = (fstype or "").strip()
    if kind in PSEUDO_BINDS:
        return MountPlan("pseudo", c.MS_BIND | c.MS_REC, PSEUDO_BINDS[kind])
    if kind in ("tmpfs", "ramfs"):
        return MountPlan("tmpfs", (flags & NEW_MOUNT_FLAGS) | c.MS_NOSUID)
    if kind in BLOCK_FILESYSTEMS:
        for option in (data or "").split(","):
            key = option.split("=", 1)[0].strip()
            if key in REFUSED_OPTIONS or option.strip() in REFUSED_OPTIONS or "panic" in option:
                raise Refused(f"mount option {option!r} (it names another device, or stops the host on "
                              f"an error)")
        return MountPlan("block", (flags & NEW_MOUNT_FLAGS) | c.MS_NODEV | c.MS_NOSUID)
    raise Refused(f"mounting a {kind or 'typeless'} file system (source {source or 'none'})")


# ======================================================================= the supervisor

@dataclass
class Devices:
    """Block devices mapped for this VM: {rdev: read_only}."""

    allowed: dict[int, bool] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MountSupervisor:
    """Answers the sandbox's mount(), umount2() and mknod() through its seccomp notification fd."""

    def __init__(self, notify_fd: int, devices: Devices, log: Log) -> None:
        import seccomp

        self.fd, self.devices, self.log = notify_fd, devices, log
        self.names = {}
        for name in ("mount", "umount2", "umount", "mknod", "mknodat"):
            try:
                self.names[int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name))] = name
            except (ValueError, OSError, RuntimeError):
                pass
        self.created: set[int] = set()     # mount ids of mounts made here (the only ones unmounted)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="sandbox-mounts")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        try:
            os.close(self.fd)
        except OSError:
            pass

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self.stopping.is_set():
            events = poller.poll(500)
            if not events:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _fd, ev in events):
                return
            buf = bytearray(NOTIF.size)
            try:
                fcntl.ioctl(self.fd, IOCTL_NOTIF_RECV, buf, True)
            except OSError:
                continue
            notif_id, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(buf)
            try:
                value, error = self._handle(notif_id, pid, self.names.get(nr, str(nr)), args), 0
            except Refused as exc:
                value, error = -1, exc.code
                if exc.code == errno.EPERM:
                    self.log(f"sandbox: refused: {exc.message}")
            except Exception as exc:     # never leave the caller hanging
                value, error = -1, errno.EPERM
                self.log(f"sandbox: refused (error in the supervisor: {type(exc).__name__}: {exc})")
            try:
                fcntl.ioctl(self.fd, IOCTL_NOTIF_SEND,
                            bytearray(NOTIF_RESP.pack(notif_id, 0 if error else value, -error, 0)), True)
            except OSError:
                pass

    # -- reading the caller ------------------------------------------------------------------
    def _valid(self, notif_id: int) -> None:
        try:
            fcntl.ioctl(self.fd, IOCTL_NOTIF_ID_VALID, bytearray(struct.pack("=Q", notif_id)), True)
        except OSError:
            raise Refused("the calling process went away", errno.ESRCH) from None

    def _string(self, pid: int, address: int) -> str | None:
        if not address:
            return None
        try:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                mem.seek(address)
                raw = mem.read(PATH_MAX)
        except OSError:
            raise Refused("cannot read the call's arguments", errno.EFAULT) from None
        end = raw.find(b"\0")
        if end < 0:
            raise Refused("an argument is longer than PATH_MAX", errno.ENAMETOOLONG)
        return raw[:end].decode(errors="surrogateescape")

    # -- the calls ---------------------------------------------------------------------------
    def _handle(self, notif_id: int, pid: int, name: str, args: list[int]) -> int:
        if name == "mount":
            source, target = self._string(pid, args[0]), self._string(pid, args[1])
            fstype, data = self._string(pid, args[2]), self._string(pid, args[4])
            self._valid(notif_id)
            return self.mount(pid, source, target or "", fstype, args[3] & 0xFFFFFFFF, data)
        if name in ("umount2", "umount"):
            target = self._string(pid, args[0])
            self._valid(notif_id)
            return self.umount(pid, target or "", args[1] & 0xFFFFFFFF if name == "umount2" else 0)
        if name in ("mknod", "mknodat"):
            dirfd = AT_FDCWD if name == "mknod" else ctypes.c_int32(args[0] & 0xFFFFFFFF).value
            rest = args if name == "mknod" else args[1:]
            path = self._string(pid, rest[0])
            self._valid(notif_id)
            return self.mknod(pid, dirfd, path or "", rest[1] & 0xFFFFFFFF, rest[2])
        raise Refused(f"system call {name}", errno.ENOSYS)

    def mount(self, pid: int, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> int:
        plan = plan_mount(source, fstype, flags, data)
        devices = dict(self.devices.allowed)
        created = set(self.created)
        what = f"mount {fstype or ''} {source or ''} on {target}".replace("  ", " ")

        def act(h: _Helper) -> list[int]:
            tgt = os.open(target, O_PATH)
            if plan.kind not in ("remount", "propagation"):
                # new mounts only under the sandbox's /tmp (/tmp/target...): nothing the sandbox
                # runs from (/usr, PVC's code, /dev, /proc) can be covered
                tmp = h.mount_id_of(os.open("tmp", O_PATH, dir_fd=h.sandbox_root))
                if h.mount_id_of(tgt) not in created | {tmp}:
                    raise Refused(f"{what}: the script may mount file systems only under /tmp")
            before = h.mount_ids()
            os.fchdir(h.host_proc)
            if plan.kind == "remount":
                if not plan.flags & confine.MS_RDONLY and h.mount_id_of(tgt) not in created:
                    raise Refused(f"{what}: only mounts the script made may be made writable again")
                confine.mount(None, h.fd_path(tgt), None, plan.flags)
                return []
            if plan.kind == "propagation":
                confine.mount(None, h.fd_path(tgt), None, plan.flags)
                return []
            if plan.kind == "bind":
                src = os.open(source or "", O_PATH)
                confine.mount(h.fd_path(src), h.fd_path(tgt), None, plan.flags)
            elif plan.kind == "pseudo":
                src = os.open(plan.pseudo, O_PATH, dir_fd=h.sandbox_root)
                confine.mount(h.fd_path(src), h.fd_path(tgt), None, plan.flags)
            elif plan.kind == "tmpfs":
                confine.mount(fstype, h.fd_path(tgt), fstype, plan.flags, data)
            else:
                src = os.open(source or "", O_PATH)
                info = os.fstat(src)
                if not stat.S_ISBLK(info.st_mode) or info.st_rdev not in devices:
                    raise Refused(f"{what}: {source} is not a block device of this VM's volumes")
                flags = plan.flags | (confine.MS_RDONLY if devices[info.st_rdev] else 0)
                confine.mount(h.fd_path(src), h.fd_path(tgt), fstype, flags, data)
            after = h.mount_ids()
            new = set(after) - set(before)
            return [m for m in new if after[m] not in new]

        try:
            self.created.update(run_in_sandbox(pid, act, caller_root=True))
        except Refused as exc:
            if exc.code == errno.EPERM and not exc.message.startswith(what):
                raise Refused(f"{what}: {exc.message}") from None
            raise
        return 0

    def umount(self, pid: int, target: str, flags: int) -> int:
        created = set(self.created)

        def act(h: _Helper) -> int:
            nofollow = os.O_NOFOLLOW if flags & UMOUNT_NOFOLLOW else 0
            tgt = os.open(target, O_PATH | nofollow)
            mount_id = h.mount_id_of(tgt)
            if mount_id not in created:
                raise Refused(f"unmounting {target}: only mounts the script made may be unmounted")
            os.fchdir(h.host_proc)
            if confine._LIBC.umount2(h.fd_path(tgt).encode(), confine.MNT_DETACH) != 0:
                err = ctypes.get_errno()
                raise Refused(f"umount {target}: {os.strerror(err)}", err)
            return mount_id

        self.created.discard(run_in_sandbox(pid, act, caller_root=True))
        return 0

    def mknod(self, pid: int, dirfd: int, path: str, mode: int, dev: int) -> int:
        pair = (os.major(dev), os.minor(dev))
        if pair not in CHAR_DEVICES:
            raise Refused(f"creating character device {pair[0]}:{pair[1]} at {path}")
        dir_path = None if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
        extra = os.open(dir_path, os.O_RDONLY | os.O_DIRECTORY) if dir_path else None

        def act(h: _Helper) -> list[int]:
            os.mknod(path, mode, dev, dir_fd=extra)
            # On a nodev mount (the VM's own file systems are mounted so) the node could not be
            # opened: the sandbox's own node of the same device is bound over it, so an install
            # into the target (debootstrap's /dev/null) works and the disk keeps a real node.
            node = os.open(path, O_PATH | os.O_NOFOLLOW, dir_fd=extra)
            if not os.fstatvfs(node).f_flag & os.ST_NODEV or pair not in SANDBOX_NODES:
                return []
            source = os.open(SANDBOX_NODES[pair], O_PATH, dir_fd=h.sandbox_root)
            before = h.mount_ids()
            os.fchdir(h.host_proc)
            confine.mount(h.fd_path(source), h.fd_path(node), None, confine.MS_BIND)
            return sorted(set(h.mount_ids()) - set(before))

        try:
            self.created.update(run_in_sandbox(pid, act, caller_root=True))
            return 0
        finally:
            if extra is not None:
                os.close(extra)


# ======================================================================= volume requests

def install_device(pid1: int, device: str, pool: str, name: str) -> None:
    """Create `device`'s block node (same path) and /dev/rbd/<pool>/<name> in the sandbox."""
    info = os.stat(device)
    if not stat.S_ISBLK(info.st_mode):
        raise Refused(f"{device} is not a block device", errno.ENODEV)
    node = os.path.basename(device)

    def act(_h: _Helper) -> str:
        for path in (f"/dev/{node}", f"/dev/rbd/{pool}/{name}"):
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)
        os.mknod(f"/dev/{node}", 0o660 | stat.S_IFBLK, info.st_rdev)
        os.makedirs(f"/dev/rbd/{pool}", exist_ok=True)
        os.symlink(f"/dev/{node}", f"/dev/rbd/{pool}/{name}")
        return f"/dev/{node}"

    run_in_sandbox(pid1, act)


def remove_device(pid1: int, device: str, pool: str, name: str) -> None:
    node = os.path.basename(device)

    def act(_h: _Helper) -> int:
        for path in (f"/dev/rbd/{pool}/{name}", f"/dev/{node}"):
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)
        return 0

    run_in_sandbox(pid1, act)


def set_read_only(device: str, read_only: bool) -> None:
    """BLKROSET: the flag outlives the map on reusable devices (loop, nbd), so it is always
    cleared again before a device is unmapped."""
    with open(device, "rb") as dev:
        fcntl.ioctl(dev, BLKROSET, struct.pack("i", 1 if read_only else 0))


class Broker:
    """This VM's volume requests, checked and carried out (module docstring)."""

    def __init__(self, vm_name: str, vm_data: dict[str, Any], log: Log, zk: Any = None,
                 storage: Callable[[], Any] | None = None, ceph: Any = None) -> None:
        self.vm_name, self.vm_data, self.log = vm_name, vm_data, log
        self.zk, self._storage, self.ceph = zk, storage, ceph
        self.devices = Devices()
        self.mapped: dict[tuple[str, str], str] = {}
        self.read_only: set[str] = set()
        self.pid1: int | None = None

    # -- what is this VM's -------------------------------------------------------------------
    def own(self) -> set[tuple[str, str]]:
        return set(vmdata.volume_names(self.vm_name, self.vm_data))

    def sources(self) -> set[tuple[str, str]]:
        found = set()
        for vol in self.vm_data.get("volumes") or []:
            for key in ("source_volume", "volume_name"):
                if vol.get(key) and vol.get("pool"):
                    found.add((str(vol["pool"]), str(vol[key])))
        return found

    def _check_own(self, pool: str, name: str, what: str) -> None:
        if (pool, name) not in self.own():
            mine = ", ".join(f"{p}/{n}" for p, n in sorted(self.own())) or "none"
            raise Refused(f'{what} of volume {pool}/{name} refused: it is not one of VM "{self.vm_name}"\'s '
                          f"volumes ({mine})")

    def _check_readable(self, pool: str, name: str, what: str) -> bool:
        """True for a source volume (read-only), False for an own one; else Refused."""
        if (pool, name) in self.own():
            return False
        if (pool, name) in self.sources():
            return True
        raise Refused(f'{what} of volume {pool}/{name} refused: it is neither one of VM "{self.vm_name}"\'s '
                      f"volumes nor a source volume of its profile")

    def storage(self) -> Any:
        if self._storage is None or self.zk is None:
            raise Refused("volume requests are not available in this sandbox (no cluster connection)")
        return self._storage()

    # -- requests ----------------------------------------------------------------------------
    def handle(self, op: str, args: dict[str, Any], fds: list[int]) -> Any:
        from pvc.cluster import storage as st
        from pvc.core import schema

        pool, name = str(args.get("pool") or ""), str(args.get("name") or "")
        if op == "add_volume":
            self._check_own(pool, name, "creation")
            if args.get("zk_only"):
                return st.scan_volume(self.zk, self.storage(), pool, name)
            return st.add_volume(self.zk, self.storage(), pool, name, args.get("size") or 0,
                                 force=bool(args.get("force")))
        if op == "clone_volume":
            new = str(args.get("new_name") or "")
            self._check_own(pool, new, "creation")
            if (pool, name) not in self.sources():
                raise Refused(f"cloning {pool}/{name} refused: it is not a source volume of the profile")
            return st.clone_volume(self.zk, self.storage(), pool, name, new, force=bool(args.get("force")))
        if op == "resize_volume":
            self._check_own(pool, name, "resizing")
            return st.resize_volume(self.zk, self.storage(), pool, name, args.get("size") or 0,
                                    force=bool(args.get("force")))
        if op == "remove_volume":
            self._check_own(pool, name, "removal")
            return st.remove_volume(self.zk, self.storage(), pool, name)
        if op == "volume_exists":
            self._check_readable(pool, name, "looking up")
            if self.zk is None:
                raise Refused("volume requests are not available in this sandbox (no cluster connection)")
            return bool(self.zk.exists(schema.volume(pool, name)))
        if op == "map_volume":
            return self.map_volume(pool, name)
        if op == "unmap_volume":
            return self.unmap_volume(pool, name)
        if op == "import_volume":
            self._check_own(pool, name, "import")
            if len(fds) != 1:
                raise Refused("import needs the image file")
            with os.fdopen(fds.pop(), "rb") as image:
                if not stat.S_ISREG(os.fstat(image.fileno()).st_mode):
                    raise Refused("import: the image is not a regular file")
                written = self.storage().write_volume(pool, name, image)
            return f"Imported {written} bytes into volume {pool}/{name}."
        raise Refused(f"unknown request {op!r}")

    def map_volume(self, pool: str, name: str) -> str:
        from pvc.adapters import rbdmap

        read_only = self._check_readable(pool, name, "mapping")
        if self.zk is not None:
            from pvc.core import schema

            if not self.zk.exists(schema.volume(pool, name)):
                raise Refused(f'Volume "{name}" in pool "{pool}" does not exist.', errno.ENOENT)
        if self.pid1 is None:
            raise Refused("the sandbox is not running")
        try:
            device = rbdmap.map_volume(pool, name, self.ceph)
        except rbdmap.RbdMapError as exc:
            raise Refused(exc.message, errno.ENODEV) from None
        if read_only:
            set_read_only(device, True)
            self.read_only.add(device)
        with self.devices.lock:
            self.devices.allowed[os.stat(device).st_rdev] = read_only
        self.mapped[(pool, name)] = device
        install_device(self.pid1, device, pool, name)
        self.log(f"mapped {pool}/{name} at {device}{' (read-only)' if read_only else ''} for the script")
        return device

    def _writable_again(self, device: str) -> None:
        if device in self.read_only:
            self.read_only.discard(device)
            with suppress(OSError):
                set_read_only(device, False)

    def release(self) -> None:
        """Unmap what the script mapped and left mapped (its source volumes included)."""
        from pvc.adapters import rbdmap

        for (pool, name), device in sorted(self.mapped.items()):
            self._writable_again(device)
            try:
                if rbdmap.unmap_volume(pool, name):
                    self.log(f"unmapped {pool}/{name} (the script left it mapped)")
            except rbdmap.RbdMapError as exc:
                self.log(f"could not unmap {pool}/{name}: {exc.message}")
        self.mapped.clear()
        with self.devices.lock:
            self.devices.allowed.clear()

    def unmap_volume(self, pool: str, name: str) -> str:
        from pvc.adapters import rbdmap

        self._check_readable(pool, name, "unmapping")
        device = self.mapped.pop((pool, name), None)
        if device:
            self._writable_again(device)
        if device and self.pid1 is not None:
            try:
                remove_device(self.pid1, device, pool, name)
            except Refused:
                pass
            with self.devices.lock, suppress(OSError):
                self.devices.allowed.pop(os.stat(device).st_rdev, None)
        try:
            done = rbdmap.unmap_volume(pool, name)
        except rbdmap.RbdMapError as exc:
            raise Refused(exc.message, errno.EBUSY) from None
        if done:
            return f'Unmapped RBD volume "{name}" in pool "{pool}".'
        return f'RBD volume "{name}" in pool "{pool}" was not mapped.'


# ======================================================================= the socket

class BrokerServer:
    """Reads the sandbox's requests from its end of a socket pair, answers each (JSON messages
    {id, op, args} -> {id, ok} or {id, error}); the first message carries the seccomp
    notification fd, which starts the MountSupervisor."""

    def __init__(self, sock: socket.socket, broker: Broker, log: Log) -> None:
        self.sock, self.broker, self.log = sock, broker, log
        self.supervisor: MountSupervisor | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="sandbox-broker")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=5)
        self.sock.close()
        if self.supervisor is not None:
            self.supervisor.stop()

    def _loop(self) -> None:
        while True:
            try:
                raw, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 4)
            except OSError:
                return
            if not raw:
                for fd in fds:
                    os.close(fd)
                return
            try:
                message = json.loads(raw)
            except ValueError:
                message = {}
            op = str(message.get("op") or "")
            if op == "seccomp":
                if fds and self.supervisor is None:
                    self.supervisor = MountSupervisor(fds.pop(), self.broker.devices, self.log)
                    self.supervisor.start()
                for fd in fds:
                    os.close(fd)
                continue
            reply: dict[str, Any] = {"id": message.get("id")}
            try:
                reply["ok"] = self.broker.handle(op, dict(message.get("args") or {}), fds)
            except Refused as exc:
                reply["error"] = exc.message
                self.log(f"sandbox: refused: {exc.message}")
            except Exception as exc:
                reply["error"] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                self.sock.send(json.dumps(reply, default=str).encode())
            except OSError:
                return


def send_fds(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], fds)

