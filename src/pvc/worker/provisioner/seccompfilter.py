"""The provisioner sandbox's seccomp filter (issue #13), built with libseccomp (python3-seccomp).

Default: allow. Refused with EPERM, for the sandbox and everything it starts: loading or removing
kernel modules, kexec, reboot, swap, ptrace and reading or writing other processes' memory, bpf,
perf events, the kernel keyring, open_by_handle_at, userfaultfd, setting the clock, process
accounting, quotas, I/O port access, pivot_root, setns, new user namespaces (unshare/clone with
CLONE_NEWUSER), block device nodes, io_uring (its operations bypass this filter), TIOCSTI, syslog.
clone3 and the new mount API answer ENOSYS, so programs fall back to clone() and mount(), which
this filter can see.

mount(), umount2() and mknod() of character devices are not run by the kernel for the script:
they are handed to the parent (SECCOMP_RET_USER_NOTIF), which decides and performs them in the
sandbox's view on its behalf (pvc.worker.provisioner.broker.MountSupervisor). The sandbox itself
has no CAP_SYS_ADMIN or CAP_MKNOD, so nothing reaches those calls any other way.
"""

from __future__ import annotations

import errno
import stat
from typing import Any

from pvc.worker.provisioner.confine import CLONE_NEWUSER

DENIED = (
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "open_by_handle_at", "name_to_handle_at", "userfaultfd",
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex", "acct", "quotactl", "quotactl_fd",
    "iopl", "ioperm", "pivot_root", "setns", "syslog", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "lookup_dcookie", "vhangup", "kcmp", "pidfd_getfd", "fanotify_init",
    "nfsservctl", "uselib",
)
NOT_IMPLEMENTED = ("clone3", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
                   "mount_setattr")
BROKERED = ("mount", "umount2", "umount")
TIOCSTI = 0x5412
S_IFMT = 0o170000


def build() -> Any:
    """The filter (not loaded); its NOTIFY rules need a listener: see load()."""
    try:
        import seccomp
    except ImportError:
        raise ImportError("the provisioner sandbox needs libseccomp's Python module: "
                          "apt-get install python3-seccomp") from None

    eperm = seccomp.ERRNO(errno.EPERM)
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    try:
        flt.set_attr(seccomp.Attr.CTL_LOG, 1)      # refusals show in the kernel's audit log
    except (OSError, ValueError, RuntimeError):
        pass

    def rule(action: Any, name: str, *args: Any) -> None:
        try:
            flt.add_rule(action, name, *args)
        except (OSError, RuntimeError, ValueError):
            pass       # a system call this architecture does not have

    for name in DENIED:
        rule(eperm, name)
    for name in NOT_IMPLEMENTED:
        rule(seccomp.ERRNO(errno.ENOSYS), name)
    for name in BROKERED:
        rule(seccomp.NOTIFY, name)
    rule(eperm, "unshare", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    for name, mode_arg in (("mknod", 1), ("mknodat", 2)):
        rule(eperm, name, seccomp.Arg(mode_arg, seccomp.MASKED_EQ, S_IFMT, stat.S_IFBLK))
        rule(seccomp.NOTIFY, name, seccomp.Arg(mode_arg, seccomp.MASKED_EQ, S_IFMT, stat.S_IFCHR))
    rule(eperm, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    return flt


def load() -> int:
    """Load the filter into this process (no_new_privs must be set); returns the notification
    fd for the parent's MountSupervisor."""
    flt = build()
    flt.load()
    return int(flt.get_notify_fd())
