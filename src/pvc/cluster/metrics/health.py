"""The health families (`GET /api/v1/metrics/health`): upstream's 17, then PVC's extensions.

Upstream counted states through fixed tables and answered 500 for a state outside them; here the
known states always appear (0 when none) and any other state present gets its own series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pvc.cluster.metrics.data import ClusterData
from pvc.cluster.metrics.expo import Family, block, number, sample
from pvc.cluster.state import NODE_STATE_COMBINATIONS, OSD_STATE_COMBINATIONS, VM_STATE_COMBINATIONS

FAULT_STATES = ("new", "ack")
NODE_DAEMON_STATES = tuple(dict.fromkeys(s.split(",")[0] for s in NODE_STATE_COMBINATIONS))
NODE_DOMAIN_STATES = tuple(dict.fromkeys(s.split(",")[1] for s in NODE_STATE_COMBINATIONS))
OSD_UP_STATES = ("up", "down")
OSD_IN_STATES = ("in", "out")
assert {s.split(",")[0] for s in OSD_STATE_COMBINATIONS} == set(OSD_UP_STATES)

F = Family
INFO = F(
    "pvc_info", "PVC cluster information: primary node, PVC version of the primary, upstream floating IP"
)
MAINTENANCE = F("pvc_cluster_maintenance", "Cluster maintenance mode (1 on, 0 off)")
CLUSTER_HEALTH = F(
    "pvc_cluster_health", "Cluster health in percent (100 minus the deltas of counting faults)"
)
CLUSTER_FAULTS = F("pvc_cluster_faults", "Faults by status (new, ack)")
NODE_HEALTH = F("pvc_node_health", "Node health in percent (absent while the node's health is N/A)")
NODE_DAEMON = F("pvc_node_daemon_states", "Nodes by daemon state")
NODE_DOMAIN = F("pvc_node_domain_states", "Nodes by domain state")
VM_STATES = F("pvc_vm_states", "VMs by state")
OSD_UP = F("pvc_ceph_osd_up_states", "Ceph OSDs by up state")
OSD_IN = F("pvc_ceph_osd_in_states", "Ceph OSDs by in state")
NODES = F("pvc_nodes", "Number of nodes")
VMS = F("pvc_vms", "Number of VMs")
OSDS = F("pvc_osds", "Number of Ceph OSDs")
NETWORKS = F("pvc_networks", "Number of client networks")
POOLS = F("pvc_pools", "Number of storage pools")
VOLUMES = F("pvc_volumes", "Number of storage volumes")
SNAPSHOTS = F("pvc_snapshots", "Number of storage (RBD) snapshots")
# PVC extensions
PLUGIN_DELTA = F("pvc_node_health_plugin_delta", "Health delta of each node health plugin's last run")
FAULT_ACTIVE = F("pvc_fault_active", "Whether the fault's condition still holds (1) or has resolved (0)")
TASK_RUNNING = F("pvc_task_running", "Tasks running now, by kind")

UPSTREAM_FAMILIES = (
    INFO,
    MAINTENANCE,
    CLUSTER_HEALTH,
    CLUSTER_FAULTS,
    NODE_HEALTH,
    NODE_DAEMON,
    NODE_DOMAIN,
    VM_STATES,
    OSD_UP,
    OSD_IN,
    NODES,
    VMS,
    OSDS,
    NETWORKS,
    POOLS,
    VOLUMES,
    SNAPSHOTS,
)
EXTENSION_FAMILIES = (PLUGIN_DELTA, FAULT_ACTIVE, TASK_RUNNING)
FAMILIES = UPSTREAM_FAMILIES + EXTENSION_FAMILIES


def _counts(family: Family, known: tuple[str, ...], present: Iterable[str], label: str = "state") -> str:
    """One series per known state (0 when none), plus one per other state present."""
    counted = Counter(present)
    states = list(known) + sorted(s for s in counted if s not in known)
    return block(family, (sample(family.name, counted.get(s, 0), **{label: s}) for s in states))


def _osd_flag(osd: dict[str, object], key: str) -> bool:
    stats = osd.get("stats")
    value = stats.get(key) if isinstance(stats, dict) else None
    return value in (1, True, "1", "true")


def render_health(data: ClusterData) -> str:
    out = [
        block(
            INFO,
            [
                sample(
                    INFO.name,
                    1,
                    primary_node=data.primary_node or "none",
                    version=data.version,
                    upstream_ip=data.upstream_ip,
                )
            ],
        ),
        block(MAINTENANCE, [sample(MAINTENANCE.name, 1 if data.maintenance else 0)]),
        block(CLUSTER_HEALTH, [sample(CLUSTER_HEALTH.name, data.cluster_health)]),
        _counts(
            CLUSTER_FAULTS,
            FAULT_STATES,
            (str(f.get("status", "new")) for f in data.faults if f.get("active", True) is not False),
            label="status",
        ),
        block(
            NODE_HEALTH,
            [
                sample(NODE_HEALTH.name, n["health"], node=n["name"])
                for n in data.nodes
                if isinstance(n.get("health"), int | float) and not isinstance(n.get("health"), bool)
            ],
        ),
        _counts(NODE_DAEMON, NODE_DAEMON_STATES, (str(n.get("daemon_state")) for n in data.nodes)),
        _counts(NODE_DOMAIN, NODE_DOMAIN_STATES, (str(n.get("domain_state")) for n in data.nodes)),
        _counts(VM_STATES, VM_STATE_COMBINATIONS, (str(v.static.get("state")) for v in data.vms)),
        _counts(OSD_UP, OSD_UP_STATES, ("up" if _osd_flag(o, "up") else "down" for o in data.osds)),
        _counts(OSD_IN, OSD_IN_STATES, ("in" if _osd_flag(o, "in") else "out" for o in data.osds)),
        block(NODES, [sample(NODES.name, len(data.nodes))]),
        block(VMS, [sample(VMS.name, len(data.vms))]),
        block(OSDS, [sample(OSDS.name, len(data.osds))]),
        block(NETWORKS, [sample(NETWORKS.name, data.networks)]),
        block(POOLS, [sample(POOLS.name, len(data.pools))]),
        block(VOLUMES, [sample(VOLUMES.name, data.volumes)]),
        block(SNAPSHOTS, [sample(SNAPSHOTS.name, data.snapshots)]),
        block(
            PLUGIN_DELTA,
            [
                sample(
                    PLUGIN_DELTA.name,
                    number(d.get("health_delta")),
                    node=n["name"],
                    plugin=d.get("name") or d.get("plugin_name") or "",
                )
                for n in data.nodes
                for d in (n.get("health_details") or [])
                if isinstance(d, dict)
            ],
        ),
        block(
            FAULT_ACTIVE,
            [
                sample(FAULT_ACTIVE.name, 0 if f.get("active") is False else 1, id=f.get("id", ""))
                for f in data.faults
            ],
        ),
        block(
            TASK_RUNNING,
            [
                sample(TASK_RUNNING.name, count, kind=kind)
                for kind, count in sorted(data.tasks_running.items())
            ],
        ),
    ]
    return "".join(out)
