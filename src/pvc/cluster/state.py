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


def _node_health(node: NodeRecord) -> dict[str, Any]:
    return {
        "health": node.health if node.health is not None else "None",
        "messages": [
            f"{d.get('name')}: {d.get('message')}" for d in node.health_details if d.get("health_delta")
        ],
    }


def storage_summary(zk: ZK) -> dict[str, Any]:
    """OSD states, object counts and raw capacity from the primary's Ceph figures in ZooKeeper."""
    ids = zk.children(schema.CEPH_OSDS)
    docs = zk.get_many([schema.osd(i) for i in ids])
    osds: dict[str, int] = {"total": len(ids)}
    detail = []
    for osd_id in sorted(ids, key=lambda i: int(i) if i.isdigit() else 0):
        doc = docs.get(schema.osd(osd_id))
        stats = doc.get("stats", {}) if isinstance(doc, dict) else {}
        up = "up" if stats.get("up") in (1, True, "1") else "down"
        inside = "in" if stats.get("in") in (1, True, "1") else "out"
        osds[f"{up},{inside}"] = osds.get(f"{up},{inside}", 0) + 1
        detail.append({"id": osd_id, "node": doc.get("node", "") if isinstance(doc, dict) else "",
                       "up": up, "in": inside})
    pools = zk.children(schema.CEPH_POOLS)
    volumes = sum(len(zk.children(schema.pool_volumes(p))) for p in pools)
    snapshots = 0
    for pool in zk.children(schema.CEPH_SNAPSHOTS):
        for volume in zk.children(f"{schema.CEPH_SNAPSHOTS}/{pool}"):
            snapshots += len(zk.children(schema.volume_snapshots(pool, volume)))
    status = zk.get(schema.CEPH_STATUS, None)
    util = status.get("util", {}) if isinstance(status, dict) else {}
    totals = util.get("stats", {}) if isinstance(util, dict) else {}
    total = int(totals.get("total_bytes", 0) or 0)
    used = int(totals.get("total_used_raw_bytes", totals.get("total_used_bytes", 0)) or 0)
    disk = {"total": total, "used": used, "free": int(totals.get("total_avail_bytes", 0) or 0),
            "utilization": round(100 * used / total, 2) if total else 0}
    return {"osds": osds, "pools": len(pools), "volumes": volumes, "snapshots": snapshots, "disk": disk,
            "detail": detail}


def cluster_status(zk: ZK) -> dict[str, Any]:
    """`GET /status` in PVC's shape."""
    cluster = get_cluster(zk)
    nodes = load_nodes(zk)
    primary = primary_node(zk)
    faults = [f for f in faults_mod.load_faults(zk) if f.status == "new"]
    health = max(0, 100 - sum(f.health_delta for f in faults))
    node_states: dict[str, int] = {"total": len(nodes)}
    for node in nodes:
        combo = f"{node.daemon_state},{node.domain_state}"
        node_states[combo] = node_states.get(combo, 0) + 1
    running = [n for n in nodes if n.daemon_state == "run"]
    vm_entries = sorted(vms_mod.load_entries(zk), key=lambda e: e.record.name)
    vm_states: dict[str, int] = {"total": len(vm_entries)}
    for entry in vm_entries:
        vm_states[entry.record.state] = vm_states.get(entry.record.state, 0) + 1
    mem_total = sum(n.memory.total for n in running)
    mem_used = sum(n.memory.used for n in running)
    cpu_total = sum(n.cpu_count for n in running)
    load = round(sum(n.load for n in running), 2)
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
                "free": sum(n.memory.free for n in running),
                "allocated": sum(n.memory.allocated for n in running),
                "provisioned": sum(n.memory.provisioned for n in running),
                "utilization": round(100 * mem_used / mem_total, 2) if mem_total else 0,
            },
            "cpu": {
                "total": cpu_total,
                "load": load,
                "allocated": sum(n.vcpu.allocated for n in running),
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
                 "domain_state": n.domain_state, "health": n.health if n.health is not None else "None"}
                for n in nodes
            ],
            "vm": [
                {"name": e.record.name, "uuid": e.record.uuid, "state": e.record.state,
                 "node": e.record.node}
                for e in vm_entries
            ],
            "osd": storage["detail"],
            "faults": [faults_mod.fault_view(f) for f in faults],
        },
    }
