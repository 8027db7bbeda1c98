"""API root, authentication, sessions, generic errors and the OpenAPI document."""

from __future__ import annotations

import httpx
import yaml

from pvc.core import schema
from tests.conftest import API_TOKEN, Api, start_daemon, wait_for
from tests.integration.apihelp import standard_cluster


def test_root_answers_version_without_auth(api: Api) -> None:
    for path in ("/api/v1/", "/api/v1"):
        response = httpx.get(api.base + path)
        assert response.status_code == 200
        assert response.json() == {"message": "PVC API version 1.0"}


def test_missing_key_is_401_required(api: Api) -> None:
    for method, path in (("GET", "/node"), ("GET", "/status"), ("POST", "/status"), ("GET", "/faults"),
                         ("GET", "/tasks"), ("GET", "/backup"), ("POST", "/tasks/selftest")):
        response = httpx.request(method, f"{api.base}/api/v1{path}")
        assert response.status_code == 401, (method, path)
        assert response.json() == {"message": "X-Api-Key Authentication required."}


def test_wrong_key_is_401_failed(api: Api, zk) -> None:
    response = httpx.post(f"{api.base}/api/v1/status", params={"state": "true"},
                          headers={"X-Api-Key": "not-the-token"})
    assert response.status_code == 401
    assert response.json() == {"message": "X-Api-Key Authentication failed."}
    assert (zk.get(schema.CLUSTER, None) or {}).get("maintenance", False) is False


def test_right_key_passes(api: Api) -> None:
    assert api.get("/status").status_code == 200


def test_open_routes_need_no_key(api: Api, zk) -> None:
    assert httpx.get(f"{api.base}/api/v1/status/primary_node").status_code == 204
    assert httpx.get(f"{api.base}/api/v1/openapi.json").status_code == 200
    assert httpx.get(f"{api.base}/api/v1/docs").status_code == 200


def test_login_cookie_session_and_logout(api: Api, zk) -> None:
    standard_cluster(zk, api)
    with httpx.Client(base_url=api.base + "/api/v1") as client:
        assert client.get("/node").status_code == 401
        bad = client.post("/login", data={"token": "wrong-token-123"})
        assert bad.status_code == 401
        assert client.get("/node").status_code == 401
        response = client.post("/login", data={"token": API_TOKEN})  # form field, as a browser sends
        assert response.status_code == 200
        assert response.json() == {"message": "Authentication successful"}
        assert "session" in client.cookies
        assert API_TOKEN not in client.cookies["session"]
        nodes = client.get("/node")
        assert nodes.status_code == 200
        assert [n["name"] for n in nodes.json()] == ["hv1", "hv2", "hv3", "hv4", "hv5"]
        out = client.post("/logout")
        assert out.status_code == 200
        assert out.json() == {"message": "Deauthentication successful"}
        assert client.get("/node").status_code == 401


def test_login_token_in_header(api: Api) -> None:
    with httpx.Client(base_url=api.base + "/api/v1") as client:
        assert client.post("/login", headers={"X-Api-Key": API_TOKEN}).status_code == 200
        assert client.get("/status").status_code == 200


def test_login_without_token_is_400(api: Api) -> None:
    response = httpx.post(f"{api.base}/api/v1/login")
    assert response.status_code == 400
    assert response.json()["message"]["token"].startswith("required")


def test_forged_session_cookie_is_rejected(api: Api) -> None:
    with httpx.Client(base_url=api.base + "/api/v1") as client:
        client.post("/login", data={"token": API_TOKEN})
        value = client.cookies["session"]
        client.cookies.clear()
        client.cookies.set("session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
        assert client.get("/status").status_code == 401


def test_unknown_route_is_json_404(api: Api) -> None:
    # "/" is the web UI (HTML, tests/integration/test_ui_routes.py); everything under /api stays JSON.
    for path in ("/nope", "/node/hv1/nope", "/api", "/api/v2/node"):
        url = api.base + (path if path.startswith("/api/v2") or path == "/api" else "/api/v1" + path)
        response = httpx.get(url, headers={"X-Api-Key": API_TOKEN})
        assert response.status_code == 404, path
        assert "message" in response.json()


def test_trailing_slash_is_404_not_redirect(api: Api) -> None:
    response = api.get("/node/")
    assert response.status_code == 404


def test_wrong_method_is_json_405_with_allow(api: Api) -> None:
    response = api.http.request("PATCH", "/node")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json() == {"message": "The method is not allowed for the requested URL."}
    response = api.http.request("POST", "/faults/abc")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PUT"
    response = api.http.request("GET", "/login")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_malformed_multipart_is_400(api: Api) -> None:
    response = api.post("/status", content=b"--x\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 400
    assert "message" in response.json()


def test_openapi_document_describes_routes(api: Api) -> None:
    doc = httpx.get(f"{api.base}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    expected = {
        "/api/v1/": {"get"}, "/api/v1/login": {"post"}, "/api/v1/logout": {"post"},
        "/api/v1/initialize": {"post"}, "/api/v1/backup": {"get"}, "/api/v1/restore": {"post"},
        "/api/v1/status": {"get", "post"}, "/api/v1/status/primary_node": {"get"},
        "/api/v1/node": {"get"}, "/api/v1/node/{node}": {"get"},
        "/api/v1/node/{node}/daemon-state": {"get"},
        "/api/v1/node/{node}/coordinator-state": {"get", "post"},
        "/api/v1/node/{node}/domain-state": {"get", "post"}, "/api/v1/node/{node}/log": {"get"},
        "/api/v1/faults": {"get", "put", "delete"}, "/api/v1/faults/{fault_id}": {"get", "put", "delete"},
        "/api/v1/tasks": {"get"}, "/api/v1/tasks/{task_id}": {"get", "delete"},
        "/api/v1/tasks/{task_id}/log": {"get"}, "/api/v1/tasks/selftest": {"post"},
        "/api/v1/vm": {"get", "post"}, "/api/v1/vm/{vm}": {"get", "post", "put", "delete"},
        "/api/v1/vm/autobackup": {"post"}, "/api/v1/vm/automirror": {"post"},
        "/api/v1/sriov/pf": {"get"}, "/api/v1/sriov/pf/{node}": {"get"}, "/api/v1/sriov/vf": {"get"},
        "/api/v1/sriov/vf/{node}": {"get"}, "/api/v1/sriov/vf/{node}/{vf}": {"get", "put"},
        "/api/v1/vm/{vm}/meta": {"get", "post"}, "/api/v1/vm/{vm}/tags": {"get", "post"},
        "/api/v1/vm/{vm}/state": {"get", "post"}, "/api/v1/vm/{vm}/node": {"get", "post"},
        "/api/v1/vm/{vm}/locks": {"post"}, "/api/v1/vm/{vm}/rename": {"post"},
        "/api/v1/vm/{vm}/console": {"get"}, "/api/v1/vm/{vm}/device": {"post", "delete"},
        # VM snapshots (PUT: rename, ours), export/import, send/receive and mirrors (upstream 1.0.3)
        "/api/v1/vm/{vm}/snapshot": {"post", "put", "delete"}, "/api/v1/vm/{vm}/snapshot/rollback": {"post"},
        "/api/v1/vm/{vm}/snapshot/export": {"post"}, "/api/v1/vm/{vm}/snapshot/import": {"post"},
        "/api/v1/vm/{vm}/snapshot/send": {"post"}, "/api/v1/vm/{vm}/snapshot/receive/config": {"post"},
        "/api/v1/vm/{vm}/snapshot/receive/block": {"post", "put", "patch"},
        "/api/v1/vm/{vm}/snapshot/receive/status": {"get"},            # ours: resume and checksums
        "/api/v1/vm/{vm}/mirror/create": {"post"}, "/api/v1/vm/{vm}/mirror/promote": {"post"},
        # legacy backup/restore (deprecated upstream; GET: the backup catalogue, ours)
        "/api/v1/vm/{vm}/backup": {"get", "post", "delete"}, "/api/v1/vm/{vm}/restore": {"post"},
        "/api/v1/metrics": {"get"}, "/api/v1/metrics/health": {"get"}, "/api/v1/metrics/resource": {"get"},
        "/api/v1/metrics/ceph": {"get"}, "/api/v1/metrics/zookeeper": {"get"},
        "/api/v1/storage": {"get"}, "/api/v1/storage/ceph": {"get"}, "/api/v1/storage/ceph/status": {"get"},
        "/api/v1/storage/ceph/utilization": {"get"}, "/api/v1/storage/ceph/benchmark": {"get", "post"},
        "/api/v1/storage/ceph/option": {"post"}, "/api/v1/storage/ceph/osddb": {"post"},
        "/api/v1/storage/ceph/osd": {"get", "post"},
        "/api/v1/storage/ceph/osd/{osdid}": {"get", "post", "put", "delete"},
        "/api/v1/storage/ceph/osd/{osdid}/state": {"get", "post"},
        "/api/v1/storage/ceph/pool": {"get", "post"},
        "/api/v1/storage/ceph/pool/{pool}": {"get", "post", "put", "delete"},
        "/api/v1/storage/ceph/volume": {"get", "post"},
        "/api/v1/storage/ceph/volume/{pool}/{volume}": {"get", "post", "put", "delete"},
        "/api/v1/storage/ceph/volume/{pool}/{volume}/scan": {"post"},
        "/api/v1/storage/ceph/volume/{pool}/{volume}/clone": {"post"},
        "/api/v1/storage/ceph/volume/{pool}/{volume}/upload": {"post"},
        "/api/v1/storage/ceph/snapshot": {"get", "post"},
        "/api/v1/storage/ceph/snapshot/{pool}/{volume}/{snapshot}": {"get", "post", "put", "delete"},
        "/api/v1/storage/ceph/snapshot/{pool}/{volume}/{snapshot}/rollback": {"post"},
        "/api/v1/network": {"get", "post"},
        "/api/v1/network/{vni}": {"get", "post", "put", "delete"},
        "/api/v1/network/{vni}/acl": {"get", "post"},
        "/api/v1/network/{vni}/acl/{description}": {"get", "post", "delete"},
        "/api/v1/network/{vni}/lease": {"get", "post"},
        "/api/v1/network/{vni}/lease/{mac}": {"get", "post", "delete"},
        "/api/v1/provisioner/create": {"post"}, "/api/v1/provisioner/status": {"get"},
        "/api/v1/provisioner/status/{task_id}": {"get", "delete"},
        "/api/v1/provisioner": {"get"}, "/api/v1/provisioner/template": {"get"},
        "/api/v1/provisioner/template/system": {"get", "post"},
        "/api/v1/provisioner/template/system/{template}": {"get", "post", "put", "delete"},
        "/api/v1/provisioner/template/network": {"get", "post"},
        "/api/v1/provisioner/template/network/{template}": {"get", "post", "delete"},
        "/api/v1/provisioner/template/network/{template}/net": {"get", "post"},
        "/api/v1/provisioner/template/network/{template}/net/{vni}": {"get", "post", "delete"},
        "/api/v1/provisioner/template/storage": {"get", "post"},
        "/api/v1/provisioner/template/storage/{template}": {"get", "post", "delete"},
        "/api/v1/provisioner/template/storage/{template}/disk": {"get", "post"},
        "/api/v1/provisioner/template/storage/{template}/disk/{disk_id}": {"get", "post", "delete"},
        "/api/v1/provisioner/userdata": {"get", "post"},
        "/api/v1/provisioner/userdata/{userdata}": {"get", "post", "put", "delete"},
        "/api/v1/provisioner/script": {"get", "post"},
        "/api/v1/provisioner/script/{script}": {"get", "post", "put", "delete"},
        "/api/v1/provisioner/profile": {"get", "post"},
        "/api/v1/provisioner/profile/{profile}": {"get", "post", "put", "delete"},
        "/api/v1/provisioner/ova": {"get", "post"},
        "/api/v1/provisioner/ova/{ova}": {"get", "post", "delete"},
    }
    assert {p: set(ops) for p, ops in paths.items()} == expected
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (path, method)
    # Inputs are query parameters and, on POST, also a form body.
    post = paths["/api/v1/node/{node}/domain-state"]["post"]
    names = {p["name"]: p for p in post["parameters"]}
    assert names["state"]["in"] == "query" and names["state"]["schema"]["enum"] == ["flush", "ready"]
    assert names["action"]["deprecated"] is True
    assert names["wait"]["schema"]["type"] == "boolean"
    form = post["requestBody"]["content"]
    assert set(form) == {"application/x-www-form-urlencoded", "multipart/form-data"}
    fields = form["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert set(fields) == {"state", "action", "wait"}
    assert set(post["responses"]) == {"200", "400", "401", "404", "413", "503"}
    assert "1 MiB (api.max_body_size)" in post["responses"]["413"]["description"]
    upload = paths["/api/v1/storage/ceph/volume/{pool}/{volume}/upload"]["post"]["responses"]["413"]
    assert "1 TiB (api.max_upload_size)" in upload["description"]
    login = paths["/api/v1/login"]["post"]
    assert {"400", "401", "413", "429"} <= set(login["responses"])
    assert "Retry-After" in login["responses"]["429"]["headers"]
    assert "parameters" not in login or all(p["name"] != "token" for p in login["parameters"])
    assert post["security"] == [{"ApiKey": []}, {"Session": []}]
    restore = paths["/api/v1/restore"]["post"]
    assert {p["name"] for p in restore["parameters"]} == {
        "yes-i-really-mean-it", "cluster_data", "mode", "force", "allow_other_cluster", "from_upstream",
        "dry_run", "partial"}
    assert paths["/api/v1/backup"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "type"] == "string"
    selftest = paths["/api/v1/tasks/selftest"]["post"]["responses"]["202"]
    assert "Location" in selftest["headers"]
    primary = paths["/api/v1/status/primary_node"]["get"]
    assert "security" not in primary and "401" not in primary["responses"]
    assert set(primary["responses"]) == {"200", "204", "503"}
    node_list = paths["/api/v1/node"]["get"]
    assert "requestBody" not in node_list
    assert {p["name"] for p in node_list["parameters"]} == {"limit", "daemon_state", "coordinator_state",
                                                            "domain_state"}


def test_auth_disabled_everything_open_and_login_redirects(daemons, config_factory, zk) -> None:
    config = config_factory("hv1", api={"authentication": {"enabled": False}})
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{port}/api/v1"

    def up() -> bool:
        try:
            return httpx.get(base + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid without authentication")
    assert httpx.get(base + "/status").status_code == 200
    for path in ("/login", "/logout"):
        response = httpx.post(base + path)
        assert response.status_code == 302
        assert response.headers["location"] == "/api/v1/"
    doc = httpx.get(base + "/openapi.json").json()
    status = doc["paths"]["/api/v1/status"]["get"]
    assert "security" not in status and "401" not in status["responses"]
    assert set(doc["paths"]["/api/v1/login"]["post"]["responses"]) == {"302"}
