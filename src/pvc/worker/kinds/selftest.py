"""`cluster.selftest`: every node checks its own ZooKeeper, libvirt and Ceph reachability.

The cluster task (on the primary) submits one `node.selftest` task per node and collects the
answers, so it proves the whole task path: submit, per-node routing, progress, results.
"""

from __future__ import annotations

import time
from typing import Any

from pvc.adapters import ceph, hypervisor
from pvc.cluster import tasks
from pvc.cluster.nodes import load_nodes
from pvc.core import schema
from pvc.core.taskkinds import CLUSTER_SELFTEST, NODE_SELFTEST
from pvc.worker.registry import TaskContext, TaskFailed, task_kind

NODE_TIMEOUT = 60.0


def _skipped(subsystem: str) -> dict[str, Any]:
    return {"ok": True, "skipped": True, "detail": f"{subsystem} is disabled on this node", "ms": 0.0}


def _timed(check: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        detail = check()
        ok = True
    except Exception as exc:
        detail, ok = str(exc), False
    return {"ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000, 1)}


@task_kind(NODE_SELFTEST)
def node_selftest(ctx: TaskContext) -> dict[str, Any]:
    ctx.progress(0, 3, "Checking ZooKeeper")
    zk_check = _timed(lambda: {"nodes": len(ctx.zk.children(schema.NODES)), "session": ctx.zk.connected})
    subsystems = ctx.settings.subsystem
    ctx.progress(1, 3, "Checking libvirt")
    libvirt_check = _timed(lambda: hypervisor.probe(ctx.settings.hypervisor.libvirt_uri)) \
        if subsystems.enable_hypervisor else _skipped("the hypervisor subsystem")
    ctx.progress(2, 3, "Checking Ceph")
    storage = ctx.settings.storage
    ceph_check = _timed(lambda: ceph.probe(storage.ceph_config_file, storage.ceph_keyring_file,
                                           storage.timeout)) \
        if subsystems.enable_storage else _skipped("the storage subsystem")
    checks = {"zookeeper": zk_check, "libvirt": libvirt_check, "ceph": ceph_check}
    failed = [name for name, check in checks.items() if not check["ok"]]
    status = f"{ctx.node}: " + ("all checks passed" if not failed else "failed: " + ", ".join(failed))
    return {"status": status, "node": ctx.node, "checks": checks}


@task_kind(CLUSTER_SELFTEST)
def cluster_selftest(ctx: TaskContext, timeout: float = NODE_TIMEOUT) -> dict[str, Any]:
    nodes = [n.name for n in load_nodes(ctx.zk) if n.daemon_state == "run"]
    total = len(nodes) + 1
    ctx.progress(0, total, f"Submitting checks to {len(nodes)} node(s)")
    children = {name: tasks.submit(ctx.zk, NODE_SELFTEST, target=name).id for name in nodes}
    results: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(children) and time.monotonic() < deadline:
            for name, child in children.items():
                if name in results:
                    continue
                record = tasks.get_task(ctx.zk, child)
                if record.finished_state:
                    results[name] = record.result if record.state == "SUCCESS" else \
                        {"ok": False, "error": f"{record.state}: {record.status}"}
                    ctx.progress(len(results), total, f"{name} answered")
            ctx.check_cancelled()
            time.sleep(0.25)
    finally:
        for name, child in children.items():
            if name not in results:
                results[name] = {"ok": False, "error": "no answer (is pvcworkerd running there?)"}
                try:
                    tasks.cancel(ctx.zk, child)
                except Exception:
                    pass
    failures = sorted(
        name for name, result in results.items()
        if "error" in result or not all(c["ok"] for c in result.get("checks", {}).values())
    )
    if failures:
        problems = "; ".join(_problems(name, results[name]) for name in failures)
        raise TaskFailed(f"{len(failures)} of {len(results)} node(s) with problems: {problems}",
                         {"nodes": results})
    return {"status": f"All {len(results)} node(s) passed", "nodes": results}


def _problems(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{name}: {result['error']}"
    failed = [f"{check} ({detail['detail']})" for check, detail in result.get("checks", {}).items()
              if not detail["ok"]]
    return f"{name}: " + ", ".join(failed)
