"""pvcapid list latency: `GET /api/v1/node` with 100 nodes, over HTTP keep-alive.

Target: p50 < 20 ms. Registers 100 realistic node documents in a fresh cluster root on a private
ZooKeeper, starts pvcapid as a process (its own interpreter, uvicorn, the watched node cache),
then times 200 sequential list requests on one keep-alive connection. One-node GETs are shown
for comparison. Run: `.venv/bin/python bench/api_node_list.py [--nodes 100] [--requests 200]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import httpx
import yaml

from _common import Daemon, ZooKeeperServer, free_port, percentile, table, wait_up, workdir, write_config
from pvc.core import schema
from pvc.core.records import Memory, NodeRecord, VCpu
from pvc.core.zk import ZK

TARGET_P50_MS = 20.0
ROOT = "/bench-api"


def node_doc(index: int) -> dict:
    """A node document as a busy hypervisor reports it (12 VMs, 4 plugins, 4 NICs)."""
    now = time.time()
    return NodeRecord(
        name=f"hv{index:03d}", mode="coordinator" if index < 3 else "hypervisor", daemon_state="run",
        coordinator_state="primary" if index == 0 else ("secondary" if index < 3 else "client"),
        domain_state="ready", pvc_version="1.0.3", cpu_count=32, kernel="6.1.0-18-amd64",
        os="linux", arch="x86_64", keepalive=now, load=1.25,
        memory=Memory(total=257000, used=64000, free=193000, allocated=96000, provisioned=128000),
        vcpu=VCpu(total=32, allocated=48), domains_count=12,
        running_domains=[f"vm{index:03d}-{i}" for i in range(12)],
        health_plugins=["disk", "load", "nics", "zkpr"],
        health_details=[{"name": p, "last_run": int(now), "health_delta": 0, "message": "OK", "data": {}}
                        for p in ("disk", "load", "nics", "zkpr")],
        interfaces={f"ens{i}": {"state": "up", "link_speed": 10000, "rx_bps": 1000, "tx_bps": 1000}
                    for i in range(4)},
    ).doc()


def timed(client: httpx.Client, path: str, count: int, expect: int) -> list[float]:
    """Milliseconds per request; every answer is checked so a fast error cannot pass."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200 or len(response.json()) != expect:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description="pvcapid node list latency")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    base_dir = workdir("api")
    server = ZooKeeperServer(base_dir / "zk", free_port()).start()
    daemon: Daemon | None = None
    try:
        zk = ZK([server.address], ROOT).start()
        schema.migrate(zk)
        for index in range(args.nodes):
            doc = node_doc(index)
            zk.put(schema.node(doc["name"]), doc)
        zk.put(schema.PRIMARY_NODE, "hv000")
        zk.stop()
        config = write_config(base_dir / "pvc.conf", [server.address], ROOT, node="hv000",
                              coordinators=("hv000", "hv001", "hv002"), logging={"level": "warning"})
        daemon = Daemon("pvc.api.daemon", config, base_dir / "pvcapid.log").start()
        api_settings = yaml.safe_load(config.read_text())["api"]  # the port and token it chose
        port, token = api_settings["listen"]["port"], api_settings["token"][0]["token"]
        base = f"http://127.0.0.1:{port}"
        wait_up(daemon, base)
        with httpx.Client(base_url=base, headers={"X-Api-Key": token}, timeout=30) as client:
            timed(client, "/api/v1/node", 20, args.nodes)  # warm-up: connection, code paths, cache
            size = len(client.get("/api/v1/node").content)
            lists = timed(client, "/api/v1/node", args.requests, args.nodes)
            ones = timed(client, "/api/v1/node/hv050", args.requests, 1)
    finally:
        if daemon is not None:
            daemon.stop()
        server.stop()
    shutil.rmtree(base_dir, ignore_errors=True)

    p50, p95 = percentile(lists, 50), percentile(lists, 95)
    table(f"pvcapid GET /api/v1/node: {args.nodes} nodes ({size // 1024} KiB), {args.requests} requests, "
          "one keep-alive connection", [
              ("GET /api/v1/node p50 (ms)", f"{p50:.2f}", f"< {TARGET_P50_MS:.0f}", p50 < TARGET_P50_MS),
              ("GET /api/v1/node p95 (ms)", f"{p95:.2f}", "-", True),
              ("GET /api/v1/node mean / max (ms)", f"{statistics.fmean(lists):.1f} / {max(lists):.1f}", "-",
               True),
              ("GET /api/v1/node/hv050 p50 / p95 (ms)",
               f"{percentile(ones, 50):.2f} / {percentile(ones, 95):.2f}", "-", True),
          ])
    return 0 if p50 < TARGET_P50_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
