"""Keepalive cost: ZooKeeper writes per keepalive per node, and node daemon RSS.

Targets (issue: foundation): 1-3 writes per keepalive per node; daemon RSS < 80 MB.
Writes are counted from outside, as version increments of every znode the daemon writes.
"""

from __future__ import annotations

import time

import psutil

from _common import Daemon, ZooKeeperServer, free_port, table, workdir, write_config
from pvc.core import schema
from pvc.core.zk import ZK

NODES = ("hv1", "hv2", "hv3")
KEEPALIVES = 15
INTERVAL = 1.0


def versions(zk: ZK) -> dict[str, int]:
    out = {}
    for name in NODES:
        for path in (schema.node(name), schema.node_log(name)):
            raw = zk.get_raw(path)
            out[path] = raw[1].version if raw else -1
    return out


def main() -> None:
    base = workdir("keepalive")
    server = ZooKeeperServer(base / "zk", free_port(), tick_ms=1000).start()
    daemons = []
    try:
        for name in NODES:
            (base / name).mkdir()
            config = write_config(base / name / "pvc.conf", [server.address], "/bench", node=name,
                                  timer={"keepalive_interval": INTERVAL})
            daemons.append(Daemon("pvc.node.daemon", config, base / name / "node.log").start())
        zk = ZK([server.address], "/bench").start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(zk.children(schema.NODES)) < len(NODES):
            time.sleep(0.2)
        time.sleep(5 * INTERVAL)  # past start-up (election, first log lines)
        before = versions(zk)
        keepalives_before = {n: zk.get(schema.node(n))["keepalive"] for n in NODES}
        time.sleep(KEEPALIVES * INTERVAL)
        after = versions(zk)
        writes = sum(after[p] - before[p] for p in after)
        span = {n: zk.get(schema.node(n))["keepalive"] - keepalives_before[n] for n in NODES}
        count = sum(round(span[n] / INTERVAL) for n in NODES)
        per = writes / count if count else float("nan")
        rss = [psutil.Process(d.proc.pid).memory_info().rss / 2**20 for d in daemons if d.proc]
        zk.stop()
        table(f"keepalive cost ({len(NODES)} node daemons, {count} keepalives observed)", [
            ("ZooKeeper writes per keepalive per node", f"{per:.2f}", "1-3", 1 <= per <= 3),
            ("pvcnoded RSS, max (MB)", f"{max(rss):.1f}", "< 80", max(rss) < 80),
        ])
    finally:
        for daemon in daemons:
            daemon.kill()
        server.stop()


if __name__ == "__main__":
    main()
