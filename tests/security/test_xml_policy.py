"""The domain XML policy against real components (issue #13, DESIGN D14): a real pvcapid over a
real ZooKeeper refuses host files, host programs and raw QEMU arguments on define, modify and
device attach with a 400 naming the element, and stores nothing; a definition written straight
into ZooKeeper (past the API) does not start on a node running the real VM reconciler.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pvc.core import domainxml, schema
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.zk import ZK
from tests.conftest import Api, start_daemon, wait_for
from tests.integration.test_api_vms import cluster, vm_xml

SHADOW_DISK = ("<disk type='file' device='disk'><source file='/etc/shadow'/>"
               "<target dev='vdb' bus='virtio'/></disk>")
EVIL = "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>"


def evil_xml(name: str, uuid: str | None = None, emulator: str = "/bin/sh", extra: str = SHADOW_DISK) -> str:
    return vm_xml(name, uuid).replace("<emulator>/usr/bin/qemu-system-x86_64</emulator>",
                                      f"<emulator>{emulator}</emulator>{extra}")


def nothing_stored(zk: ZK) -> None:
    assert zk.children(schema.VMS) == []
    assert zk.children(schema.VM_NAMES) == []


def message(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["message"])


def test_define_with_host_file_and_shell_emulator_is_refused(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    text = message(api.post("/vm", data={"xml": evil_xml("x1")}))
    assert text.startswith("xml: domain XML refused: <emulator> /bin/sh"), text
    nothing_stored(zk)
    text = message(api.post("/vm", data={"xml": evil_xml("x1", emulator="/usr/bin/kvm")}))
    assert "<disk type='file' target vdb> with source /etc/shadow" in text
    assert "hypervisor.domain_policy.allow.host_disks" in text
    nothing_stored(zk)
    attacks = {
        "<qemu:commandline>": vm_xml("x2").replace(
            "<domain type='kvm'>", "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        ).replace("</devices>", "</devices><qemu:commandline><qemu:arg value='-fw_cfg'/>"
                                "<qemu:arg value='name=opt/x,file=/etc/shadow'/></qemu:commandline>"),
        "<os><kernel> /etc/shadow": vm_xml("x3").replace("hvm</type>",
                                                         "hvm</type><kernel>/etc/shadow</kernel>"),
        "<hostdev type='pci'>": evil_xml("x4", emulator="/usr/bin/kvm", extra=(
            "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='2' "
            "function='0'/></source></hostdev>")),
        "protocol http": evil_xml("x5", emulator="/usr/bin/kvm", extra=(
            "<disk type='network' device='cdrom'><source protocol='http' name='/x.iso'>"
            "<host name='169.254.169.254' port='80'/></source><target dev='hdc'/></disk>")),
        "<serial type='file'> with source /root/.bashrc": evil_xml("x6", emulator="/usr/bin/kvm", extra=(
            "<serial type='file'><source path='/root/.bashrc'/><target port='1'/></serial>")),
        "DOCTYPE": EVIL + vm_xml("x7"),
    }
    for expected, xml in attacks.items():
        text = message(api.post("/vm", data={"xml": xml}))
        assert expected in text, (expected, text)
        nothing_stored(zk)


def test_modify_and_attach_are_refused_and_change_nothing(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = str(uuidlib.uuid4())
    good = vm_xml("m1", uuid)
    assert api.post("/vm", data={"xml": good}, params={"node": "hv3"}).status_code == 200
    before = zk.get(schema.vm(uuid))
    text = message(api.put("/vm/m1", data={"xml": evil_xml("m1", uuid)}))
    assert "<emulator> /bin/sh" in text
    text = message(api.put("/vm/m1", data={"xml": EVIL + good}))
    assert "DOCTYPE" in text
    assert zk.get(schema.vm(uuid)) == before

    assert api.post("/vm/m1/state", params={"state": "start"}).status_code == 200
    tasks_before = zk.children(schema.TASKS) if zk.exists(schema.TASKS) else []
    for device, expected in [
        (SHADOW_DISK, "<disk type='file' target vdb> with source /etc/shadow"),
        ("<filesystem type='mount'><source dir='/'/><target dir='host'/></filesystem>",
         "<filesystem type='mount'> with source /"),
        ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>",
         "<interface type='direct'> on device eth0"),
        (EVIL + "<interface type='bridge'><source bridge='vmbr100'/></interface>", "DOCTYPE"),
    ]:
        text = message(api.post("/vm/m1/device", data={"xml": device}))
        assert text.startswith("xml: ") and expected in text, (expected, text)
    assert (zk.children(schema.TASKS) if zk.exists(schema.TASKS) else []) == tasks_before
    nic = "<interface type='bridge'><source bridge='vmbr100'/></interface>"
    ok = api.post("/vm/m1/device", data={"xml": nic})
    assert ok.status_code == 202, ok.text


def test_a_named_exception_allows_exactly_that(daemons: list[Any], config_factory: Any, zk: ZK) -> None:
    config = config_factory("hv1", hypervisor={"libvirt_uri": "test:///default", "domain_policy": {
        "allow": {"host_disks": ["/srv/iso/"]}}})
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    api = Api(daemon, f"http://127.0.0.1:{port}")
    wait_for(lambda: _answers(api), 30, message="pvcapid to answer")
    try:
        cluster(zk, api)
        iso = ("<disk type='file' device='cdrom'><source file='/srv/iso/debian.iso'/>"
               "<target dev='hdc'/></disk>")
        allowed = api.post("/vm", data={"xml": evil_xml("e1", emulator="/usr/bin/kvm", extra=iso)})
        assert allowed.status_code == 200, allowed.text
        text = message(api.post("/vm", data={"xml": evil_xml("e2", emulator="/usr/bin/kvm")}))
        assert "/etc/shadow" in text
        assert zk.children(schema.VM_NAMES) == ["e1"]
    finally:
        api.http.close()
        daemon.stop()


def _answers(api: Api) -> bool:
    try:
        return api.get("/").status_code == 200
    except Exception:
        return False


# -- the node: a definition that bypassed the API ---------------------------------------------------

@pytest.fixture
def node(zk: ZK, tmp_path: Path) -> Iterator[tuple[ZK, Any]]:
    libvirt_adapter = pytest.importorskip("pvc.adapters.hypervisor")
    pytest.importorskip("libvirt")
    from pvc.node.vms import ReconcilerSettings, VMReconciler, ZKStore

    zk.put(schema.node("hv1"), NodeRecord(name="hv1", daemon_state="run", domain_state="ready").doc())
    zk.create(schema.node_alive("hv1"), {"pid": 1}, ephemeral=True)
    hv = libvirt_adapter.LibvirtHypervisor("test:///default", kvm=False)
    settings = ReconcilerSettings(interval=0.5, shutdown_timeout=2, poll_s=0.05,
                                  console_dir=str(tmp_path / "console"))
    assert settings.domain_policy == domainxml.DEFAULT_POLICY          # the secure default
    reconciler = VMReconciler(ZKStore(zk), hv, "hv1", settings, zk=zk)
    reconciler.start()
    yield zk, hv
    reconciler.stop()
    for uuid, found in hv.list_domains().items():
        if found.name.startswith("secvm"):
            hv.destroy(uuid)
    hv.close()


def test_node_refuses_to_start_a_definition_written_past_the_api(node: tuple[ZK, Any]) -> None:
    zk, hv = node
    uuid = str(uuidlib.uuid4())
    xml = f"""<domain type='kvm'>
  <name>secvm1</name><uuid>{uuid}</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{SHADOW_DISK}
    <serial type='pty'><target port='0'/></serial></devices>
</domain>"""
    zk.create(schema.vm(uuid), VMRecord(uuid=uuid, name="secvm1", xml=xml, state="start", node="hv1").doc())

    def failed() -> str:
        status = zk.get(schema.vm_status(uuid), None) or {}
        return str(status.get("failed_reason") or "")

    reason = wait_for(failed, 20, message="the node to record why it did not start the VM")
    assert "domain XML refused: <disk type='file' target vdb> with source /etc/shadow" in reason
    wait_for(lambda: zk.get(schema.vm(uuid))["state"] == "fail", 10, message="state fail")
    assert uuid not in hv.list_domains()                         # libvirt never saw it
