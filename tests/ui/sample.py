"""A small, realistic cluster written into ZooKeeper for UI tests, screenshots and bench/ui.py:
nodes as their daemons report them, faults, VMs defined through the API, tasks and node logs.

Some values carry XSS attempts (XSS_*): a page must show them as text, never run them.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

import httpx

from pvc.cluster import faults, tasks
from pvc.core import schema
from pvc.core.records import Memory, NodeRecord, VCpu
from pvc.core.taskkinds import CLUSTER_SELFTEST
from pvc.core.zk import ZK

# Each tries to run script if a page put it in as markup; `window.__pvc_xss` is the tell.
XSS_SCRIPT = "<script>window.__pvc_xss=1</script>"
XSS_IMG = "<img src=x onerror=window.__pvc_xss=2>"
XSS_DESCRIPTION = f"Web tier {XSS_SCRIPT}{XSS_IMG} & friends"
XSS_TAG = "<img src=x onerror=window.__pvc_xss=3>"          # tags may not contain '/'
XSS_FAULT = f"VM {XSS_IMG} failed to start {XSS_SCRIPT}"
XSS_HEALTH = f"disk check: {XSS_SCRIPT} sda is 91% full"
XSS_LOG = f"2026-01-01 00:00:00 INFO guest said {XSS_SCRIPT} \x1b[31mred\x1b[0m"

GIB = 1024


def node(name: str, mode: str = "coordinator", coordinator_state: str = "secondary",
         daemon_state: str = "run", domain_state: str = "ready", total_gib: int = 64, used_gib: float = 20,
         load: float = 1.2, cpus: int = 16, vms: int = 0, health: int | None = 100,
         details: list[dict[str, Any]] | None = None) -> NodeRecord:
    total = total_gib * GIB
    used = int(used_gib * GIB)
    return NodeRecord(
        name=name, mode=mode, daemon_state=daemon_state, coordinator_state=coordinator_state,
        domain_state=domain_state, pvc_version="1.0.3", cpu_count=cpus, kernel="6.1.0-28-amd64",
        os="linux", arch="x86_64", keepalive=time.time(), load=load,
        memory=Memory(total=total, used=used, free=total - used, allocated=used + 4 * GIB,
                      provisioned=used + 8 * GIB),
        vcpu=VCpu(total=cpus, allocated=vms * 2), domains_count=vms, health=health,
        health_plugins=[d["name"] for d in details or []] or ["load", "disk"],
        health_details=details or [
            {"name": "load", "last_run": time.time(), "health_delta": 0, "message": "load is normal"},
            {"name": "disk", "last_run": time.time(), "health_delta": 0, "message": "all disks below 80%"},
        ],
        interfaces={"ens1": {"state": "up", "link_speed": 10000, "rx_bps": 1200000, "tx_bps": 800000},
                    "ens2": {"state": "up", "link_speed": 10000, "rx_bps": 40000, "tx_bps": 52000}},
    )


def nodes(zk: ZK) -> list[NodeRecord]:
    """hv1 primary, hv2 and hv3 secondary coordinators, hv4 a hypervisor flushed for maintenance."""
    records = [
        node("hv1", coordinator_state="primary", used_gib=28, load=2.4, vms=4),
        node("hv2", used_gib=35, load=3.1, vms=5, health=90, details=[
            {"name": "disk", "last_run": time.time(), "health_delta": 10, "message": XSS_HEALTH}]),
        node("hv3", used_gib=18, load=0.8, vms=3),
        node("hv4", mode="hypervisor", coordinator_state="client", domain_state="flushed", used_gib=2,
             load=0.1, vms=0),
    ]
    zk.put(schema.PRIMARY_NODE, "hv1")
    for record in records:
        zk.put(schema.node(record.name), record.doc())
    zk.put(schema.node_log("hv1"), [f"2026-01-01 00:00:{i:02d} INFO keepalive {i}: 4 VMs, load 2.4"
                                     for i in range(40)] + [XSS_LOG])
    return records


def vm_xml(name: str, description: str, memory: int = 2048, vcpus: int = 2) -> str:
    from xml.sax.saxutils import escape

    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <description>{escape(description)}</description>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>"""


VMS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    # name, node, state to set, description, tags
    ("web1", "hv1", "start", XSS_DESCRIPTION, ("web", XSS_TAG)),
    ("web2", "hv1", "start", "Web tier, second replica", ("web",)),
    ("db1", "hv2", "start", "PostgreSQL primary", ("db", "prod")),
    ("db2", "hv2", "stop", "PostgreSQL replica (stopped for an upgrade)", ("db",)),
    ("mail", "hv3", "disable", "Mail relay, retired", ()),
    ("build", "hv3", "start", "CI runner", ("ci",)),
)


def define_vms(api: httpx.Client) -> None:
    """Define the sample VMs through the API (`api` has base /api/v1 and the token)."""
    for name, where, state, description, tags in VMS:
        answer = api.post("/vm", params={"node": where, "user_tags": list(tags)},
                          data={"xml": vm_xml(name, description)})
        assert answer.status_code == 200, answer.text
        if state != "stop":
            answer = api.post(f"/vm/{name}/state", params={"state": state})
            assert answer.status_code == 200, answer.text


def fault_list(zk: ZK) -> list[str]:
    raised = [
        faults.raise_fault(zk, "VM_FAILED_WEB3", 10, XSS_FAULT),
        faults.raise_fault(zk, "MEMORY_OVERPROVISIONED", 25, "Memory is overprovisioned: 140% of the "
                                                             "cluster's RAM is allocated"),
        faults.raise_fault(zk, "CEPH_HEALTH_WARN", 5, "Ceph reports HEALTH_WARN: 1 pool has too few "
                                                      "placement groups"),
    ]
    return [f.id for f in raised if f is not None]


def task_list(zk: ZK) -> list[str]:
    made = [tasks.submit(zk, CLUSTER_SELFTEST, target="primary") for _ in range(2)]
    zk.put(schema.task_log(made[0].id), ["selftest: queued", f"note {XSS_SCRIPT}"])
    return [t.id for t in made]


def cluster(zk: ZK, api: httpx.Client) -> dict[str, Any]:
    """Everything above; returns what was made."""
    records = nodes(zk)
    define_vms(api)
    return {"nodes": records, "faults": fault_list(zk), "tasks": task_list(zk)}
