"""The VM reconciler in-process over a real ZooKeeper and libvirt's test driver.

libvirt's test:///default keeps its domains per connection, so a pvcnoded process could not
share it with the test; the reconciler runs here instead, with its real ZKStore, watches and
timer loop, against a LibvirtHypervisor on that driver.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.core import schema
from pvc.core.config import StorageSettings
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.zk import ZK
from pvc.node.vms import ReconcilerSettings, VMReconciler, ZKStore
from pvc.worker.kinds import vm as vm_kinds
from pvc.worker.registry import TaskFailed

pytest.importorskip("libvirt")


def domain(name: str, uuid: str) -> str:
    return f"""<domain type='kvm'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><serial type='pty'><target port='0'/></serial></devices>
</domain>"""


def wait(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def node(zk: ZK, tmp_path: Path) -> Iterator[tuple[ZK, LibvirtHypervisor, VMReconciler]]:
    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run", domain_state="ready").doc())
    zk.create(schema.node_alive("hv1"), {"pid": 1}, ephemeral=True)
    hv = LibvirtHypervisor("test:///default", kvm=False)
    settings = ReconcilerSettings(interval=0.5, shutdown_timeout=2, poll_s=0.05,
                                  console_dir=str(tmp_path / "console"))
    reconciler = VMReconciler(ZKStore(zk), hv, "hv1", settings, zk=zk)
    reconciler.start()
    yield zk, hv, reconciler
    reconciler.stop()
    for uuid, info in hv.list_domains().items():
        if info.name.startswith("itvm"):
            hv.destroy(uuid)
    hv.close()


def define(zk: ZK, name: str, state: str = "stop") -> str:
    uuid = str(uuidlib.uuid4())
    zk.create(schema.vm(uuid), VMRecord(uuid=uuid, name=name, xml=domain(name, uuid), state=state,
                                        node="hv1").doc())
    return uuid


def set_state(zk: ZK, uuid: str, state: str) -> None:
    zk.update(schema.vm(uuid), lambda d: {**d, "state": state})


def state(zk: ZK, uuid: str) -> str:
    return str(zk.get(schema.vm(uuid))["state"])


def status(zk: ZK, uuid: str) -> dict[str, Any]:
    return zk.get(schema.vm_status(uuid), None) or {}


def test_start_stop_restart_shutdown(node: Any) -> None:
    zk, hv, reconciler = node
    uuid = define(zk, "itvm1", "start")
    wait("start", lambda: hv.is_running(uuid) and status(zk, uuid).get("running"))
    assert status(zk, uuid)["node"] == "hv1"
    assert "itvm1.log" in hv.live_xml(uuid)                    # serial console log added at start

    set_state(zk, uuid, "stop")
    wait("stop", lambda: not hv.is_running(uuid) and status(zk, uuid).get("running") is False)

    set_state(zk, uuid, "start")
    wait("start again", lambda: hv.is_running(uuid))
    first_id = hv._connection().lookupByUUIDString(uuid).ID()
    set_state(zk, uuid, "restart")
    wait("restart recorded", lambda: state(zk, uuid) == "start" and hv.is_running(uuid)
         and hv._connection().lookupByUUIDString(uuid).ID() != first_id)

    set_state(zk, uuid, "shutdown")
    wait("shutdown recorded", lambda: state(zk, uuid) == "stop")
    assert not hv.is_running(uuid)
    assert reconciler.starts == 3


def test_crash_restart_and_keepalive_figures(node: Any) -> None:
    zk, hv, reconciler = node
    uuid = define(zk, "itvm2", "start")
    wait("start", lambda: hv.is_running(uuid))
    hv.destroy(uuid)                                           # QEMU died behind our back
    wait("restarted by the periodic pass", lambda: hv.is_running(uuid))
    figures = reconciler.keepalive()
    assert figures["running_domains"] == [uuid] and figures["memory_allocated"] == 128
    assert "stats" not in status(zk, uuid)
    shards = [zk.get(schema.vm_stats("hv1", n)) for n in zk.children(schema.vm_stats_node("hv1"))]
    assert [s[uuid]["cpus"] for s in shards if uuid in s] == [1]
    assert reconciler.starts == 2


def test_start_failure_is_recorded(node: Any) -> None:
    zk, hv, _reconciler = node
    uuid = define(zk, "test", "start")         # the test driver's own domain already has that name
    wait("fail", lambda: state(zk, uuid) == "fail")
    assert "already exists" in status(zk, uuid)["failed_reason"]
    assert not hv.is_running(uuid)


def test_status_write_never_recreates_a_removed_vm(node: Any) -> None:
    zk, hv, reconciler = node
    uuid = define(zk, "itvm3", "start")
    wait("start", lambda: hv.is_running(uuid))
    set_state(zk, uuid, "stop")
    wait("stop", lambda: not hv.is_running(uuid))
    zk.delete(schema.vm(uuid))
    reconciler.store.update_status(uuid, lambda d: {**d, "running": False})
    reconciler.keepalive()
    assert not zk.exists(schema.vm(uuid))


class Ctx:
    def __init__(self, zk: ZK, node: str) -> None:
        self.zk, self.node = zk, node
        storage = StorageSettings(ceph_config_file="/nonexistent/ceph.conf")
        self.settings = type("S", (), {"hypervisor": type("H", (), {"libvirt_uri": "test:///default"}),
                                       "storage": storage})

    def progress(self, *_: Any) -> None:
        pass


def test_worker_vm_tasks(zk: ZK) -> None:
    plain = define(zk, "itvm4")
    ctx: Any = Ctx(zk, "hv1")
    assert "no RBD volumes" in vm_kinds.flush_locks(ctx, uuid=plain)["status"]
    zk.update(schema.vm(plain), lambda d: {**d, "rbd_volumes": ["vms/itvm4_disk0"]})
    with pytest.raises(TaskFailed, match="not configured"):   # no Ceph on this test's "node"
        vm_kinds.flush_locks(ctx, uuid=plain)
    with pytest.raises(TaskFailed, match="not running on node hv1"):
        vm_kinds.device_attach(ctx, uuid=plain, xml="<interface type='bridge'/>")
