"""Faults and cluster health on the lab (issue #16): real Ceph health checks, a real dead node, and
the primary's cluster checks (pvc.node.services.clusterhealth) running in the node daemons.

* an OSD stopped: cluster health drops and CEPH_WARN_OSD_DOWN appears (upstream's id); when the
  OSD returns the fault is resolved by itself (then listed only with ?all=true);
* maintenance on: the same outage raises no new fault (over two passes of the primary's checks,
  each proven by a marker fault it resolves, not guessed with a sleep);
* a node killed: DEAD_NODE_<NODE> and its health N/A; readied again, the fault is resolved.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from pvc.cluster import faults
from pvc.core import schema
from pvc.core.config import TimerSettings
from pvc.core.records import FaultRecord
from pvc.lab import ceph
from pvc.lab import main as labmain
from pvc.lab.plan import LabPlan
from pvc.lab.pvcnodes import lab_zk
from tests.system import ha
from tests.system.helpers import call, wait

OSD_NODE = "hv3"
# the storage pass (every keepalive) then the primary's checks (every monitoring interval)
PASS = TimerSettings().monitoring_interval + 10


def active(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in call(api, "GET", "/faults")}


def every(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in call(api, "GET", "/faults", params={"all": "true"})}


def ceph_text(api: httpx.Client) -> str:
    return str(call(api, "GET", "/storage/ceph/status")["ceph_data"])


def healthy_start(api: httpx.Client) -> None:
    """Ceph HEALTH_OK and no fault left from before (they come back if their condition holds)."""
    wait("Ceph HEALTH_OK", lambda: "HEALTH_OK" in ceph_text(api), 300)
    call(api, "DELETE", "/faults")


def ceph_faults(found: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(i for i in found if i.startswith(("CEPH_WARN_", "CEPH_ERR_", "CEPH_OSD_OUT_")))


_markers = itertools.count(1)


def checks_pass(lab: LabPlan) -> None:
    """Return once a whole pass of the primary's cluster checks began after this call: an active
    VM_FAILED_<no such VM> fault is planted (written directly: in maintenance no fault can be
    raised) and only a pass resolves it, having read the faults, then the conditions, after the
    plant. Replaces sleeping a guessed pass length (the pass runs every monitoring interval)."""
    fid = faults.fault_id(faults.fault_name("VM_FAILED", f"passmark{next(_markers)}"))
    zk = lab_zk(lab)
    try:
        now = faults.fault_time()
        zk.put(schema.fault(fid), FaultRecord(id=fid, first_reported=now, last_reported=now,
                                              health_delta=0, message="test pass marker").doc())
        wait(f"a pass of the primary's checks to resolve {fid}",
             lambda: zk.get(schema.fault(fid), {}).get("active") is False, 3 * PASS)
        zk.delete(schema.fault(fid))
    finally:
        zk.stop()


def test_osd_down_fault_appears_and_resolves(lab: LabPlan, api: httpx.Client) -> None:
    healthy_start(api)
    node = lab.node(OSD_NODE)
    ceph.stop_osd(lab, node)
    try:
        fault = wait("CEPH_WARN_OSD_DOWN raised", lambda: active(api).get("CEPH_WARN_OSD_DOWN"), 3 * PASS)
        assert fault["status"] == "new" and fault["health_delta"] == 10 and fault["active"] is True
        assert fault["message"].startswith("HEALTH_WARN OSD_DOWN: ")
        status = call(api, "GET", "/status")
        assert status["cluster_health"]["health"] <= 90
        assert "CEPH_WARN_OSD_DOWN" in [m["id"] for m in status["cluster_health"]["messages"]]
    finally:
        ceph.start_osd(lab, node)
    wait("CEPH_WARN_OSD_DOWN resolved", lambda: "CEPH_WARN_OSD_DOWN" not in active(api), 180 + PASS)
    resolved = every(api)["CEPH_WARN_OSD_DOWN"]
    assert resolved["active"] is False and resolved["resolved_at"] and resolved["health_delta"] == 0
    wait("Ceph HEALTH_OK again", lambda: "HEALTH_OK" in ceph_text(api), 300)
    wait("every Ceph fault resolved", lambda: ceph_faults(active(api)) == [], 2 * PASS)
    status = call(api, "GET", "/status")
    assert not any(m["id"].startswith("CEPH_") for m in status["cluster_health"]["messages"])


def test_maintenance_raises_no_new_faults(lab: LabPlan, api: httpx.Client) -> None:
    healthy_start(api)
    call(api, "POST", "/status", params={"state": "true"})
    node = lab.node(OSD_NODE)
    try:
        ceph.stop_osd(lab, node)
        try:
            wait("Ceph to see the OSD down", lambda: "1 osds down" in ceph_text(api), 120)
            # two passes of the primary's checks with the outage in /ceph/status
            checks_pass(lab)
            checks_pass(lab)
            assert ceph_faults(active(api)) == []
            assert call(api, "GET", "/status")["maintenance"] == "true"
        finally:
            ceph.start_osd(lab, node)
        wait("Ceph HEALTH_OK again", lambda: "HEALTH_OK" in ceph_text(api), 300)
    finally:
        call(api, "POST", "/status", params={"state": "false"})
    checks_pass(lab)                       # a pass out of maintenance: the outage is over
    assert ceph_faults(active(api)) == []


def test_dead_node_is_na_with_its_fault_then_resolved(lab: LabPlan, api: httpx.Client) -> None:
    healthy_start(api)
    victim = OSD_NODE
    fault_id = f"DEAD_NODE_{victim.upper()}"
    ha.other_than(api, lab, victim)
    labmain.node_kill(lab, lab.node(victim))
    try:
        fault = wait(f"{fault_id} raised", lambda: active(api).get(fault_id), 120)
        assert fault["health_delta"] == 50 and fault["status"] == "new"
        assert fault["message"].startswith(f"Node {victim} is dead")
        assert call(api, "GET", f"/node/{victim}")[0]["health"] == "N/A"
        status = call(api, "GET", "/status")
        assert status["node_health"][victim]["health"] == "None"
        assert status["cluster_health"]["health"] <= 50
        assert [i for i in active(api) if i.startswith("DEAD_NODE_")] == [fault_id]   # one, not two
        for name, info in status["node_health"].items():   # the others: a number once their checks ran
            assert name == victim or isinstance(info["health"], int) or info["health"] == "None"
        wait(f"{victim}'s fencing chain done", lambda: ha.fencing(api, victim).get("phase") == "done", 120)
    finally:
        ha.restore(lab, api, victim)
    wait(f"{fault_id} resolved", lambda: fault_id not in active(api), 2 * PASS)
    assert every(api)[fault_id]["active"] is False
    wait("Ceph HEALTH_OK again", lambda: "HEALTH_OK" in ceph_text(api), 300)
