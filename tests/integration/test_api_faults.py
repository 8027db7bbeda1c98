"""Fault routes: list and sort, get one, acknowledge and delete, one or all."""

from __future__ import annotations

from pvc.cluster import faults
from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.apihelp import raw_request

FAULT_KEYS = {"id", "first_reported", "last_reported", "acknowledged_at", "status", "health_delta", "message"}


def three_faults(zk: ZK) -> list[str]:
    """Three faults reported one second apart (fault times have upstream's one-second resolution)."""
    ids = []
    reports = (("DEAD_NODE_HV3", 50, "Node hv3 is dead"), ("VM_FAILED_WEB", 10, "VM web failed"),
               ("MEMORY_OVERPROVISIONED", 25, "Memory is overprovisioned"))
    for second, (key, delta, text) in enumerate(reports):
        fault = faults.raise_fault(zk, key, delta, text)
        assert fault is not None and fault.id == key        # upstream's ids are the fault names
        moment = f"2026-01-01 00:00:0{second}"
        zk.update(schema.fault(key), lambda d, m=moment: {**d, "first_reported": m, "last_reported": m})
        ids.append(fault.id)
    return ids


def test_empty_list_is_empty_array(api: Api) -> None:
    response = api.get("/faults")
    assert response.status_code == 200
    assert response.json() == []


def test_list_and_sort(api: Api, zk: ZK) -> None:
    dead, vm, memory = three_faults(zk)
    response = api.get("/faults")
    assert response.status_code == 200
    body = response.json()
    assert set(body[0]) == FAULT_KEYS | {"active", "resolved_at"}   # upstream's keys, plus ours
    assert [f["id"] for f in body] == [memory, vm, dead]  # newest report first
    by_delta = api.get("/faults", params={"sort_key": "health_delta"}).json()
    assert [f["health_delta"] for f in by_delta] == [50, 25, 10]
    by_message = api.http.request("GET", "/faults", data={"sort_key": "message"}).json()  # a form field
    assert [f["message"] for f in by_message] == ["Memory is overprovisioned", "Node hv3 is dead",
                                                  "VM web failed"]
    bad = api.get("/faults", params={"sort_key": "colour"})
    assert bad.status_code == 400
    assert bad.json()["message"]["sort_key"].startswith(
        "'colour' is not one of first_reported, last_reported")


def test_get_one_is_one_element_array(api: Api, zk: ZK) -> None:
    dead, _vm, _memory = three_faults(zk)
    response = api.get(f"/faults/{dead}")
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 1
    assert body[0]["id"] == dead
    assert body[0]["status"] == "new"
    assert body[0]["health_delta"] == 50
    missing = api.get("/faults/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404
    assert "message" in missing.json()


def test_ack_one_then_all(api: Api, zk: ZK) -> None:
    dead, vm, memory = three_faults(zk)
    response = api.put(f"/faults/{dead}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Successfully acknowledged fault(s) {dead}."}
    fault = api.get(f"/faults/{dead}").json()[0]
    assert fault["status"] == "ack"
    assert fault["acknowledged_at"]
    assert fault["health_delta"] == 0  # acknowledged faults no longer count
    assert api.get("/status").json()["cluster_health"]["health"] == 100 - 10 - 25
    response = api.put("/faults")
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully acknowledged 3 fault(s)."}
    assert {f["status"] for f in api.get("/faults").json()} == {"ack"}
    assert api.get("/status").json()["cluster_health"]["health"] == 100
    assert api.put("/faults/0123456789abcdef0123456789abcdef").status_code == 404
    assert {vm, memory} <= {f["id"] for f in api.get("/faults").json()}


def test_delete_one_then_all(api: Api, zk: ZK) -> None:
    dead, _vm, _memory = three_faults(zk)
    response = api.delete(f"/faults/{dead}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Successfully deleted fault(s) {dead}."}
    assert api.get(f"/faults/{dead}").status_code == 404
    assert api.delete(f"/faults/{dead}").status_code == 404
    assert len(api.get("/faults").json()) == 2
    response = api.delete("/faults")
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully deleted 2 fault(s)."}
    assert api.get("/faults").json() == []
    assert zk.children(schema.FAULTS) == []


def test_odd_fault_ids_are_404(api: Api, zk: ZK) -> None:
    three_faults(zk)
    for fid in ("..", ".", "%2E%2E", "x%2Fy", "%00", "%ED%A0%80", "zookeeper"):
        for method in ("GET", "PUT", "DELETE"):
            status, body = raw_request(api, method, f"/faults/{fid}")
            assert status == 404, (method, fid, body)
    assert len(zk.children(schema.FAULTS)) == 3
