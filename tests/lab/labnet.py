"""Helpers for the lab storage tests: a throwaway plan in a short temp dir and its namespaces.

The namespaces come from pvc.lab.netns (switch namespace with a bridge, one veth per node, the
node's address on `eth0` inside its namespace); nothing is ever addressed in the root namespace.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pvc.lab import netns, proc
from pvc.lab.plan import LabPlan, make_plan
from tests.lab.labinfra import processes_mentioning, root_addresses

__all__ = ["lab_network", "processes_mentioning", "root_addresses", "rss_mb", "temp_plan"]


def temp_plan(prefix: str, nodes: int = 3) -> LabPlan:
    """A plan with a unique short name (<= 8 chars) whose state lives in a short /tmp dir.

    Short, because Ceph admin sockets must fit in a 108-byte unix socket path.
    """
    name = f"{prefix}{uuid.uuid4().hex[:8 - len(prefix)]}"
    plan = make_plan(name, nodes)
    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    return dataclasses.replace(
        plan, state_dir=state,
        nodes=[dataclasses.replace(n, dir=state / n.name) for n in plan.nodes])


@contextmanager
def lab_network(plan: LabPlan) -> Iterator[LabPlan]:
    """Namespaces for every node of the plan; on exit stops what the plan's pid files name,
    deletes the namespaces (killing anything left inside) and the state dir, and checks that
    the root namespace gained no address."""
    before = root_addresses()
    try:
        netns.create_switch(plan)
        for node in plan.nodes:
            netns.create_node_netns(plan, node)
            node.dir.mkdir(parents=True, exist_ok=True)
        netns.wait_links_ready(plan)
        yield plan
    finally:
        if plan.pid_dir.exists():
            for pidfile in plan.pid_dir.glob("*.pid"):
                proc.stop(pidfile, timeout=5, kill=True)
        netns.delete_all(plan)
        shutil.rmtree(plan.state_dir, ignore_errors=True)
    assert root_addresses() == before, "an address appeared in the root namespace"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
