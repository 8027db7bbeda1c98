"""VMs on the lab: the tiny guest defined through the API, run by the nodes' reconcilers.

One guest walks through: start -> boot marker in the console -> live migration hv1 -> hv2 (one
node runs it, the heartbeat counter carries on, libvirt's downtime recorded) -> QEMU killed with
unmigrate -> move to hv2 -> SIGKILL -> restarted once -> flush hv2 moves it away, ready brings it
back -> pvcnoded restarted on its node while it runs -> same QEMU process, not restarted -> ACPI
shutdown -> remove.
"""

from __future__ import annotations

import os
import signal
import time
import uuid as uuidlib
from typing import Any

import httpx
import pytest

from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.lab import proc, pvcnodes
from pvc.lab.plan import LabPlan
from tests.system import helpers
from tests.system.helpers import call, heartbeats, vm_exists, wait, where

pytestmark = pytest.mark.system
NAME = "systvm1"


def guest_xml(plan: LabPlan, uuid: str) -> str:
    return helpers.guest_xml(plan, NAME, uuid)


def console(api: httpx.Client) -> str:
    return helpers.console(api, NAME)


def qemu_pids() -> list[int]:
    return helpers.qemu_pids(NAME)


def vm_info(api: httpx.Client) -> dict[str, Any]:
    return dict(call(api, "GET", f"/vm/{NAME}")[0])


def status_doc(lab: LabPlan, uuid: str) -> dict[str, Any]:
    from pvc.core import schema
    from pvc.lab.pvcnodes import lab_zk

    zk = lab_zk(lab)
    try:
        return dict(zk.get(schema.vm_status(uuid), None) or {})
    finally:
        zk.stop()


def test_vm_lifecycle_on_the_lab(lab: LabPlan, api: httpx.Client) -> None:
    hvs = {n.name: LibvirtHypervisor(n.libvirt_uri) for n in lab.nodes}
    uuid = str(uuidlib.uuid4())
    timings: dict[str, float] = {}
    try:
        call(api, "POST", "/vm", data={"xml": guest_xml(lab, uuid), "node": "hv1"})
        t0 = time.monotonic()
        call(api, "POST", f"/vm/{NAME}/state", params={"state": "start"})
        wait("the boot marker in the console", lambda: "PVC-GUEST-BOOT-OK" in console(api), 90)
        timings["start to boot marker in the console"] = time.monotonic() - t0
        assert where(hvs, uuid) == ["hv1"]
        wait("two heartbeats", lambda: len(heartbeats(console(api))) >= 2, 30)

        # live migration hv1 -> hv2: one node runs it, the counter carries on
        before = max(heartbeats(console(api)))
        t0 = time.monotonic()
        call(api, "POST", f"/vm/{NAME}/node", params={"action": "migrate", "node": "hv2", "wait": "true"})
        wait("state start on hv2", lambda: (vm_info(api)["state"], vm_info(api)["node"]) == ("start", "hv2"))
        timings["migrate call (wait) + state start"] = time.monotonic() - t0
        assert where(hvs, uuid) == ["hv2"]
        last = wait("last_migration recorded", lambda: status_doc(lab, uuid).get("last_migration"), 20)
        assert (last["from"], last["to"], last["method"]) == ("hv1", "hv2", "live")
        assert isinstance(last["downtime_ms"], int)
        timings["migration duration (libvirt job)"] = float(last["duration_s"])
        timings["migration downtime ms (libvirt)"] = float(last["downtime_ms"])
        wait("heartbeats after the migration", lambda: max(heartbeats(console(api)) or [0]) > before + 1, 30)
        assert "PVC-GUEST-BOOT-OK" not in console(api).split(f"n={before} ")[-1]   # no reboot

        # unmigrate: back to hv1 (live); then move to hv2 for good (live, last_node cleared)
        call(api, "POST", f"/vm/{NAME}/node", params={"action": "unmigrate", "wait": "true"})
        wait("back on hv1", lambda: where(hvs, uuid) == ["hv1"] and vm_info(api)["state"] == "start", 60)
        assert (vm_info(api)["node"], vm_info(api)["last_node"]) == ("hv1", "")
        call(api, "POST", f"/vm/{NAME}/node", params={"action": "move", "node": "hv2", "wait": "true"})
        wait("moved to hv2", lambda: where(hvs, uuid) == ["hv2"] and vm_info(api)["state"] == "start", 60)
        assert (vm_info(api)["node"], vm_info(api)["last_node"]) == ("hv2", "")
        assert "PVC-GUEST-BOOT-OK" not in console(api).split(f"n={before} ")[-1]   # still no reboot

        # QEMU killed: the reconciler starts it again, once, on hv2 only
        pids = qemu_pids()
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        t0 = time.monotonic()
        wait("a new QEMU", lambda: (p := qemu_pids()) and p != pids, 60)
        timings["SIGKILL to QEMU restarted"] = time.monotonic() - t0
        time.sleep(6)                                  # a keepalive or more: nothing starts twice
        assert len(qemu_pids()) == 1 and where(hvs, uuid) == ["hv2"]
        assert vm_info(api)["state"] == "start"
        wait("the boot marker again", lambda: "PVC-GUEST-BOOT-OK" in console(api), 90)

        # flush hv2 (its home since the move): it moves away; ready: it returns.
        t0 = time.monotonic()
        call(api, "POST", "/node/hv2/domain-state", params={"state": "flush", "wait": "true"})
        wait("flushed", lambda: where(hvs, uuid) and "hv2" not in where(hvs, uuid), 60)
        timings["flush"] = time.monotonic() - t0
        info = vm_info(api)
        assert info["node"] != "hv2" and info["last_node"] == "hv2"
        t0 = time.monotonic()
        call(api, "POST", "/node/hv2/domain-state", params={"state": "ready", "wait": "true"})
        wait("back on hv2", lambda: where(hvs, uuid) == ["hv2"] and vm_info(api)["state"] == "start", 60)
        timings["ready (VM back)"] = time.monotonic() - t0

        # restart pvcnoded where it runs: the same QEMU keeps running
        pid = qemu_pids()
        node = next(n for n in lab.nodes if n.name == "hv2")
        proc.stop(pvcnodes.pidfile(lab, node, "pvcnoded"), timeout=40)
        pvcnodes.start_daemon(lab, node, "pvcnoded")
        wait("hv2 back in run", lambda: call(api, "GET", "/node/hv2")[0]["daemon_state"] == "run", 60)
        time.sleep(6)
        assert qemu_pids() == pid and where(hvs, uuid) == ["hv2"] and vm_info(api)["state"] == "start"

        # ACPI shutdown (the guest's acpid powers off), then remove
        call(api, "POST", f"/vm/{NAME}/state", params={"state": "shutdown", "wait": "true"})
        wait("shut down", lambda: not qemu_pids() and vm_info(api)["state"] == "stop", 90)
        call(api, "DELETE", f"/vm/{NAME}", params={"delete_disks": "true"})
        assert api.get(f"/vm/{NAME}").status_code == 404
    finally:
        print("\n" + "\n".join(f"  {k}: {v:.2f}" for k, v in timings.items()))
        try:
            if api.get(f"/vm/{NAME}").status_code == 200:
                call(api, "POST", f"/vm/{NAME}/state", params={"state": "stop"})
                wait("stopped", lambda: not qemu_pids(), 30)
                call(api, "DELETE", f"/vm/{NAME}")
        finally:
            for hv in hvs.values():
                for dom_uuid, dom in hv.list_domains().items():
                    if dom.name == NAME:
                        hv.destroy(dom_uuid)
                hv.close()


def test_network_hot_plug_on_a_running_vm(lab: LabPlan, api: httpx.Client) -> None:
    """`pvc vm network add/remove` on a running VM: the XML is edited and the NIC hot-plugged.

    Managed networks come with the network issue; a plain bridge made here on every node stands
    in for `vmbr<vni>` so the hot-plug path (CLI -> API -> task on the VM's node -> libvirt) runs.
    """
    import subprocess
    import sys

    name = "systvm2"
    bridge = "vmbrtest"
    for node in lab.nodes:
        proc.run(["ip", "link", "add", bridge, "type", "bridge"], netns=node.netns, check=False)
        proc.run(["ip", "link", "set", bridge, "up"], netns=node.netns)
    hvs = {n.name: LibvirtHypervisor(n.libvirt_uri) for n in lab.nodes}
    uuid = str(uuidlib.uuid4())
    pvc = [sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}", "-q"]
    try:
        call(api, "POST", "/vm", data={"xml": guest_xml(lab, uuid).replace(NAME, name), "node": "hv3"})
        call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        wait("running on hv3", lambda: uuid in hvs["hv3"].list_domains()
             and hvs["hv3"].list_domains()[uuid].running, 60)
        # Hot-unplug needs the guest's cooperation (ACPI eject): plug into a booted guest.
        wait("the boot marker", lambda: "PVC-GUEST-BOOT-OK" in str(
            call(api, "GET", f"/vm/{name}/console", params={"lines": 200})["data"]), 90)

        mac = "52:54:00:aa:bb:01"
        added = subprocess.run([*pvc, "vm", "network", "add", name, bridge, "--macaddr", mac, "-y"],
                               capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stdout + added.stderr
        wait("the NIC in the live XML", lambda: mac in hvs["hv3"].live_xml(uuid), 30)
        assert mac in call(api, "GET", f"/vm/{name}")[0]["xml"]   # and in the stored definition

        removed = subprocess.run([*pvc, "vm", "network", "remove", name, "-m", mac, "-y"],
                                 capture_output=True, text=True, timeout=120)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        wait("the NIC gone from the live XML", lambda: mac not in hvs["hv3"].live_xml(uuid), 60)
        assert mac not in call(api, "GET", f"/vm/{name}")[0]["xml"]
    finally:
        if vm_exists(api, name):
            call(api, "POST", f"/vm/{name}/state", params={"state": "stop"})
            wait("stopped", lambda: uuid not in hvs["hv3"].list_domains(), 30)
            call(api, "DELETE", f"/vm/{name}")
        for hv in hvs.values():
            hv.close()
        for node in lab.nodes:
            proc.run(["ip", "link", "del", bridge], netns=node.netns, check=False)
