"""The resource families (`GET /api/v1/metrics/resource`): cluster, nodes, VMs, OSDs, pools.

Sample names and labels are upstream's, as its Grafana dashboards query them. Where upstream's
HELP/TYPE named a different family than its samples (`pvc_node_load` for
`pvc_node_load_average`, `pvc_vm_node_autostart` for `pvc_vm_autostart`, `pvc_vm_memory_swap_in`
for `pvc_vm_memory_stats_swap_in`, ...), the header here names the samples. Cumulative figures
(CPU time, NIC and disk counters, page faults, pool lifetime I/O) are typed counter.

Differences from upstream, on purpose: a VM state outside upstream's table is -1 (upstream
answered 500); ratios over a zero total are 0 (one node, no OSDs, NICs of unknown speed);
N-1 capacity on a one-node cluster is the node itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.cluster.metrics.data import ClusterData
from pvc.cluster.metrics.expo import Family, block, escape, fmt, number, ratio, sample
from pvc.core.units import parse_size

# pvc_vm_state's value: upstream's table (its dashboards colour by it); anything else is -1.
VM_STATE_CODES = {
    "start": 0,
    "migrate": 1,
    "unmigrate": 2,
    "provision": 3,
    "disable": 4,
    "shutdown": 5,
    "restart": 6,
    "stop": 7,
    "fail": 8,
    "import": 9,
    "restore": 10,
    "mirror": 99,
}
UNKNOWN_STATE = -1

F = Family
G, C = "gauge", "counter"

# -- cluster -------------------------------------------------------------------------------------
CLUSTER_CPU = F(
    "pvc_cluster_cpu_utilization",
    "Cluster CPU load in percent of the CPUs of all nodes but the largest (N-1)",
)
CLUSTER_NET = F(
    "pvc_cluster_network_utilization",
    "Cluster network utilization in percent (mean over running nodes of their up interfaces)",
)
CLUSTER_MEM_REAL = F("pvc_cluster_memory_real_utilization", "Cluster used memory in percent of N-1 memory")
CLUSTER_MEM_ALLOC = F(
    "pvc_cluster_memory_allocated_utilization",
    "Cluster memory allocated to running VMs in percent of N-1 memory",
)
CLUSTER_MEM_PROV = F(
    "pvc_cluster_memory_provisioned_utilization",
    "Cluster memory provisioned to all VMs in percent of N-1 memory",
)
CLUSTER_DISK = F(
    "pvc_cluster_disk_utilization", "Cluster raw disk used in percent of the raw size of all OSDs"
)
CLUSTER_FAMILIES = (
    CLUSTER_CPU,
    CLUSTER_NET,
    CLUSTER_MEM_REAL,
    CLUSTER_MEM_ALLOC,
    CLUSTER_MEM_PROV,
    CLUSTER_DISK,
)

# -- nodes: (family, value of a node item) -------------------------------------------------------


def _iface_sum(key: str) -> Callable[[dict[str, Any]], float]:
    def total(node: dict[str, Any]) -> float:
        ifaces = node.get("interfaces") or {}
        return sum(number(i.get(key)) for i in ifaces.values() if isinstance(i, dict))

    return total


def _mem(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda n: number((n.get("memory") or {}).get(key))


def _mem_ratio(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda n: ratio(_mem(key)(n), _mem("total")(n))


NODE_VALUES: tuple[tuple[Family, Callable[[dict[str, Any]], Any]], ...] = (
    (F("pvc_node_host_cpus", "Node CPU count"), lambda n: number((n.get("vcpu") or {}).get("total"))),
    (
        F("pvc_node_allocated_vcpus", "Node vCPUs allocated to running VMs"),
        lambda n: number((n.get("vcpu") or {}).get("allocated")),
    ),
    (F("pvc_node_load_average", "Node 1-minute load average"), lambda n: number(n.get("load"))),
    (
        F("pvc_node_cpu_utilization", "Node load in percent of its CPU count"),
        lambda n: round(ratio(number(n.get("load")), number(n.get("cpu_count"))), 2),
    ),
    (F("pvc_node_domains_count", "Node running VM count"), lambda n: number(n.get("domains_count"))),
)
NODE_ARCH = F("pvc_node_architecture", "Node system architecture (label)")
NODE_KERNEL = F("pvc_node_kernel", "Node running kernel version (label)")
NODE_TRAFFIC: tuple[tuple[Family, Callable[[dict[str, Any]], Any]], ...] = (
    (
        F("pvc_node_network_traffic_rx", "Node received traffic, bits per second, all interfaces"),
        _iface_sum("rx_bps"),
    ),
    (
        F("pvc_node_network_traffic_tx", "Node transmitted traffic, bits per second, all interfaces"),
        _iface_sum("tx_bps"),
    ),
    (
        F("pvc_node_network_packets_rx", "Node received packets per second, all interfaces"),
        _iface_sum("rx_pps"),
    ),
    (
        F("pvc_node_network_packets_tx", "Node transmitted packets per second, all interfaces"),
        _iface_sum("tx_pps"),
    ),
)
NODE_NET_UTIL = F(
    "pvc_node_network_utilization",
    "Node network utilization in percent (mean over up interfaces of known speed)",
)
NODE_MEMORY: tuple[tuple[Family, Callable[[dict[str, Any]], Any]], ...] = (
    (F("pvc_node_total_memory", "Node total memory, MiB"), _mem("total")),
    (F("pvc_node_allocated_memory", "Node memory allocated to running VMs, MiB"), _mem("allocated")),
    (
        F("pvc_node_allocated_memory_utilization", "Node allocated memory in percent of total"),
        _mem_ratio("allocated"),
    ),
    (F("pvc_node_provisioned_memory", "Node memory provisioned to all its VMs, MiB"), _mem("provisioned")),
    (
        F("pvc_node_provisioned_memory_utilization", "Node provisioned memory in percent of total"),
        _mem_ratio("provisioned"),
    ),
    (F("pvc_node_used_memory", "Node used memory, MiB"), _mem("used")),
    (F("pvc_node_used_memory_utilization", "Node used memory in percent of total"), _mem_ratio("used")),
    (F("pvc_node_free_memory", "Node free memory, MiB"), _mem("free")),
)
NODE_FAMILIES = (
    *(f for f, _ in NODE_VALUES),
    NODE_ARCH,
    NODE_KERNEL,
    *(f for f, _ in NODE_TRAFFIC),
    NODE_NET_UTIL,
    *(f for f, _ in NODE_MEMORY),
)

# -- VMs -------------------------------------------------------------------------------------------
VM_STATIC_FAMILIES = (
    F("pvc_vm_uuid", "VM UUID (label)"),
    F("pvc_vm_description", "VM description (label)"),
    F("pvc_vm_profile", "VM provisioner profile (label)"),
    F(
        "pvc_vm_state",
        "VM state as a code: start 0, migrate 1, unmigrate 2, provision 3, disable 4, shutdown 5, "
        "restart 6, stop 7, fail 8, import 9, restore 10, mirror 99, any other -1",
    ),
    F("pvc_vm_failed_reason", "VM failure reason (label; N/A when none)"),
    F("pvc_vm_node_limit", "VM node limit (label; None when unset)"),
    F("pvc_vm_node_selector", "VM node selector (label; Default when unset)"),
    F("pvc_vm_autostart", "VM node autostart flag (1 set, 0 not)"),
    F("pvc_vm_migration_method", "VM migration method (label; Default when unset)"),
    F("pvc_vm_tags", "VM tags, one series per tag (label)"),
    F("pvc_vm_active_node", "VM node (label)"),
    F("pvc_vm_migrated", "VM temporarily migrated (1) with the node it came from (label), or not (0)"),
    F("pvc_vm_machine_type", "VM machine type (label)"),
    F("pvc_vm_serial_console", "VM has a serial console (1) or not (0)"),
    F("pvc_vm_vnc_console", "VM has a VNC console (1) or not (0)"),
    F("pvc_vm_vnc_listen_address", "VM VNC listen address (label; 1 when listening)"),
    F("pvc_vm_vnc_listen_port", "VM VNC listen port (label; 1 when listening)"),
    F("pvc_vm_vcpus", "VM vCPUs"),
    F("pvc_vm_vcpu_topology", "VM vCPU topology (label)"),
    F("pvc_vm_memory", "VM memory, MiB"),
    F("pvc_vm_network_macaddr", "VM NIC MAC address (label), per network"),
    F("pvc_vm_network_model", "VM NIC device model (label), per network"),
)
MEMORY_STATS = (
    ("actual", "VM balloon size, KiB", G),
    ("rss", "VM resident memory on its node, KiB", G),
    ("unused", "VM memory the guest leaves unused, KiB", G),
    ("available", "VM memory the guest sees, KiB", G),
    ("usable", "VM memory the guest could use without swapping, KiB", G),
    ("disk_caches", "VM guest disk caches, KiB", G),
    ("swap_in", "VM guest memory swapped in, KiB", C),
    ("swap_out", "VM guest memory swapped out, KiB", C),
    ("major_fault", "VM guest major page faults", C),
    ("minor_fault", "VM guest minor page faults", C),
    ("hugetlb_pgalloc", "VM guest huge page allocations", C),
    ("hugetlb_pgfail", "VM guest huge page allocation failures", C),
)
NET_STATS = (
    ("rd_packets", "rd_packets", 1, "VM NIC packets received"),
    ("rd_bits", "rd_bytes", 8, "VM NIC bits received"),
    ("rd_errors", "rd_errors", 1, "VM NIC receive errors"),
    ("rd_drops", "rd_drops", 1, "VM NIC receive drops"),
    ("wr_packets", "wr_packets", 1, "VM NIC packets sent"),
    ("wr_bits", "wr_bytes", 8, "VM NIC bits sent"),
    ("wr_errors", "wr_errors", 1, "VM NIC send errors"),
    ("wr_drops", "wr_drops", 1, "VM NIC send drops"),
)
DISK_STATS = (
    ("rd_req", "VM disk read requests"),
    ("rd_bytes", "VM disk bytes read"),
    ("wr_req", "VM disk write requests"),
    ("wr_bytes", "VM disk bytes written"),
)
VM_STATS_FAMILIES = (
    F("pvc_vm_vcpus_cpu_time", "VM CPU time, milliseconds", C),
    F("pvc_vm_vcpus_user_time", "VM user CPU time, milliseconds", C),
    F("pvc_vm_vcpus_system_time", "VM system CPU time, milliseconds", C),
    *(F(f"pvc_vm_memory_stats_{key}", text, kind) for key, text, kind in MEMORY_STATS),
    *(F(f"pvc_vm_network_{name}", text, C) for name, _key, _mult, text in NET_STATS),
    *(F(f"pvc_vm_disk_{key}", text, C) for key, text in DISK_STATS),
)
VM_SNAPSHOTS = F("pvc_vm_snapshots", "VM snapshots (PVC extension)")
VM_BACKUP_TIME = F(
    "pvc_vm_backup_last_success_timestamp",
    "Finish time of the VM's newest successful backup, Unix seconds (PVC extension)",
)
VM_BACKUP_SIZE = F(
    "pvc_vm_backup_last_size_bytes", "Size of the VM's newest successful backup, bytes (PVC extension)"
)
VM_FAMILIES = (*VM_STATIC_FAMILIES, *VM_STATS_FAMILIES, VM_SNAPSHOTS, VM_BACKUP_TIME, VM_BACKUP_SIZE)

# -- OSDs and pools: (family, stats key, multiplier) ----------------------------------------------
OSD_DEVICE = F("pvc_ceph_osd_device", "OSD device as node:block device (label)")
OSD_DB_DEVICE = F("pvc_ceph_osd_db_device", "OSD database device (label)")
OSD_CLASS = F("pvc_ceph_osd_device_class", "OSD device class (label)")
OSD_VALUES = (
    (F("pvc_ceph_osd_util", "OSD utilization, percent"), "utilization", 1),
    (F("pvc_ceph_osd_var", "OSD utilization variance from the mean"), "var", 1),
    (F("pvc_ceph_osd_pgs", "OSD placement groups"), "pgs", 1),
    (F("pvc_ceph_osd_size", "OSD size, KiB"), "kb", 1),
    (F("pvc_ceph_osd_used", "OSD used, bytes"), "kb_used", 1024),
    (F("pvc_ceph_osd_used_data", "OSD used by data, bytes"), "kb_used_data", 1024),
    (F("pvc_ceph_osd_used_omap", "OSD used by omap, bytes"), "kb_used_omap", 1024),
    (F("pvc_ceph_osd_used_meta", "OSD used by metadata, bytes"), "kb_used_meta", 1024),
    (F("pvc_ceph_osd_avail", "OSD available, bytes"), "kb_avail", 1024),
    (F("pvc_ceph_osd_weight", "OSD CRUSH weight"), "weight", 1),
    (F("pvc_ceph_osd_reweight", "OSD reweight"), "reweight", 1),
    (F("pvc_ceph_osd_wr_ops", "OSD write operations per second"), "wr_ops", 1),
    (F("pvc_ceph_osd_wr_data", "OSD bytes written per second"), "wr_data", 0),
    (F("pvc_ceph_osd_rd_ops", "OSD read operations per second"), "rd_ops", 1),
    (F("pvc_ceph_osd_rd_data", "OSD bytes read per second"), "rd_data", 0),
)
OSD_FAMILIES = (OSD_DEVICE, OSD_DB_DEVICE, OSD_CLASS, *(f for f, _k, _m in OSD_VALUES))
POOL_TIER = F("pvc_ceph_pool_tier", "Pool tier (label)")
POOL_VALUES = (
    (F("pvc_ceph_pool_pgs", "Pool placement groups"), "pgs"),
    (F("pvc_ceph_pool_volumes", "Pool volumes"), "volume_count"),
    (F("pvc_ceph_pool_stored_bytes", "Pool data stored, bytes"), "stored_bytes"),
    (F("pvc_ceph_pool_free_bytes", "Pool space free, bytes"), "free_bytes"),
    (F("pvc_ceph_pool_used_bytes", "Pool raw space used, bytes"), "used_bytes"),
    (F("pvc_ceph_pool_used_percent", "Pool used, percent"), "used_percent"),
    (F("pvc_ceph_pool_num_objects", "Pool objects"), "num_objects"),
    (F("pvc_ceph_pool_num_objects_clones", "Pool clone objects"), "num_object_clones"),
    (F("pvc_ceph_pool_num_objects_copies", "Pool object copies"), "num_object_copies"),
    (
        F("pvc_ceph_pool_num_objects_missing_on_primary", "Pool objects missing on their primary"),
        "num_objects_missing_on_primary",
    ),
    (F("pvc_ceph_pool_num_objects_unfound", "Pool objects unfound"), "num_objects_unfound"),
    (F("pvc_ceph_pool_num_objects_degraded", "Pool objects degraded"), "num_objects_degraded"),
    (F("pvc_ceph_pool_read_ops", "Pool read operations since creation", C), "read_ops"),
    (F("pvc_ceph_pool_read_bytes", "Pool bytes read since creation", C), "read_bytes"),
    (F("pvc_ceph_pool_write_ops", "Pool write operations since creation", C), "write_ops"),
    (F("pvc_ceph_pool_write_bytes", "Pool bytes written since creation", C), "write_bytes"),
)
POOL_FAMILIES = (POOL_TIER, *(f for f, _k in POOL_VALUES))

FAMILIES = (*CLUSTER_FAMILIES, *NODE_FAMILIES, *VM_FAMILIES, *OSD_FAMILIES, *POOL_FAMILIES)


# -- cluster ---------------------------------------------------------------------------------------


def _n_minus_1(values: list[float]) -> float:
    """The total without the largest; on one node, that node (N-1 would be nothing)."""
    if len(values) < 2:
        return sum(values)
    return sum(sorted(values)[:-1])


def _node_network(node: dict[str, Any]) -> tuple[float, float] | None:
    """(mean traffic, mean full-duplex capacity) over the node's up interfaces of known speed, in
    bits per second; None when it has none. The collector reports link_speed in bits per second."""
    speeds, traffic = [], []
    for iface in (node.get("interfaces") or {}).values():
        if not isinstance(iface, dict) or iface.get("state") != "up":
            continue
        speed = number(iface.get("link_speed"))
        if speed <= 0:
            continue  # unknown speed (virtual interfaces): cannot be a share of it
        speeds.append(speed * 2)
        traffic.append(number(iface.get("total_bps")))
    if not speeds:
        return None
    return sum(traffic) / len(traffic), sum(speeds) / len(speeds)


def render_cluster(data: ClusterData) -> str:
    nodes = data.nodes
    cpu_total = _n_minus_1([number(n.get("cpu_count")) for n in nodes])
    mem_total = _n_minus_1([number((n.get("memory") or {}).get("total")) for n in nodes])
    load = sum(number(n.get("load")) for n in nodes)
    nets = [x for x in (_node_network(n) for n in nodes if n.get("daemon_state") == "run") if x is not None]
    net_util = (
        ratio(sum(u for u, _ in nets) / len(nets), sum(s for _, s in nets) / len(nets)) if nets else 0.0
    )
    kb = kb_used = 0.0
    for osd in data.osds:
        stats = osd.get("stats") or {}
        kb += number(stats.get("kb"))
        kb_used += number(stats.get("kb_used"))
    values = (
        ratio(load, cpu_total),
        net_util,
        ratio(sum(number((n.get("memory") or {}).get("used")) for n in nodes), mem_total),
        ratio(sum(number((n.get("memory") or {}).get("allocated")) for n in nodes), mem_total),
        ratio(sum(number((n.get("memory") or {}).get("provisioned")) for n in nodes), mem_total),
        ratio(kb_used, kb),
    )
    return "".join(
        block(f, [sample(f.name, round(v, 2))]) for f, v in zip(CLUSTER_FAMILIES, values, strict=True)
    )


def render_nodes(nodes: list[dict[str, Any]]) -> str:
    out = [block(f, (sample(f.name, value(n), node=n["name"]) for n in nodes)) for f, value in NODE_VALUES]
    out.append(
        block(
            NODE_ARCH,
            (sample(NODE_ARCH.name, 1, node=n["name"], architecture=n.get("arch", "")) for n in nodes),
        )
    )
    out.append(
        block(
            NODE_KERNEL,
            (sample(NODE_KERNEL.name, 1, node=n["name"], kernel=n.get("kernel", "")) for n in nodes),
        )
    )
    out += [
        block(f, (sample(f.name, round(value(n), 2), node=n["name"]) for n in nodes))
        for f, value in NODE_TRAFFIC
    ]

    def util(node: dict[str, Any]) -> float:
        found = _node_network(node) if node.get("daemon_state") == "run" else None
        return round(ratio(*found), 2) if found else 0.0

    out.append(block(NODE_NET_UTIL, (sample(NODE_NET_UTIL.name, util(n), node=n["name"]) for n in nodes)))
    out += [block(f, (sample(f.name, value(n), node=n["name"]) for n in nodes)) for f, value in NODE_MEMORY]
    return "".join(out)


# -- VMs: per-VM fragments, one string per family, memoised by the cache ---------------------------


def _text(value: Any, default: str) -> str:
    return default if value in (None, "", "None", "none") else str(value)


def vm_static_fragments(vm: dict[str, Any]) -> list[str]:
    """One string per VM_STATIC_FAMILIES entry (several lines for tags and NICs, or none)."""
    name = escape(vm.get("name", ""))
    who = f'vm="{name}"'
    state = str(vm.get("state", ""))
    vnc = vm.get("vnc") if isinstance(vm.get("vnc"), dict) else {}
    listen, port = vnc.get("listen"), vnc.get("port")
    limit = vm.get("node_limit")
    limit_text = ",".join(str(x) for x in limit) if isinstance(limit, list) and limit else "None"
    migrated = vm.get("migrated", "no") not in ("no", "", None)
    nets = [n for n in vm.get("networks") or [] if isinstance(n, dict)]

    def one(family: str, value: Any, **extra: Any) -> str:
        more = "".join(f',{k}="{escape(v)}"' for k, v in extra.items())
        return f"pvc_vm_{family}{{{who}{more}}} {fmt(value)}\n"

    return [
        one("uuid", 1, uuid=vm.get("uuid", "")),
        one("description", 1, description=vm.get("description", "")),
        one("profile", 1, profile=vm.get("profile", "")),
        one("state", VM_STATE_CODES.get(state, UNKNOWN_STATE), state=state),
        one("failed_reason", 1, failed_reason=_text(vm.get("failed_reason"), "N/A")),
        one("node_limit", 1, node_limit=limit_text),
        one("node_selector", 1, node_selector=_text(vm.get("node_selector"), "Default")),
        one("autostart", 1 if vm.get("node_autostart") else 0, autostart=str(bool(vm.get("node_autostart")))),
        one("migration_method", 1, migration_method=_text(vm.get("migration_method"), "Default")),
        "".join(one("tags", 1, tag=t.get("name", "")) for t in vm.get("tags") or [] if isinstance(t, dict)),
        one("active_node", 1, node=vm.get("node", "")),
        one("migrated", 1 if migrated else 0, last_node=vm.get("last_node") or "No"),
        one("machine_type", 1, machine_type=_text(vm.get("machine"), "None")),
        one("serial_console", 1 if vm.get("console") == "pty" else 0),
        one("vnc_console", 1 if listen else 0),
        one("vnc_listen_address", 1 if listen else 0, address=_text(listen, "None")),
        one("vnc_listen_port", 1 if port else 0, port=_text(port, "None")),
        one("vcpus", number(vm.get("vcpu"))),
        one("vcpu_topology", 1, topology=_text(vm.get("vcpu_topology"), "N/A")),
        one("memory", number(vm.get("memory"))),
        "".join(one("network_macaddr", 1, vni=n.get("vni", ""), macaddr=n.get("mac", "")) for n in nets),
        "".join(one("network_model", 1, vni=n.get("vni", ""), model=n.get("model", "")) for n in nets),
    ]


def vm_stats_fragments(name: str, stats: dict[str, Any], vnis: list[str]) -> list[str]:
    """One string per VM_STATS_FAMILIES entry. vnis: the VNI of each NIC, in stats order."""
    who = f'vm="{escape(name)}"'
    cpu = stats.get("vcpu_stats") if isinstance(stats.get("vcpu_stats"), dict) else {}
    mem = stats.get("memory_stats") if isinstance(stats.get("memory_stats"), dict) else {}
    nets = [n for n in stats.get("networks") or [] if isinstance(n, dict)]
    disks = [d for d in stats.get("disks") or [] if isinstance(d, dict)]
    out = [
        f"pvc_vm_vcpus_{k}{{{who}}} {fmt(number(cpu.get(k)) / 1_000_000)}\n"
        for k in ("cpu_time", "user_time", "system_time")
    ]
    out += [f"pvc_vm_memory_stats_{k}{{{who}}} {fmt(number(mem.get(k)))}\n" for k, _t, _c in MEMORY_STATS]
    labelled = [
        (f'{who},vni="{escape(vnis[i] if i < len(vnis) else n.get("source", ""))}"', n)
        for i, n in enumerate(nets)
    ]
    out += [
        "".join(f"pvc_vm_network_{name_}{{{lab}}} {fmt(number(n.get(key)) * mult)}\n" for lab, n in labelled)
        for name_, key, mult, _t in NET_STATS
    ]
    devs = [(f'{who},disk="{escape(d.get("dev", ""))}"', d) for d in disks]
    out += [
        "".join(f"pvc_vm_disk_{key}{{{lab}}} {fmt(number(d.get(key)))}\n" for lab, d in devs)
        for key, _t in DISK_STATS
    ]
    return out


VMMemo = dict[str, tuple[Any, list[str], Any, list[str]]]


def render_vms(data: ClusterData, memo: VMMemo | None = None) -> str:
    """The VM families; memo (uuid -> keys and fragments) lets unchanged VMs cost nothing."""
    static_parts: list[list[str]] = []
    stats_parts: list[list[str]] = []
    fresh: VMMemo = {}
    for vm in data.vms:
        uuid = str(vm.static.get("uuid", ""))
        known = memo.get(uuid) if memo is not None else None
        if known is not None and vm.static_key is not None and known[0] == vm.static_key:
            static = known[1]
        else:
            static = vm_static_fragments(vm.static)
        if (
            known is not None
            and vm.stats_key is not None
            and known[2] == vm.stats_key
            and known[0] == vm.static_key
        ):
            stats = known[3]
        else:
            vnis = [str(n.get("vni", "")) for n in vm.static.get("networks") or [] if isinstance(n, dict)]
            stats = vm_stats_fragments(str(vm.static.get("name", "")), vm.stats, vnis)
        fresh[uuid] = (vm.static_key, static, vm.stats_key, stats)
        static_parts.append(static)
        stats_parts.append(stats)
    if memo is not None:
        memo.clear()
        memo.update(fresh)
    out = [block(f, (p[i] for p in static_parts)) for i, f in enumerate(VM_STATIC_FAMILIES)]
    out += [block(f, (p[i] for p in stats_parts)) for i, f in enumerate(VM_STATS_FAMILIES)]
    out.append(
        block(
            VM_SNAPSHOTS,
            (sample(VM_SNAPSHOTS.name, count, vm=vm) for vm, count in sorted(data.vm_snapshots.items())),
        )
    )
    out.append(
        block(
            VM_BACKUP_TIME,
            (sample(VM_BACKUP_TIME.name, when, vm=vm) for vm, (when, _size) in sorted(data.backups.items())),
        )
    )
    out.append(
        block(
            VM_BACKUP_SIZE,
            (sample(VM_BACKUP_SIZE.name, size, vm=vm) for vm, (_when, size) in sorted(data.backups.items())),
        )
    )
    return "".join(out)


# -- OSDs and pools --------------------------------------------------------------------------------


def _rate(value: Any) -> float:
    """Ceph's short rates ("1.2 MiB", "0 B", "12k") as bytes; numbers as they are."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value or "0").strip().replace(" ", "")
    try:
        return float(parse_size(text.removesuffix("B").removesuffix("i") or "0", "rate"))
    except Exception:
        return number(text)


def render_osds(osds: list[dict[str, Any]]) -> str:
    out = [
        block(
            OSD_DEVICE,
            (
                sample(
                    OSD_DEVICE.name,
                    1,
                    osd=o.get("id", ""),
                    device=f"{o.get('node', '')}:{o.get('device', '')}",
                )
                for o in osds
            ),
        ),
        block(
            OSD_DB_DEVICE,
            (
                sample(OSD_DB_DEVICE.name, 1, osd=o.get("id", ""), db_device=o.get("db_device", ""))
                for o in osds
            ),
        ),
        block(
            OSD_CLASS,
            (
                sample(OSD_CLASS.name, 1, osd=o.get("id", ""), device_class=o["stats"]["class"])
                for o in osds
                if isinstance(o.get("stats"), dict) and "class" in o["stats"]
            ),
        ),
    ]
    for family, key, mult in OSD_VALUES:
        lines = []
        for osd in osds:
            stats = osd.get("stats") if isinstance(osd.get("stats"), dict) else {}
            if key not in stats:
                continue  # an OSD not fully up yet has no statistics: no sample
            value = _rate(stats[key]) if mult == 0 else number(stats[key]) * mult
            lines.append(sample(family.name, value, osd=osd.get("id", "")))
        out.append(block(family, lines))
    return "".join(out)


def render_pools(pools: list[dict[str, Any]]) -> str:
    out = [
        block(
            POOL_TIER,
            (
                sample(POOL_TIER.name, 1, pool=p.get("name", ""), tier=p.get("tier") or "default")
                for p in pools
            ),
        )
    ]
    for family, key in POOL_VALUES:
        lines = []
        for pool in pools:
            stats = pool.get("stats") if isinstance(pool.get("stats"), dict) else {}
            if key in ("pgs", "volume_count"):
                value: float | None = number(pool.get(key))
            elif key in stats:
                value = number(stats[key]) * (100 if key == "used_percent" else 1)
                value = round(value, 2) if key == "used_percent" else value
            else:
                value = None
            if value is not None:
                lines.append(sample(family.name, value, pool=pool.get("name", "")))
        out.append(block(family, lines))
    return "".join(out)


def render_resource(data: ClusterData, memo: VMMemo | None = None) -> str:
    return (
        render_cluster(data)
        + render_nodes(data.nodes)
        + render_vms(data, memo)
        + render_osds(data.osds)
        + render_pools(data.pools)
    )
