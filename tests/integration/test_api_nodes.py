"""Node routes: list with filters, one node, states, hand-over and flush requests, logs."""

from __future__ import annotations

import threading
import time

from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.apihelp import (
    message_text,
    node_daemons_react,
    node_record,
    raw_request,
    register_nodes,
    standard_cluster,
)

NODE_KEYS = {"name", "daemon_state", "coordinator_state", "domain_state", "pvc_version", "cpu_count",
             "kernel", "os", "arch", "health", "health_plugins", "health_details", "load", "domains_count",
             "running_domains", "vcpu", "memory", "interfaces", "keepalive"}


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [n["name"] for n in response.json()]


def test_list_shape(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    response = api.get("/node")
    assert names(response) == ["hv1", "hv2", "hv3", "hv4", "hv5"]
    first = response.json()[0]
    assert set(first) >= NODE_KEYS
    assert first["coordinator_state"] == "primary"
    assert set(first["memory"]) == {"total", "used", "free", "allocated", "provisioned"}
    assert response.json()[4]["health"] == "N/A"


def test_empty_list_is_404(api: Api) -> None:
    response = api.get("/node")
    assert response.status_code == 404
    assert response.json() == {"message": "Node not found."}


def test_list_filters(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    assert names(api.get("/node", params={"limit": "hv"})) == ["hv1", "hv2", "hv3", "hv4", "hv5"]
    assert names(api.get("/node", params={"limit": "^hv1$"})) == ["hv1"]
    assert names(api.get("/node", params={"limit": "[45]"})) == ["hv4", "hv5"]
    assert names(api.get("/node", params={"daemon_state": "dead"})) == ["hv5"]
    assert names(api.get("/node", params={"coordinator_state": "primary"})) == ["hv1"]
    assert names(api.get("/node", params={"domain_state": "flushed"})) == ["hv4", "hv5"]
    # State filters are OR-combined, as PVC clients expect.
    assert names(api.get("/node", params={"coordinator_state": "primary", "daemon_state": "dead"})) == \
        ["hv1", "hv5"]
    # ... and may come as form fields too.
    assert names(api.http.request("GET", "/node", data={"limit": "^hv2$"})) == ["hv2"]
    nothing = api.get("/node", params={"limit": "^nope$"})
    assert nothing.status_code == 404
    assert nothing.json() == {"message": "Node not found."}


def test_list_bad_filters(api: Api, zk: ZK) -> None:
    """As upstream, a state filter no node is in finds nothing (404); a bad regex is a 400."""
    standard_cluster(zk, None)
    for params in ({"daemon_state": "sleeping"}, {"coordinator_state": "boss"}, {"domain_state": "x"}):
        response = api.get("/node", params=params)
        assert response.status_code == 404 and response.json() == {"message": "Node not found."}
    response = api.get("/node", params={"limit": "(unclosed"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("limit: '(unclosed' is not a valid regular expression")


def test_one_node_is_one_element_array(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    response = api.get("/node/hv2")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["name"] == "hv2"
    assert set(body[0]) >= NODE_KEYS


UNKNOWN = ["/node/hv9", "/node/hv9/daemon-state", "/node/hv9/coordinator-state", "/node/hv9/domain-state",
           "/node/hv9/log", "/node/..", "/node/%2E%2E", "/node/../log", "/node/.", "/node/a%20b",
           "/node/zookeeper/log", "/node/.hv1", "/node/%00", "/node/%ED%A0%80"]


def test_unknown_node_is_404(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    for path in UNKNOWN:
        status, body = raw_request(api, "GET", path)
        assert status == 404, (path, body)
        assert "message" in body


def test_unknown_node_posts_are_404_and_change_nothing(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    assert api.post("/node/hv9/domain-state", params={"state": "flush"}).status_code == 404
    assert api.post("/node/hv9/coordinator-state", params={"state": "primary"}).status_code == 404
    assert api.post("/node/../coordinator-state", params={"state": "primary"}).status_code == 404
    assert not zk.exists(schema.node("hv9"))
    assert not zk.exists(schema.PRIMARY_REQUEST)


def test_state_getters(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    assert api.get("/node/hv5/daemon-state").json() == {"name": "hv5", "daemon_state": "dead"}
    assert api.get("/node/hv1/coordinator-state").json() == {"name": "hv1", "coordinator_state": "primary"}
    assert api.get("/node/hv4/domain-state").json() == {"name": "hv4", "domain_state": "flushed"}


def test_coordinator_hand_over_request(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    response = api.post("/node/hv2/coordinator-state", params={"state": "primary"})
    assert response.status_code == 200
    assert response.json() == {"message": "Setting node hv2 in primary coordinator state."}
    assert zk.get(schema.PRIMARY_REQUEST)["node"] == "hv2"
    # Swagger's `action` name is accepted as an alias, and form fields work too.
    response = api.post("/node/hv1/coordinator-state", data={"action": "secondary"})
    assert response.status_code == 200
    assert response.json() == {"message": "Setting node hv1 in secondary coordinator state."}
    assert zk.get(schema.PRIMARY_REQUEST)["exclude"] == "hv1"
    already = api.post("/node/hv3/coordinator-state", params={"state": "secondary"})
    assert already.json() == {"message": "Node hv3 is already in secondary coordinator state."}


def test_coordinator_bad_requests_change_nothing(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    cases = [
        ({}, "state: required"),
        ({"state": "boss"}, "state: 'boss' is not one of primary, secondary"),
        ({"action": "boss"}, "state: 'boss' is not one of primary, secondary"),
    ]
    for params, message in cases:
        response = api.post("/node/hv2/coordinator-state", params=params)
        assert response.status_code == 400
        assert message_text(response.json()["message"]).startswith(message)
    for node, text in (("hv4", "not a coordinator"), ("hv5", "not a coordinator")):
        response = api.post(f"/node/{node}/coordinator-state", params={"state": "primary"})
        assert response.status_code == 400
        assert text in message_text(response.json()["message"])
    assert not zk.exists(schema.PRIMARY_REQUEST)


def test_flush_and_ready(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    response = api.post("/node/hv2/domain-state", params={"state": "flush"})
    assert response.status_code == 200
    assert response.json() == {"message": "Flushing hypervisor hv2 of running VMs."}
    assert zk.get(schema.node("hv2"))["domain_state"] == "flush"
    assert api.get("/node/hv2/domain-state").json()["domain_state"] == "flush"
    response = api.post("/node/hv4/domain-state", data={"action": "ready"})
    assert response.json() == {"message": "Restoring hypervisor hv4 to active service."}
    assert zk.get(schema.node("hv4"))["domain_state"] == "unflush"
    response = api.post("/node/hv5/domain-state", params={"state": "flush"})
    assert response.json() == {"message": "Node hv5 is already flushed."}


def test_flush_wait_returns_when_node_is_flushed(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    with node_daemons_react(zk):
        response = api.post("/node/hv3/domain-state", params={"state": "flush", "wait": "true"})
        assert response.status_code == 200
        assert zk.get(schema.node("hv3"))["domain_state"] == "flushed"
        response = api.post("/node/hv3/domain-state", params={"state": "ready", "wait": "yes"})
        assert response.status_code == 200
        assert zk.get(schema.node("hv3"))["domain_state"] == "ready"


def test_waiting_flush_does_not_block_other_requests(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    result: dict[str, int] = {}

    def flush() -> None:
        response = api.post("/node/hv2/domain-state", params={"state": "flush", "wait": "1"})
        result["status"] = response.status_code

    waiters = [threading.Thread(target=flush) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.5)
    assert all(w.is_alive() for w in waiters)
    assert api.get("/node/hv2").status_code == 200
    zk.update(schema.node("hv2"), lambda d: {**d, "domain_state": "flushed"})
    for waiter in waiters:
        waiter.join(10)
    assert result["status"] == 200


def test_domain_state_bad_requests_change_nothing(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    before = zk.get(schema.node("hv2"))
    for params, message in (({}, "state: required"),
                            ({"state": "drain"}, "state: 'drain' is not one of flush, ready"),
                            ({"state": "flush", "wait": "soon"}, "wait: 'soon' is not a boolean")):
        response = api.post("/node/hv2/domain-state", params=params)
        assert response.status_code == 400
        assert message_text(response.json()["message"]).startswith(message)
    assert zk.get(schema.node("hv2")) == before


def test_node_log(api: Api, zk: ZK) -> None:
    register_nodes(zk, None, node_record("hv1"))
    zk.put(schema.node_log("hv1"), "\n".join(f"line {i}" for i in range(1, 31)))
    response = api.get("/node/hv1/log")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "hv1"
    assert body["data"].splitlines() == [f"line {i}" for i in range(21, 31)]
    assert api.get("/node/hv1/log", params={"lines": "3"}).json()["data"] == "line 28\nline 29\nline 30"
    assert api.get("/node/hv1/log", params={"lines": "0"}).json()["data"] == ""
    for lines, message in (("-1", "lines: must be at least 0"), ("ten", "lines: 'ten' is not an integer")):
        response = api.get("/node/hv1/log", params={"lines": lines})
        assert response.status_code == 400
        assert message_text(response.json()["message"]).startswith(message)
