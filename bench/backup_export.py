"""Incremental VM snapshot export on a lab's real Ceph, through the API (snapshot + export tasks).

A VM (defined, not started) with one 1 GiB RBD disk written in full; a snapshot and a full
export; then for each change size (1, 10, 50 MiB written at random offsets) a snapshot and an
incremental export from the previous one. The time is the export task's, from the request to
its SUCCESS as the API reports it (worker pick-up, `rbd export-diff` streamed and hashed, fsync,
manifest, catalogue), plus the bytes written.

Target (issue #15): an incremental export of a 1 GiB volume with 10 MiB changed takes < 5 s, and
its time grows with the change, not with the volume size: the 1 MiB export must not cost more
than the full export's share of 1 MiB, and 50 MiB must cost far less than the full export.

Runs on the running lab (`./scripts/lab` or `pvc-lab up`, default pvclab) or, with `--own` or
when none is up, on a private lab `bbak` (removed afterwards unless `--keep`). What it makes is
named after a fresh tag and removed however the run ends.

Usage: bench/backup_export.py [--lab pvclab | --own [--keep]]
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import httpx

from _common import bench_lab, table
from _lab_docs import Cleanup, bench_tag, delete, remove_vm
from pvc.lab import ceph
from pvc.lab.main import lab_down

NAME = "bbak"
POOL = "vms"
GIB = 1 << 30
MIB = 1 << 20
CHANGES = (1, 10, 50)          # MiB written between snapshots
ROOT = Path("/tmp/pvc-bench-exports")


def vm_xml(name: str, volume: str) -> str:
    return f"""<domain type='kvm'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>
  <source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk></devices>
</domain>"""


def ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} "
                         f"{response.text}")
    return response.json()


def run_task(api: httpx.Client, method: str, path: str, **params: Any) -> tuple[float, dict[str, Any]]:
    """Seconds from the request to the task's end, and its final status."""
    t0 = time.monotonic()
    accepted = ok(api.request(method, path, params=params))
    while True:
        status = ok(api.get(f"/tasks/{accepted['task_id']}"))
        if status.get("state") in ("SUCCESS", "FAILURE", "CANCELLED"):
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    if status["state"] != "SUCCESS":
        raise SystemExit(f"{path}: {status}")
    return elapsed, status


def write(plan: Any, volume: str, total: str, pattern: str) -> None:
    ceph.rbd(plan, "bench", "--io-type", "write", "--io-size", "4M" if pattern == "seq" else "64K",
             "--io-total", total, "--io-pattern", pattern, f"{POOL}/{volume}", timeout=900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="the running lab to use [default: pvclab if it is up]")
    parser.add_argument("--own", action="store_true", help=f"bring up a private lab '{NAME}' instead")
    parser.add_argument("--keep", action="store_true", help="with --own: leave the private lab up")
    args = parser.parse_args()
    cleanup = Cleanup()
    plan, api, owned = bench_lab(args.lab, args.own, NAME, 3, timeout=300)
    if owned and not args.keep:
        cleanup.add(f"remove lab {NAME}", lambda: lab_down(NAME))
    cleanup.add("close the API client", api.close)
    tag = bench_tag("bk")
    name, volume = tag, f"{tag}_sda"
    with cleanup:
        shutil.rmtree(ROOT, ignore_errors=True)
        ROOT.mkdir(parents=True)
        cleanup.add(f"remove {ROOT}", lambda: shutil.rmtree(ROOT, ignore_errors=True))
        ok(api.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "1G"}))
        cleanup.add(f"remove volume {volume}", lambda: delete(api, f"/storage/ceph/volume/{POOL}/{volume}"))
        ok(api.post("/vm", data={"xml": vm_xml(name, volume)}))
        cleanup.add(f"remove VM {name} with its disk", lambda: remove_vm(api, name))
        print(f"writing 1 GiB into {POOL}/{volume} ...", flush=True)
        write(plan, volume, "1G", "seq")
        run_task(api, "POST", f"/vm/{name}/snapshot", snapshot_name="base")
        full_s, _ = run_task(api, "POST", f"/vm/{name}/snapshot/export", snapshot_name="base",
                             export_path=str(ROOT))
        full_bytes = sum(f.stat().st_size for f in (ROOT / name / "base" / "images").iterdir())
        rows: list[tuple[str, str, str, bool]] = [
            ("full export of 1 GiB (s)", f"{full_s:.2f}", "-", True),
            ("full export file (MiB)", f"{full_bytes / MIB:.0f}", "-", True)]
        parent, times = "base", {}
        for mib in CHANGES:
            write(plan, volume, f"{mib}M", "rand")
            snap = f"c{mib}"
            run_task(api, "POST", f"/vm/{name}/snapshot", snapshot_name=snap)
            seconds, _ = run_task(api, "POST", f"/vm/{name}/snapshot/export", snapshot_name=snap,
                                  export_path=str(ROOT), incremental_parent=parent)
            size = sum(f.stat().st_size for f in (ROOT / name / snap / "images").iterdir())
            times[mib] = seconds
            target = "< 5" if mib == 10 else "-"
            rows.append((f"incremental, {mib} MiB changed (s)", f"{seconds:.2f}", target,
                         seconds < 5 if mib == 10 else True))
            rows.append((f"incremental, {mib} MiB changed: file (MiB)", f"{size / MIB:.1f}", "-", True))
            parent = snap
        rows.append(("50 MiB incremental / full export", f"{times[50] / full_s:.2f}", "< 0.5",
                     times[50] / full_s < 0.5))
        rows.append(("10 MiB incremental / 1 MiB incremental", f"{times[10] / times[1]:.2f}", "-", True))
        table("VM snapshot export on the lab's Ceph (1 GiB volume written in full, through the API)", rows)
        for snap in ("base", *(f"c{m}" for m in CHANGES)):     # waited for: they open the image
            run_task(api, "DELETE", f"/vm/{name}/snapshot", snapshot_name=snap, force="true")


if __name__ == "__main__":
    main()
