"""Live migration of the tiny guest on a lab: total time and libvirt-reported downtime, 10 runs.

Target (issue: VMs): downtime <= 100 ms (the VM's migration_max_downtime is set to 100 ms).

Runs on the running lab (`./scripts/lab` or `pvc-lab up`, default name pvclab; its demo may be
there) when it is up or named with --lab, with a guest named after a fresh tag, removed afterwards
however the run ends; otherwise, or with `--own`, it brings up a private 2-node lab `bmig` and
removes it afterwards.

Usage: bench/migration.py [--lab pvclab | --own]
"""

from __future__ import annotations

import argparse
import time
import uuid as uuidlib

from _common import bench_lab, median, percentile, table
from _lab_docs import Cleanup, bench_tag, remove_vm
from pvc.core import schema
from pvc.lab.main import lab_down
from pvc.lab.pvcnodes import lab_zk

NAME = "bmig"
RUNS = 10


def guest_xml(files: dict, uuid: str, vm: str) -> str:
    return f"""<domain type='kvm'>
  <name>{vm}</name><uuid>{uuid}</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{files["kernel"]}</kernel>
    <initrd>{files["initrd"]}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet vmname={vm} vmdhcp=0</cmdline></os>
  <features><acpi/></features>
  <devices><serial type='pty'><target port='0'/></serial><memballoon model='none'/></devices>
</domain>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="the running lab to use [default: pvclab if it is up]")
    parser.add_argument("--own", action="store_true", help=f"bring up a private lab '{NAME}' instead")
    args = parser.parse_args()
    plan, api, owned = bench_lab(args.lab, args.own, NAME, 2, timeout=240)
    nodes = [n.name for n in plan.nodes][:2]
    vm = bench_tag("mig")
    zk = lab_zk(plan)
    totals, downtimes = [], []
    cleanup = Cleanup()
    if owned:
        cleanup.add(f"remove lab {NAME}", lambda: lab_down(NAME))
    cleanup.add("close the API client", api.close)
    cleanup.add("close ZooKeeper", zk.stop)
    with cleanup:
        uuid = str(uuidlib.uuid4())
        cleanup.add(f"remove VM {vm}", lambda: remove_vm(api, vm))
        xml = guest_xml(plan.extra["guest_files"], uuid, vm)
        response = api.post("/vm", data={"xml": xml, "node": nodes[0], "migration_max_downtime": "100"})
        response.raise_for_status()
        api.post(f"/vm/{vm}/state", params={"state": "start", "wait": "true"}).raise_for_status()
        deadline = time.monotonic() + 120
        while "PVC-GUEST-BOOT-OK" not in api.get(f"/vm/{vm}/console", params={"lines": 200}).json()["data"]:
            if time.monotonic() > deadline:
                raise SystemExit("the guest did not boot")
            time.sleep(0.5)
        for run in range(RUNS):
            target = nodes[1] if run % 2 == 0 else nodes[0]
            previous = (zk.get(schema.vm_status(uuid), None) or {}).get("last_migration", {}).get("time")
            started = time.monotonic()
            move = {"action": "move", "node": target, "wait": "true"}
            api.post(f"/vm/{vm}/node", params=move).raise_for_status()
            while True:
                last = (zk.get(schema.vm_status(uuid), None) or {}).get("last_migration", {})
                if last.get("time") != previous and last.get("to") == target:
                    break
                time.sleep(0.1)
            totals.append(time.monotonic() - started)
            downtimes.append(float(last["downtime_ms"]))
            print(f"run {run + 1}: -> {target}: call {totals[-1]:.2f}s, "
                  f"libvirt job {last['duration_s']:.2f}s, downtime {last['downtime_ms']} ms")
        table(f"live migration of the tiny guest (TCG), {RUNS} runs, max downtime 100 ms", [
            ("downtime p50 (ms)", f"{median(downtimes):.0f}", "<= 100", median(downtimes) <= 100),
            ("downtime max (ms)", f"{max(downtimes):.0f}", "<= 100", max(downtimes) <= 100),
            ("total time p50 (s)", f"{median(totals):.2f}", "-", True),
            ("total time p90 (s)", f"{percentile(totals, 90):.2f}", "-", True),
        ])


if __name__ == "__main__":
    main()
