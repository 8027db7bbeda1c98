"""Snapshot of a running VM with three RBD disks on a lab's real Ceph and libvirt, through the API.

The lab's tiny guest runs with three 64 MiB RBD disks; RUNS snapshots are taken with
`POST /vm/<vm>/snapshot`, each followed to its end (the task polled every 20 ms), then removed.
Measured: the wall time from the request to the task's success (target < 1 s: upstream sleeps 1 s
per progress step, so its 3-disk snapshot takes about 6 s), and the time the guest was paused
around the three RBD snapshots as the worker measured it (target <= 100 ms, DESIGN D15), with the
worker's own breakdown (suspend, snapshots, resume) from the task log.

Runs on the running lab (`./scripts/lab` or `pvc-lab up`, default name pvclab) when it is up or
named with --lab; otherwise, or with `--own`, it brings up a private 3-node lab `bsnap` (removed
afterwards unless `--keep`). The VM and its volumes are removed however the run ends.

Usage: bench/snapshot.py [--lab pvclab | --own [--keep]] [--runs N]
"""

from __future__ import annotations

import argparse
import re
import time
import uuid as uuidlib

import httpx

from _common import bench_lab, median, percentile, table
from _lab_docs import Cleanup, bench_tag, delete
from pvc.lab import guest
from pvc.lab.main import lab_down

NAME = "bsnap"
POOL = "vms"
RUNS = 10
DISKS = 3


def call(api: httpx.Client, method: str, path: str, **kwargs: object) -> object:
    response = api.request(method, path, **kwargs)  # type: ignore[arg-type]
    if response.status_code >= 300:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def finish(api: httpx.Client, task_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(f"/tasks/{task_id}").json()
        if status.get("state") in ("SUCCESS", "FAILURE", "CANCELLED"):
            if status["state"] != "SUCCESS":
                raise SystemExit(f"task {task_id}: {status}")
            return status
        time.sleep(0.02)
    raise SystemExit(f"task {task_id} did not finish within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="the running lab to use [default: pvclab if it is up]")
    parser.add_argument("--own", action="store_true", help=f"bring up a private lab '{NAME}' instead")
    parser.add_argument("--keep", action="store_true", help="with --own: leave the private lab up")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"snapshots to take [{RUNS}]")
    args = parser.parse_args()
    cleanup = Cleanup()
    plan, api, owned = bench_lab(args.lab, args.own, NAME, 3, timeout=120)
    if owned and not args.keep:
        cleanup.add(f"remove lab {NAME}", lambda: lab_down(NAME))
    cleanup.add("close the API client", api.close)
    tag = bench_tag("snp")
    vm = f"{tag}vm"
    volumes = [f"{vm}_sd{chr(97 + i)}" for i in range(DISKS)]
    with cleanup:
        for volume in volumes:
            cleanup.add(f"remove volume {volume}", lambda volume=volume: delete(
                api, f"/storage/ceph/volume/{POOL}/{volume}"))
            call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "64M"})
        disks = "".join(
            "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' event_idx='off'/>"
            f"<source protocol='rbd' name='{POOL}/{v}'/><target dev='vd{chr(97 + i)}' bus='virtio'/></disk>"
            for i, v in enumerate(volumes))
        files = plan.extra["guest_files"]
        xml = guest.domain_xml(vm, guest.from_files(files), uuid=str(uuidlib.uuid4()),  # type: ignore[arg-type]
                               devices=disks, cmdline_extra="vmdhcp=0")
        cleanup.add(f"remove VM {vm}", lambda: delete(api, f"/vm/{vm}"))
        call(api, "POST", "/vm", data={"xml": xml})
        call(api, "POST", f"/vm/{vm}/state", params={"state": "start"})
        deadline = time.monotonic() + 120
        while "PVC-GUEST-BOOT-OK" not in str(call(api, "GET", f"/vm/{vm}/console",
                                                  params={"lines": 1000})["data"]):  # type: ignore[index]
            if time.monotonic() > deadline:
                raise SystemExit(f"VM {vm} did not boot within 120 s")
            time.sleep(1)
        walls, pauses, steps = [], [], []
        for i in range(args.runs):
            started = time.monotonic()
            body = call(api, "POST", f"/vm/{vm}/snapshot", params={"snapshot_name": f"b{i}"})
            status = finish(api, body["task_id"])  # type: ignore[index]
            walls.append(time.monotonic() - started)
            result = status.get("result") or {}
            if result.get("consistency") != "paused":  # type: ignore[union-attr]
                raise SystemExit(f"snapshot b{i}: consistency {result}")
            pauses.append(float(result["pause_ms"]))  # type: ignore[index]
            log = api.get(f"/tasks/{body['task_id']}/log").text  # type: ignore[index]
            found = re.search(r"\(suspend ([\d.]+) ms, snapshots ([\d.]+) ms, resume ([\d.]+) ms\)", log)
            if found:
                steps.append(tuple(float(x) for x in found.groups()))
            removed = call(api, "DELETE", f"/vm/{vm}/snapshot", params={"snapshot_name": f"b{i}"})
            finish(api, removed["task_id"])  # type: ignore[index]
        rows = [
            (f"snapshot of a running {DISKS}-disk VM, p50 (ms)", f"{median(walls) * 1000:.0f}", "< 1000",
             median(walls) < 1.0),
            (f"snapshot of a running {DISKS}-disk VM, max (ms)", f"{max(walls) * 1000:.0f}", "< 1000",
             max(walls) < 1.0),
            ("guest pause p50 (ms)", f"{median(pauses):.1f}", "<= 100", median(pauses) <= 100),
            ("guest pause p90 (ms)", f"{percentile(pauses, 90):.1f}", "<= 100",
             percentile(pauses, 90) <= 100),
        ]
        if steps:
            for index, what in enumerate(("suspend", f"{DISKS} RBD snapshots (parallel)", "resume")):
                rows.append((f"  of the pause: {what} p50 (ms)", f"{median([s[index] for s in steps]):.1f}",
                             "-", True))
        table(f"VM snapshot ({args.runs} runs, {DISKS} x 64M RBD disks, running guest under TCG)", rows)


if __name__ == "__main__":
    main()
