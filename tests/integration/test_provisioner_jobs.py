"""The provisioner.create task in-process against a real ZooKeeper and a FakeStorage.

The script runs in its real sandbox (a child process in its own mount namespace; needs root).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.ceph.fake import FakeStorage
from pvc.cluster import storage as st
from pvc.cluster import tasks, vms
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import Memory
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE
from pvc.core.zk import ZK
from pvc.worker.provisioner import runner
from pvc.worker.provisioner.sandbox import Sandbox
from pvc.worker.runner import Worker
from tests.conftest import wait_for
from tests.integration.apihelp import node_record, register_nodes

EXAMPLES = Path(runner.__file__).parent / "examples"
GIB = 1024**3

FAILING = '''
from pvcapid.vmbuilder import VMBuilder, ProvisioningError

class VMBuilderScript(VMBuilder):
    def create(self):
        return f"""<domain type='kvm'><name>{self.vm_name}</name><uuid>{self.vm_uuid}</uuid>
<memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices><disk type='network' device='disk'><source protocol='rbd' name='vms/{self.vm_name}_sda'/>
<target dev='sda' bus='scsi'/></disk></devices></domain>"""

    def install(self):
        self.log_info("installing")
        raise ProvisioningError("install exploded")

    def cleanup(self):
        self.log_info("script cleanup ran")
'''

SLOW = '''
import time
from pvcapid.vmbuilder import VMBuilder

class VMBuilderScript(VMBuilder):
    def setup(self):
        self.log_info("setup sleeping")
        time.sleep(120)

    def cleanup(self):
        self.log_info("script cleanup ran")
'''


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStorage:
    storage = FakeStorage()
    monkeypatch.setattr(runner, "storage_for", lambda _settings: storage)
    return storage


@pytest.fixture
def settings(config_factory: Any) -> Any:
    return load_config(str(config_factory()))


def cluster(zk: ZK, fake: FakeStorage) -> None:
    memory = Memory(total=16384, free=12000)
    register_nodes(zk, None, node_record("hv1", coordinator_state="primary", memory=memory),
                   node_record("hv2", memory=memory))
    zk.put(schema.PRIMARY_NODE, "hv1")
    fake.create_pool("vms", 32, 3, 2)
    zk.put(schema.pool("vms"), {"name": "vms", "tier": "default", "stats": {}})
    zk.put(schema.pool_volumes("vms"), None)


def profile(zk: ZK, script: str, storage: bool = False, arguments: list[str] | None = None) -> None:
    zk.put(schema.system_template("small"), {
        "id": 1, "name": "small", "vcpu_count": 1, "vram_mb": 256, "serial": True, "vnc": False,
        "vnc_bind": None, "node_limit": None, "node_selector": None, "node_autostart": False,
        "migration_method": "live", "migration_max_downtime": 300, "ova": None})
    zk.put(schema.script("test"), {"id": 1, "name": "test", "script": script})
    doc: dict[str, Any] = {"id": 1, "name": "prof", "profile_type": "provisioner", "system_template": "small",
                           "network_template": None, "storage_template": None, "userdata": None,
                           "script": "test", "ova": None, "arguments": arguments or []}
    if storage:
        zk.put(schema.storage_template("disks"), {"id": 3, "name": "disks", "ova": None, "disks": [
            {"id": 9, "disk_id": "sda", "pool": "vms", "source_volume": None, "disk_size_gb": 1,
             "filesystem": None, "filesystem_args": [], "mountpoint": None}]})
        doc["storage_template"] = "disks"
    zk.put(schema.profile("prof"), doc)


def run(zk: ZK, settings: Any, **args: Any) -> tasks.TaskRecord:
    task = tasks.submit(zk, PROVISIONER_CREATE, {"vm_name": "web2", "vm_profile": "prof", **args},
                        target="hv1")
    _task, version = next((t, v) for t, v in tasks.load_tasks(zk) if t.id == task.id)
    claimed = tasks.claim(zk, task, version, "hv1")
    assert claimed is not None
    Worker(zk, settings)._execute(claimed)
    return tasks.get_task(zk, task.id)


def test_noop_example_defines_in_provision_then_starts(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, (EXAMPLES / "1-noop.py").read_text())
    record = run(zk, settings, script_run_args=["foo=bar"])
    assert record.state == "SUCCESS", (record.status, tasks.task_log(zk, record.id))
    assert record.status == 'VM "web2" with profile "prof" has been provisioned and started successfully'
    assert record.current == record.total == PROVISION_STAGES
    vm = vms.get_vm(zk, "web2")
    assert vm.profile == "prof" and vm.state == "start" and vm.node in ("hv1", "hv2")
    assert vm.uuid == record.result["uuid"]
    log = "\n".join(tasks.task_log(zk, record.id))
    for text in ("Collecting configuration details", "Verifying configuration against cluster",
                 "Preparing provisioning script", "Running script setup() step", "in state provision",
                 "Running script install() step", "Running general cleanup steps", "Starting VM"):
        assert text in log, text


def test_no_define_leaves_no_vm(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, (EXAMPLES / "1-noop.py").read_text())
    record = run(zk, settings, define_vm=False, start_vm=True)
    assert record.state == "SUCCESS", record.status
    assert "(not defined)" in record.status
    assert not zk.exists(schema.vm_name("web2"))


def test_define_without_start_stays_in_provision(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, (EXAMPLES / "1-noop.py").read_text())
    record = run(zk, settings, start_vm=False)
    assert record.state == "SUCCESS", record.status
    assert vms.get_vm(zk, "web2").state == "provision"


def test_failure_in_install_cleans_up_everything(zk: ZK, fake: FakeStorage, settings: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cluster(zk, fake)
    profile(zk, FAILING, storage=True)
    real_run = Sandbox.run

    def run_stage(self: Sandbox, stage: str, *args: Any, **kwargs: Any) -> Any:
        result = real_run(self, stage, *args, **kwargs)
        if stage == "prepare":   # what a real script's prepare() does (it cannot reach the fake)
            st.add_volume(zk, fake, "vms", "web2_sda", "1G")
        return result

    monkeypatch.setattr(Sandbox, "run", run_stage)
    record = run(zk, settings)
    log = "\n".join(tasks.task_log(zk, record.id))
    assert record.state == "FAILURE", record.status
    assert "install exploded" in record.status and "line 13" in record.status
    assert "script cleanup ran" in log
    assert "removed volume vms/web2_sda" in log
    assert not zk.exists(schema.vm_name("web2"))
    assert "web2_sda" not in fake.list_volumes("vms")
    assert not zk.exists(schema.volume("vms", "web2_sda"))


def test_existing_volume_is_refused_and_kept(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, FAILING, storage=True)
    st.add_volume(zk, fake, "vms", "web2_sda", "1G")
    record = run(zk, settings)
    assert record.state == "FAILURE"
    assert 'Volume "web2_sda" already exists in pool "vms"' in record.status
    assert "web2_sda" in fake.list_volumes("vms")


def test_script_errors_are_clear(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, "from pvcapid.vmbuilder import VMBuilder\n\nclass Other(VMBuilder):\n    pass\n")
    record = run(zk, settings)
    assert record.state == "FAILURE" and "defines no class VMBuilderScript" in record.status
    profile(zk, "from pvcapid.vmbuilder import VMBuilder\n\nclass VMBuilderScript(VMBuilder)\n    pass\n")
    record = run(zk, settings)
    assert record.state == "FAILURE" and "syntax error at line 3" in record.status
    assert not zk.exists(schema.vm_name("web2"))


def test_unknown_profile_and_existing_vm(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    record = run(zk, settings, vm_profile="nope")
    assert record.state == "FAILURE" and 'Profile "nope" not found' in record.status
    profile(zk, (EXAMPLES / "1-noop.py").read_text())
    assert run(zk, settings, start_vm=False).state == "SUCCESS"
    record = run(zk, settings)
    assert record.state == "FAILURE" and 'A VM named "web2" already exists' in record.status


def test_cancel_runs_cleanup(zk: ZK, fake: FakeStorage, settings: Any) -> None:
    cluster(zk, fake)
    profile(zk, SLOW)
    box: dict[str, tasks.TaskRecord] = {}
    thread = threading.Thread(target=lambda: box.update(done=run(zk, settings)))
    thread.start()
    running = wait_for(lambda: next((t for t, _ in tasks.load_tasks(zk) if t.state == "RUNNING"
                                     and "setup()" in t.status), None), 30, message="setup running")
    tasks.cancel(zk, running.id)
    thread.join(60)
    record = box["done"]
    assert record.state == "CANCELLED", record.status
    assert "script cleanup ran" in "\n".join(tasks.task_log(zk, record.id))
