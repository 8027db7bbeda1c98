"""Cluster routes: status, maintenance, primary node, initialize, backup and restore."""

from __future__ import annotations

import json

from pvc.cluster import faults
from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.apihelp import message_text, standard_cluster

CONFIRM = "yes-i-really-mean-it"


def test_status_shape(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    faults.raise_fault(zk, "DEAD_NODE_HV5", 50, "Node hv5 is dead")
    response = api.get("/status")
    assert response.status_code == 200
    status = response.json()
    assert status["primary_node"] == "hv1"
    assert status["maintenance"] == "false"
    assert status["nodes"]["total"] == 5
    assert status["nodes"]["run,ready"] == 3
    assert status["nodes"]["dead,flushed"] == 1
    assert status["cluster_health"]["health"] == 50
    assert status["cluster_health"]["messages"][0]["text"] == "Node hv5 is dead"
    assert status["node_health"]["hv5"]["health"] == "None"
    assert set(status["resources"]) == {"memory", "cpu", "disk"}
    assert [n["name"] for n in status["detail"]["node"]] == ["hv1", "hv2", "hv3", "hv4", "hv5"]


def test_maintenance_mode_query_and_form(api: Api, zk: ZK) -> None:
    response = api.post("/status", params={"state": "true"})
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully set cluster in maintenance mode"}
    assert api.get("/status").json()["maintenance"] == "true"
    response = api.post("/status", data={"state": "False"})  # form field, strtobool spelling
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully set cluster in normal mode"}
    assert api.get("/status").json()["maintenance"] == "false"
    response = api.post("/status", files={"state": (None, "yes")})  # multipart form
    assert response.status_code == 200
    assert zk.get(schema.CLUSTER)["maintenance"] is True


def test_maintenance_bad_input_changes_nothing(api: Api, zk: ZK) -> None:
    api.post("/status", params={"state": "false"})
    before = zk.get(schema.CLUSTER)
    missing = api.post("/status")
    assert missing.status_code == 400
    assert message_text(missing.json()["message"]).startswith("state: required")
    wrong = api.post("/status", params={"state": "maybe"})
    assert wrong.status_code == 400
    assert wrong.json() == {"message": {"state": "'maybe' is not a boolean (use true or false)"}}
    assert zk.get(schema.CLUSTER) == before


def test_primary_node(api: Api, zk: ZK) -> None:
    response = api.get("/status/primary_node")
    assert response.status_code == 204
    assert response.content == b""
    zk.put(schema.PRIMARY_NODE, "hv2")
    response = api.get("/status/primary_node")
    assert response.status_code == 200
    assert response.json() == {"primary_node": "hv2"}


def test_initialize(api: Api, zk: ZK) -> None:
    missing = api.post("/initialize")
    assert missing.status_code == 400
    assert message_text(missing.json()["message"]).startswith("yes-i-really-mean-it: required")
    assert not zk.exists(schema.CLUSTER)
    response = api.post("/initialize", params={CONFIRM: "yes"})
    assert response.status_code == 200
    assert response.json() == {"message": "Successfully initialized a new PVC cluster"}
    assert zk.get(schema.CLUSTER)["name"] == "test"
    again = api.post("/initialize", params={CONFIRM: "yes"})
    assert again.status_code == 400
    assert "already initialized" in message_text(again.json()["message"])
    bad = api.post("/initialize", params={CONFIRM: "yes", "overwrite": "perhaps"})
    assert bad.status_code == 400
    assert message_text(bad.json()["message"]).startswith("overwrite: ")


def test_initialize_overwrite_wipes(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    faults.raise_fault(zk, "X", 10, "something")
    response = api.post("/initialize", data={CONFIRM: "yes", "overwrite": "true"})
    assert response.status_code == 200
    assert zk.children(schema.NODES) == []
    assert zk.children(schema.FAULTS) == []
    assert zk.get(schema.SCHEMA_VERSION_PATH) == schema.SCHEMA_VERSION
    assert api.get("/node").status_code == 404


def test_backup_wipe_restore_roundtrip(api: Api, zk: ZK) -> None:
    standard_cluster(zk, api)
    api.post("/status", params={"state": "true"})
    faults.raise_fault(zk, "DEAD_NODE_HV5", 50, 'Node "hv5" is dead')
    response = api.get("/backup")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, str)  # double-encoded, as PVC's CLI expects
    data = json.loads(body)
    assert data[schema.node("hv1")]
    assert schema.SCHEMA_VERSION_PATH in data
    # Wipe everything below this test's root.
    for child in zk.children("/"):
        zk.delete("/" + child)
    assert zk.children("/") == []
    assert api.get("/node").status_code == 404
    # The CLI sends the body back exactly as it received it, as a form field.
    restored = api.post("/restore", data={CONFIRM: "yes", "cluster_data": body})
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"message": "Restore completed successfully"}
    assert json.loads(api.get("/backup").json()) == data
    assert api.get("/status").json()["maintenance"] == "true"
    nodes = api.get("/node")
    assert nodes.status_code == 200
    assert len(nodes.json()) == 5


def test_restore_accepts_once_decoded_json_multipart(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    data = json.loads(api.get("/backup").json())
    zk.delete(schema.node("hv3"))
    restored = api.post("/restore", files={CONFIRM: (None, "yes"), "cluster_data": (None, json.dumps(data))})
    assert restored.status_code == 200, restored.text
    assert zk.get(schema.node("hv3"))["name"] == "hv3"


def test_restore_bad_input_changes_nothing(api: Api, zk: ZK) -> None:
    standard_cluster(zk, None)
    before = json.loads(api.get("/backup").json())
    good = json.dumps({schema.SCHEMA_VERSION_PATH: "1", schema.node("hv1"): '{"name":"changed"}'})
    cases = [
        ({"cluster_data": good}, "yes-i-really-mean-it: required"),
        ({CONFIRM: "yes"}, "cluster_data: required"),
        ({CONFIRM: "yes", "cluster_data": "{not json"}, "cluster_data: not valid JSON"),
        ({CONFIRM: "yes", "cluster_data": "[1, 2]"}, "cluster_data: must be a JSON object"),
        ({CONFIRM: "yes", "cluster_data": json.dumps({schema.node("hv1"): "{}"})},
         "cluster_data: backup has no schema version"),
        ({CONFIRM: "yes", "cluster_data": json.dumps({schema.SCHEMA_VERSION_PATH: "99"})},
         "cluster_data: backup schema version"),
        ({CONFIRM: "yes", "cluster_data": json.dumps({"relative": "x", schema.SCHEMA_VERSION_PATH: "1"})},
         "cluster_data: invalid path"),
    ]
    for form, expected in cases:
        response = api.post("/restore", data=form)
        assert response.status_code == 400, (form, response.text)
        assert message_text(response.json()["message"]).startswith(expected), response.json()
    assert json.loads(api.get("/backup").json()) == before
