"""/api/v1/metrics* through a real pvcapid on a real ZooKeeper: upstream's families parse, the
odd VM (migrate-live, a description with quotes, backslashes and a newline) does not break
them, authentication follows api.metrics_auth, 404 when enable_prometheus is false, and the
Ceph and ZooKeeper proxies answer at once with a comment when their target is dead."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from pvc.cluster import metrics
from pvc.cluster.metrics.certificate import NAME as CERTIFICATE_EXPIRY
from pvc.cluster.metrics.certificate import NAMES as CERTIFICATE_FAMILIES
from pvc.cluster.metrics.certificate import PENDING as CERTIFICATE_PENDING
from pvc.core import pki, schema
from pvc.core.records import BackupRecord, VMRecord, VMSnapshotRecord, VMStatus
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import API_TOKEN, Daemon, raw_task, start_daemon, wait_for
from tests.integration.apihelp import standard_cluster

ODD_DESCRIPTION = 'say "hi" \\ back\nslash'


def vm_xml(name: str, uuid: str, description: str) -> str:
    text = description.replace("&", "&amp;").replace("<", "&lt;")
    return f"""<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>
  <description>{text}</description>
  <memory unit='MiB'>512</memory><vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <devices><console type='pty'/>
    <disk type='network' device='disk'><source protocol='rbd' name='vms/{name}_sda'/>
      <target dev='sda' bus='scsi'/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
  </devices></domain>"""


def put_vm(zk: ZK, name: str, state: str, node: str = "hv1", description: str = "plain") -> str:
    uuid = str(uuidlib.uuid4())
    record = VMRecord(
        uuid=uuid,
        name=name,
        xml=vm_xml(name, uuid, description),
        state=state,
        node=node,
        description=description,
    )
    zk.put(schema.vm(uuid), record.doc())
    zk.put(schema.vm_name(name), uuid)
    zk.put(schema.vm_status(uuid), VMStatus(node=node, running=state == "start").doc())
    return uuid


def start_api(daemons: list[Daemon], config: Path) -> httpx.Client:
    settings = yaml.safe_load(config.read_text())
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{settings['api']['listen']['port']}"

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        try:
            return httpx.get(base + "/api/v1/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid to answer")
    return httpx.Client(base_url=base + "/api/v1", timeout=30)


@pytest.fixture
def dead_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture
def cluster(zk: ZK) -> ZK:
    standard_cluster(zk, None)
    put_vm(zk, "web1", "start")
    put_vm(zk, "odd", "migrate-live", description=ODD_DESCRIPTION)
    return zk


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def scrape_until(client: httpx.Client, path: str, done: Any, headers: dict[str, str] | None = None) -> str:
    """The route's text once done(text) holds (the cache serves a build up to 2 s old)."""
    found: dict[str, str] = {}

    def ready() -> bool:
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, answer.text
        found["text"] = answer.text
        return bool(done(answer.text))

    wait_for(ready, 20, 0.2, f"{path} to show the cluster")
    return found["text"]


def test_metrics_with_token_carry_every_family(
    cluster: ZK, daemons: list[Daemon], config_factory: Any, dead_port: int
) -> None:
    config = config_factory("hv1", zookeeper={"metrics_port": dead_port})
    client = start_api(daemons, config)
    headers = {"X-Api-Key": API_TOKEN}
    # without the token: refused, like every route
    for path in ("/metrics", "/metrics/health", "/metrics/resource", "/metrics/ceph", "/metrics/zookeeper"):
        assert client.get(path).status_code == 401, path
    text = scrape_until(client, "/metrics", lambda t: 'vm="odd"' in t and "pvc_nodes 5" in t, headers)
    answer = client.get("/metrics", headers=headers)
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = families(text)
    expected = metrics.FAMILIES - CERTIFICATE_FAMILIES  # api.ssl is off here: those are absent
    missing = {f for f in expected if f not in found and f.removesuffix("_total") not in found}
    assert not missing, f"families missing from /metrics: {sorted(missing)}"
    assert not CERTIFICATE_FAMILIES & set(found)
    # upstream's names for its mislabelled families: the sample names, with their own HELP/TYPE
    assert found["pvc_node_load_average"].type == "gauge"
    assert found["pvc_vm_autostart"].type == "gauge"
    assert "pvc_vm_memory_stats_swap_in" in found
    # the odd VM: state -1 (not a 500), its description escaped and read back exactly
    state = {s.labels["vm"]: s for s in samples(text, "pvc_vm_state")}
    assert state["odd"].value == -1 and state["odd"].labels["state"] == "migrate-live"
    assert state["web1"].value == 0
    descriptions = {s.labels["vm"]: s.labels["description"] for s in samples(text, "pvc_vm_description")}
    assert descriptions["odd"] == ODD_DESCRIPTION
    vm_states = {s.labels["state"]: s.value for s in samples(text, "pvc_vm_states")}
    assert vm_states["start"] == 1 and vm_states["migrate-live"] == 1 and vm_states["stop"] == 0
    # nodes: 5, hv5 dead with health N/A (no sample), the others 100
    health = {s.labels["node"]: s.value for s in samples(text, "pvc_node_health")}
    assert set(health) == {"hv1", "hv2", "hv3", "hv4"} and set(health.values()) == {100}
    daemon_states = {s.labels["state"]: s.value for s in samples(text, "pvc_node_daemon_states")}
    assert daemon_states["run"] == 4 and daemon_states["dead"] == 1
    assert samples(text, "pvc_cluster_health")[0].value == 100
    info = samples(text, "pvc_info")[0]
    assert info.labels["primary_node"] == "hv1"
    # no Ceph in integration tests, no ZooKeeper metrics provider: comments, not errors
    assert "# PVC: Ceph" in text
    assert "ZooKeeper" in text and "zk_znode_count" in text  # mntr fallback on the test ZooKeeper
    # the request histogram counted the scrapes above by route template
    durations = samples(answer.text, "pvc_api_request_duration_seconds_count")
    assert any(s.labels["route"] == "/metrics" and s.labels["status"] == "200" for s in durations)
    # the parts
    health_text = client.get("/metrics/health", headers=headers).text
    # Prometheus sends the token as a bearer token
    assert client.get("/metrics/health", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    assert client.get("/metrics/health", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert set(families(health_text)) == set(metrics.HEALTH_FAMILIES)
    resource_text = client.get("/metrics/resource", headers=headers).text
    assert "pvc_vm_vcpus" in families(resource_text) and "pvc_nodes" not in families(resource_text)


def test_faults_and_changes_show_up(cluster: ZK, daemons: list[Daemon], config_factory: Any) -> None:
    client = start_api(daemons, config_factory("hv1"))
    headers = {"X-Api-Key": API_TOKEN}
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    cluster.put(
        schema.fault("DEAD_NODE_HV5"),
        {
            "id": "DEAD_NODE_HV5",
            "first_reported": now,
            "last_reported": now,
            "status": "new",
            "health_delta": 50,
            "message": "hv5 dead",
        },
    )
    cluster.put(
        schema.fault("VM_FAILED_X"),
        {
            "id": "VM_FAILED_X",
            "first_reported": now,
            "last_reported": now,
            "status": "new",
            "health_delta": 10,
            "message": "x",
            "active": False,
        },
    )
    text = scrape_until(client, "/metrics/health", lambda t: "pvc_cluster_health 50" in t, headers)
    active = {s.labels["id"]: s.value for s in samples(text, "pvc_fault_active")}
    assert active == {"DEAD_NODE_HV5": 1, "VM_FAILED_X": 0}
    faults = {s.labels.get("status"): s.value for s in samples(text, "pvc_cluster_faults")}
    assert faults == {"new": 1, "ack": 0}
    # VM snapshots, the backup catalogue (newest successful backup) and running tasks
    web1 = cluster.get(schema.vm_name("web1"))
    for snap in ("s1", "s2"):
        cluster.put(schema.vm_snapshot(web1, snap), VMSnapshotRecord(name=snap).doc())
    cluster.put(
        schema.vm_backup(web1, "s1"),
        BackupRecord(vm="web1", snapshot="s1", result=True, started=100.0, finished=150.0, bytes=1000).doc(),
    )
    cluster.put(
        schema.vm_backup(web1, "s2"),
        BackupRecord(vm="web1", snapshot="s2", result=False, started=200.0, finished=250.0, bytes=5).doc(),
    )
    task = raw_task(cluster, "vm.create_snapshot", {"vm": "web1"})
    cluster.update(schema.task(task.id), lambda d: {**d, "state": "RUNNING"})
    text = scrape_until(client, "/metrics", lambda t: 'pvc_vm_snapshots{vm="web1"} 2' in t, headers)
    assert {s.labels["vm"]: s.value for s in samples(text, "pvc_vm_backup_last_success_timestamp")} == {
        "web1": 150
    }
    assert {s.labels["vm"]: s.value for s in samples(text, "pvc_vm_backup_last_size_bytes")} == {"web1": 1000}
    assert {s.labels["kind"]: s.value for s in samples(text, "pvc_task_running")} == {"vm.create_snapshot": 1}


def test_metrics_open_when_configured(cluster: ZK, daemons: list[Daemon], config_factory: Any) -> None:
    client = start_api(daemons, config_factory("hv1", api={"metrics_auth": "none"}))
    text = scrape_until(client, "/metrics/health", lambda t: "pvc_vms 2" in t)
    assert "pvc_cluster_health" in text
    assert client.get("/vm").status_code == 401  # only the metrics are open


def test_metrics_404_when_disabled(cluster: ZK, daemons: list[Daemon], config_factory: Any) -> None:
    client = start_api(daemons, config_factory("hv1", subsystem={"enable_prometheus": False}))
    for path in ("/metrics", "/metrics/health", "/metrics/resource", "/metrics/ceph", "/metrics/zookeeper"):
        answer = client.get(path, headers={"X-Api-Key": API_TOKEN})
        assert answer.status_code == 404, path
        assert "enable_prometheus" in answer.json()["message"]


def test_dead_proxy_targets_answer_quickly_with_a_comment(
    cluster: ZK, daemons: list[Daemon], config_factory: Any, dead_port: int
) -> None:
    config = config_factory("hv1", zookeeper={"metrics_port": dead_port})
    settings = yaml.safe_load(config.read_text())
    settings["zookeeper"]["hosts"] = [f"127.0.0.1:{dead_port}"] + settings["zookeeper"]["hosts"]
    config.write_text(yaml.safe_dump(settings))
    client = start_api(daemons, config)
    headers = {"X-Api-Key": API_TOKEN}
    answer = client.get("/metrics/ceph", headers=headers)
    assert answer.status_code == 200 and answer.text.startswith("# PVC: Ceph")
    answer = client.get("/metrics/zookeeper", headers=headers)
    assert answer.status_code == 200
    assert answer.text.startswith("# PVC: ZooKeeper: no metrics provider")
    assert "zk_server_state" in answer.text  # the live member's mntr


def _not_after(pem: bytes) -> float:
    return pki.load_certificate(pem).not_valid_after.replace(tzinfo=datetime.UTC).timestamp()


def _served_der(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate pvcapid presents in a TLS handshake (DER)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem: bytes) -> bytes:
    return pki.load_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_certificate_expiry_of_the_served_certificate(
    cluster: ZK, daemons: list[Daemon], config_factory: Any, tmp_path: Path
) -> None:
    """api.ssl on and no certificate: pvcapid makes one; its notAfter is the gauge, in /metrics and
    /metrics/resource. A renewal on disk is not served until pvcapid restarts (uvicorn loads the
    file at start), so the gauge keeps the served one's date and the pending flag goes to 1; after
    a restart both follow the new certificate."""
    ssl_dir = tmp_path / "ssl"
    tls = {
        "enabled": True,
        "certificate": str(ssl_dir / "api.crt"),
        "private_key": str(ssl_dir / "api.key"),
        "ca_certificate": str(ssl_dir / "ca.crt"),
        "ca_key": str(ssl_dir / "ca.key"),
    }
    config = config_factory("hv1", api={"ssl": tls})
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"https://127.0.0.1:{port}/api/v1"
    context: dict[str, ssl.SSLContext] = {}

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        if not (ssl_dir / "ca.crt").exists():
            return False
        try:
            context["ca"] = ssl.create_default_context(cafile=str(ssl_dir / "ca.crt"))
            return httpx.get(base + "/", verify=context["ca"], timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def gauges(path: str = "/metrics") -> tuple[list[float], list[float]]:
        with httpx.Client(base_url=base, verify=context["ca"], timeout=30,
                          headers={"X-Api-Key": API_TOKEN}) as client:
            text = client.get(path).text
        return ([s.value for s in samples(text, CERTIFICATE_EXPIRY)],
                [s.value for s in samples(text, CERTIFICATE_PENDING)])

    wait_for(up, 30, message="pvcapid to answer over TLS")
    served = (ssl_dir / "api.crt").read_bytes()
    assert _served_der(port, context["ca"]) == _der(served)
    for path in ("/metrics", "/metrics/resource"):
        assert gauges(path) == ([_not_after(served)], [0]), path
    with httpx.Client(base_url=base, verify=context["ca"], timeout=30,
                      headers={"X-Api-Key": API_TOKEN}) as client:
        assert not CERTIFICATE_FAMILIES & set(families(client.get("/metrics/health").text))
    # renewed on disk (as an installer would, by rename, key first): still the old one served
    ca = pki.KeyPair((ssl_dir / "ca.crt").read_bytes(), (ssl_dir / "ca.key").read_bytes())
    renewed = pki.issue_server(ca, "pvcapid renewed", ["127.0.0.1"], days=30)
    pki.write_private(ssl_dir / "api.key", renewed.key)
    (ssl_dir / "api.crt.new").write_bytes(renewed.certificate)
    os.replace(ssl_dir / "api.crt.new", ssl_dir / "api.crt")
    assert _not_after(renewed.certificate) != _not_after(served)
    assert _served_der(port, context["ca"]) == _der(served)
    assert gauges() == ([_not_after(served)], [1])
    assert gauges("/metrics/resource") == ([_not_after(served)], [1])
    assert _served_der(port, context["ca"]) == _der(served)  # (still: nothing reloads it)
    # restarted: the renewed certificate is served and reported, nothing pending
    assert daemon.stop() == 0
    daemon.start()
    wait_for(up, 30, message="pvcapid to answer over TLS after its restart")
    assert _served_der(port, context["ca"]) == _der(renewed.certificate)
    assert gauges() == ([_not_after(renewed.certificate)], [0])
