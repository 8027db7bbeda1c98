"""Whether hardware KVM really works on this machine (the checks behind `kvm_available()`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A minimal KVM guest: one vCPU, 64 KiB of memory at the top of the 32-bit space holding `hlt` at
# the reset vector (CS:IP f000:fff0). KVM_RUN must come back with KVM_EXIT_HLT (5). Runs in a child
# process so a hung KVM_RUN cannot wedge the daemon.
_KVM_RUN_PROBE = r"""
import ctypes, fcntl, mmap, os, struct
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
assert fcntl.ioctl(kvm, 0xAE00) == 12, "KVM API version is not 12"
vm = fcntl.ioctl(kvm, 0xAE01, 0)
mem = mmap.mmap(-1, 0x10000)
mem[0xFFF0:0xFFF2] = b"\xf4\xf4"
addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
fcntl.ioctl(vm, 0x4020AE46, struct.pack("IIQQQ", 0, 0, 0xFFFF0000, 0x10000, addr))
vcpu = fcntl.ioctl(vm, 0xAE41, 0)
run = mmap.mmap(vcpu, fcntl.ioctl(kvm, 0xAE04), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
fcntl.ioctl(vcpu, 0xAE80, 0)
print(struct.unpack_from("I", run, 8)[0])
"""


def kvm_run_probe(timeout: float = 10.0) -> tuple[bool, str]:
    """Run a two-instruction KVM guest in a child process; (worked, why not)."""
    try:
        result = subprocess.run([sys.executable, "-I", "-c", _KVM_RUN_PROBE], capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"a KVM_RUN probe did not return within {timeout:g}s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"a KVM_RUN probe failed: {last}"
    if result.stdout.strip() != "5":
        return False, f"a KVM_RUN probe exited with reason {result.stdout.strip()} instead of HLT"
    return True, ""


def hardware_virtualization(cpuinfo: str, modules: Path = Path("/sys/module")) -> tuple[bool, str]:
    """Whether the CPU offers VT-x/AMD-V and a hardware KVM module is loaded; (yes, why not)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if not flags & {"vmx", "svm"}:
        other = sorted(p.name for p in modules.glob("kvm_*")) if modules.exists() else []
        extra = f" (/dev/kvm here comes from {', '.join(other)})" if other else ""
        return False, f"the CPU has no vmx/svm flag, so there is no hardware virtualisation{extra}"
    if not any((modules / name).exists() for name in ("kvm_intel", "kvm_amd")):
        return False, "neither kvm_intel nor kvm_amd is loaded"
    return True, ""


KVM_ENV = "PVC_HYPERVISOR_KVM"     # "1"/"0": force the answer of kvm_available()


def kvm_env_override() -> bool | None:
    """The answer forced by PVC_HYPERVISOR_KVM, or None when it is unset or unreadable."""
    value = os.environ.get(KVM_ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None
