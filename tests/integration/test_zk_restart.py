"""ZooKeeper restarts while node daemons run: they reconnect, nothing is lost, one primary."""

from __future__ import annotations

import time
from pathlib import Path

from pvc.cluster import nodes
from pvc.core import schema
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer, free_port
from tests.conftest import Daemon, start_daemon, wait_for, write_config


def test_daemons_survive_zookeeper_restart(tmp_path: Path, daemons: list[Daemon]) -> None:
    server = ZooKeeperServer(tmp_path / "zk", free_port(), tick_ms=1000).start()
    try:
        for name in ("hv1", "hv2", "hv3"):
            (tmp_path / name).mkdir()
            config = write_config(tmp_path / name / "pvc.conf", [server.address], "/restart", node=name,
                                  timer={"keepalive_interval": 1},
                                  zookeeper={"hosts": [server.address], "root": "/restart",
                                             "session_timeout": 4})
            start_daemon(daemons, "pvc.node.daemon", config)
        zk = ZK([server.address], "/restart").start()
        wait_for(lambda: len(nodes.load_nodes(zk)) == 3 and nodes.primary_node(zk), 30,
                 message="cluster up")
        zk.put("/config/marker", {"kept": True})
        before = {n.name: n.keepalive for n in nodes.load_nodes(zk)}
        zk.stop()

        # Restart in the middle of keepalives: a short outage keeps the sessions (ZooKeeper
        # restores them from its log), a long one expires them; both must recover.
        for outage in (0.5, 6.0):
            server.stop()
            time.sleep(outage)
            server.start()
            zk = ZK([server.address], "/restart").start()
            wait_for(lambda zk=zk, before=before: all(
                n.keepalive > before[n.name] + 1 for n in nodes.load_nodes(zk)), 40,
                message=f"keepalives after a {outage}s outage")
            # After an expiry the old primary steps down and another takes over; the node documents
            # and /config/primary_node settle on one name (read both until they agree).
            wait_for(lambda zk=zk: [n.name for n in nodes.load_nodes(zk) if n.coordinator_state == "primary"]
                     == [nodes.primary_node(zk)], 30, message="exactly one primary, the one recorded")
            assert all(zk.exists(schema.node_alive(n)) for n in ("hv1", "hv2", "hv3"))
            assert zk.get("/config/marker") == {"kept": True}
            assert all(n.daemon_state == "run" for n in nodes.load_nodes(zk))
            before = {n.name: n.keepalive for n in nodes.load_nodes(zk)}
            zk.stop()
        for daemon in daemons:
            assert daemon.running, daemon.output()[-2000:]
    finally:
        for daemon in daemons:
            daemon.kill()
        server.stop()
