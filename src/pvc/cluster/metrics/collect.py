"""Fill a ClusterData from ZooKeeper: nodes and VMs from the API's watch caches (when live),
the rest in pipelined reads (a dozen round trips whatever the cluster's size).

VMs reuse what GET /vm already keeps: the sorted entries of the /vms mirror, the parsed XML
summary and the /vmstats index. A VM's static half is rebuilt only when its document or status
moves (their mzxids), its stats half only when its stats shard does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pvc.cluster.clusterinfo import get_cluster
from pvc.cluster.metrics.data import ClusterData, VMData
from pvc.cluster.nodes import load_nodes, node_view, primary_node
from pvc.cluster.storage.osds import osd_view
from pvc.cluster.storage.pools import list_pools
from pvc.cluster.vms import index as vm_index
from pvc.cluster.vms.view import record_summary, static_view, stats_view
from pvc.core import schema
from pvc.core.records import BackupRecord
from pvc.core.zk import ZK


@dataclass
class CollectMemo:
    """uuid -> the VMData of the last collection (its halves are reused while their keys hold)."""

    vms: dict[str, VMData] = field(default_factory=dict)


def _vm_data(
    entries: list[vm_index.VMEntry], stats_index: vm_index.StatsIndex, memo: CollectMemo
) -> list[VMData]:
    out: list[VMData] = []
    fresh: dict[str, VMData] = {}
    for entry in entries:
        record, status = entry.record, entry.status
        uuid = record.uuid
        known = memo.vms.get(uuid)
        node = status.node if status is not None else ""
        mzxid, raw = stats_index.get(node, {}).get(uuid, (0, None)) if node else (0, None)
        stats_key = (node, mzxid) if raw is not None and mzxid else None
        if known is not None and entry.key is not None and known.static_key == entry.key:
            static = known.static
            summary = None
        else:
            summary = record_summary(record)
            static = {**static_view(record, status, summary), "networks": summary.get("networks", [])}
            static.pop("xml", None)
        if (
            known is not None
            and stats_key is not None
            and known.stats_key == stats_key
            and known.static_key == entry.key
        ):
            stats = known.stats
        else:
            if raw is None:
                raw = entry.stats if entry.stats is not None else (status.stats if status is not None else {})
            stats = stats_view(summary if summary is not None else record_summary(record), raw or {})
        data = VMData(static=static, stats=stats, static_key=entry.key, stats_key=stats_key)
        fresh[uuid] = data
        out.append(data)
    memo.vms = fresh
    return out


def _faults(zk: ZK) -> list[dict[str, Any]]:
    ids = zk.children(schema.FAULTS)
    docs = zk.get_many([schema.fault(i) for i in ids]) if ids else {}
    out = []
    for fid in ids:
        doc = docs.get(schema.fault(fid))
        if isinstance(doc, dict):
            out.append(
                {
                    "id": doc.get("id", fid),
                    "status": doc.get("status", "new"),
                    "health_delta": doc.get("health_delta", 0),
                    "active": doc.get("active", True) is not False,
                }
            )
    return out


def cluster_health(faults: list[dict[str, Any]]) -> int:
    """100 minus the deltas of the faults that count: active and not acknowledged."""
    total = 0
    for fault in faults:
        if fault.get("active", True) and fault.get("status") != "ack":
            try:
                total += int(fault.get("health_delta") or 0)
            except (TypeError, ValueError):
                continue
    return max(0, 100 - total)


def _storage_counts(zk: ZK) -> int:
    """RBD snapshots: /ceph/snapshots/<pool>/<volume>/<snapshot>."""
    pools = zk.children(schema.CEPH_SNAPSHOTS)
    if not pools:
        return 0
    volumes = zk.children_many([f"{schema.CEPH_SNAPSHOTS}/{p}" for p in pools])
    paths = [f"{parent}/{v}" for parent, names in volumes.items() for v in names]
    return sum(len(s) for s in zk.children_many(paths).values()) if paths else 0


def _tasks_running(zk: ZK) -> dict[str, int]:
    ids = zk.children(schema.TASKS)
    docs = zk.get_many([schema.task(i) for i in ids]) if ids else {}
    counts: dict[str, int] = {}
    for doc in docs.values():
        if isinstance(doc, dict) and doc.get("state") == "RUNNING":
            kind = str(doc.get("kind", ""))
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _vm_snapshots(zk: ZK, names: dict[str, str]) -> dict[str, int]:
    uuids = zk.children(schema.VM_SNAPSHOTS)
    if not uuids:
        return {}
    kids = zk.children_many([schema.vm_snapshots(u) for u in uuids])
    return {names[u]: len(kids.get(schema.vm_snapshots(u), [])) for u in uuids if u in names}


def _backups(zk: ZK, names: dict[str, str]) -> dict[str, tuple[float, int]]:
    """VM name -> (finish time, bytes) of its newest successful backup in the catalogue."""
    uuids = zk.children(schema.BACKUPS)
    if not uuids:
        return {}
    kids = zk.children_many([schema.vm_backups(u) for u in uuids])
    paths = [f"{schema.vm_backups(u)}/{s}" for u in uuids for s in kids.get(schema.vm_backups(u), [])]
    docs = zk.get_many(paths) if paths else {}
    out: dict[str, tuple[float, int]] = {}
    for path, doc in docs.items():
        if not isinstance(doc, dict):
            continue
        try:
            backup = BackupRecord.model_validate(doc)
        except ValueError:
            continue
        if not backup.result:
            continue
        uuid = path.split("/")[-2]
        name = names.get(uuid, backup.vm)
        when = backup.finished if backup.finished is not None else backup.started
        if name not in out or when > out[name][0]:
            out[name] = (when, backup.bytes)
    return out


def collect(zk: ZK, memo: CollectMemo | None = None) -> ClusterData:
    memo = memo if memo is not None else CollectMemo()
    cluster = get_cluster(zk)
    nodes = load_nodes(zk)
    primary = primary_node(zk) or ""
    primary_record = next((n for n in nodes if n.name == primary), None)
    entries = list(vm_index.load_entries(zk))
    entries.sort(key=lambda e: e.record.name)
    stats_index = vm_index.read_stats(zk, {e.status.node for e in entries if e.status is not None})
    vms = _vm_data(entries, stats_index, memo)
    names = {e.record.uuid: e.record.name for e in entries}
    osd_ids = zk.children(schema.CEPH_OSDS)
    osd_docs = zk.get_many([schema.osd(i) for i in osd_ids]) if osd_ids else {}
    osds = [osd_view(d, i) for i in osd_ids if isinstance(d := osd_docs.get(schema.osd(i)), dict)]
    osds.sort(key=lambda o: (int(o["id"]) if str(o["id"]).isdigit() else 1 << 40, str(o["id"])))
    pools = list_pools(zk)
    faults = _faults(zk)
    active = [f for f in faults if f["active"]]
    return ClusterData(
        maintenance=cluster.maintenance,
        primary_node=primary,
        version=primary_record.pvc_version if primary_record is not None else "",
        upstream_ip=cluster.upstream_ip,
        nodes=[node_view(n) | {"health": n.health} for n in nodes],
        vms=vms,
        osds=osds,
        pools=pools,
        faults=active + [f for f in faults if not f["active"]],
        cluster_health=cluster_health(faults),
        networks=len(zk.children(schema.NETWORKS)),
        volumes=sum(int(p.get("volume_count") or 0) for p in pools),
        snapshots=_storage_counts(zk),
        tasks_running=_tasks_running(zk),
        vm_snapshots=_vm_snapshots(zk, names),
        backups=_backups(zk, names),
    )
