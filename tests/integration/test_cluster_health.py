"""The primary's cluster checks (pvc.node.services.clusterhealth) against a real ZooKeeper, and what
the API and CLI show of them: each upstream fault raised while its condition lasts and resolved
when it ends, none new in maintenance, ack and delete as upstream, node health N/A when unknown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pvc.cluster import faults, state
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import Memory, VMRecord, VMStatus
from pvc.core.zk import ZK
from pvc.node.services.clusterhealth import ClusterChecks, ClusterHealthService
from tests.conftest import Api, wait_for
from tests.integration.apihelp import node_record, ok, register_nodes


def ids(zk: ZK, resolved: bool = False) -> list[str]:
    return sorted(f.id for f in faults.load_faults(zk, resolved))


def health(zk: ZK) -> int:
    return faults.cluster_health(faults.load_faults(zk))


def ceph_status(zk: ZK, checks: dict[str, tuple[str, str]], when: float | None = None) -> None:
    """/ceph/status as the primary's storage pass writes it (only the parts the checks read)."""
    overall = "HEALTH_OK"
    if checks:
        overall = "HEALTH_ERR" if any(s == "HEALTH_ERR" for s, _ in checks.values()) else "HEALTH_WARN"
    zk.put(schema.CEPH_STATUS, {"node": "hv1", "time": time.time() if when is None else when,
                                "health": {"status": overall, "checks": {
                                    name: {"severity": sev, "summary": {"message": text}, "muted": False}
                                    for name, (sev, text) in checks.items()}}})


def add_vm(zk: ZK, uuid: str, name: str, vm_state: str, running: bool = False, reason: str = "") -> None:
    zk.put(schema.vm(uuid), VMRecord(uuid=uuid, name=name, xml="<domain/>", state=vm_state, node="hv1").doc())
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=running, failed_reason=reason).doc())


@pytest.fixture
def checks(zk: ZK) -> ClusterChecks:
    state.ensure_cluster(zk, "test")
    register_nodes(zk, None, *[node_record(n, memory=Memory(total=8000)) for n in ("hv1", "hv2", "hv3")])
    return ClusterChecks(zk)


def test_ceph_faults_per_check_raise_and_resolve(zk: ZK, checks: ClusterChecks) -> None:
    ceph_status(zk, {"OSD_DOWN": ("HEALTH_WARN", "1 osds down"),
                     "PG_DAMAGED": ("HEALTH_ERR", "Possible data damage: 1 pg inconsistent")})
    result = checks.run_once()
    assert sorted(result.raised) == ["CEPH_ERR_PG_DAMAGED", "CEPH_WARN_OSD_DOWN"]
    warn = faults.get_fault(zk, "CEPH_WARN_OSD_DOWN")
    assert (warn.health_delta, warn.message) == (10, "HEALTH_WARN OSD_DOWN: 1 osds down")
    assert faults.get_fault(zk, "CEPH_ERR_PG_DAMAGED").health_delta == 50
    assert health(zk) == 40
    # one check ends: that fault is resolved, the other kept
    ceph_status(zk, {"PG_DAMAGED": ("HEALTH_ERR", "Possible data damage: 1 pg inconsistent")})
    result = checks.run_once()
    assert result.resolved == ["CEPH_WARN_OSD_DOWN"] and result.kept == ["CEPH_ERR_PG_DAMAGED"]
    assert ids(zk) == ["CEPH_ERR_PG_DAMAGED"] and health(zk) == 50
    assert ids(zk, resolved=True) == ["CEPH_ERR_PG_DAMAGED", "CEPH_WARN_OSD_DOWN"]
    # a stale status decides nothing: no resolution on old news
    ceph_status(zk, {}, when=time.time() - 3600)
    assert checks.run_once().resolved == [] and ids(zk) == ["CEPH_ERR_PG_DAMAGED"]
    ceph_status(zk, {})
    assert checks.run_once().resolved == ["CEPH_ERR_PG_DAMAGED"]
    assert ids(zk) == [] and health(zk) == 100
    # the same check again: active again, as a new occurrence
    ceph_status(zk, {"OSD_DOWN": ("HEALTH_WARN", "2 osds down")})
    assert checks.run_once().raised == ["CEPH_WARN_OSD_DOWN"]
    again = faults.get_fault(zk, "CEPH_WARN_OSD_DOWN")
    assert again.active and again.status == "new" and again.message.endswith("2 osds down")


def test_osd_out(zk: ZK, checks: ClusterChecks) -> None:
    for osd_id in ("0", "1"):
        zk.put(schema.osd(osd_id), {"id": osd_id, "node": "hv1", "stats": {"up": 1, "in": 1}})
    zk.update(schema.osd("1"), lambda d: {**d, "stats": {"up": 0, "in": 0}})
    assert checks.run_once().raised == ["CEPH_OSD_OUT_1"]
    fault = faults.get_fault(zk, "CEPH_OSD_OUT_1")
    assert (fault.health_delta, fault.message) == (50, "OSD 1 was marked out")
    zk.update(schema.osd("1"), lambda d: {**d, "stats": {"up": 1, "in": 1}})
    assert checks.run_once().resolved == ["CEPH_OSD_OUT_1"]


def test_memory_overprovisioned(zk: ZK, checks: ClusterChecks) -> None:
    def allocate(each: int) -> None:
        for name in ("hv1", "hv2", "hv3"):
            zk.update(schema.node(name), lambda d: {**d, "memory": {**d["memory"], "allocated": each}})

    allocate(5000)                      # 15000 < 24000 - 8000
    assert checks.run_once().raised == []
    allocate(6000)                      # 18000 >= 16000
    assert checks.run_once().raised == ["MEMORY_OVERPROVISIONED"]
    fault = faults.get_fault(zk, "MEMORY_OVERPROVISIONED")
    assert fault.health_delta == 50
    assert fault.message.startswith("Cluster memory was overprovisioned: 18000 MiB")
    allocate(1000)
    assert checks.run_once().resolved == ["MEMORY_OVERPROVISIONED"]


def test_vm_failed_and_not_recovered(zk: ZK, checks: ClusterChecks) -> None:
    add_vm(zk, "u1", "web", "fail", reason="libvirt: no such disk")
    add_vm(zk, "u2", "db", "stop")
    # fencing left db on a dead node (its own words), and an older lower-case fault exists
    faults.raise_fault(zk, "VM_NOT_RECOVERED_DB", 10, "VM db ran on dead node hv3 and was not recovered")
    faults.raise_fault(zk, "VM_FAILED_web", 10, "VM web failed (written before names were upper-cased)")
    result = checks.run_once()
    assert result.raised == ["VM_FAILED_WEB"] and result.resolved == ["VM_FAILED_web"]
    fault = faults.get_fault(zk, "VM_FAILED_WEB")
    assert (fault.health_delta, fault.message) == (10, "VM web failed to start on hv1: libvirt: no such disk")
    assert "VM_NOT_RECOVERED_DB" in ids(zk)                       # db does not run yet
    zk.update(schema.vm("u1"), lambda d: {**d, "state": "start"})
    add_vm(zk, "u2", "db", "start", running=True)
    assert sorted(checks.run_once().resolved) == ["VM_FAILED_WEB", "VM_NOT_RECOVERED_DB"]
    assert ids(zk) == []


def test_dead_node_one_fault_with_fencing(zk: ZK, checks: ClusterChecks) -> None:
    # HA fencing declares hv2 dead: node document, fencing record, fault (pvc.node.fencing)
    zk.update(schema.node("hv2"), lambda d: {**d, "daemon_state": "dead"})
    zk.put(schema.node_fencing("hv2"), {"phase": "fencing", "reason": "keepalive lost for 20s"})
    faults.raise_fault(zk, "DEAD_NODE_HV2", 50, "Node hv2 is dead: keepalive lost for 20s")
    result = checks.run_once()
    assert result.kept == ["DEAD_NODE_HV2"] and ids(zk) == ["DEAD_NODE_HV2"]
    assert faults.get_fault(zk, "DEAD_NODE_HV2").message == "Node hv2 is dead: keepalive lost for 20s"
    zk.update(schema.node("hv3"), lambda d: {**d, "daemon_state": "fenced"})
    assert checks.run_once().raised == ["DEAD_NODE_HV3"]
    assert health(zk) == 0
    status = state.cluster_status(zk)
    assert status["node_health"]["hv2"]["health"] == "None" == status["node_health"]["hv3"]["health"]
    zk.update(schema.node("hv2"), lambda d: {**d, "daemon_state": "run"})
    assert checks.run_once().resolved == ["DEAD_NODE_HV2"]
    assert ids(zk) == ["DEAD_NODE_HV3"] and health(zk) == 50


def test_maintenance_no_new_faults_but_endings_resolve(zk: ZK, checks: ClusterChecks) -> None:
    ceph_status(zk, {"OSD_DOWN": ("HEALTH_WARN", "1 osds down")})
    checks.run_once()
    state.set_maintenance(zk, True)
    ceph_status(zk, {"OSD_DOWN": ("HEALTH_WARN", "2 osds down"), "MON_DOWN": ("HEALTH_WARN", "1 mon down")})
    add_vm(zk, "u1", "web", "fail")
    result = checks.run_once()
    assert sorted(result.refused) == ["CEPH_WARN_MON_DOWN", "VM_FAILED_WEB"] and result.raised == []
    assert ids(zk, resolved=True) == ["CEPH_WARN_OSD_DOWN"]
    assert faults.get_fault(zk, "CEPH_WARN_OSD_DOWN").message.endswith("2 osds down")   # still updated
    ceph_status(zk, {})
    assert checks.run_once().resolved == ["CEPH_WARN_OSD_DOWN"]
    state.set_maintenance(zk, False)
    assert sorted(checks.run_once().raised) == ["VM_FAILED_WEB"]


def test_resolved_faults_are_pruned(zk: ZK) -> None:
    state.ensure_cluster(zk, "test")
    faults.raise_fault(zk, "OLD", 10, "old")
    zk.update(schema.fault("OLD"), lambda d: {**d, "active": False, "resolved_at": "2020-01-01 00:00:00"})
    faults.raise_fault(zk, "NEW", 10, "new")
    faults.resolve_fault(zk, "NEW")
    assert ClusterChecks(zk, retention_days=7).run_once().pruned == ["OLD"]
    assert ids(zk, resolved=True) == ["NEW"]


def test_service_runs_only_on_the_primary(zk: ZK, config_factory: Callable[..., Path]) -> None:
    settings = load_config(str(config_factory(faults={"fault_retention_days": 3},
                                              timer={"monitoring_interval": 1})))
    assert settings.faults.fault_retention_days == 3
    state.ensure_cluster(zk, "test")
    add_vm(zk, "u1", "web", "fail")
    primary = threading.Event()
    stopping = threading.Event()
    service = ClusterHealthService(settings, zk, primary.is_set, stopping)
    service.start()
    try:
        time.sleep(2.5)
        assert ids(zk) == []                                   # not primary: nothing checked
        primary.set()
        wait_for(lambda: ids(zk) == ["VM_FAILED_WEB"], 10, message="the primary's pass")
    finally:
        stopping.set()


# -- API and CLI ------------------------------------------------------------------------------------

def test_api_lists_active_faults_and_all_with_ack_and_delete(api: Api, zk: ZK, checks: ClusterChecks) -> None:
    ceph_status(zk, {"OSD_DOWN": ("HEALTH_WARN", "1 osds down"), "MON_DOWN": ("HEALTH_WARN", "1 mon down")})
    checks.run_once()
    listed = ok(api.get("/faults"))
    assert sorted(f["id"] for f in listed) == ["CEPH_WARN_MON_DOWN", "CEPH_WARN_OSD_DOWN"]
    assert all(f["active"] is True and f["resolved_at"] == "" for f in listed)
    assert ok(api.get("/status"))["cluster_health"]["health"] == 80
    # ack: kept while the check lasts, no longer counts; the checks do not un-acknowledge it
    ok(api.put("/faults/CEPH_WARN_MON_DOWN"))
    checks.run_once()
    assert ok(api.get("/faults/CEPH_WARN_MON_DOWN"))[0]["status"] == "ack"
    assert ok(api.get("/status"))["cluster_health"]["health"] == 90
    # the OSD check ends: resolved, hidden by default, listed with all=true, health back up
    ceph_status(zk, {"MON_DOWN": ("HEALTH_WARN", "1 mon down")})
    checks.run_once()
    assert [f["id"] for f in ok(api.get("/faults"))] == ["CEPH_WARN_MON_DOWN"]
    every = {f["id"]: f for f in ok(api.get("/faults", params={"all": "true"}))}
    assert every["CEPH_WARN_OSD_DOWN"]["active"] is False and every["CEPH_WARN_OSD_DOWN"]["resolved_at"]
    assert every["CEPH_WARN_OSD_DOWN"]["health_delta"] == 0
    status = ok(api.get("/status"))
    assert status["cluster_health"] == {"health": 100, "messages": []}
    # delete: gone until it fires again (next pass, a new fault)
    ok(api.delete("/faults/CEPH_WARN_MON_DOWN"))
    assert ok(api.get("/faults")) == []
    checks.run_once()
    back = ok(api.get("/faults/CEPH_WARN_MON_DOWN"))[0]
    assert back["status"] == "new" and back["health_delta"] == 10
    assert api.get("/faults", params={"all": "maybe"}).status_code == 400


def test_status_json_node_health_for_monitoring(api: Api, zk: ZK) -> None:
    """`pvc cluster status --format json` is the API's /status: what Munin and CheckMK read."""
    state.ensure_cluster(zk, "test")
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, api,
                   node_record("hv1", coordinator_state="primary", health=80, health_plugins=["disk", "load"],
                               health_details=[{"name": "disk", "health_delta": 20, "message": "sda failing"},
                                               {"name": "load", "health_delta": 0, "message": "OK"}]),
                   node_record("hv2", daemon_state="stop", health=100, health_plugins=["disk"]),
                   node_record("hv3", daemon_state="dead", health=100, health_plugins=["disk"]),
                   node_record("hv4"))                     # never computed: the record's default
    status = ok(api.get("/status"))
    assert status["maintenance"] == "false"
    assert status["node_health"]["hv1"] == {"health": 80, "messages": ["'disk': sda failing"]}
    assert {n: status["node_health"][n]["health"] for n in ("hv2", "hv3", "hv4")} == \
        {"hv2": "None", "hv3": "None", "hv4": "None"}
    nodes = {n["name"]: n for n in ok(api.get("/node"))}
    assert nodes["hv1"]["health"] == 80
    assert {nodes[n]["health"] for n in ("hv2", "hv3", "hv4")} == {"N/A"}
    ok(api.post("/status", params={"state": "true"}))
    assert ok(api.get("/status"))["maintenance"] == "true"


def test_cli_fault_list_all(api: Api, zk: ZK, tmp_path: Path) -> None:
    state.ensure_cluster(zk, "test")
    faults.raise_fault(zk, "VM_FAILED_WEB", 10, "VM web failed")
    faults.raise_fault(zk, "CEPH_OSD_OUT_1", 50, "OSD 1 was marked out")
    faults.resolve_fault(zk, "VM_FAILED_WEB")
    client = tmp_path / "client"
    client.mkdir()
    shutil.copy(api.daemon.config, client / "pvc.conf")

    def pvc(*args: str) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PVC_", "NO_COLOR"))}
        env.update({"PVC_CLIENT_DIR": str(client), "PVC_CONFIG_FILE": str(client / "pvc.conf")})
        done = subprocess.run([sys.executable, "-m", "pvc.cli", "-q", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert [f["id"] for f in json.loads(pvc("cluster", "fault", "list", "-f", "json"))] == ["CEPH_OSD_OUT_1"]
    every = json.loads(pvc("cluster", "fault", "list", "--all", "-f", "json"))
    assert sorted(f["id"] for f in every) == ["CEPH_OSD_OUT_1", "VM_FAILED_WEB"]
    table = pvc("cluster", "fault", "list", "--all", "-f", "long")
    assert "resolved" in table and "Resolved" in table
