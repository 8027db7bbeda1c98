"""The `pvc` CLI's waiting commands against real daemons: a worker running the self-test task and
node daemons handing over the primary role and flushing, all driven over the real API."""

from __future__ import annotations

import pytest

from pvc.cluster import nodes
from pvc.core.zk import ZK
from tests.conftest import Api, start_daemon, wait_for
from tests.integration.test_cli_api import Pvc, pvc  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def start_node(daemons, config_factory, zk: ZK, name: str, worker: bool = False) -> None:
    config = config_factory(name, timer={"keepalive_interval": 1},
                            zookeeper={"hosts": zk.hosts.split("/", 1)[0].split(","), "root": zk.root,
                                       "session_timeout": 3})
    start_daemon(daemons, "pvc.node.daemon", config)
    if worker:
        start_daemon(daemons, "pvc.worker.daemon", config)
    wait_for(lambda: any(n.name == name and n.daemon_state == "run" for n in nodes.load_nodes(zk)), 30,
             message=f"{name} running")


def test_selftest_waits_for_the_real_worker(pvc: Pvc, api: Api, zk: ZK, daemons, config_factory) -> None:  # noqa: F811
    start_node(daemons, config_factory, zk, "hv1", worker=True)
    wait_for(lambda: nodes.primary_node(zk) == "hv1", 20, message="hv1 primary")
    result = pvc("cluster", "selftest")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUCCESS: ")
    assert "assigned to node hv1" in result.stderr


def test_primary_handover_and_flush_wait(pvc: Pvc, api: Api, zk: ZK, daemons, config_factory) -> None:  # noqa: F811
    start_node(daemons, config_factory, zk, "hv1")
    start_node(daemons, config_factory, zk, "hv2")
    first = wait_for(lambda: nodes.primary_node(zk), 20, message="a primary")
    other = "hv2" if first == "hv1" else "hv1"

    result = pvc("-q", "node", "primary", other, "--wait")
    assert result.returncode == 0, result.stderr
    assert f"Setting node {other} in primary coordinator state." in result.stdout
    # --wait returned only after the hand-over finished
    assert nodes.get_node(zk, other).coordinator_state == "primary"
    assert pvc("-q", "node", "is-primary", other).returncode == 0

    result = pvc("-q", "node", "secondary", other, "--wait")
    assert result.returncode == 0, result.stderr
    assert nodes.get_node(zk, other).coordinator_state == "secondary"
    wait_for(lambda: nodes.primary_node(zk) == first, 20, message="the other node primary again")

    result = pvc("-q", "node", "flush", "hv2", "--wait")
    assert result.returncode == 0, result.stderr
    assert nodes.get_node(zk, "hv2").domain_state == "flushed"
    result = pvc("-q", "node", "ready", "hv2", "--wait")
    assert result.returncode == 0, result.stderr
    assert nodes.get_node(zk, "hv2").domain_state == "ready"
