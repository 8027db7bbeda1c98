"""Cluster-wide state: initialization, maintenance mode and the status summary."""

from __future__ import annotations

from typing import Any

from pvc.cluster import faults as faults_mod
from pvc.cluster import nodes as nodes_fencing
from pvc.cluster import vms as vms_mod
from pvc.cluster.clusterinfo import ensure_cluster, get_cluster
from pvc.cluster.nodes import load_nodes, primary_node
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.records import ClusterRecord, NodeRecord
from pvc.core.zk import ZK


def initialize(zk: ZK, name: str, overwrite: bool = False) -> str:
    """Create the base tree; with overwrite, wipe every stored object first."""
    if zk.exists(schema.CLUSTER) and not overwrite:
        raise Conflict("The cluster is already initialized; use overwrite to wipe it and start over.")
    if overwrite:
        for child in zk.children("/"):
            if child != "zookeeper":
                zk.delete("/" + child)
    schema.migrate(zk)
    ensure_cluster(zk, name)
    return "Successfully initialized a new PVC cluster"


def set_maintenance(zk: ZK, state: bool) -> str:
    zk.update(schema.CLUSTER, lambda d: {**(d or ClusterRecord().doc()), "maintenance": state}, create=True)
    return "Successfully set cluster in maintenance mode" if state else \
        "Successfully set cluster in normal mode"


# The state combinations upstream counts in `/status` (its common.py); others count in "total" only.
NODE_STATE_COMBINATIONS: tuple[str, ...] = (
    *(f"{daemon},{domain}" for daemon in ("run", "init", "stop") for domain in ("ready", "flush", "flushed",
                                                                                 "unflush")),
    "dead,ready", "dead,flush", "dead,fence-flush", "dead,flushed", "dead,unflush",
    "fenced,ready", "fenced,flush", "fenced,flushed", "fenced,unflush",
)
VM_STATE_COMBINATIONS: tuple[str, ...] = (
    "start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "unmigrate", "provision",
)
OSD_STATE_COMBINATIONS: tuple[str, ...] = ("up,in", "up,out", "down,in", "down,out")


def _count(states: list[str], known: tuple[str, ...]) -> dict[str, int]:
    """{"total": all, <state>: count} for the known states present, in upstream's order."""
    counts: dict[str, int] = {"total": len(states)}
    for state in known:
        found = states.count(state)
        if found:
            counts[state] = found
    return counts


def _node_health(node: NodeRecord) -> dict[str, Any]:
    """As upstream: the health value (a number, or "None" when not known now: see
    `nodes.node_health`) and `'<plugin>': <message>` for each plugin with a delta."""
    health = nodes_fencing.node_health(node)
    return {
        "health": health if health is not None else "None",
        "messages": [
            f"'{d.get('name')}': {d.get('message')}" for d in node.health_details if d.get("health_delta")
        ],
    }


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def storage_summary(zk: ZK) -> dict[str, Any]:
    """OSD states, object counts and raw capacity from the OSDs' statistics in ZooKeeper.

    As upstream, the disk figures are KiB summed over the OSDs' `kb`, `kb_used` and `kb_avail`,
    and the utilization is the mean of the OSDs' own utilization (percent).
    """
    ids = zk.children(schema.CEPH_OSDS)
    docs = zk.get_many([schema.osd(i) for i in ids])
    states: list[str] = []
    detail = []
    kb = kb_used = kb_avail = 0
    utilizations: list[float] = []
    for osd_id in sorted(ids, key=lambda i: int(i) if i.isdigit() else 0):
        doc = docs.get(schema.osd(osd_id))
        stats = doc.get("stats", {}) if isinstance(doc, dict) else {}
        stats = stats if isinstance(stats, dict) else {}
        up = "up" if stats.get("up") in (1, True, "1") else "down"
        inside = "in" if stats.get("in") in (1, True, "1") else "out"
        states.append(f"{up},{inside}")
        detail.append({"id": osd_id, "node": doc.get("node", "") if isinstance(doc, dict) else "",
                       "up": up, "in": inside})
        kb += int(_number(stats.get("kb")))
        kb_used += int(_number(stats.get("kb_used")))
        kb_avail += int(_number(stats.get("kb_avail")))
        if "utilization" in stats:
            utilizations.append(_number(stats.get("utilization")))
    pools = zk.children(schema.CEPH_POOLS)
    volumes = sum(len(zk.children(schema.pool_volumes(p))) for p in pools)
    snapshots = 0
    for pool in zk.children(schema.CEPH_SNAPSHOTS):
        for volume in zk.children(f"{schema.CEPH_SNAPSHOTS}/{pool}"):
            snapshots += len(zk.children(schema.volume_snapshots(pool, volume)))
    utilization = round(sum(utilizations) / len(utilizations), 2) if utilizations else 0
    disk = {"total": kb, "used": kb_used, "free": kb_avail, "utilization": utilization}
    return {"osds": _count(states, OSD_STATE_COMBINATIONS), "pools": len(pools), "volumes": volumes,
            "snapshots": snapshots, "disk": disk, "detail": detail}


def cluster_status(zk: ZK) -> dict[str, Any]:
    """`GET /status` in PVC's shape."""
    cluster = get_cluster(zk)
    nodes = load_nodes(zk)
    primary = primary_node(zk)
    every_fault = faults_mod.load_faults(zk)          # the active ones
    # As upstream: unacknowledged faults, the largest delta first, then the latest report
    # (ours: only active ones; a resolved fault no longer counts).
    faults = sorted((f for f in every_fault if faults_mod.counts(f)),
                    key=lambda f: (f.health_delta, f.last_reported), reverse=True)
    health = faults_mod.cluster_health(faults)
    node_states = _count([f"{n.daemon_state},{n.domain_state}" for n in nodes], NODE_STATE_COMBINATIONS)
    vm_entries = sorted(vms_mod.load_entries(zk), key=lambda e: e.record.name)
    vm_states = _count([e.record.state for e in vm_entries], VM_STATE_COMBINATIONS)
    # As upstream, resources are summed over every node, whatever its state.
    mem_total = sum(n.memory.total for n in nodes)
    mem_used = sum(n.memory.used for n in nodes)
    cpu_total = sum(n.cpu_count for n in nodes)
    load = round(sum(n.load for n in nodes), 2)
    primary_record = next((n for n in nodes if n.name == primary), None)
    storage = storage_summary(zk)
    return {
        "cluster_name": cluster.name,
        "cluster_health": {
            "health": health,
            "messages": [
                {"id": f.id, "health_delta": f.health_delta, "text": f.message} for f in faults
            ],
        },
        "node_health": {n.name: _node_health(n) for n in nodes},
        "maintenance": "true" if cluster.maintenance else "false",
        "primary_node": primary,
        "pvc_version": primary_record.pvc_version if primary_record else "",
        "upstream_ip": cluster.upstream_ip,
        "nodes": node_states,
        "vms": vm_states,
        "networks": len(zk.children(schema.NETWORKS)),
        "osds": storage["osds"],
        "pools": storage["pools"],
        "volumes": storage["volumes"],
        "snapshots": storage["snapshots"],
        "resources": {
            "memory": {
                "total": mem_total,
                "used": mem_used,
                "free": sum(n.memory.free for n in nodes),
                "allocated": sum(n.memory.allocated for n in nodes),
                "provisioned": sum(n.memory.provisioned for n in nodes),
                "utilization": round(100 * mem_used / mem_total, 2) if mem_total else 0,
            },
            "cpu": {
                "total": cpu_total,
                "load": load,
                "allocated": sum(n.vcpu.allocated for n in nodes),
                "utilization": round(100 * load / cpu_total, 2) if cpu_total else 0,
            },
            "disk": storage["disk"],
        },
        "fencing": [
            {"node": name, **(nodes_fencing.fencing_view(record, events=10) or {})}
            for name, record in sorted(nodes_fencing.load_fencing(zk).items(),
                                       key=lambda item: -float(item[1].get("started") or 0))
        ],
        "detail": {
            "node": [
                {"name": n.name, "daemon_state": n.daemon_state, "coordinator_state": n.coordinator_state,
                 "domain_state": n.domain_state, "health": _node_health(n)["health"]}
                for n in nodes
            ],
            "vm": [
                {"name": e.record.name, "uuid": e.record.uuid, "state": e.record.state,
                 "node": e.record.node}
                for e in vm_entries
            ],
            "osd": storage["detail"],
            "faults": [faults_mod.fault_view(f) for f in
                       sorted(every_fault, key=lambda f: (f.last_reported, f.id), reverse=True)],
        },
    }
