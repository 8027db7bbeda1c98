"""What the metric renderers read: plain data in upstream's shapes, collected once per rebuild.

The renderers (health.py, resource.py) are pure functions of a ClusterData, so unit tests build
one by hand; collect.py fills it from ZooKeeper and the API's watch caches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class VMData:
    """One VM: the static half of its API item, its stats half, and its NICs' VNIs.

    static: VM item fields that change with the document or status (name, uuid, state, node,
    tags, vnc, ...); stats: memory_stats, vcpu_stats, networks and disks with their counters."""

    static: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    # key of the static half and of the stats half: fragments are re-rendered when one moves
    static_key: Any = None
    stats_key: Any = None


@dataclass
class ClusterData:
    maintenance: bool = False
    primary_node: str = ""
    version: str = ""
    upstream_ip: str = ""
    nodes: list[dict[str, Any]] = field(default_factory=list)  # node items (GET /node shape)
    vms: list[VMData] = field(default_factory=list)  # sorted by name
    osds: list[dict[str, Any]] = field(default_factory=list)  # OSD items (GET /storage/ceph/osd)
    pools: list[dict[str, Any]] = field(default_factory=list)  # pool items
    faults: list[dict[str, Any]] = field(default_factory=list)  # fault items (+ active)
    cluster_health: int = 100
    networks: int = 0
    volumes: int = 0
    snapshots: int = 0
    tasks_running: dict[str, int] = field(default_factory=dict)  # task kind -> running tasks
    vm_snapshots: dict[str, int] = field(default_factory=dict)  # VM name -> VM snapshots
    # VM name -> (finish time of the newest successful backup, its size in bytes)
    backups: dict[str, tuple[float, int]] = field(default_factory=dict)
