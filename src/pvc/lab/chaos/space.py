"""Size-limited state directories for chaos labs, and the fault that fills one.

A lab brought up for chaos (`PVC_LAB_CHAOS=1`, pvc.lab.plan) puts each node's PVC state directory
(its config's dynamic and log directories, `<node dir>/state`) on a tmpfs of its own with a fixed
size, made before the node's daemons start. Filling it runs the node out of space exactly where PVC
writes (dnsmasq's files, pvcapid's log) and never touches the machine's own disk: a tmpfs is
memory, bounded by `size=`. `pvc-lab down` unmounts it with the rest of the lab's mounts.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from pvc.lab import proc
from pvc.lab.plan import LabPlan, NodePlan

STATE_MOUNT_BYTES = 64 * 1024 * 1024   # what PVC writes there in a 30-minute run is a few MB
FILL_NAME = "chaos-fill"               # the file of zeros the fault writes (removed on heal)
FULL_FRACTION = 0.98                   # at or above this share used, the directory counts as full
_CHUNK = b"\0" * (1 << 20)


def state_dir(node: NodePlan) -> Path:
    """The node's PVC state directory in a chaos lab (its dynamic and log directories live below)."""
    return node.dir / "state"


def fill_file(node: NodePlan) -> Path:
    return state_dir(node) / FILL_NAME


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted exactly at `path` (per /proc/self/mountinfo)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    target = str(path)
    return any(line.split()[4] == target for line in lines if len(line.split()) > 4)


def mount_state_dirs(plan: LabPlan) -> list[Path]:
    """Mount each node's size-limited state directory (a chaos lab only; idempotent). Must run
    before the node's daemons start, so everything they write lands on the mount."""
    if not plan.chaos:
        return []
    mounted = []
    for node in plan.nodes:
        path = state_dir(node)
        path.mkdir(parents=True, exist_ok=True)
        if not is_mount_point(path):
            # 0755 as the node's own directory: dnsmasq reads its DHCP reservations (hosts
            # directory below run/) as `nobody`; at 0700 it saw none (the suite's lab is a chaos lab)
            proc.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_MOUNT_BYTES},mode=0755",
                      f"pvc-lab-{plan.name}-{node.name}-state", str(path)])
        for sub in ("run", "log"):
            (path / sub).mkdir(exist_ok=True)
        mounted.append(path)
    return mounted


@dataclass
class MountState:
    path: str
    mounted: bool
    used: int            # bytes
    size: int            # bytes
    filler: bool         # the fault's file is present

    @property
    def full(self) -> bool:
        return self.size > 0 and self.used >= FULL_FRACTION * self.size

    def problem(self) -> str | None:
        """What is wrong with the directory, or None when nothing is."""
        if not self.mounted:
            return f"state directory {self.path} is not mounted"
        if self.filler:
            return f"state directory {self.path} holds the chaos fill file"
        if self.full:
            return f"state directory {self.path} is full ({self.used >> 20} of {self.size >> 20} MiB)"
        return None


def mount_state(plan: LabPlan, node: NodePlan) -> MountState | None:
    """The node's state mount as it is now; None in a lab without chaos mounts."""
    if not plan.chaos:
        return None
    path = state_dir(node)
    mounted = is_mount_point(path)
    used = size = 0
    if mounted:
        stats = os.statvfs(path)
        size = stats.f_blocks * stats.f_frsize
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return MountState(str(path), mounted, used, size, fill_file(node).exists())


def fill(plan: LabPlan, node: NodePlan) -> int:
    """Write zeros into the node's state directory until it has no space left; bytes written."""
    state = mount_state(plan, node)
    if state is None or not state.mounted:
        raise proc.LabError(f"{node.name} has no size-limited state directory: bring the lab up with "
                            f"PVC_LAB_CHAOS=1 to fill one (never the machine's own disk)")
    written = 0
    fd = os.open(fill_file(node), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, _CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # the last pages: what is left after the last whole chunk
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    written += os.write(fd, _CHUNK[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def unfill(node: NodePlan) -> bool:
    """Remove the fill file (idempotent); whether there was one."""
    try:
        fill_file(node).unlink()
    except FileNotFoundError:
        return False
    return True
