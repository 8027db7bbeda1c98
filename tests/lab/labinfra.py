"""Helpers for the lab infrastructure tests: a throwaway plan, root-namespace checks, leftovers."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pvc.lab import netns, proc
from pvc.lab.plan import LabPlan, make_plan


def temp_plan(nodes: int = 2) -> LabPlan:
    """A plan named "t" + 4 hex digits whose state lives in a short /tmp dir (108-byte sockets)."""
    name = f"t{uuid.uuid4().hex[:4]}"
    plan = make_plan(name, nodes)
    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    return dataclasses.replace(plan, state_dir=state,
                               nodes=[dataclasses.replace(n, dir=state / n.name) for n in plan.nodes])


def root_addresses() -> set[str]:
    """Every address in the root namespace (the lab must never add one)."""
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {f"{link['ifname']}:{a['local']}" for link in json.loads(out) for a in link.get("addr_info", [])}


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and proc.alive(int(entry.name)):
            found.append((int(entry.name), cmdline.strip()))
    return found


@contextmanager
def lab(nodes: int = 2) -> Iterator[LabPlan]:
    """A plan with its switch and node namespaces; everything is removed on exit, and checked."""
    plan = temp_plan(nodes)
    before = root_addresses()
    try:
        netns.create_switch(plan)
        for node in plan.nodes:
            netns.create_node_netns(plan, node)
        netns.wait_links_ready(plan)
        yield plan
    finally:
        if plan.pid_dir.exists():
            for pidfile in plan.pid_dir.glob("*.pid"):
                proc.stop(pidfile, timeout=10)
        netns.delete_all(plan)
        shutil.rmtree(plan.state_dir, ignore_errors=True)
    assert netns.list_lab_netns(plan.name) == []
    assert processes_mentioning(str(plan.state_dir)) == []
    assert root_addresses() == before, "an address appeared in the root namespace"
