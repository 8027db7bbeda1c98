"""The provisioner on the lab: templates + userdata + script + profile -> `pvc provisioner create
--wait` -> a running VM cloned from the lab's base image, on a managed network, that fetched its
user-data; a script failing in install() leaves nothing behind; a running job can be cancelled;
a job's status stays readable across a primary hand-over."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.lab.plan import LabPlan
from tests.system import provisioning
from tests.system.helpers import call, console, primary, vm_exists, wait, wait_task
from tests.system.provisioning import VNI

pytestmark = pytest.mark.system

FAILING = '''from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def create(self):
        from pvc.worker.provisioner.helpers import domain_xml
        return domain_xml(self)

    def prepare(self):
        import daemon_lib.ceph as pvc_ceph
        from pvcapid.Daemon import config
        from pvcapid.vmbuilder import open_zk
        with open_zk(config) as zk:
            for volume in self.vm_data["volumes"]:
                pvc_ceph.clone_volume(zk, volume["pool"], volume["source_volume"],
                                      f"{self.vm_name}_{volume['disk_id']}")

    def install(self):
        if self.vm_data["script_arguments"].get("sleep"):
            import time
            time.sleep(int(self.vm_data["script_arguments"]["sleep"]))
        raise RuntimeError("install exploded on purpose")

    def cleanup(self):
        open("/tmp/cleanup-ran", "w").write("yes")
        self.log_info("PVC-TEST-CLEANUP-RAN")
'''


def cli(lab: LabPlan, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}", *args],
                          capture_output=True, text=True, timeout=timeout)


def volumes(api: httpx.Client, prefix: str) -> list[str]:
    found = api.get("/storage/ceph/volume", params={"pool": "vms"})
    items = found.json() if found.status_code == 200 else []
    return [v["name"] for v in items if str(v.get("name", "")).startswith(prefix)]


def task_log(api: httpx.Client, task_id: str) -> str:
    return str(call(api, "GET", f"/tasks/{task_id}/log").get("log", ""))


@pytest.fixture(scope="module")
def profiles(lab: LabPlan, api: httpx.Client) -> Iterator[None]:
    provisioning.set_up(lab, api, scripts={"failing": FAILING}, profiles={"labfail": "failing"})
    yield
    provisioning.tear_down(api, ["provvm1", "provvm2", "provvm3"], profiles=["labfail"], scripts=["failing"])


def test_create_boots_a_cloned_vm_that_gets_its_user_data(lab: LabPlan, api: httpx.Client,
                                                           profiles: Any) -> None:
    created = cli(lab, "provisioner", "create", "provvm1", "labclone", "--wait")
    assert created.returncode == 0, created.stdout + created.stderr
    vm = call(api, "GET", "/vm/provvm1")[0]
    assert vm["profile"] == "labclone"
    wait("provvm1 running", lambda: call(api, "GET", "/vm/provvm1")[0]["state"] == "start", 60)
    assert volumes(api, "provvm1_") == ["provvm1_vda"]
    nics = vm["networks"]
    assert [n["vni"] for n in nics] == [str(VNI)] or [n["vni"] for n in nics] == [VNI]
    assert re.fullmatch(r"52:54:01:00:11:10", nics[0]["mac"]), nics     # {prefix}:00:11:{vmid=1}{netid=0}
    wait("the boot marker", lambda: "PVC-GUEST-BOOT-OK name=provvm1" in console(api, "provvm1"), 120)
    wait("the user-data ran", lambda: "PVC-PROVISIONED-USERDATA provvm1" in console(api, "provvm1"), 90)


def test_a_failing_script_leaves_nothing_behind(lab: LabPlan, api: httpx.Client, profiles: Any) -> None:
    accepted = call(api, "POST", "/provisioner/create", params={"name": "provvm2", "profile": "labfail"})
    final = wait_task(api, accepted, 300)
    assert final["state"] == "FAILURE" and "install exploded" in final["status"], final
    assert "PVC-TEST-CLEANUP-RAN" in task_log(api, accepted["task_id"])
    assert not vm_exists(api, "provvm2")
    assert volumes(api, "provvm2_") == []


def test_cancel_and_primary_change_during_a_job(lab: LabPlan, api: httpx.Client, profiles: Any) -> None:
    accepted = call(api, "POST", "/provisioner/create",
                    params={"name": "provvm3", "profile": "labfail", "arg": ["sleep=60"]})
    wait("the job in install()", lambda: "install" in str(
        call(api, "GET", f"/tasks/{accepted['task_id']}").get("status", "")).lower(), 120)
    # hand the primary over: the job's status stays readable from the new primary's API
    first = primary(api)
    target = next(n.name for n in lab.coordinators if n.name != first)
    call(api, "POST", f"/node/{target}/coordinator-state", params={"state": "primary"})
    wait(f"{target} primary", lambda: primary(api) == target, 60)
    status = call(api, "GET", f"/tasks/{accepted['task_id']}")
    assert status["state"] in ("RUNNING", "PENDING"), status
    listed = cli(lab, "provisioner", "status", "--format", "json")
    assert listed.returncode == 0 and accepted["task_id"] in listed.stdout, listed.stdout + listed.stderr
    cancelled = cli(lab, "provisioner", "cancel", accepted["task_id"])
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    final = wait_task(api, accepted, 180)
    assert final["state"] == "CANCELLED", final
    assert "PVC-TEST-CLEANUP-RAN" in task_log(api, accepted["task_id"])
    assert not vm_exists(api, "provvm3") and volumes(api, "provvm3_") == []
    time.sleep(1)
    hvs = [LibvirtHypervisor(n.libvirt_uri) for n in lab.nodes]
    try:
        assert not [d for hv in hvs for d in hv.list_domains().values() if d.name == "provvm3"]
    finally:
        for hv in hvs:
            hv.close()


def test_install_script_builds_a_root_filesystem(lab: LabPlan, api: httpx.Client, profiles: Any) -> None:
    """The shipped install example formats the template's volume (mapped through rbd-fuse and a
    loop device here, no kernel rbd) and installs a root tree; the VM switches root onto it."""
    files = lab.extra["guest_files"]
    assert isinstance(files, dict)
    call(api, "POST", "/provisioner/template/storage", params={"name": "inst"})
    call(api, "POST", "/provisioner/template/storage/inst/disk", params={
        "disk_id": "vda", "pool": "vms", "disk_size": 1, "filesystem": "ext4", "mountpoint": "/"})
    call(api, "POST", "/provisioner/script", params={
        "name": "install", "data": (provisioning.EXAMPLES / "3-install.py").read_text()})
    call(api, "POST", "/provisioner/profile", params={
        "name": "labinst", "profile_type": "provisioner", "system_template": "tiny",
        "network_template": "provnet", "storage_template": "inst", "script": "install",
        "arg": [f"kernel={files['kernel']}", f"initrd={files['initrd']}"]})
    try:
        created = cli(lab, "provisioner", "create", "provvm4", "labinst", "--wait")
        assert created.returncode == 0, created.stdout + created.stderr
        wait("provvm4 on its installed root", lambda: "PVC-GUEST-ROOT dev=/dev/vda boots=1" in console(
            api, "provvm4"), 120)
    finally:
        provisioning.tear_down(api, ["provvm4"], everything=False)
        for path in ("/provisioner/profile/labinst", "/provisioner/script/install",
                     "/provisioner/template/storage/inst"):
            api.delete(path)


def test_ova_upload_and_deploy(lab: LabPlan, api: httpx.Client, profiles: Any, tmp_path: Path) -> None:
    """An OVA made here from the lab's guest disk (VMDK + OVF) is uploaded, becomes a system
    template and an `ova` profile, and deploys: the VMDK is converted to a raw RBD volume that
    the guest then boots its root filesystem from."""
    from tests.ovahelp import make_test_ova

    files = lab.extra["guest_files"]
    assert isinstance(files, dict)
    ova = make_test_ova(tmp_path / "tiny.ova", files["disk_raw"], "tinyova", memory_mb=128)
    call(api, "POST", "/provisioner/script", params={
        "name": "ova", "data": (provisioning.EXAMPLES / "4-ova.py").read_text()})
    try:
        uploaded = cli(lab, "provisioner", "ova", "upload", "tinyova", str(ova), "--pool", "vms")
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        profile = call(api, "GET", "/provisioner/profile/tinyova")[0]
        assert profile["type"] == "ova" and profile["system_template"] == "tinyova"
        assert volumes(api, "ova_tinyova_")
        cmdline = "console=ttyS0 panic=-1 quiet vmname=provvm5 vmdhcp=0 vmroot=/dev/sda"
        boot = [f"kernel={files['kernel']}", f"initrd={files['initrd']}", f"cmdline={cmdline}"]
        created = cli(lab, "provisioner", "create", "provvm5", "tinyova", "--wait",
                      *(part for arg in boot for part in ("--script-arg", arg)))
        assert created.returncode == 0, created.stdout + created.stderr
        wait("provvm5 on its converted root",
             lambda: "PVC-GUEST-ROOT dev=/dev/sda" in console(api, "provvm5"), 120)
        assert volumes(api, "provvm5_")
    finally:
        provisioning.tear_down(api, ["provvm5"], everything=False)
        api.delete("/provisioner/ova/tinyova")
        api.delete("/provisioner/script/ova")
    assert volumes(api, "ova_tinyova_") == []
