"""A real Prometheus (Debian's package) scrapes the lab's /api/v1/metrics over TLS with the API
token, and PromQL answers with the lab's nodes, health, a lab VM's state, the Ceph mgr's
`ceph_*` series (the lab enables the mgr prometheus module) and ZooKeeper's `zk_*` series."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pvc.lab import labtls
from pvc.lab.plan import LabPlan
from pvc.lab.zkserver import free_port
from tests.system import helpers
from tests.system.helpers import call, wait

NAME = "metricsvm"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def start_prometheus(lab: LabPlan, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus on loopback, scraping the lab's API every second."""
    token_file = workdir / "token"
    token_file.write_text(str(lab.extra["api_token"]))
    token_file.chmod(0o600)
    base = labtls.api_base(lab)  # https://127.0.0.1:<port>/api/v1
    target = base.removeprefix("https://").split("/", 1)[0]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "pvc_cluster",
                "scheme": "https",
                "metrics_path": "/api/v1/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "tls_config": {"ca_file": str(labtls.ca_file(lab))},
                "static_configs": [
                    {
                        "targets": [target],
                        "labels": {"pvc_cluster_id": lab.name, "pvc_cluster_name": f"{lab.name}: lab"},
                    }
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def series(prom: str, expr: str, timeout: float = 90) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def some() -> bool:
        found[:] = query(prom, expr)
        return bool(found)

    wait(f"PromQL `{expr}` to return series", some, timeout)
    return found


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus package is not installed")
def test_prometheus_scrapes_the_lab(lab: LabPlan, api: httpx.Client) -> None:
    uuid = str(uuidlib.uuid4())
    workdir = Path(tempfile.mkdtemp(prefix="pvc-prom-"))
    proc = None
    try:
        call(api, "POST", "/vm", data={"xml": helpers.guest_xml(lab, NAME, uuid), "node": "hv1"})
        proc, prom = start_prometheus(lab, workdir)
        running = proc

        def ready() -> bool:
            assert running.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                return httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait("Prometheus to answer", ready, 60)
        up = series(prom, 'up{job="pvc_cluster"} == 1')
        assert up[0]["metric"]["pvc_cluster_id"] == lab.name
        assert float(series(prom, "pvc_nodes")[0]["value"][1]) == 3
        health = float(series(prom, "pvc_cluster_health")[0]["value"][1])
        assert 0 <= health <= 100
        nodes = {r["metric"]["node"] for r in series(prom, "pvc_node_health")}
        assert nodes and nodes <= {n.name for n in lab.nodes}
        state = series(prom, f'pvc_vm_state{{vm="{NAME}"}}')[0]
        listed = call(api, "GET", f"/vm/{NAME}")[0]["state"]
        assert state["metric"]["state"] == listed
        assert float(series(prom, 'pvc_vm_states{state="stop"}')[0]["value"][1]) >= 0
        assert float(series(prom, "pvc_ceph_pool_pgs")[0]["value"][1]) > 0
        # the active mgr's prometheus module through /metrics/ceph
        assert series(prom, "ceph_health_status", timeout=120)
        assert series(prom, "ceph_osd_up")
        # ZooKeeper's metrics through /metrics/zookeeper
        zk = series(prom, "zk_znode_count")
        assert all(float(r["value"][1]) > 0 for r in zk)
        # the API's own timings
        assert series(prom, 'pvc_api_request_duration_seconds_count{route="/metrics"}')
        # a scrape is fast on the lab too: Prometheus' own measurement
        duration = float(series(prom, 'scrape_duration_seconds{job="pvc_cluster"}')[0]["value"][1])
        print(f"lab scrape of /api/v1/metrics: {duration * 1000:.0f} ms")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            if helpers.vm_exists(api, NAME):
                call(api, "DELETE", f"/vm/{NAME}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
