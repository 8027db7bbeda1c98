"""The real `pvc` CLI (a subprocess, `python -m pvc.cli`) against a real pvcapid and ZooKeeper.

Each test gets its own client directory and a copy of the API's configuration as the implicit
`local` connection, exactly as on a cluster node.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from pvc.cluster import faults, state
from pvc.core import schema
from pvc.core.records import Memory, NodeRecord, VCpu
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import API_TOKEN, Api

GLOBAL_ENV = ("PVC_CONNECTION", "PVC_DEBUG", "PVC_QUIET", "PVC_SILENT", "PVC_UNSAFE", "PVC_COLOUR",
              "PVC_CLIENT_VERIFY_SSL", "NO_COLOR")


class Pvc:
    """Runs the CLI as a user would, with a private client directory."""

    def __init__(self, client_dir: Path, config: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k not in GLOBAL_ENV}
        self.env.update({"PVC_CLIENT_DIR": str(client_dir), "PVC_CONFIG_FILE": str(config),
                         "PYTHONUNBUFFERED": "1"})

    def __call__(self, *args: str, input: str | None = None,
                 timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pvc.cli", *args], env=self.env, input=input,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, f"pvc {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("-q", *args, "-f", "json"))


@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client = tmp_path / "client"
    client.mkdir()
    config = client / "pvc.conf"
    shutil.copy(api.daemon.config, config)  # the API's own file: the implicit "local" connection
    return Pvc(client, config)


def api_port(api: Api) -> str:
    return api.base.rsplit(":", 1)[1]


def register(zk: ZK, name: str, **fields: Any) -> NodeRecord:
    values: dict[str, Any] = {
        "mode": "coordinator", "daemon_state": "run", "coordinator_state": "secondary",
        "domain_state": "ready",
        "pvc_version": "1.0.3", "cpu_count": 4, "kernel": "6.1.0-test", "os": "linux", "arch": "x86_64",
        "load": 0.25, "memory": Memory(total=8192, used=2048, free=6144, allocated=1024, provisioned=2048),
        "vcpu": VCpu(total=4, allocated=2),
        "health_plugins": ["load"],      # its health checks reported (else its health is N/A)
    }
    record = NodeRecord(name=name, **{**values, **fields})
    zk.put(schema.node(name), record.doc())
    return record


@pytest.fixture
def cluster(zk: ZK) -> ZK:
    """hv1 (primary coordinator), hv2 (secondary coordinator), hv3 (hypervisor, flushed)."""
    state.ensure_cluster(zk, "test")  # what the first node daemon does
    register(zk, "hv1", coordinator_state="primary")
    register(zk, "hv2")
    register(zk, "hv3", mode="hypervisor", coordinator_state="client", domain_state="flushed")
    zk.put(schema.PRIMARY_NODE, "hv1")
    zk.put(schema.node_log("hv1"), [f"2024-01-01 00:00:0{i} INFO line {i}" for i in range(5)])
    return zk


# -- connections ---------------------------------------------------------------------------------------

def test_connection_add_list_detail_remove(pvc: Pvc, api: Api) -> None:
    listed = pvc.json("connection", "list")
    assert [c["name"] for c in listed] == ["local"]
    assert listed[0]["port"] == int(api_port(api)) and listed[0]["api_key"] != API_TOKEN  # masked

    out = pvc.ok("connection", "add", "lab", "-d", "The lab", "-a", "127.0.0.1", "-p", api_port(api),
                 "-k", API_TOKEN)
    assert out.strip() == f'Added connection "lab" (http://127.0.0.1:{api_port(api)}) to client database'
    store = Path(pvc.env["PVC_CLIENT_DIR"]) / "pvc.json"
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    assert json.loads(store.read_text())["lab"]["api_key"] == API_TOKEN
    assert pvc.ok("connection", "list", "-f", "raw").split() == ["lab", "local"]

    # with two connections and a local one, local is the default; -c picks the other
    assert pvc.json("-c", "lab", "cluster", "status")["nodes"] == {"total": 0}
    details = {d["name"]: d for d in pvc.json("connection", "detail")}
    assert details["lab"]["health"] == 100 and details["local"]["health"] == 100

    pvc.ok("connection", "add", "badkey", "-a", "127.0.0.1", "-p", api_port(api), "-k", "wrong-key-000")
    result = pvc("-q", "-c", "badkey", "cluster", "status")
    assert result.returncode == 1
    assert result.stderr == "X-Api-Key Authentication failed.\n" and result.stdout == ""

    assert "Removed" in pvc.ok("connection", "remove", "lab")
    result = pvc("-c", "lab", "cluster", "status")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert 'Invalid connection "lab"' in result.stderr and "Traceback" not in result.stderr


def test_unreachable_api_is_one_line(pvc: Pvc) -> None:
    port = str(free_port())
    pvc.ok("connection", "add", "nowhere", "-a", "127.0.0.1", "-p", port)
    result = pvc("-q", "-c", "nowhere", "node", "list")
    assert result.returncode == 1
    assert result.stderr.strip() == (f'Cannot reach the PVC API of connection "nowhere" at '
                                     f"http://127.0.0.1:{port}/api/v1: connection refused")


# -- cluster -------------------------------------------------------------------------------------------

def test_cluster_init(pvc: Pvc, zk: ZK) -> None:
    assert pvc.json("cluster", "status")["cluster_name"] == ""
    assert pvc.ok("-q", "cluster", "init", "--yes").strip() == "Successfully initialized a new PVC cluster"
    assert pvc.json("cluster", "status")["cluster_name"] == "test"
    again = pvc("-q", "cluster", "init", "--yes")
    assert again.returncode == 1 and "already initialized" in again.stderr
    register(zk, "hv1")
    declined = pvc("-q", "cluster", "init", "--overwrite", input="n\n")
    assert declined.returncode == 1 and "DELETE ALL EXISTING DATA" in declined.stderr
    assert pvc.json("node", "list")[0]["name"] == "hv1"
    pvc.ok("-q", "-u", "cluster", "init", "--overwrite")
    assert pvc.json("node", "list") == []


def test_cluster_status_and_maintenance(pvc: Pvc, cluster: ZK) -> None:
    status = pvc.json("cluster", "status")
    assert status["cluster_name"] == "test" and status["primary_node"] == "hv1"
    assert status["nodes"]["total"] == 3 and status["maintenance"] == "false"

    out = pvc.ok("-q", "cluster", "maintenance", "on")
    assert out.strip() == "Successfully set cluster in maintenance mode"
    assert pvc.json("cluster", "status")["maintenance"] == "true"
    assert "cluster in maintenance" in pvc.ok("-q", "cluster", "status")
    pvc.ok("-q", "cluster", "maintenance", "off")
    assert pvc.json("cluster", "status")["maintenance"] == "false"

    pretty = pvc.ok("-q", "cluster", "status")
    assert "Primary node:" in pretty and "hv1" in pretty and "3 total" in pretty
    assert "Health:" in pvc.ok("-q", "cluster", "status", "-f", "short")


def test_backup_to_file_and_restore(pvc: Pvc, cluster: ZK, tmp_path: Path) -> None:
    target = tmp_path / "backup.json"
    out = pvc.ok("-q", "cluster", "backup", "-f", str(target))
    assert out.strip() == f'Backup written to file "{target}"'
    dump = json.loads(target.read_text())
    assert isinstance(dump, dict) and schema.node("hv2") in dump  # the inner JSON, decoded once
    assert json.loads(pvc.ok("-q", "cluster", "backup")) == dump  # stdout carries the same document

    cluster.delete(schema.node("hv2"))
    assert [n["name"] for n in pvc.json("node", "list")] == ["hv1", "hv3"]

    refused = pvc("-q", "cluster", "restore", "-f", str(target), input="n\n")
    assert refused.returncode == 1 and "Aborted." in refused.stderr
    assert [n["name"] for n in pvc.json("node", "list")] == ["hv1", "hv3"]

    out = pvc.ok("-q", "cluster", "restore", "-f", str(target), "--yes")
    assert out.strip() == "Restore completed successfully"
    assert [n["name"] for n in pvc.json("node", "list")] == ["hv1", "hv2", "hv3"]


def test_restore_of_a_foreign_schema_changes_nothing(pvc: Pvc, cluster: ZK, tmp_path: Path) -> None:
    target = tmp_path / "backup.json"
    pvc.ok("-q", "cluster", "backup", "-f", str(target))
    dump = json.loads(target.read_text())
    dump[schema.SCHEMA_VERSION_PATH] = "999"
    dump[schema.node("hv9")] = json.dumps(NodeRecord(name="hv9").doc())
    target.write_text(json.dumps(dump))
    result = pvc("-q", "-u", "cluster", "restore", "-f", str(target))
    assert result.returncode == 1 and "schema version" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "hv9" not in [n["name"] for n in pvc.json("node", "list")]


def test_faults_list_ack_delete(pvc: Pvc, cluster: ZK) -> None:
    assert pvc.json("cluster", "fault", "list") == []
    assert pvc.ok("-q", "cluster", "fault", "list").strip() == "No faults found."
    disk = faults.raise_fault(cluster, "NODE_PLUGIN_DISK_HV2", 10, "hv2 disk: SMART errors")
    dead = faults.raise_fault(cluster, "DEAD_NODE_HV3", 50, "Node hv3 is dead")

    listed = pvc.json("cluster", "fault", "list", "--sort-key", "health_delta")
    assert [f["id"] for f in listed] == [dead.id, disk.id]
    assert pvc.json("cluster", "status")["cluster_health"]["health"] == 40
    short = pvc.ok("-q", "cluster", "fault", "list")
    assert dead.id in short and "Node hv3 is dead" in short
    assert "First Reported" in pvc.ok("-q", "cluster", "fault", "list", "-f", "long")

    assert "acknowledged" in pvc.ok("-q", "cluster", "fault", "ack", dead.id)
    by_id = {f["id"]: f for f in pvc.json("cluster", "fault", "list")}
    assert by_id[dead.id]["status"] == "ack" and by_id[dead.id]["health_delta"] == 0
    assert pvc.json("cluster", "status")["cluster_health"]["health"] == 90

    pvc.ok("-q", "cluster", "fault", "ack-all", "--yes")
    assert {f["status"] for f in pvc.json("cluster", "fault", "list")} == {"ack"}

    assert "deleted" in pvc.ok("-q", "cluster", "fault", "delete", disk.id)
    assert [f["id"] for f in pvc.json("cluster", "fault", "list")] == [dead.id]
    missing = pvc("-q", "cluster", "fault", "delete", disk.id)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and disk.id in missing.stderr

    faults.raise_fault(cluster, "OTHER", 5, "another")
    pvc.ok("-q", "-u", "cluster", "fault", "delete-all")
    assert pvc.json("cluster", "fault", "list") == []


def test_task_view_list_and_cancel(pvc: Pvc, cluster: ZK) -> None:
    out = pvc.ok("-q", "cluster", "selftest", "--no-wait").strip()
    assert out.startswith("Task ID: ") and out.endswith("assigned to node hv1 (primary)")
    task_id = out.split()[2]

    listed = pvc.json("cluster", "task")
    assert {"type": "pending", "id": task_id, "name": "cluster.selftest"}.items() <= listed[0].items()
    assert task_id in pvc.ok("-q", "cluster", "task")

    status = pvc.json("cluster", "task", task_id)
    assert status == {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}
    assert "PENDING" in pvc.ok("-q", "cluster", "task", task_id)

    assert "cancelled" in pvc.ok("-q", "cluster", "task", "cancel", task_id)
    assert pvc.json("cluster", "task", task_id)["state"] == "CANCELLED"
    waited = pvc("-q", "cluster", "task", task_id, "--wait")
    assert waited.returncode == 1 and waited.stderr.startswith("CANCELLED: ")

    again = pvc("-q", "cluster", "task", "cancel", task_id)
    assert again.returncode == 1 and "already finished" in again.stderr and again.stderr.count("\n") == 1
    unknown = pvc("-q", "cluster", "task", "ffffffff")
    assert unknown.returncode == 1 and "ffffffff" in unknown.stderr


# -- nodes ---------------------------------------------------------------------------------------------

def test_node_list_and_info(pvc: Pvc, cluster: ZK) -> None:
    nodes = pvc.json("node", "list")
    assert [n["name"] for n in nodes] == ["hv1", "hv2", "hv3"]
    assert nodes[0]["coordinator_state"] == "primary" and nodes[0]["memory"]["total"] == 8192
    assert pvc.ok("-q", "node", "list", "-f", "raw").split() == ["hv1", "hv2", "hv3"]
    assert [n["name"] for n in pvc.json("node", "list", "hv[12]")] == ["hv1", "hv2"]
    assert [n["name"] for n in pvc.json("node", "list", "-vs", "flushed")] == ["hv3"]
    assert [n["name"] for n in pvc.json("node", "list", "-cs", "primary", "-vs", "flushed")] == ["hv1", "hv3"]
    assert pvc.json("node", "list", "nomatch") == []

    table = pvc.ok("-q", "node", "list").splitlines()
    assert table[0].split()[:2] == ["Name", "PVC"]
    assert table[1].split() == ["hv1", "1.0.3", "100%", "run", "primary", "ready", "0", "4", "0.25",
                                "8G", "2G", "6G", "1G", "2G"]

    info = pvc.json("node", "info", "hv3")
    assert info["name"] == "hv3" and info["domain_state"] == "flushed"  # unwrapped from the array
    pretty = pvc.ok("-q", "node", "info", "hv1", "-f", "long")
    assert "Coordinator State:" in pretty and "primary" in pretty and "6.1.0-test" in pretty
    missing = pvc("-q", "node", "info", "hv9")
    assert missing.returncode == 1 and "hv9" in missing.stderr and missing.stderr.count("\n") == 1


def test_node_log(pvc: Pvc, cluster: ZK) -> None:
    assert pvc.ok("-q", "node", "log", "hv1", "-l", "2").splitlines() == [
        "2024-01-01 00:00:03 INFO line 3", "2024-01-01 00:00:04 INFO line 4"]
    assert len(pvc.ok("-q", "node", "log", "hv1").splitlines()) == 5
    assert pvc("-q", "node", "log", "hv9").returncode == 1


def test_node_log_follow_prints_new_lines(pvc: Pvc, cluster: ZK) -> None:
    args = [sys.executable, "-m", "pvc.cli", "-q", "node", "log", "hv1", "-l", "1", "--follow"]
    # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &` in a
    # non-interactive shell) inherits SIGINT ignored, and Python then installs no handler
    proc = subprocess.Popen(args, env=pvc.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=reader, daemon=True).start()
    try:
        assert lines.get(timeout=60) == "2024-01-01 00:00:04 INFO line 4"
        cluster.update(schema.node_log("hv1"), lambda old: [*old, "new line A", "new line B"])
        assert lines.get(timeout=60) == "new line A"
        assert lines.get(timeout=60) == "new line B"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends following quietly
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"pvc node log --follow did not end on Ctrl-C; stderr: "
                                 f"{proc.communicate()[1]!r}") from None
    assert proc.returncode == 0


def test_node_state_errors_and_is_primary(pvc: Pvc, cluster: ZK) -> None:
    result = pvc("-q", "node", "primary", "hv3")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "Node hv3 is not a coordinator and cannot be a primary node.\n"

    assert pvc("-q", "node", "is-primary", "hv1").returncode == 0
    assert pvc("-q", "node", "is-primary", "hv2").returncode == 1

    out = pvc.ok("-q", "node", "flush", "hv2")
    assert "hv2" in out
    assert pvc.json("node", "info", "hv2")["domain_state"] == "flush"  # the request; a daemon does the rest
    # nothing to wait for: hv3 is a flushed hypervisor asked to flush again
    assert "already" in pvc.ok("-q", "node", "flush", "hv3", "--wait")
    assert pvc("-q", "node", "flush", "hv9").returncode == 1


def test_version_and_help_need_no_cluster(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in GLOBAL_ENV}
    env.update({"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")})
    run = subprocess.run([sys.executable, "-m", "pvc.cli", "--version"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "Parallel Virtual Cluster CLI client version 1.0.3"
    run = subprocess.run([sys.executable, "-m", "pvc.cli", "node", "list"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1 and run.stderr.startswith("No connection specified")


def test_local_connection_reads_the_node_config(pvc: Pvc, api: Api, tmp_path: Path) -> None:
    """A wildcard listener in pvc.conf is reached over loopback, with the first token as key."""
    config = yaml.safe_load(Path(pvc.env["PVC_CONFIG_FILE"]).read_text())
    config["api"]["listen"]["address"] = "0.0.0.0"
    Path(pvc.env["PVC_CONFIG_FILE"]).write_text(yaml.safe_dump(config))
    assert pvc.json("-c", "local", "cluster", "status")["nodes"] == {"total": 0}
