#!/usr/bin/env python3
"""Writes the two Grafana dashboards shipped with PVC: pvc-cluster.json and pvc-vms.json.

The JSON files are generated so that every panel follows one layout and one selector
(pvc_cluster_id="$cluster_id", from the Prometheus target labels) and so that the test
(tests/integration/test_monitoring_shipped.py) can check that the committed files are what this
script writes. Edit the panels here and run `python3 deploy/monitoring/grafana/build.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
C = 'pvc_cluster_id="$cluster_id"'
VM = 'pvc_cluster_id="$cluster_id",vm="$vm"'
RATE = "$__rate_interval"

HEALTH_STEPS = [{"color": "red", "value": None}, {"color": "yellow", "value": 50.01},
                {"color": "green", "value": 90.01}]


class Board:
    """Panels laid out left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def add(self, kind: str, title: str, description: str, targets: list[tuple[str, str]],
            w: int = 12, h: int = 8, unit: str = "short", instant: bool = False,
            **extra: Any) -> None:
        if self.x + w > 24:
            self._newline()
        defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "palette-classic"}}
        for key in ("min", "max", "mappings", "decimals"):
            if key in extra:
                defaults[key] = extra.pop(key)
        if "steps" in extra:
            defaults["thresholds"] = {"mode": "absolute", "steps": extra.pop("steps")}
            defaults["color"] = {"mode": "thresholds"}
        panel: dict[str, Any] = {
            "type": kind, "title": title, "description": description, "id": self._id(),
            "datasource": DS, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": expr, "legendFormat": legend,
                         "instant": instant, "range": not instant, "editorMode": "code"}
                        for i, (expr, legend) in enumerate(targets)],
        }
        if kind == "timeseries":
            panel["options"] = {"legend": {"displayMode": "table", "placement": "right",
                                           "calcs": ["mean", "max", "lastNotNull"], "showLegend": True},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind in ("stat", "gauge", "bargauge"):
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "textMode": extra.pop("text_mode", "auto"), "colorMode": "value",
                                "graphMode": "none", "orientation": "auto"}
        panel.update(extra)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def query_variable(name: str, label: str, query: str, hide: int = 0) -> dict[str, Any]:
    return {"type": "query", "name": name, "label": label, "datasource": DS, "definition": query,
            "query": {"query": query, "refId": f"{name}-query", "qryType": 1}, "refresh": 2,
            "hide": hide, "includeAll": False, "multi": False, "sort": 1, "current": {},
            "options": [], "regex": ""}


def variables(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"list": [
        {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
         "current": {}, "hide": 0, "options": [], "refresh": 1, "regex": ""},
        query_variable("cluster_name", "Cluster", "label_values(pvc_cluster_health, pvc_cluster_name)"),
        query_variable("cluster_id", "Cluster ID",
                       'label_values(pvc_cluster_health{pvc_cluster_name="$cluster_name"}, pvc_cluster_id)',
                       hide=2),
        *extra,
    ]}


def dashboard(uid: str, title: str, description: str, board: Board,
              templating: dict[str, Any]) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["pvc"],
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"}, "timezone": "", "version": 1,
        "annotations": {"list": []}, "links": [], "templating": templating, "panels": board.panels,
    }


def onoff(off: str, on: str, off_colour: str = "green", on_colour: str = "blue") -> list[dict[str, Any]]:
    return [{"type": "value", "options": {"0": {"text": off, "color": off_colour, "index": 0},
                                          "1": {"text": on, "color": on_colour, "index": 1}}}]


def cluster() -> dict[str, Any]:
    b = Board()
    b.row("Health")
    b.add("stat", "Cluster health", "100 minus the deductions of the active, unacknowledged faults.",
          [(f"pvc_cluster_health{{{C}}}", "")], w=4, h=5, unit="percent", min=0, max=100,
          steps=HEALTH_STEPS)
    b.add("stat", "Maintenance", "In maintenance, faults do not count and health alerts pause.",
          [(f"pvc_cluster_maintenance{{{C}}}", "")], w=3, h=5, mappings=onoff("off", "on"))
    b.add("stat", "Faults", "Faults by status (new: counts against health; ack: acknowledged).",
          [(f"pvc_cluster_faults{{{C}}}", "{{status}}")], w=4, h=5)
    b.add("stat", "Primary node and version", "The primary coordinator and its PVC version.",
          [(f"pvc_info{{{C}}}", "{{primary_node}} ({{version}})")], w=5, h=5, text_mode="name")
    b.add("stat", "Ceph health", "ceph_health_status from the active ceph-mgr's prometheus module.",
          [(f"ceph_health_status{{{C}}}", "")], w=4, h=5,
          mappings=[{"type": "value", "options": {
              "0": {"text": "HEALTH_OK", "color": "green", "index": 0},
              "1": {"text": "HEALTH_WARN", "color": "orange", "index": 1},
              "2": {"text": "HEALTH_ERR", "color": "red", "index": 2}}}])
    b.add("stat", "API certificate", "Time left until the API's TLS certificate expires.",
          [(f"pvc_api_certificate_expiry_timestamp_seconds{{{C}}} - time()", "")], w=4, h=5,
          unit="dtdurations", steps=[{"color": "red", "value": None}, {"color": "orange", "value": 604800},
                                     {"color": "green", "value": 1814400}])
    b.add("timeseries", "Cluster health", "Cluster health over time.",
          [(f"pvc_cluster_health{{{C}}}", "cluster")], unit="percent", min=0, max=100)
    b.add("timeseries", "Node health", "Each node's health (no line while a node is N/A).",
          [(f"pvc_node_health{{{C}}}", "{{node}}")], unit="percent", min=0, max=100)
    b.add("timeseries", "Health check deductions", "What each node health check deducts (non-zero only).",
          [(f"pvc_node_health_plugin_delta{{{C}}} > 0", "{{node}} {{plugin}}")], w=24, h=7)

    b.row("States")
    for title, metric in (("Node daemons", "pvc_node_daemon_states"),
                          ("Node domains", "pvc_node_domain_states"), ("VMs", "pvc_vm_states"),
                          ("OSDs up/down", "pvc_ceph_osd_up_states"),
                          ("OSDs in/out", "pvc_ceph_osd_in_states")):
        b.add("bargauge", title, f"{title} by state.", [(f"{metric}{{{C}}} > 0", "{{state}}")],
              w=4 if title == "VMs" else 5, h=6, instant=True)
    b.add("stat", "Objects", "How many of each object the cluster holds.",
          [(f"pvc_{name}{{{C}}}", label) for name, label in (
              ("nodes", "Nodes"), ("vms", "VMs"), ("networks", "Networks"), ("osds", "OSDs"),
              ("pools", "Pools"), ("volumes", "Volumes"), ("snapshots", "Snapshots"))], w=24, h=4)

    b.row("Utilisation")
    for title, metric in (("CPU (N-1)", "cpu"), ("Memory used (N-1)", "memory_real"),
                          ("Memory allocated (N-1)", "memory_allocated"),
                          ("Memory provisioned (N-1)", "memory_provisioned"), ("Disk", "disk"),
                          ("Network", "network")):
        b.add("gauge", title, f"pvc_cluster_{metric}_utilization: CPU and memory against the cluster "
              "without its largest node.", [(f"pvc_cluster_{metric}_utilization{{{C}}}", "")], w=4, h=5,
              unit="percent", min=0, max=100, steps=[{"color": "green", "value": None},
                                                     {"color": "orange", "value": 80},
                                                     {"color": "red", "value": 90}])
    b.add("timeseries", "Cluster utilisation", "All cluster utilisation figures over time.",
          [(f"pvc_cluster_{m}_utilization{{{C}}}", m) for m in (
              "cpu", "memory_real", "memory_allocated", "memory_provisioned", "disk", "network")],
          w=24, unit="percent", min=0)

    b.row("Nodes")
    b.add("timeseries", "CPU utilisation", "1-minute load over host CPUs.",
          [(f"pvc_node_cpu_utilization{{{C}}}", "{{node}}")], unit="percent", min=0)
    b.add("timeseries", "Load average", "1-minute load average.",
          [(f"pvc_node_load_average{{{C}}}", "{{node}}")], min=0)
    b.add("timeseries", "Memory used", "Used memory over total.",
          [(f"pvc_node_used_memory_utilization{{{C}}}", "{{node}}")], unit="percent", min=0)
    b.add("timeseries", "Memory allocated and provisioned", "VM memory of running VMs (allocated) and "
          "of all VMs placed on the node (provisioned), over total.",
          [(f"pvc_node_allocated_memory_utilization{{{C}}}", "{{node}} allocated"),
           (f"pvc_node_provisioned_memory_utilization{{{C}}}", "{{node}} provisioned")],
          unit="percent", min=0)
    b.add("timeseries", "Network traffic (+ rx / - tx)", "Sum over the node's interfaces.",
          [(f"pvc_node_network_traffic_rx{{{C}}}", "{{node}} rx"),
           (f"-pvc_node_network_traffic_tx{{{C}}}", "{{node}} tx")], unit="bps")
    b.add("timeseries", "Network utilisation", "Traffic over link speed, averaged over the node's links.",
          [(f"pvc_node_network_utilization{{{C}}}", "{{node}}")], unit="percent", min=0)
    b.add("timeseries", "Running VMs", "Domains running on each node.",
          [(f"pvc_node_domains_count{{{C}}}", "{{node}}")], min=0)
    b.add("timeseries", "vCPUs allocated / host CPUs", "vCPUs of running VMs against the host's CPUs.",
          [(f"pvc_node_allocated_vcpus{{{C}}}", "{{node}} vCPUs"),
           (f"pvc_node_host_cpus{{{C}}}", "{{node}} CPUs")], min=0)

    b.row("Pools and OSDs")
    b.add("timeseries", "Pool usage", "Used share of each pool.",
          [(f"pvc_ceph_pool_used_percent{{{C}}}", "{{pool}}")], unit="percent", min=0)
    b.add("timeseries", "Pool stored data", "Bytes stored in each pool (before replication).",
          [(f"pvc_ceph_pool_stored_bytes{{{C}}}", "{{pool}}")], unit="bytes", min=0)
    b.add("timeseries", "Pool operations (+ read / - write)", "Operations per second on each pool.",
          [(f"rate(pvc_ceph_pool_read_ops{{{C}}}[{RATE}])", "{{pool}} read"),
           (f"-rate(pvc_ceph_pool_write_ops{{{C}}}[{RATE}])", "{{pool}} write")], unit="iops")
    b.add("timeseries", "Pool throughput (+ read / - write)", "Bytes per second on each pool.",
          [(f"rate(pvc_ceph_pool_read_bytes{{{C}}}[{RATE}])", "{{pool}} read"),
           (f"-rate(pvc_ceph_pool_write_bytes{{{C}}}[{RATE}])", "{{pool}} write")], unit="Bps")
    b.add("timeseries", "OSD usage", "Used share of each OSD.",
          [(f"pvc_ceph_osd_util{{{C}}}", "osd.{{osd}}")], unit="percent", min=0)
    b.add("timeseries", "OSD placement groups", "Placement groups on each OSD.",
          [(f"pvc_ceph_osd_pgs{{{C}}}", "osd.{{osd}}")], min=0)
    b.add("timeseries", "OSD operations (+ read / - write)", "Operations per second on each OSD.",
          [(f"pvc_ceph_osd_rd_ops{{{C}}}", "osd.{{osd}} read"),
           (f"-pvc_ceph_osd_wr_ops{{{C}}}", "osd.{{osd}} write")], unit="iops")
    b.add("timeseries", "OSD throughput (+ read / - write)", "Bytes per second on each OSD.",
          [(f"pvc_ceph_osd_rd_data{{{C}}}", "osd.{{osd}} read"),
           (f"-pvc_ceph_osd_wr_data{{{C}}}", "osd.{{osd}} write")], unit="Bps")

    b.row("Storage performance (Ceph)")
    b.add("timeseries", "Client operations (+ read / - write)", "From the OSDs' op counters.",
          [(f"sum(rate(ceph_osd_op_r{{{C}}}[{RATE}]))", "read"),
           (f"-sum(rate(ceph_osd_op_w{{{C}}}[{RATE}]))", "write")], unit="iops")
    b.add("timeseries", "Client throughput (+ read / - write)", "From the OSDs' op byte counters.",
          [(f"sum(rate(ceph_osd_op_r_out_bytes{{{C}}}[{RATE}]))", "read"),
           (f"-sum(rate(ceph_osd_op_w_in_bytes{{{C}}}[{RATE}]))", "write")], unit="Bps")
    b.add("timeseries", "Operation latency", "Mean read and write latency over all OSDs.",
          [(f"1000 * sum(rate(ceph_osd_op_r_latency_sum{{{C}}}[{RATE}])) / "
            f"clamp_min(sum(rate(ceph_osd_op_r_latency_count{{{C}}}[{RATE}])), 1)", "read"),
           (f"1000 * sum(rate(ceph_osd_op_w_latency_sum{{{C}}}[{RATE}])) / "
            f"clamp_min(sum(rate(ceph_osd_op_w_latency_count{{{C}}}[{RATE}])), 1)", "write")],
          unit="ms", min=0)
    b.add("timeseries", "OSD commit and apply latency", "Per OSD, as Ceph reports them.",
          [(f"ceph_osd_commit_latency_ms{{{C}}}", "{{ceph_daemon}} commit"),
           (f"ceph_osd_apply_latency_ms{{{C}}}", "{{ceph_daemon}} apply")], unit="ms", min=0)
    b.add("timeseries", "Placement groups", "All, active, clean and degraded placement groups.",
          [(f"sum(ceph_pg_total{{{C}}})", "total"), (f"sum(ceph_pg_active{{{C}}})", "active"),
           (f"sum(ceph_pg_clean{{{C}}})", "clean"), (f"sum(ceph_pg_degraded{{{C}}})", "degraded")], min=0)
    b.add("timeseries", "Raw capacity", "Raw bytes used and total over all OSDs.",
          [(f"ceph_cluster_total_used_bytes{{{C}}}", "used"), (f"ceph_cluster_total_bytes{{{C}}}", "total")],
          unit="bytes", min=0)

    b.row("ZooKeeper")
    b.add("timeseries", "Latency", "Average request latency of each ZooKeeper server.",
          [(f"zk_avg_latency{{{C}}}", "{{server}}")], unit="ms", min=0)
    b.add("timeseries", "Connections and outstanding requests", "Alive client connections; requests queued.",
          [(f"zk_num_alive_connections{{{C}}}", "{{server}} connections"),
           (f"zk_outstanding_requests{{{C}}}", "{{server}} outstanding")], min=0)
    b.add("timeseries", "Data", "Znodes, watches and the approximate data size.",
          [(f"max(zk_znode_count{{{C}}})", "znodes"), (f"max(zk_watch_count{{{C}}})", "watches"),
           (f"max(zk_approximate_data_size{{{C}}})", "data bytes")], min=0)
    b.add("timeseries", "Packets (+ received / - sent)", "Packets per second.",
          [(f"rate(zk_packets_received{{{C}}}[{RATE}])", "{{server}} received"),
           (f"-rate(zk_packets_sent{{{C}}}[{RATE}])", "{{server}} sent")], unit="pps")
    return dashboard("pvc-cluster", "PVC Cluster", "Health, states and utilisation of a PVC cluster, "
                     "its Ceph storage and its ZooKeeper.", b, variables())


def vms() -> dict[str, Any]:
    b = Board()
    b.row("Details")
    b.add("stat", "State", "The VM's state.", [(f"pvc_vm_state{{{VM}}}", "{{state}}")], w=4, h=4,
          text_mode="name", instant=True)
    b.add("stat", "Node", "The node the VM runs on.", [(f"pvc_vm_active_node{{{VM}}}", "{{node}}")], w=4,
          h=4, text_mode="name", instant=True)
    b.add("stat", "vCPUs", "Virtual CPUs.", [(f"pvc_vm_vcpus{{{VM}}}", "")], w=3, h=4)
    b.add("stat", "Memory", "Memory given to the VM.", [(f"pvc_vm_memory{{{VM}}}", "")], w=3, h=4,
          unit="mbytes")
    b.add("stat", "Autostart", "Started again when its node returns.", [(f"pvc_vm_autostart{{{VM}}}", "")],
          w=3, h=4, mappings=onoff("no", "yes", "text", "green"))
    b.add("stat", "Snapshots", "VM snapshots (pvc vm snapshot list).", [(f"pvc_vm_snapshots{{{VM}}}", "")],
          w=3, h=4)
    b.add("stat", "Last backup", "Time since the last successful backup.",
          [(f"time() - pvc_vm_backup_last_success_timestamp{{{VM}}}", "")], w=4, h=4, unit="dtdurations",
          steps=[{"color": "green", "value": None}, {"color": "orange", "value": 129600},
                 {"color": "red", "value": 172800}])
    b.add("stat", "Description", "The VM's description.",
          [(f"pvc_vm_description{{{VM}}}", "{{description}}")], w=12, h=3, text_mode="name", instant=True)
    b.add("stat", "Tags", "The VM's tags.", [(f"pvc_vm_tags{{{VM}}}", "{{tag}}")], w=12, h=3,
          text_mode="name", instant=True)

    b.row("CPU and memory")
    b.add("timeseries", "CPU time", "CPU time used per second, in percent of one CPU.",
          [(f"rate(pvc_vm_vcpus_cpu_time{{{VM}}}[{RATE}]) / 10", "total"),
           (f"rate(pvc_vm_vcpus_user_time{{{VM}}}[{RATE}]) / 10", "user"),
           (f"rate(pvc_vm_vcpus_system_time{{{VM}}}[{RATE}]) / 10", "system")], unit="percent", min=0)
    b.add("timeseries", "Memory", "The guest's memory statistics (balloon driver).",
          [(f"pvc_vm_memory_stats_{s}{{{VM}}} * 1024", s) for s in (
              "actual", "rss", "available", "usable", "unused", "disk_caches")], unit="bytes", min=0)
    b.add("timeseries", "Swap and page faults", "Swap in KiB per second, page faults per second.",
          [(f"rate(pvc_vm_memory_stats_{s}{{{VM}}}[{RATE}])", s) for s in (
              "swap_in", "swap_out", "major_fault", "minor_fault")], min=0)

    b.row("Network")
    b.add("timeseries", "Traffic (+ received / - sent)", "Bits per second on each NIC (by VNI).",
          [(f"rate(pvc_vm_network_rd_bits{{{VM}}}[{RATE}])", "{{vni}} received"),
           (f"-rate(pvc_vm_network_wr_bits{{{VM}}}[{RATE}])", "{{vni}} sent")], unit="bps")
    b.add("timeseries", "Packets (+ received / - sent)", "Packets per second on each NIC.",
          [(f"rate(pvc_vm_network_rd_packets{{{VM}}}[{RATE}])", "{{vni}} received"),
           (f"-rate(pvc_vm_network_wr_packets{{{VM}}}[{RATE}])", "{{vni}} sent")], unit="pps")
    b.add("timeseries", "Drops and errors", "Per second on each NIC.",
          [(f"rate(pvc_vm_network_{k}{{{VM}}}[{RATE}])", f"{{{{vni}}}} {k}") for k in (
              "rd_drops", "wr_drops", "rd_errors", "wr_errors")], w=24, min=0)

    b.row("Disks")
    b.add("timeseries", "Throughput (+ read / - write)", "Bytes per second on each disk.",
          [(f"rate(pvc_vm_disk_rd_bytes{{{VM}}}[{RATE}])", "{{disk}} read"),
           (f"-rate(pvc_vm_disk_wr_bytes{{{VM}}}[{RATE}])", "{{disk}} write")], unit="Bps")
    b.add("timeseries", "Operations (+ read / - write)", "Requests per second on each disk.",
          [(f"rate(pvc_vm_disk_rd_req{{{VM}}}[{RATE}])", "{{disk}} read"),
           (f"-rate(pvc_vm_disk_wr_req{{{VM}}}[{RATE}])", "{{disk}} write")], unit="iops")
    vm_variable = query_variable("vm", "VM", 'label_values(pvc_vm_state{pvc_cluster_id="$cluster_id"}, vm)')
    return dashboard("pvc-vms", "PVC VMs", "State, CPU, memory, network and disk of one VM.", b,
                     variables(vm_variable))


def render() -> dict[str, str]:
    """File name -> JSON text, as committed."""
    return {name: json.dumps(board, indent=2) + "\n"
            for name, board in (("pvc-cluster.json", cluster()), ("pvc-vms.json", vms()))}


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
