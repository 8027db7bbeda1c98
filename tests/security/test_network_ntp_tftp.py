"""NTP and TFTP on managed networks hand guests nothing more than asked (issue #14 item 5), on the lab.

A guest fetching over TFTP gets the root's world-readable files only: a file readable by root
alone and a symlink to /etc/shadow in the root are refused (dnsmasq serves as `nobody`), and
nothing is written. chronyd listens on the gateway's NTP port only (no command port, no wildcard
socket), and dnsmasq's TFTP is only where a root is set.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid as uuidlib
from pathlib import Path

import httpx
import pytest

from pvc.lab import proc
from pvc.lab.plan import LabPlan
from tests.system.helpers import booted_ip, call, has_address, nic_xml, primary, probe, vm_exists, wait

pytestmark = pytest.mark.system

VNI = 1110
SUBNET = "10.211.20"
GATEWAY = f"{SUBNET}.1"
GUEST, MAC = "ntpsec1", "52:54:00:11:10:01"


def test_tftp_serves_world_readable_files_of_the_root_only(lab: LabPlan, lab_api: httpx.Client) -> None:
    if shutil.which("chronyd") is None:
        pytest.skip("chrony is not installed (scripts/install installs it)")
    api = lab_api
    root = Path(f"/srv/pvc-sectest-tftp-{uuidlib.uuid4().hex[:8]}")
    uuid = str(uuidlib.uuid4())
    added = False
    try:
        root.mkdir(parents=True)
        root.chmod(0o755)
        public, secret = os.urandom(2000), os.urandom(2000)
        (root / "public.bin").write_bytes(public)
        (root / "public.bin").chmod(0o644)
        (root / "secret.bin").write_bytes(secret)
        (root / "secret.bin").chmod(0o600)                 # root's only
        (root / "shadow.bin").symlink_to("/etc/shadow")    # a link out of the root
        before = sorted((p.name, p.lstat().st_mtime_ns) for p in root.iterdir())
        call(api, "POST", "/network", params={
            "vni": VNI, "description": "sectest-tftp", "nettype": "managed",
            "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": GATEWAY, "dhcp4": True,
            "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199", "tftp_root": str(root)})
        added = True
        first = primary(api)
        wait("the gateway", lambda: has_address(lab, first, f"vmbr{VNI}", GATEWAY), 30)
        call(api, "POST", "/vm", data={"xml": nic_xml(lab, GUEST, uuid, MAC, VNI), "node": "hv3"})
        call(api, "POST", f"/vm/{GUEST}/state", params={"state": "start"})
        ip = wait("the guest booted with a lease", lambda: booted_ip(api, GUEST), 120)

        fetched = probe(lab, api, ip, "tftp", f"{GATEWAY} public.bin", timeout=30)
        assert fetched == hashlib.sha256(public).hexdigest()
        assert probe(lab, api, ip, "tftp", f"{GATEWAY} secret.bin", timeout=30) == "fail"
        assert probe(lab, api, ip, "tftp", f"{GATEWAY} shadow.bin", timeout=30) == "fail"
        assert sorted((p.name, p.lstat().st_mtime_ns) for p in root.iterdir()) == before   # nothing written

        # what listens in the primary's namespace for this network: DNS, DHCP, TFTP, NTP on the gateway
        sockets = proc.run(["ss", "-Hulnp"], netns=lab.node(first).netns).stdout.splitlines()
        chrony = [line.split()[3] for line in sockets if '"chronyd"' in line]     # local address:port
        assert f"{GATEWAY}:123" in chrony, chrony
        assert all(a.endswith(":123") and not a.startswith(("0.0.0.0", "*", "[::]")) for a in chrony), chrony
        assert not [line for line in sockets if ":323 " in line]        # no chronyc command port
        tftp = [line.split()[3] for line in sockets if line.split()[3].endswith(":69")]
        # only where a root is set: its gateway (and the bridge's link-local address dnsmasq adds,
        # which the guest-input rules do not open)
        assert f"{GATEWAY}:69" in tftp and all(a == f"{GATEWAY}:69" or a.endswith(f"%vmbr{VNI}:69")
                                               for a in tftp), tftp
    finally:
        if vm_exists(api, GUEST):
            call(api, "POST", f"/vm/{GUEST}/state", params={"state": "stop"})
            wait(f"{GUEST} stopped", lambda: call(api, "GET", f"/vm/{GUEST}")[0]["state"] == "stop", 60)
            call(api, "DELETE", f"/vm/{GUEST}")
        try:
            if added:
                call(api, "DELETE", f"/network/{VNI}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
