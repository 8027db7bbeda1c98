"""NTP and TFTP on a managed network, seen from a lab guest (issue #14 item 5).

The guest's DHCP lease names the gateway as NTP server (option 42), an SNTP query to the gateway
is answered by the primary's chronyd (which never touches the clock: -x, in the node's
namespace), over IPv4 and IPv6, and a file fetched over TFTP from the network's root matches the
one on disk. After a primary change chronyd runs on the new primary only and both still answer;
clearing the root stops TFTP and closes its port. Removing the network stops chronyd.

Guests are probed through their busybox httpd CGIs (pvc.lab.guest.CGI: `dhcpntp`, `ntp`, `tftp`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid as uuidlib
from pathlib import Path

import httpx
import pytest

from pvc.lab import proc
from pvc.lab.plan import LabPlan
from tests.system.helpers import (
    booted_ip,
    call,
    has_address,
    nic_xml,
    primary,
    probe,
    vm_exists,
    wait,
)

pytestmark = pytest.mark.system

VNI = 1100
SUBNET = "10.211.10"
GATEWAY = f"{SUBNET}.1"
NET6, GATEWAY6 = "fd00:211:10::/64", "fd00:211:10::1"
GUEST, MAC = "ntpg1", "52:54:00:11:00:01"


def chronyd_pids(lab: LabPlan, node: str) -> list[str]:
    """chronyd processes of this network in the node's namespace, as `pid args`."""
    found = []
    for pid in proc.run(["ip", "netns", "pids", lab.node(node).netns], check=False).stdout.split():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = " ".join(a.decode(errors="replace") for a in args if a)
        if os.path.basename(args[0].decode(errors="replace")) == "chronyd" and f"chrony-{VNI}" in line:
            found.append(f"{pid} {line}")
    return found


def ntp_answer(lab: LabPlan, api: httpx.Client, ip: str, server: str = GATEWAY) -> tuple[int, int] | None:
    """(stratum, server time) from one SNTP query of the guest to its gateway, or None."""
    found = re.fullmatch(r"ok stratum=(\d+) time=(\d+)", probe(lab, api, ip, "ntp", server))
    return (int(found[1]), int(found[2])) if found else None


def test_ntp_and_tftp_from_a_guest(lab: LabPlan, api: httpx.Client) -> None:
    if shutil.which("chronyd") is None:
        pytest.skip("chrony is not installed (scripts/install installs it)")
    root = Path(f"/srv/pvc-systest-tftp-{uuidlib.uuid4().hex[:8]}")
    payload = os.urandom(150_000)              # ~300 TFTP blocks: the data ports, not only port 69
    uuid = str(uuidlib.uuid4())
    added = False
    try:
        root.mkdir(parents=True)
        root.chmod(0o755)
        (root / "boot.bin").write_bytes(payload)
        (root / "boot.bin").chmod(0o644)       # dnsmasq serves as nobody: world-readable only
        call(api, "POST", "/network", params={
            "vni": VNI, "description": "systest-ntp", "nettype": "managed", "domain": "ntp.test",
            "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": GATEWAY, "dhcp4": True,
            "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199", "ip6_network": NET6,
            "tftp_root": str(root), "dhcp_boot": "boot.bin"})
        added = True
        item = call(api, "GET", f"/network/{VNI}")[0]
        assert (item["tftp_root"], item["dhcp_boot"]) == (str(root), "boot.bin")
        first = primary(api)
        wait("the gateway on the primary", lambda: has_address(lab, first, f"vmbr{VNI}", GATEWAY), 30)
        running = wait("chronyd on the primary", lambda: chronyd_pids(lab, first), 30)
        assert len(running) == 1 and " -x " in running[0]          # never touches the clock
        for node in lab.nodes:
            if node.name != first:
                assert not chronyd_pids(lab, node.name)

        call(api, "POST", "/vm", data={"xml": nic_xml(lab, GUEST, uuid, MAC, VNI), "node": "hv2"})
        call(api, "POST", f"/vm/{GUEST}/state", params={"state": "start"})
        ip = wait("the guest booted with a lease", lambda: booted_ip(api, GUEST), 120)

        assert probe(lab, api, ip, "dhcpntp") == GATEWAY              # DHCP option 42
        answer = ntp_answer(lab, api, ip)
        if answer is None and probe(lab, api, ip, "ntp", GATEWAY) == "fail noclient":
            pytest.fail("the lab guest has no NTP client: the guest build needs gcc (pvc.lab.guest)")
        assert answer is not None, probe(lab, api, ip, "ntp", GATEWAY)
        stratum, served = answer
        assert stratum == 10                                          # the host's clock, local stratum
        assert abs(served - time.time()) < 300
        # over IPv6 too (the guest's SLAAC address; chronyd binds both gateways)
        answer6 = wait("an NTP answer on the IPv6 gateway", lambda: ntp_answer(lab, api, ip, GATEWAY6), 30)
        assert answer6[0] == 10
        digest = hashlib.sha256(payload).hexdigest()
        assert probe(lab, api, ip, "tftp", f"{GATEWAY} boot.bin", timeout=30) == digest
        assert probe(lab, api, ip, "tftp", f"{GATEWAY} missing.bin", timeout=30) == "fail"

        # hand the primary over: chronyd moves with the gateway
        target = next(n.name for n in lab.coordinators if n.name != first)
        call(api, "POST", f"/node/{target}/coordinator-state", params={"state": "primary"})
        wait(f"{target} primary", lambda: primary(api) == target, 60)
        wait("the gateway on the new primary", lambda: has_address(lab, target, f"vmbr{VNI}", GATEWAY), 30)
        wait("chronyd on the new primary", lambda: chronyd_pids(lab, target), 30)
        wait("chronyd gone from the old primary", lambda: not chronyd_pids(lab, first), 30)
        wait("NTP answers from the new primary", lambda: ntp_answer(lab, api, ip), 30)
        assert probe(lab, api, ip, "tftp", f"{GATEWAY} boot.bin", timeout=30) == digest

        # clearing the root stops TFTP (dnsmasq restarted without it, port 69 closed again)
        call(api, "PUT", f"/network/{VNI}", params={"tftp_root": ""})
        wait("TFTP stopped", lambda: probe(lab, api, ip, "tftp", f"{GATEWAY} boot.bin", timeout=30) == "fail",
             60)
        ruleset = proc.run(["nft", "list", "table", "inet", "pvc"], netns=lab.node(target).netns).stdout
        assert "dport 69" not in ruleset and f'"vmbr{VNI}" ip daddr {GATEWAY} udp dport 123 accept' in ruleset
        assert ntp_answer(lab, api, ip) is not None
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
    wait("chronyd stopped with its network",
         lambda: not any(chronyd_pids(lab, n.name) for n in lab.nodes), 30)
