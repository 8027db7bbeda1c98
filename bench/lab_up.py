"""pvc-lab: time of `up` and `down`, and RSS of every component at idle, per node.

Target (issue: lab): `up` in under 3 minutes on these machines.
"""

from __future__ import annotations

import time

import psutil

from _common import table
from pvc.lab.main import lab_down, lab_up
from pvc.lab.plan import LabPlan
from pvc.lab.proc import pid_of

NAME = "bench"
IDLE = 20.0


def tree_rss(pid: int) -> float:
    """RSS of a process and its children in MB (libvirtd runs under tini, pvcnoded runs pvcapid)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for item in procs:
        try:
            total += item.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def main() -> None:
    lab_down(NAME)
    started = time.monotonic()
    plan: LabPlan = lab_up(NAME, 3)
    up_seconds = time.monotonic() - started
    time.sleep(IDLE)
    print(f"\nRSS at idle ({IDLE:.0f}s after up), MB, including child processes")
    per_node: dict[str, dict[str, float]] = {}
    for pidfile in sorted(plan.pid_dir.glob("*.pid")):
        pid = pid_of(pidfile)
        node, _, component = pidfile.stem.partition("-")
        if node.startswith("relay"):
            node, component = "-", pidfile.stem
        per_node.setdefault(node, {})[component] = tree_rss(pid) if pid else 0.0
    for node, components in per_node.items():
        print(f"  {node}: " + ", ".join(f"{c} {mb:.0f}" for c, mb in sorted(components.items())) +
              f"  (total {sum(components.values()):.0f})")
    started = time.monotonic()
    lab_down(NAME)
    down_seconds = time.monotonic() - started
    table("pvc-lab, 3 nodes", [
        ("up (s)", f"{up_seconds:.1f}", "< 180", up_seconds < 180),
        ("down (s)", f"{down_seconds:.1f}", "-", True),
    ])


if __name__ == "__main__":
    main()
