"""pvcworkerd as real processes: the self-test task end to end, cancellation, a dying worker."""

from __future__ import annotations

from pvc.cluster import nodes, tasks
from pvc.core.zk import ZK
from tests.conftest import raw_task, start_daemon, wait_for


def start(daemons, config_factory, zk: ZK, name: str, worker: bool = True):
    hosts = zk.hosts.split("/", 1)[0].split(",")
    config = config_factory(name, timer={"keepalive_interval": 1},
                            zookeeper={"hosts": hosts, "root": zk.root, "session_timeout": 3})
    node = start_daemon(daemons, "pvc.node.daemon", config)
    work = start_daemon(daemons, "pvc.worker.daemon", config) if worker else None
    wait_for(lambda: any(n.name == name and n.daemon_state == "run" for n in nodes.load_nodes(zk)), 30,
             message=f"{name} running")
    return node, work


def finished(zk: ZK, task_id: str):
    record = tasks.get_task(zk, task_id)
    return record if record.finished_state else None


def test_selftest_reports_every_node(zk: ZK, daemons, config_factory) -> None:
    start(daemons, config_factory, zk, "hv1")
    start(daemons, config_factory, zk, "hv2")
    wait_for(lambda: nodes.primary_node(zk), 20, message="a primary")
    task = tasks.submit(zk, "cluster.selftest", {})
    record = wait_for(lambda: finished(zk, task.id), 60, message="self-test to finish")
    assert record.state == "SUCCESS", record.status
    assert set(record.result["nodes"]) == {"hv1", "hv2"}
    for name, result in record.result["nodes"].items():
        checks = result["checks"]
        assert checks["zookeeper"]["ok"] and checks["libvirt"]["ok"], (name, checks)
        assert checks["libvirt"]["detail"]["uri"] == "test:///default"
        assert checks["ceph"]["skipped"]  # storage subsystem disabled in these tests
    view = tasks.task_view(record)
    assert view["state"] == "SUCCESS" and view["current"] == view["total"]
    assert any("Checking libvirt" in line for line in tasks.task_log(zk, next(
        t.id for t, _ in tasks.load_tasks(zk) if t.kind == "node.selftest")))


def test_unknown_kind_and_cancel_pending(zk: ZK, daemons, config_factory) -> None:
    start(daemons, config_factory, zk, "hv1")
    start(daemons, config_factory, zk, "hv2", worker=False)
    wait_for(lambda: nodes.primary_node(zk), 20, message="a primary")
    unknown = raw_task(zk, "no.such.kind", {}, target="hv1")        # a foreign writer's task
    record = wait_for(lambda: finished(zk, unknown.id), 20, message="unknown kind rejected")
    assert record.state == "FAILURE" and "no.such.kind" in record.status
    bad_args = raw_task(zk, "node.selftest", {"surprise": 1}, target="hv1")
    record = wait_for(lambda: finished(zk, bad_args.id), 20, message="bad arguments rejected")
    assert record.state == "FAILURE" and "surprise" in record.status
    waiting = tasks.submit(zk, "node.selftest", {}, target="hv2")  # hv2 has no worker
    assert "cancelled" in tasks.cancel(zk, waiting.id)
    assert tasks.get_task(zk, waiting.id).state == "CANCELLED"


def test_cancel_running_task(zk: ZK, daemons, config_factory) -> None:
    start(daemons, config_factory, zk, "hv1")
    start(daemons, config_factory, zk, "hv2", worker=False)
    wait_for(lambda: nodes.primary_node(zk) == "hv1", 20, message="hv1 primary")
    task = tasks.submit(zk, "cluster.selftest", {"timeout": 120})
    wait_for(lambda: tasks.get_task(zk, task.id).state == "RUNNING", 20, message="task running")
    assert "requested" in tasks.cancel(zk, task.id)
    record = wait_for(lambda: finished(zk, task.id), 20, message="cancellation")
    assert record.state == "CANCELLED"
    # Its per-node child waiting for hv2 was cancelled too (cleanup ran).
    children = [t for t, _ in tasks.load_tasks(zk) if t.kind == "node.selftest" and t.target == "hv2"]
    assert children and all(t.state == "CANCELLED" for t in children)


def test_dead_worker_leaves_task_failed_with_reason(zk: ZK, daemons, config_factory) -> None:
    _node, worker = start(daemons, config_factory, zk, "hv1")
    start(daemons, config_factory, zk, "hv2", worker=False)
    wait_for(lambda: nodes.primary_node(zk) == "hv1", 20, message="hv1 primary")
    task = tasks.submit(zk, "cluster.selftest", {"timeout": 300})
    wait_for(lambda: tasks.get_task(zk, task.id).state == "RUNNING", 20, message="task running")
    worker.kill()
    # The next worker to look (here: hv1's restarted worker) reaps it once the session is gone.
    hosts = zk.hosts.split("/", 1)[0].split(",")
    start_daemon(daemons, "pvc.worker.daemon", config_factory(
        "hv1", timer={"keepalive_interval": 1},
        zookeeper={"hosts": hosts, "root": zk.root, "session_timeout": 3}))
    record = wait_for(lambda: finished(zk, task.id), 30, message="task marked failed")
    assert record.state == "FAILURE"
    assert "stopped while running this task" in record.status and "hv1" in record.status


def test_selftest_fails_with_the_problem_named(zk: ZK, daemons, config_factory) -> None:
    hosts = zk.hosts.split("/", 1)[0].split(",")
    config = config_factory("hv1", timer={"keepalive_interval": 1},
                            zookeeper={"hosts": hosts, "root": zk.root, "session_timeout": 3},
                            subsystem={"enable_api": False, "enable_storage": True},
                            storage={"ceph_config_file": "/nonexistent/ceph.conf"})
    start_daemon(daemons, "pvc.node.daemon", config)
    start_daemon(daemons, "pvc.worker.daemon", config)
    wait_for(lambda: nodes.primary_node(zk) == "hv1", 20, message="hv1 primary")
    task = tasks.submit(zk, "cluster.selftest", {})
    record = wait_for(lambda: finished(zk, task.id), 60, message="self-test to finish")
    assert record.state == "FAILURE"
    assert "hv1: ceph (Ceph is not configured" in record.status
    assert record.result["nodes"]["hv1"]["checks"]["libvirt"]["ok"]
