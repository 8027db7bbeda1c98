"""Primary failover: time from kill -9 of the primary's pvcnoded to a new primary.

Target (issue: foundation): within 2 keepalive intervals, default settings (5 s keepalive,
6 s ZooKeeper session timeout), 5 runs.
"""

from __future__ import annotations

import signal
import time

from _common import Daemon, ZooKeeperServer, free_port, median, table, workdir, write_config
from pvc.cluster import nodes
from pvc.core.zk import ZK

NODES = ("hv1", "hv2", "hv3")
RUNS = 5
KEEPALIVE = 5.0


def main() -> None:
    base = workdir("election")
    server = ZooKeeperServer(base / "zk", free_port()).start()
    daemons: dict[str, Daemon] = {}
    configs = {}
    for name in NODES:
        (base / name).mkdir()
        configs[name] = write_config(base / name / "pvc.conf", [server.address], "/bench", node=name,
                                     timer={"keepalive_interval": KEEPALIVE},
                                     zookeeper={"hosts": [server.address], "root": "/bench",
                                                "session_timeout": 6})
    zk = ZK([server.address], "/bench").start()
    times: list[float] = []
    try:
        for name in NODES:
            daemons[name] = Daemon("pvc.node.daemon", configs[name], base / name / "node.log").start()
        for run in range(RUNS):
            while True:
                primary = nodes.primary_node(zk)
                live = [n for n in nodes.load_nodes(zk) if n.daemon_state == "run"]
                if primary and len(live) == len(NODES) and \
                        nodes.get_node(zk, primary).coordinator_state == "primary":
                    break
                time.sleep(0.1)
            daemons[primary].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            killed = time.monotonic()
            while True:
                new = nodes.primary_node(zk)
                if new and new != primary and nodes.get_node(zk, new).coordinator_state == "primary":
                    break
                time.sleep(0.02)
            times.append(time.monotonic() - killed)
            print(f"run {run + 1}: {primary} killed, {new} primary after {times[-1]:.2f}s")
            daemons[primary].proc.wait()  # type: ignore[union-attr]
            daemons[primary] = Daemon("pvc.node.daemon", configs[primary],
                                      base / primary / "node.log").start()
        target = 2 * KEEPALIVE
        table(f"primary failover after kill -9 ({RUNS} runs, keepalive {KEEPALIVE:.0f}s)", [
            ("median (s)", f"{median(times):.2f}", f"< {target:.0f}", median(times) < target),
            ("worst (s)", f"{max(times):.2f}", f"< {target:.0f}", max(times) < target),
        ])
    finally:
        zk.stop()
        for daemon in daemons.values():
            daemon.kill()
        server.stop()


if __name__ == "__main__":
    main()
