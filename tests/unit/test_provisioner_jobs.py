"""Provisioner job pieces: vm_id, MAC templates, the vm_data shape, script loading, the sandbox,
the example scripts' XML, and the `pvc provisioner create|status|cancel` commands."""

from __future__ import annotations

import importlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.cluster.provisioner import ProfileDocs
from pvc.core import domainxml
from pvc.worker.provisioner import macs, vmdata
from pvc.worker.provisioner.sandbox import Sandbox, StageError, code_under_tmp
from pvc.worker.provisioner.vmbuilder import ProvisioningError, VMBuilder, load_script, vm_id_of
from tests.unit.test_cli_flows import FakeApi, pvc

EXAMPLES = Path(vmdata.__file__).parent / "examples"
SECRET = "96721723-8650-4a72-b8f6-a93cd1a20f0c"


# -- vm_id, MACs ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "vm_id"), [("web2", 2), ("db10", 10), ("web", 0), ("a1b", 0),
                                             ("x007", 7), ("", 0), ("host-12", 12)])
def test_vm_id_is_the_numeric_suffix(name: str, vm_id: int) -> None:
    assert vm_id_of(name) == vm_id
    assert VMBuilder(name).vm_id == vm_id


def test_builder_attributes() -> None:
    builder = VMBuilder("web3", None, "prof", {"a": 1})
    assert (builder.vm_name, builder.vm_id, builder.vm_profile) == ("web3", 3, "prof")
    assert builder.vm_data == {"a": 1}
    assert len(str(builder.vm_uuid)) == 36 and builder.create() is None
    with pytest.raises(ProvisioningError, match="boom"):
        builder.fail("boom")
    with pytest.raises(ValueError):
        builder.fail("boom", exception=ValueError)


def test_mac_templates() -> None:
    assert macs.template_mac("{prefix}:ff:ff:{vmid}{netid}", 2, 1) == "52:54:01:ff:ff:21"
    # both wrap at 16
    assert macs.template_mac("{prefix}:ff:ff:{vmid}{netid}", 17, 18) == "52:54:01:ff:ff:12"
    assert macs.template_mac("{prefix}:aa:{vmid}{vmid}:0{netid}", 11, 15) == "52:54:01:aa:bb:0f"
    with pytest.raises(macs.MacTemplateError, match="not a MAC"):
        macs.template_mac("{prefix}:ff:{vmid}{netid}", 1, 1)
    with pytest.raises(macs.MacTemplateError, match="allowed variables"):
        macs.template_mac("{prefix}:ff:ff:{vm}{netid}", 1, 1)


def test_random_macs() -> None:
    rng = random.Random(4)
    for _ in range(500):
        mac = macs.random_mac(rng)
        parts = mac.split(":")
        assert parts[:3] == ["52", "54", "00"] and all(0x10 <= int(p, 16) <= 0xEE for p in parts[3:])
    assert macs.mac_for(None, 1, 0).startswith("52:54:00:")
    assert macs.mac_for("{prefix}:00:00:{vmid}{netid}", 1, 0) == "52:54:01:00:00:10"


# -- vm_data --------------------------------------------------------------------------------------

SYSTEM = {"id": 78, "name": "small", "vcpu_count": 2, "vram_mb": 2048, "serial": True, "vnc": False,
          "vnc_bind": None, "node_limit": None, "node_selector": None, "node_autostart": False,
          "migration_method": "live", "migration_max_downtime": 300, "ova": None}


def docs(**extra: Any) -> ProfileDocs:
    network = {"id": 69, "name": "net", "mac_template": None, "ova": None,
               "networks": [{"id": 72, "vni": 1001}, {"id": 73, "vni": "101"}, {"id": 74, "vni": "upstream"}]}
    storage = {"id": 67, "name": "std", "ova": None, "disks": [
        {"id": 10, "disk_id": "sdb", "pool": "vms", "source_volume": None, "disk_size_gb": 4,
         "filesystem": "ext4", "filesystem_args": ["-L=var"], "mountpoint": "/var"},
        {"id": 9, "disk_id": "sda", "pool": "vms", "source_volume": None, "disk_size_gb": 4,
         "filesystem": "ext4", "filesystem_args": ["-L=root", "-m", "1"], "mountpoint": "/"}]}
    values: dict[str, Any] = {"name": "std-large", "profile": {"network_template": "net"}, "system": SYSTEM,
                              "script_name": "s", "script": "text", "network": network, "storage": storage,
                              "arguments": ["deb_release=buster", "deb_mirror=http://ftp.debian.org/debian"]}
    values.update(extra)
    return ProfileDocs(**values)


def test_vm_data_has_upstreams_shape() -> None:
    data = vmdata.build_vm_data(docs(), ["deb_release=bullseye", "x=a=b"],
                                [("hv1.pvc", 6789), ("hv2.pvc", 6789)], SECRET,
                                architecture="x86_64")
    assert set(data) == {"ceph_monitor_list", "ceph_monitor_port", "ceph_monitor_secret", "mac_template",
                         "networks", "script", "script_arguments", "system_architecture", "system_details",
                         "volumes"}
    assert data["ceph_monitor_list"] == ["hv1.pvc", "hv2.pvc"] and data["ceph_monitor_port"] == "6789"
    assert data["mac_template"] is None and data["script"] == "text"
    assert data["networks"] == [
        {"id": 72, "network_template": 69, "vni": "1001", "eth_bridge": "vmbr1001"},
        {"id": 73, "network_template": 69, "vni": "101", "eth_bridge": "vmbr101"},
        {"id": 74, "network_template": 69, "vni": "upstream", "eth_bridge": "brupstream"}]
    assert data["script_arguments"] == {"deb_release": "bullseye", "deb_mirror": "http://ftp.debian.org/debian",
                                        "x": "a=b"}
    assert data["system_details"] == SYSTEM and data["system_architecture"] == "x86_64"
    assert [v["disk_id"] for v in data["volumes"]] == ["sda", "sdb"]
    assert data["volumes"][0] == {"id": 9, "storage_template": 67, "disk_id": "sda", "pool": "vms",
                                  "source_volume": None, "disk_size_gb": 4, "filesystem": "ext4",
                                  "filesystem_args": "-L=root -m 1", "mountpoint": "/"}
    json.dumps(data)
    assert vmdata.volume_names("web1", data) == [("vms", "web1_sda"), ("vms", "web1_sdb")]


def test_vm_data_ova_and_defaults() -> None:
    ova = {"id": 5, "name": "appliance", "ovf": "<xml/>", "volumes": [
        {"pool": "vms", "volume_name": "ova_appliance_sda", "volume_format": "vmdk", "disk_id": "sda",
         "disk_size_gb": 2}]}
    data = vmdata.build_vm_data(docs(network=None, storage=None, ova=ova, arguments=[]))
    assert data["ova_details"] == {"id": 5, "name": "appliance", "ovf": "<xml/>"}
    assert data["volumes"][0]["volume_name"] == "ova_appliance_sda" and data["networks"] == []
    assert data["ceph_monitor_list"] == [] and data["ceph_monitor_port"] == "6789"
    assert data["system_architecture"] == os.uname().machine


def test_bad_arguments() -> None:
    with pytest.raises(Exception, match="arg: 'nope' is not in key=value form"):
        vmdata.build_vm_data(docs(), ["nope"])


# -- script loading -------------------------------------------------------------------------------

def test_load_script_errors() -> None:
    with pytest.raises(ProvisioningError, match='Script "s" defines no class VMBuilderScript'):
        load_script("from pvcapid.vmbuilder import VMBuilder\nclass Other(VMBuilder):\n    pass\n", "s")
    with pytest.raises(ProvisioningError, match='Script "s": syntax error at line 3'):
        load_script("import os\n\nclass VMBuilderScript(VMBuilder)\n    pass\n", "s")
    with pytest.raises(ProvisioningError, match="must be a class derived from VMBuilder"):
        load_script("class VMBuilderScript:\n    pass\n", "s")
    with pytest.raises(ProvisioningError, match="loading it failed at line 2: ModuleNotFoundError"):
        load_script("import os\nimport no_such_module_here\n", "s")


def test_load_script_accepts_both_import_paths() -> None:
    for module in ("pvcapid.vmbuilder", "daemon_lib.vmbuilder", "pvc.worker.provisioner.vmbuilder"):
        text = f"from {module} import VMBuilder\nclass VMBuilderScript(VMBuilder):\n    pass\n"
        cls = load_script(text, "s")
        assert issubclass(cls, VMBuilder)


def test_compat_modules_import() -> None:
    for module in ("pvcapid.vmbuilder", "pvcapid.libvirt_schema", "pvcapid.Daemon", "daemon_lib.common",
                   "daemon_lib.ceph", "pvcworkerd.Daemon"):
        importlib.import_module(module)
    from daemon_lib.common import run_os_command

    assert run_os_command("echo hello world") == (0, "hello world\n", "")
    code, _out, err = run_os_command("no-such-program-pvc")
    assert code == 255 and err


def builder_for(script: Path, vm_data: dict[str, Any], name: str = "web2") -> VMBuilder:
    cls = load_script(script.read_text(), script.name)
    return cls(name, None, "prof", vm_data)


def test_examples_build_valid_xml() -> None:
    template = docs(network={"id": 1, "mac_template": "{prefix}:ff:ff:{vmid}{netid}",
                             "networks": [{"id": 2, "vni": "100"}]})
    data = vmdata.build_vm_data(template, [], [("hv1", 6789)], SECRET, "x86_64")
    for script in sorted(EXAMPLES.glob("*.py")):
        if script.name == "4-ova.py":
            data = {**data, "ova_details": {"name": "ova1"}}
        if script.name == "2-clone.py":
            data = {**data, "script_arguments": {"kernel": "/boot/k", "initrd": "/boot/i"}}
        builder = builder_for(script, data)
        builder.setup()
        domain = domainxml.parse(builder.create())
        assert domain.name == "web2" and domain.memory_mib == 2048 and domain.vcpus == 2, script.name
        assert [d.source.name for d in domain.disks if d.source and d.source.name] == [
            "vms/web2_sda", "vms/web2_sdb"], script.name
        nics = [(n.mac, n.source) for n in domain.interfaces]
        assert nics == [("52:54:01:ff:ff:20", "vmbr100")], script.name
        assert domain.uuid == str(builder.vm_uuid)


# -- sandbox --------------------------------------------------------------------------------------

SANDBOXED = '''
import os
from pvcapid.vmbuilder import VMBuilder

class VMBuilderScript(VMBuilder):
    def setup(self):
        self.log_info(f"tmp={sorted(os.listdir('/tmp'))} id={self.vm_id} arg={self.vm_data['x']}")
        for path in ("/etc/pvc-sandbox-test", "/usr/pvc-sandbox-test"):
            try:
                open(path, "w")
                self.log_err(f"wrote {path}")
            except OSError as exc:
                self.log_info(f"read-only {path}: {exc.errno}")
        with open("/tmp/target/file", "w") as f:
            f.write("x")
        with open("/run/pvc-sandbox-test", "w") as f:
            f.write("x")
        os.unlink("/run/pvc-sandbox-test")
        self.kept = "kept"
        print("printed line")

    def create(self):
        return f"<domain>{self.kept}</domain>"

    def install(self):
        import time
        time.sleep(60)

    def prepare(self):
        raise RuntimeError("prepare broke")
'''

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (mount namespaces)")


@needs_root
def test_sandbox_is_read_only_with_fresh_tmp_and_time_limit(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"pvc-host-marker-{os.getpid()}"
    marker.write_text("host")
    lines: list[str] = []
    try:
        with Sandbox(script=SANDBOXED, script_name="t", vm_name="web7", vm_profile="p", vm_data={"x": 1},
                     vm_uuid="", log=lines.append) as box:
            box.start()
            assert box.vm_id == 7
            box.run("setup", 10)
            assert box.run("create", 10) == "<domain>kept</domain>"
            with pytest.raises(StageError) as failed:
                box.run("prepare", 10)
            assert failed.value.kind == "failed"
            assert failed.value.message == "RuntimeError: prepare broke (script line 30)"
            started = time.monotonic()
            with pytest.raises(StageError) as timed_out:
                box.run("install", 1)
            assert timed_out.value.kind == "timeout" and time.monotonic() - started < 10
            box.run("cleanup", 5)   # the process survives a time limit: cleanup() still runs
            root = box.root
        assert root is not None and not os.path.exists(root)
    finally:
        marker.unlink()
    text = "\n".join(lines)
    # a fresh /tmp: the host's marker is not there (only /tmp/target, and PVC's own code when it
    # runs from a checkout under /tmp, as in CI)
    code = [p.split("/")[2] for p in code_under_tmp()]
    assert f"tmp={sorted(['target', *code])} id=7 arg=1" in text
    assert "read-only /etc/pvc-sandbox-test: 30" in text and "read-only /usr/pvc-sandbox-test: 30" in text
    assert "wrote" not in text and "script: printed line" in text
    assert not Path("/etc/pvc-sandbox-test").exists() and not Path("/tmp/target/file").exists()


@needs_root
def test_sandbox_load_errors_and_hard_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    box = Sandbox(script="class Nope: pass\n", script_name="bad", vm_name="x", vm_profile="p", vm_data={},
                  vm_uuid="", log=lambda _l: None)
    with pytest.raises(StageError) as error:
        box.start()
    box.close()
    assert error.value.kind == "load" and "defines no class VMBuilderScript" in error.value.message
    # a stage that ignores the time limit (signals blocked) is killed after the grace time
    monkeypatch.setattr("pvc.worker.provisioner.sandbox.GRACE", 1.0)
    stubborn = ("import signal, time\nfrom pvcapid.vmbuilder import VMBuilder\n"
                "class VMBuilderScript(VMBuilder):\n    def setup(self):\n"
                "        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})\n"
                "        time.sleep(60)\n")
    with Sandbox(script=stubborn, script_name="s", vm_name="x", vm_profile="p", vm_data={}, vm_uuid="",
                 log=lambda _l: None) as box:
        box.start()
        with pytest.raises(StageError) as killed:
            box.run("setup", 1)
        assert killed.value.kind == "timeout" and "killed" in killed.value.message
        assert box.proc is not None and box.proc.wait(5) is not None


# -- CLI ------------------------------------------------------------------------------------------

@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    (tmp_path / "pvc.json").write_text(json.dumps({"c1": {
        "description": "test", "host": "pvc.example", "port": 7370, "scheme": "http", "api_key": "KEY"}}))
    return {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}


def test_cli_create_sends_upstream_parameters(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/provisioner/create", httpx.Response(202, json={
        "task_id": "af1d0682", "task_name": "provisioner.create", "run_on": "hv1 (primary)"}))
    result = pvc(api, env, "-q", "provisioner", "create", "test4", "std-large", "--no-define", "--no-wait",
                 "--script-arg", "vm_fqdn=testhost.example.tld", "--script-arg", "my_foo=True")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Task ID: af1d0682 assigned to node hv1 (primary)\n"     # as upstream
    params = api.sent("POST", "/provisioner/create")[0].url.params
    assert params["name"] == "test4" and params["profile"] == "std-large"
    assert params["define_vm"] == "false" and params["start_vm"] == "false"
    assert params.get_list("arg") == ["vm_fqdn=testhost.example.tld", "my_foo=True"]
    bad = pvc(api, env, "-q", "provisioner", "create", "t", "p", "--script-arg", "novalue")
    assert bad.exit_code != 0 and "key=value" in bad.output


def test_cli_create_wait_follows_the_job(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/provisioner/create", httpx.Response(202, json={
        "task_id": "94abb7fe", "task_name": "provisioner.create", "run_on": "hv1 (primary)"}))
    answers = iter([{"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"},
                    {"state": "RUNNING", "current": 4, "total": 11, "status": "Running script setup() step"},
                    {"state": "SUCCESS", "current": 11, "total": 11, "status":
                     'VM "test2" with profile "std-large" has been provisioned and started successfully'}])
    api.on("GET", "/tasks/94abb7fe", lambda _r: next(answers))
    result = pvc(api, env, "-q", "provisioner", "create", "--wait", "test2", "std-large")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith('SUCCESS: VM "test2" with profile "std-large" has been provisioned and '
                                  'started successfully\n')
    api.on("GET", "/tasks/94abb7fe", {"state": "FAILURE", "current": 1, "total": 1, "status": "nope"})
    failed = pvc(api, env, "-q", "provisioner", "create", "--wait", "test2", "std-large")
    assert failed.exit_code == 1 and "FAILURE: nope" in failed.stderr


def test_cli_status_and_cancel(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/provisioner/status", [
        {"id": "af1d0682", "state": "RUNNING", "worker": "hv1", "vm_name": "test1", "vm_profile": "std-large",
         "define_vm": True, "start_vm": True, "status": "Running script setup() step"},
        {"id": "43d57a2d", "state": "PENDING", "worker": "", "target": "primary", "vm_name": "testX",
         "vm_profile": "std-large", "define_vm": False, "start_vm": False, "status": "Pending job start"}])
    result = pvc(api, env, "-q", "provisioner", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["Job", "ID", "Status"]
    assert lines[1].split()[:6] == ["af1d0682", "active", "hv1", "test1", "std-large", "True"]
    assert lines[2].split()[:3] == ["43d57a2d", "pending", "primary"]
    api.on("GET", "/provisioner/status/af1d0682", {"state": "RUNNING", "current": 4, "total": 11,
                                                   "status": "Running script setup() step"})
    one = pvc(api, env, "-q", "provisioner", "status", "af1d0682")
    assert one.stdout == "Job state: RUNNING\nStage: 4/11\nStatus: Running script setup() step\n"
    as_json = pvc(api, env, "-q", "provisioner", "status", "af1d0682", "-f", "json")
    assert json.loads(as_json.stdout)["current"] == 4
    cancelled = {"message": "Cancellation of running task af1d0682 requested."}
    api.on("DELETE", "/provisioner/status/af1d0682", cancelled)
    assert pvc(api, env, "-q", "provisioner", "cancel", "af1d0682").stdout == (
        "Cancellation of running task af1d0682 requested.\n")
