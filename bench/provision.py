#!/usr/bin/env python3
"""Provisioning speed on the lab: one clone-profile VM from create to running (target < 10 s under
TCG), then ten at once (target < 60 s for all).

Needs a running lab (`./scripts/lab` or `pvc-lab up`, default name pvclab; its demo may be there).
"Running" is the node reporting the VM's QEMU as running (not the guest's boot, which TCG makes
slow and is not the provisioner's). Everything the run makes (network, templates, userdata,
script, profile, VMs) is named after a fresh tag, so it never meets the demo's documents or a
previous run's, and is removed afterwards however the run ends.

Usage: bench/provision.py [--lab pvclab] [--parallel 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx

from _common import lab_client, table  # puts the repository on sys.path for `tests`
from _lab_docs import Cleanup, ProvisionDocs, bench_tag, cancel_job, remove_vm, vm_names

# isort: split
from tests.system.helpers import call, wait_task

TARGET_ONE = 10.0
TARGET_MANY = 60.0


def running(api: httpx.Client, name: str) -> bool:
    response = api.get(f"/vm/{name}")
    if response.status_code != 200:
        return False
    vm = response.json()[0]
    return vm.get("state") == "start" and bool(vm.get("node"))


def provision(api: httpx.Client, profile: str, names: list[str], cleanup: Cleanup) -> dict[str, float]:
    """Submit all at once; seconds from submission to running, per VM."""
    for name in names:  # before the jobs: a VM half-made by a failed job is removed too
        cleanup.add(f"remove VM {name}", lambda name=name: remove_vm(api, name))
    started = time.monotonic()
    tasks = {}
    for name in names:
        tasks[name] = call(api, "POST", "/provisioner/create", params={"name": name, "profile": profile})
        cleanup.add(f"cancel job {tasks[name]['task_id']}",
                    lambda task_id=tasks[name]["task_id"]: cancel_job(api, task_id))
    done: dict[str, float] = {}
    deadline = started + 300
    while len(done) < len(names) and time.monotonic() < deadline:
        for name, accepted in tasks.items():
            if name in done:
                continue
            status = api.get(f"/tasks/{accepted['task_id']}").json()
            if status.get("state") in ("FAILURE", "CANCELLED"):
                raise SystemExit(f"{name}: {status}")
            if status.get("state") == "SUCCESS" and running(api, name):
                done[name] = time.monotonic() - started
        time.sleep(0.1)
    for accepted in tasks.values():
        wait_task(api, accepted, 10)
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default="pvclab")
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    plan, api = lab_client(args.lab)
    tag = bench_tag("bp")
    names = vm_names(tag, args.parallel + 1)
    docs = ProvisionDocs(tag)
    with api, Cleanup() as cleanup:
        profile = docs.set_up(plan, api, cleanup)
        one = provision(api, profile, names[:1], cleanup)
        many = provision(api, profile, names[1:], cleanup)
    if cleanup.failed:
        print(f"clean-up left behind: {', '.join(cleanup.failed)}", file=sys.stderr)
    slowest = max(many.values()) if len(many) == len(names) - 1 else float("inf")
    first = one.get(names[0], float("inf"))
    table("provisioning a clone-profile VM (lab, TCG)", [
        ("one VM, create -> running (s)", f"{first:.1f}", f"< {TARGET_ONE:.0f}", first < TARGET_ONE),
        (f"{args.parallel} at once, all running (s)", f"{slowest:.1f}", f"< {TARGET_MANY:.0f}",
         slowest < TARGET_MANY),
        (f"{args.parallel} at once, median (s)",
         f"{statistics.median(many.values()):.1f}" if many else "-", "(info)", True),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
