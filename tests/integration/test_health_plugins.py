"""Node health checks with real processes and a real ZooKeeper: plugins that hang, raise or
return nonsense cost health and raise NODE_PLUGIN faults; upstream-style plugin files run
unchanged; files dropped in or removed are picked up without a restart; the IPMI password
never reaches a command line; pvcnoded writes health itself and None when it stops."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from pvc.cluster import nodes
from pvc.core import schema
from pvc.core.config import Settings, load_config
from pvc.core.records import NodeRecord
from pvc.core.zk import ZK
from pvc.node.health import loader
from pvc.node.health.runner import HealthService
from pvc.node.services.nodedoc import NodeDocument
from pvchealthd.host import PluginHost
from tests.conftest import start_daemon, wait_for

# Upstream's own style, verbatim in shape: no extension, imports from pvchealthd.
UPSTREAM_STYLE = '''#!/usr/bin/env python3

# upst.py - PVC Monitoring example plugin for upstream style
# Part of the Parallel Virtual Cluster (PVC) system

# This import is always required here, as MonitoringPlugin is used by the
# MonitoringPluginScript class
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin


# A monitoring plugin script must always expose its nice name, which must be identical to
# the file name
PLUGIN_NAME = "upst"


# The MonitoringPluginScript class must be named as such, and extend MonitoringPlugin.
class MonitoringPluginScript(MonitoringPlugin):
    def setup(self):
        """
        setup(): Perform special setup steps during node daemon startup
        """

        pass

    def run(self, coordinator_state=None):
        """
        run(): Perform the check actions and return a PluginResult object
        """

        # Run any imports first
        from daemon_lib.common import run_os_command

        retcode, stdout, stderr = run_os_command("echo upstream")

        # Set the health delta in our local PluginResult object
        self.plugin_result.set_health_delta(0)

        # Set the message in our local PluginResult object
        self.plugin_result.set_message(f"{stdout.strip()} on {self.this_node.name} as {coordinator_state}")

        # Set the data in our local PluginResult object
        self.plugin_result.set_data({"bridge": self.config["bridge_dev"]})

        # Return our local PluginResult object
        return self.plugin_result

    def cleanup(self):
        """
        cleanup(): Perform special cleanup steps during node daemon termination
        """

        pass
'''

HANG = '''
from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin

PLUGIN_NAME = "hang"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        import os
        import subprocess
        child = subprocess.Popen(["sleep", "600"])
        with open(os.environ["HANG_PIDFILE"], "w") as f:
            f.write(str(child.pid))
        child.wait()
        return self.plugin_result
'''

BOOM = '''
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin

PLUGIN_NAME = "boom"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        raise RuntimeError("disk on fire")
'''

NONSENSE = '''
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        return None
'''

REFUSE = '''
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self):
        return "no such hardware here"
'''

FINE = '''
import time
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        self.plugin_result.set_message(f"fine at {time.time()}")
        return self.plugin_result
'''


def settings_for(tmp_path: Path, zk_address: str, root: str, plugins: Path, **health: Any) -> Settings:
    config = {
        "cluster": {"name": "t", "coordinator_nodes": ["hv1"], "all_nodes": ["hv1"]},
        "zookeeper": {"hosts": [zk_address], "root": root, "acl": False},
        "node": {"name": "hv1"},
        "path": {"plugin_directory": str(plugins)},
        "health": {"plugin_timeout": 3, **health},
    }
    path = tmp_path / "pvc.conf"
    path.write_text(yaml.safe_dump(config))
    return load_config(str(path))


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    return directory


@pytest.fixture
def service(tmp_path: Path, zk: ZK, zk_server: Any, zk_root: str, plugins: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[HealthService]:
    monkeypatch.setenv("HANG_PIDFILE", str(tmp_path / "hang.pid"))
    monkeypatch.setattr(loader, "ALLOWED_OWNERS", (0, os.getuid()))       # the seam for non-root runs
    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run").doc())
    settings = settings_for(tmp_path, zk_server.address, zk_root, plugins, plugin_timeouts={"hang": 1.5})
    svc = HealthService(settings, zk, NodeDocument(zk, "hv1"), threading.Event())
    yield svc
    svc.host.close()


def fault(zk: ZK, fid: str) -> dict[str, Any] | None:
    doc = zk.get(schema.fault(fid), None)
    return doc if isinstance(doc, dict) else None


def cleared(zk: ZK, fid: str) -> bool:
    """Gone, or (H6's resolve semantics) kept as no longer active."""
    doc = fault(zk, fid)
    return doc is None or doc.get("active") is False


def test_hang_and_raise_cost_health_and_raise_faults(service: HealthService, zk: ZK, plugins: Path,
                                                     tmp_path: Path) -> None:
    (plugins / "hang.py").write_text(HANG)
    (plugins / "boom.py").write_text(BOOM)
    (plugins / "upst").write_text(UPSTREAM_STYLE)
    report = service.run_pass()
    assert sorted(report.ran) == ["boom", "hang", "upst"]
    node = nodes.get_node(zk, "hv1")
    assert node.health == 80
    assert node.health_plugins == ["boom", "hang", "upst"]
    details = {d["name"]: d for d in node.health_details}
    assert details["hang"]["health_delta"] == 10
    assert details["hang"]["message"] == "timed out after 1.5 s"
    assert details["boom"]["health_delta"] == 10 and "disk on fire" in details["boom"]["message"]
    assert details["upst"] == {**details["upst"], "health_delta": 0, "message": "upstream on hv1 as client",
                               "data": {"bridge": "eth1"}}
    assert set(details["upst"]) >= {"name", "last_run", "health_delta", "message", "data", "runtime"}
    # the hung plugin's whole process group is gone, its `sleep` included
    pid = int((tmp_path / "hang.pid").read_text())
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 5,
             message="the hung plugin's child killed")
    hang_fault, boom_fault = fault(zk, "NODE_PLUGIN_HANG_HV1"), fault(zk, "NODE_PLUGIN_BOOM_HV1")
    assert hang_fault is not None and hang_fault["health_delta"] == 5
    assert hang_fault["message"] == "hv1 hang: timed out after 1.5 s"
    assert boom_fault is not None and "disk on fire" in boom_fault["message"]
    assert fault(zk, "NODE_PLUGIN_UPST_HV1") is None

    # fixed: the faults clear and health returns
    (plugins / "hang.py").write_text(FINE)
    (plugins / "boom.py").unlink()
    service.run_pass()
    node = nodes.get_node(zk, "hv1")
    assert node.health == 100 and node.health_plugins == ["hang", "upst"]
    assert cleared(zk, "NODE_PLUGIN_HANG_HV1") and cleared(zk, "NODE_PLUGIN_BOOM_HV1")


def test_bad_results_and_refusals(service: HealthService, zk: ZK, plugins: Path) -> None:
    (plugins / "nonsense.py").write_text(NONSENSE)
    (plugins / "refuse.py").write_text(REFUSE)
    (plugins / "broken.py").write_text("def oops(:\n")
    report = service.run_pass()
    assert report.refused == {"refuse": "no such hardware here"}
    node = nodes.get_node(zk, "hv1")
    assert node.health_plugins == ["broken", "nonsense"]          # a refusal is not loaded, not a fault
    details = {d["name"]: d for d in node.health_details}
    assert "run() returned NoneType" in details["nonsense"]["message"]
    assert details["broken"]["message"].startswith("SyntaxError")
    assert node.health == 80
    assert fault(zk, "NODE_PLUGIN_REFUSE_HV1") is None
    assert "refuse" not in service.run_pass().ran                   # not asked again until it changes
    (plugins / "refuse.py").write_text(FINE)
    assert "refuse" in service.run_pass().ran


def test_dropped_in_files_run_and_last_run_moves(service: HealthService, zk: ZK, plugins: Path) -> None:
    service.run_pass()
    assert nodes.get_node(zk, "hv1").health_plugins == []
    (plugins / "fine.py").write_text(FINE)
    service.run_pass()
    first = {d["name"]: d for d in nodes.get_node(zk, "hv1").health_details}["fine"]
    assert abs(first["last_run"] - time.time()) < 60
    time.sleep(1.1)
    service.run_pass()
    second = {d["name"]: d for d in nodes.get_node(zk, "hv1").health_details}["fine"]
    assert second["last_run"] > first["last_run"]
    assert second["message"] != first["message"]                   # a fresh result each run


def test_a_plugin_host_that_dies_is_a_deduction_and_comes_back(service: HealthService, zk: ZK,
                                                                plugins: Path) -> None:
    (plugins / "fine.py").write_text(FINE)
    service.run_pass()
    os.killpg(service.host.pid, 9)
    # dead before the next pass begins (the case a loaded machine hit: it used to be restarted
    # silently); a death during a pass is a deduction too
    wait_for(lambda: service.host.proc is not None and service.host.proc.poll() is not None, 10,
             message="the killed plugin host to exit")
    service.run_pass()
    details = {d["name"]: d for d in nodes.get_node(zk, "hv1").health_details}
    assert details["fine"]["health_delta"] == 10 and "plugin host" in details["fine"]["message"]
    service.run_pass()
    assert nodes.get_node(zk, "hv1").health == 100


def test_ipmi_password_reaches_ipmitool_by_environment_only(tmp_path: Path, zk: ZK, zk_server: Any,
                                                            zk_root: str, plugins: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped ipmi plugin against a stand-in ipmitool that records its argv and env."""
    record = tmp_path / "ipmitool.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "ipmitool"
    tool.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env python3
        import json, os, sys
        json.dump({{"argv": sys.argv, "env": os.environ.get("IPMI_PASSWORD")}}, open("{record}", "w"))
        print("Chassis Power is on")
        """))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    secret = "bmc-Secret-4711"
    src = Path(__file__).resolve().parents[2] / "src" / "pvc" / "node" / "health" / "plugins" / "ipmi.py"
    (plugins / "ipmi.py").write_text(src.read_text())
    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run").doc())
    settings = settings_for(tmp_path, zk_server.address, zk_root, plugins)
    settings = settings.model_copy(update={"fencing": settings.fencing.model_copy(update={
        "agent": "ipmi", "ipmi": settings.fencing.ipmi.model_copy(update={"password": secret})})})
    host = PluginHost()
    svc = HealthService(settings, zk, NodeDocument(zk, "hv1"), threading.Event(), host=host)
    try:
        svc.run_pass()
        assert secret not in " ".join(psutil.Process(host.pid).cmdline())
    finally:
        host.close()
    seen = json.loads(record.read_text())
    assert seen["env"] == secret and secret not in " ".join(seen["argv"])
    assert "-E" in seen["argv"] and "hv1-lom" in seen["argv"]
    details = {d["name"]: d for d in nodes.get_node(zk, "hv1").health_details}
    assert details["ipmi"]["health_delta"] == 0 and "Chassis Power is on" in details["ipmi"]["message"]


def test_node_daemon_writes_health_and_none_when_stopped(zk: ZK, daemons, config_factory,
                                                         tmp_path: Path) -> None:
    plugins = tmp_path / "daemon-plugins"
    plugins.mkdir()
    (plugins / "fine.py").write_text(FINE)
    (plugins / "boom.py").write_text(BOOM)
    # hv4 is a hypervisor: a lone coordinator's stop waits for a successor to take the primary over
    config = config_factory("hv4", timer={"keepalive_interval": 1, "monitoring_interval": 1})
    data = yaml.safe_load(config.read_text())
    data["path"]["plugin_directory"] = str(plugins)        # `path` is write_config's own parameter
    config.write_text(yaml.safe_dump(data))
    daemon = start_daemon(daemons, "pvc.node.daemon", config)
    wait_for(lambda: zk.exists(schema.node("hv4")) and nodes.get_node(zk, "hv4").health == 90, 30,
             message="the daemon's first health pass")
    assert nodes.get_node(zk, "hv4").health_plugins == ["boom", "fine"]
    assert fault(zk, "NODE_PLUGIN_BOOM_HV4") is not None
    (plugins / "boom.py").unlink()
    wait_for(lambda: nodes.get_node(zk, "hv4").health == 100, 15, message="health back after the removal")
    wait_for(lambda: bool(nodes.get_node(zk, "hv4").interfaces), 15, message="NIC figures")
    assert daemon.stop() == 0
    assert nodes.get_node(zk, "hv4").health is None


def test_stop_ends_a_running_pass_and_its_plugins(tmp_path: Path, zk: ZK, zk_server: Any, zk_root: str,
                                                  plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANG_PIDFILE", str(tmp_path / "hang.pid"))
    (plugins / "hang.py").write_text(HANG)
    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run").doc())
    stopping = threading.Event()
    settings = settings_for(tmp_path, zk_server.address, zk_root, plugins, plugin_timeouts={"hang": 120})
    svc = HealthService(settings, zk, NodeDocument(zk, "hv1"), stopping)
    svc.start()
    wait_for(lambda: (tmp_path / "hang.pid").exists(), 15, message="the hanging plugin started")
    pid = int((tmp_path / "hang.pid").read_text())
    stopping.set()
    svc.stop()
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 5,
             message="the hung plugin's child killed")
    assert nodes.get_node(zk, "hv1").health is None
    assert fault(zk, "NODE_PLUGIN_HANG_HV1") is None          # a pass cut short records nothing


def test_first_pass_clears_faults_of_plugins_fixed_or_removed_while_down(service: HealthService, zk: ZK,
                                                                         plugins: Path) -> None:
    from pvc.cluster import faults as cluster_faults

    for fid in ("NODE_PLUGIN_GONE_HV1", "NODE_PLUGIN_FINE_HV1", "NODE_PLUGIN_GONE_HV11"):
        cluster_faults.raise_fault(zk, fid, 5, "left over")
    (plugins / "fine.py").write_text(FINE)
    service.run_pass()
    assert cleared(zk, "NODE_PLUGIN_GONE_HV1") and cleared(zk, "NODE_PLUGIN_FINE_HV1")
    assert not cleared(zk, "NODE_PLUGIN_GONE_HV11")                 # another node's


def test_plugin_files_anyone_but_root_could_change_are_refused_with_a_fault(
        service: HealthService, zk: ZK, plugins: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("fine", "open", "theirs"):
        (plugins / f"{name}.py").write_text(FINE)
    (plugins / "open.py").chmod(0o666)
    other_uid = os.getuid() == 0              # only root can give a file away
    if other_uid:
        os.chown(plugins / "theirs.py", 4242, 4242)
    caplog.set_level("INFO", logger="pvcnoded")
    report = service.run_pass()
    assert report.ran == (["fine"] if other_uid else ["fine", "theirs"])
    assert "world-writable (mode 0666)" in report.refused["open"]
    node = nodes.get_node(zk, "hv1")
    details = {d["name"]: d for d in node.health_details}
    assert details["open"]["error"] and details["open"]["health_delta"] == 10
    assert node.health == (80 if other_uid else 90)
    message = fault(zk, "NODE_PLUGIN_OPEN_HV1")["message"]
    assert f"plugin file {plugins}/open.py is group- and world-writable (mode 0666)" in message
    assert "owned by root" in message
    if other_uid:
        assert f"plugin file {plugins}/theirs.py is owned by uid 4242, not root" in \
            fault(zk, "NODE_PLUGIN_THEIRS_HV1")["message"]
    service.run_pass()
    warnings = [r.getMessage() for r in caplog.records if "not run:" in r.getMessage()]
    assert len(warnings) == (2 if other_uid else 1)            # once per file, not once per pass
    # fixed: it runs on the next pass and its fault is resolved
    (plugins / "open.py").chmod(0o644)
    if other_uid:
        os.chown(plugins / "theirs.py", 0, 0)
    report = service.run_pass()
    assert sorted(report.ran) == ["fine", "open", "theirs"] and not report.refused
    assert nodes.get_node(zk, "hv1").health == 100
    assert cleared(zk, "NODE_PLUGIN_OPEN_HV1") and cleared(zk, "NODE_PLUGIN_THEIRS_HV1")
    # a group-writable plugin directory refuses every file in it
    plugins.chmod(0o775)
    report = service.run_pass()
    assert sorted(report.refused) == ["fine", "open", "theirs"] and not report.ran
    assert "plugin directory" in fault(zk, "NODE_PLUGIN_FINE_HV1")["message"]
    plugins.chmod(0o755)
