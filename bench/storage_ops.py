"""Storage operations on a lab's real Ceph (bluestore OSDs on sparse files), through the API.

1. 100 volume create + remove pairs through the HTTP API: p50/p90 per operation.
2. The primary's storage stats pass (StorageMonitor.run_once: status, health, df, OSDs, pools,
   volume reconcile) with 100 volumes in the pool, run inside the primary's namespace: p50/max.

Targets: the ceph-zookeeper recipe measured ~100 ms per rbd create+remove pair through the Python
bindings on bluestore, so one API operation should stay under 150 ms at p50; a stats pass must fit
well inside one keepalive interval (5 s): target 1 s at 100 volumes.

Runs on the running lab (`./scripts/lab` or `pvc-lab up`, default name pvclab; its demo may be
there) when it is up or named with --lab, with volumes named after a fresh tag, all removed
afterwards however the run ends; otherwise, or with `--own`, it brings up a private 3-node lab
`bsto` (removed afterwards unless `--keep`).

Usage: bench/storage_ops.py [--lab pvclab | --own [--keep]]
"""

from __future__ import annotations

import argparse
import time

from _common import bench_lab, median, percentile, table
from _lab_docs import Cleanup, bench_tag, delete
from pvc.adapters.ceph import CephStorage
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.lab import proc
from pvc.lab.main import lab_down
from pvc.node.storage import StorageMonitor

NAME = "bsto"
PAIRS = 100
POOL = "vms"


def timed(fn: object, *args: object, **kwargs: object) -> float:
    t0 = time.monotonic()
    response = fn(*args, **kwargs)  # type: ignore[operator]
    elapsed = time.monotonic() - t0
    if response.status_code >= 300:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} "
                         f"{response.text}")
    return elapsed


def stats_passes(plan: object, runs: int = 10) -> list[float]:
    """StorageMonitor passes in the primary's namespace, with that node's configuration."""
    node = plan.coordinators[0]  # type: ignore[attr-defined]
    settings = load_config(str(node.pvc_conf))

    def run() -> list[float]:
        zk = ZK.from_settings(settings).start()
        st = settings.storage
        storage = CephStorage(st.ceph_config_file, st.ceph_keyring_file, st.timeout, st.client_user)
        monitor = StorageMonitor(zk, storage, settings.node_name)
        try:
            monitor.run_once()            # the first pass connects and reads every volume once
            return [monitor.run_once() for _ in range(runs)]
        finally:
            storage.close()
            zk.stop()

    return list(proc.netns_call(node.netns, run, timeout=600))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="the running lab to use [default: pvclab if it is up]")
    parser.add_argument("--own", action="store_true", help=f"bring up a private lab '{NAME}' instead")
    parser.add_argument("--keep", action="store_true", help="with --own: leave the private lab up")
    args = parser.parse_args()
    cleanup = Cleanup()
    plan, api, owned = bench_lab(args.lab, args.own, NAME, 3, timeout=120)
    if owned and not args.keep:
        cleanup.add(f"remove lab {NAME}", lambda: lab_down(NAME))
    cleanup.add("close the API client", api.close)
    tag = bench_tag("sto")
    with cleanup:
        creates, removes = [], []
        for i in range(PAIRS):
            volume = f"{tag}{i}"
            cleanup.add(f"remove volume {volume}", lambda volume=volume: delete(
                api, f"/storage/ceph/volume/{POOL}/{volume}"))
            creates.append(timed(api.post, "/storage/ceph/volume",
                                 params={"pool": POOL, "volume": volume, "size": "64M"}))
            removes.append(timed(api.delete, f"/storage/ceph/volume/{POOL}/{volume}"))
        for i in range(PAIRS):
            volume = f"{tag}keep{i}"
            cleanup.add(f"remove volume {volume}", lambda volume=volume: delete(
                api, f"/storage/ceph/volume/{POOL}/{volume}"))
            api.post("/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "16M"})
        passes = stats_passes(plan)
        table(f"storage operations through the API ({PAIRS} create+remove pairs, 64M volumes, bluestore)", [
            ("volume create p50 (ms)", f"{median(creates) * 1000:.0f}", "<= 150", median(creates) <= 0.150),
            ("volume create p90 (ms)", f"{percentile(creates, 90) * 1000:.0f}", "-", True),
            ("volume remove p50 (ms)", f"{median(removes) * 1000:.0f}", "<= 150", median(removes) <= 0.150),
            ("volume remove p90 (ms)", f"{percentile(removes, 90) * 1000:.0f}", "-", True),
            (f"stats pass p50 at {PAIRS} volumes (ms)", f"{median(passes) * 1000:.0f}", "<= 1000",
             median(passes) <= 1.0),
            (f"stats pass max at {PAIRS} volumes (ms)", f"{max(passes) * 1000:.0f}", "< 5000",
             max(passes) < 5.0),
        ])


if __name__ == "__main__":
    main()
