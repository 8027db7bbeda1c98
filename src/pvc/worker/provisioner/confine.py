"""Confining the provisioner sandbox's init process (issue #13): namespaces, a new root, fewer
capabilities, no_new_privs and a seccomp filter. Runs in the sandbox child, as root, before the
script is loaded; everything here is the kernel's doing (the provisioner sandbox is a named
exception to "only adapters run system calls like these").

The new root is a tmpfs holding read-only binds of what an install needs (/usr and its
/bin, /sbin, /lib* links, a curated /etc, PVC's own code), a fresh /tmp with /tmp/target, a /dev
with only null, zero, full, random, urandom, tty, a private devpts and /dev/shm (block devices of
the VM's own volumes are added by the parent when it maps them), a /proc of the sandbox's own PID
namespace with /proc/sys, /proc/sysrq-trigger and friends read-only or masked, a read-only /sys,
and fresh /run, /var and /root. The host's root is detached after pivot_root, so no path and no
chroot trick leads back to it. Paths the parent names as secrets (the configuration file,
keyrings, token files...) are masked wherever they would show through a bind.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Iterable
from typing import Any

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = 32, 4096, 8192, 16384
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# Capabilities an install keeps (file ownership and modes, chroot, setuid for package scripts
# in the target, signals to its own processes). Everything else leaves the bounding set: no
# CAP_SYS_ADMIN (mounts go through the parent), CAP_MKNOD (idem), CAP_SYS_MODULE, CAP_SYS_RAWIO,
# CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_DAC_READ_SEARCH (open_by_handle_at), CAP_SYS_BOOT, ...
CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
        "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SYS_CHROOT": 18,
        "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31}
LAST_CAP_FALLBACK = 40

# /etc entries an install may read; everything else in the host's /etc (shadow, pvc, ceph,
# ssh host keys, libvirt, frr, zookeeper...) is simply not there.
ETC = ("passwd", "group", "hosts", "hostname", "host.conf", "nsswitch.conf", "resolv.conf", "gai.conf",
       "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "debian_version",
       "os-release", "lsb-release", "issue", "mke2fs.conf", "e2scrub.conf", "ssl", "ca-certificates",
       "ca-certificates.conf", "protocols", "services", "rpc", "ethertypes", "networks", "mime.types",
       "magic", "magic.mime", "mtab", "alternatives", "python3", f"python3.{sys.version_info.minor}",
       "perl", "login.defs", "environment", "profile", "bash.bashrc", "inputrc", "shells",
       "debconf.conf", "xattr.conf", "filesystems", "wgetrc", "gnupg", "debootstrap")
ETC_MASKED = ("ssl/private",)
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
             "tty": (5, 0)}
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "kallsyms", "kmsg", "acpi", "scsi", "asound",
               "latency_stats", "config.gz", "vmallocinfo")
SYS_MASKED = ("firmware", "kernel/debug", "kernel/security", "fs/cgroup")


class ConfineError(OSError):
    """A step of building the sandbox failed (errno, and a message naming the step)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)

    def __str__(self) -> str:
        return str(self.strerror)


def libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


_LIBC = libc()


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise ConfineError(err, f"{what}: {os.strerror(err)}")
    return result


def _enc(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _LIBC.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)) != 0:
        err = ctypes.get_errno()
        raise ConfineError(err, f"mount {source or fstype or ''} on {target}: {os.strerror(err)}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_LIBC.umount2(_enc(target), flags), f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    zero = ctypes.c_ulong(0)
    return int(_LIBC.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), zero, zero))


# ============================================================================ namespaces

def namespace_flags(network: bool) -> int:
    """Own mount, PID, IPC, UTS and cgroup namespaces; and a network namespace unless allowed."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
    return flags if network else flags | CLONE_NEWNET


def unshare_and_fork(network: bool) -> None:
    """Unshare the namespaces, then fork: the child returns as PID 1 of the new PID namespace;
    this process stays outside, forwards SIGTERM to it and exits with its status. When PID 1
    dies the kernel kills every process of the namespace, so nothing a script starts outlives it."""
    _check(_LIBC.unshare(namespace_flags(network)), "unshare (the worker must run as root)")
    pid = os.fork()
    if pid == 0:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:      # the outside process is already gone
            os._exit(1)
        return
    os.closerange(3, 1 << 20)       # the pipes and the socket belong to PID 1 now

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code & 0xFF)      # killed by a signal: 128 + its number


def loopback_up() -> None:
    """Bring `lo` up in a fresh network namespace (the only interface the script gets)."""
    iff_up, siocgifflags, siocsifflags = 0x1, 0x8913, 0x8914
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = fcntl.ioctl(sock, siocgifflags, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", raw)[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


# ============================================================================ the new root

def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _mounts_under(root: str) -> list[tuple[str, set[str]]]:
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            point = _unescape(fields[4])
            if point == root or point.startswith(root + "/"):
                found.append((point, set(fields[5].split(","))))
    return found


def _make_point(target: str, directory: bool) -> None:
    if directory:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            with open(target, "w"):
                pass


def bind_read_only(source: str, target: str) -> None:
    """Bind `source` (with what is mounted under it) at `target`, every mount of it read-only,
    nosuid and nodev."""
    _make_point(target, os.path.isdir(source))
    mount(source, target, None, MS_BIND | MS_REC)
    for point, options in _mounts_under(target):
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        flags |= MS_NOEXEC if "noexec" in options else 0
        try:
            mount(None, point, None, flags)
        except ConfineError:
            if point == target:
                raise


def mask(target: str) -> None:
    """Hide a file (an empty read-only file over it) or a directory (an empty read-only tmpfs)."""
    if os.path.isdir(target) and not os.path.islink(target):
        mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555")
    elif os.path.lexists(target) and not os.path.islink(target):
        mount("/dev/null", target, None, MS_BIND)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def code_paths() -> list[str]:
    """The interpreter's prefix and import paths outside /usr (a virtual environment, a checkout),
    outermost only: bound read-only so PVC's own code stays importable in the sandbox."""
    found: list[str] = []
    for entry in sorted({os.path.realpath(p) for p in (sys.prefix, *sys.path) if p}, key=len):
        if (entry in ("/", "/tmp") or entry == "/usr" or entry.startswith("/usr/")
                or not os.path.isdir(entry) or any(entry == f or entry.startswith(f + "/") for f in found)):
            continue
        found.append(entry)
    return found


def _tmpfs(target: str, mode: str, flags: int = MS_NOSUID | MS_NODEV, size: int = 0) -> None:
    """A fresh tmpfs; `size` bytes at most when given (otherwise the kernel's half of RAM)."""
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", flags, f"mode={mode}" + (f",size={size}" if size > 0 else ""))


def build_root(root: str, secrets: Iterable[str], network: bool, tmp_size: int = 0) -> list[str]:
    """Populate the new root at `root` (an empty directory); returns the bound host trees.

    Every writable scratch file system (/tmp, /run, /var, /root, /dev/shm) is a tmpfs of at most
    `tmp_size` bytes (worker.sandbox_tmp_size): filling one stops with ENOSPC. Their pages are
    also charged to the sandbox's memory cgroup, whose limit bounds them together."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    bound: list[str] = []
    # /usr and the merged-/usr links (or binds where the host is not merged)
    bind_read_only("/usr", root + "/usr")
    bound.append("/usr")
    for name in ROOT_LINKS:
        path = "/" + name
        if os.path.islink(path):
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            bind_read_only(path, root + path)
            bound.append(path)
    # a curated /etc
    _tmpfs(root + "/etc", "0755")
    for name in ETC:
        path = "/etc/" + name
        if name == "resolv.conf" and not network:
            continue
        real = os.path.realpath(path)
        if not os.path.exists(path):
            continue
        if os.path.islink(path) and (real.startswith("/etc/") or real.startswith("/usr/")
                                     or real.startswith("/proc/")):
            os.symlink(os.readlink(path), root + path)
            continue
        bind_read_only(real, root + path)
        bound.append(real)
    with open(root + "/etc/fstab", "w") as fstab:
        fstab.write("# the provisioner sandbox has no file systems of its own to mount\n")
    for name in ETC_MASKED:
        if os.path.isdir(root + "/etc/" + name):
            mask(root + "/etc/" + name)
    mount(None, root + "/etc", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    # fresh, writable scratch space
    _tmpfs(root + "/tmp", "1777", size=tmp_size)
    os.makedirs(root + "/tmp/target", exist_ok=True)
    _tmpfs(root + "/run", "0755", size=tmp_size)
    os.makedirs(root + "/run/lock", mode=0o1777, exist_ok=True)
    _tmpfs(root + "/var", "0755", size=tmp_size)
    for sub in ("tmp", "cache", "lib", "log", "spool"):
        os.makedirs(root + "/var/" + sub, exist_ok=True)
    os.chmod(root + "/var/tmp", 0o1777)
    _tmpfs(root + "/root", "0700", size=tmp_size)
    for empty in ("mnt", "media", "opt", "srv", "home"):
        os.makedirs(root + "/" + empty, exist_ok=True)
    # PVC's own code (virtual environment, checkout), read-only
    for path in code_paths():
        bind_read_only(path, root + path)
        bound.append(path)
    build_dev(root + "/dev", tmp_size)
    # /proc of this PID namespace (we are its PID 1), with the host-wide knobs read-only
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READ_ONLY:
        path = f"{root}/proc/{name}"
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_MASKED:
        if os.path.exists(f"{root}/proc/{name}"):
            mask(f"{root}/proc/{name}")
    # /sys read-only (a fresh instance: it shows this network namespace's interfaces)
    os.makedirs(root + "/sys", exist_ok=True)
    mount("sysfs", root + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in SYS_MASKED:
        if os.path.isdir(f"{root}/sys/{name}"):
            mask(f"{root}/sys/{name}")
    # whatever the parent calls secret, wherever a bind would show it
    for secret in secrets:
        mask_secret(root, secret, bound)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return bound


def mask_secret(root: str, path: str, bound: list[str]) -> None:
    if not path or not os.path.isabs(path):
        return
    for candidate in {os.path.normpath(path), os.path.realpath(path)}:
        if any(candidate == b or candidate.startswith(b.rstrip("/") + "/") for b in bound):
            target = root + candidate
            if os.path.lexists(target):
                mask(target)


def build_dev(dev: str, shm_size: int = 0) -> None:
    """A /dev with only the harmless character devices, a private devpts and /dev/shm."""
    _tmpfs(dev, "0755", MS_NOSUID, size=1024 * 1024)   # device nodes and links only
    for name, (major, minor) in DEV_NODES.items():
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    os.makedirs(dev + "/pts")
    mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", dev + "/ptmx")
    _tmpfs(dev + "/shm", "1777", size=shm_size)
    os.makedirs(dev + "/rbd")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def pivot(root: str) -> None:
    """pivot_root into `root` and detach the old root entirely."""
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise ConfineError(errno.ENOSYS, f"pivot_root: unknown system call number on {os.uname().machine}")
    os.chdir(root)
    _check(_LIBC.syscall(number, b".", b"."), "pivot_root")
    umount(".", MNT_DETACH)
    os.chdir("/")


# ============================================================================ privileges

def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return LAST_CAP_FALLBACK


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities(keep: Iterable[int] = CAPS.values(), last: int | None = None) -> None:
    """Drop every capability but `keep` from the bounding set, the ambient set and the process's
    own sets (so neither this process nor anything it executes, even as root, gets them back)."""
    keep = set(keep)
    last = _last_cap() if last is None else last
    for cap in range(last + 1):
        if cap not in keep and prctl(PR_CAPBSET_DROP, cap) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise ConfineError(err, f"dropping capability {cap} from the bounding set: "
                                        f"{os.strerror(err)}")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    mask = [0, 0]
    for cap in keep:
        mask[cap // 32] |= 1 << (cap % 32)
    header = _CapHeader(0x20080522, 0)        # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)(*[_CapData(m, m, m) for m in mask])
    _check(_LIBC.capset(ctypes.byref(header), data), "capset")


def no_new_privs() -> None:
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")


def effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1
