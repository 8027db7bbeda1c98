"""Networks on the lab: a managed VXLAN network with DHCP, DNS, ACLs, NAT, metadata and failover.

Two tiny guests on different nodes take leases from the primary's dnsmasq (one through a
reservation), reach each other, the gateway and (masqueraded) the upstream segment but not the
cluster, resolve each other's names, and one fetches its user-data from 169.254.169.254. An ACL
blocks one flow and its removal restores it. The primary is handed over: the guests keep the
gateway (the gap is measured) and renew their leases with the new primary. Removing the network
leaves nothing on any node.

Guests are probed through their busybox httpd CGIs (pvc.lab.guest.CGI), called from the primary,
which routes to them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid as uuidlib

import httpx
import pytest

from pvc.core import schema
from pvc.core.zk import ZK
from pvc.lab import proc
from pvc.lab.plan import WORLD_ADDRESS, LabPlan
from pvc.lab.pvcnodes import FLOATING_ADDRESS, lab_zk
from tests.system.helpers import (
    booted_ip,
    call,
    console,
    has_address,
    links,
    nic_xml,
    ping_gaps,
    primary,
    probe,
    vm_exists,
    wait,
)

pytestmark = pytest.mark.system

VNI = 1000
SUBNET = "10.210.10"
DOMAIN = "pvcnet.test"
G1, G2 = "netg1", "netg2"
MAC1, MAC2 = "52:54:00:10:00:01", "52:54:00:10:00:02"
RESERVED = f"{SUBNET}.50"
USERDATA = "#!/bin/sh\necho PVC-USERDATA-RAN $(hostname)\n"


def zk_client(lab: LabPlan) -> ZK:
    return lab_zk(lab)          # authenticated: the lab's ZooKeeper has digest ACLs on


def cli(lab: LabPlan, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}", "-q", *args],
                          capture_output=True, text=True, timeout=120)


def flood_list(lab: LabPlan, node: str) -> set[str]:
    """The remote VTEPs of vxlan<VNI>'s all-zero FDB entries (where broadcasts go) on a node."""
    fdb = proc.run(["bridge", "fdb", "show", "dev", f"vxlan{VNI}"], netns=lab.node(node).netns).stdout
    return set(re.findall(r"00:00:00:00:00:00 dst (\S+)", fdb))


def test_managed_network_end_to_end(lab: LabPlan, api: httpx.Client) -> None:
    uuids = {G1: str(uuidlib.uuid4()), G2: str(uuidlib.uuid4())}
    zk = zk_client(lab)
    try:
        call(api, "POST", "/network", params={
            "vni": VNI, "description": "systest", "nettype": "managed", "domain": DOMAIN,
            "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": f"{SUBNET}.1", "dhcp4": True,
            "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199"})
        # every node: vxlan + bridge, the flood list naming the two other nodes. The reconciler
        # enslaves the VXLAN device first and writes its flood list right after, in the same
        # pass: wait for both (checking the list the moment the port is enslaved raced that pass)
        for node in lab.nodes:
            def ready(node: str = node.name) -> bool:
                found = links(lab, node)
                return f"vmbr{VNI}" in found and found.get(f"vxlan{VNI}", {}).get("master") == f"vmbr{VNI}"
            wait(f"vmbr{VNI} on {node.name}", ready, 30)
            others = {n.address for n in lab.nodes if n.name != node.name}
            try:
                wait(f"the flood list of vxlan{VNI} on {node.name}",
                     lambda node=node, others=others: flood_list(lab, node.name) == others, 30)
            except proc.LabError as exc:
                raise AssertionError(f"{node.name}: flood list {sorted(flood_list(lab, node.name))}, "
                                     f"wanted {sorted(others)}") from exc
            assert links(lab, node.name)[f"vxlan{VNI}"]["mtu"] == 1500       # 1550 underlay - 50
        first = primary(api)
        wait("the gateway on the primary", lambda: has_address(lab, first, f"vmbr{VNI}", f"{SUBNET}.1"), 30)

        # a reservation for g2, and user-data for g1 through its profile
        call(api, "POST", f"/network/{VNI}/lease",
             params={"macaddress": MAC2, "ipaddress": RESERVED, "hostname": G2})
        zk.put(schema.userdata("systest-ud"), {"name": "systest-ud", "userdata": USERDATA})
        zk.put(schema.profile("systest-prof"), {"name": "systest-prof", "userdata": "systest-ud"})

        for name, node, mac in ((G1, "hv1", MAC1), (G2, "hv3", MAC2)):
            call(api, "POST", "/vm", data={"xml": nic_xml(lab, name, uuids[name], mac, VNI), "node": node})
        call(api, "POST", f"/vm/{G1}/meta", params={"profile": "systest-prof"})
        for name in (G1, G2):
            call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        ip1 = wait("g1 booted with a lease", lambda: booted_ip(api, G1), 120)
        ip2 = wait("g2 booted with a lease", lambda: booted_ip(api, G2), 120)
        assert ip1.startswith(f"{SUBNET}.1") and ip1 != f"{SUBNET}.1"    # from the range .100-.199
        assert ip2 == RESERVED                                           # the reservation

        # leases in ZooKeeper, shown by the CLI
        listed = cli(lab, "network", "dhcp", "list", str(VNI), "--format", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        macs = {item["mac_address"] for item in json.loads(listed.stdout)}
        assert {MAC1, MAC2} <= macs

        # reachability, DNS, NAT and metadata
        assert probe(lab, api, ip1, "ping", ip2) == "ok"
        assert probe(lab, api, ip2, "ping", ip1) == "ok"
        assert probe(lab, api, ip1, "ping", f"{SUBNET}.1") == "ok"
        assert probe(lab, api, ip1, "resolve", f"{G2}.{DOMAIN}") == ip2
        assert probe(lab, api, ip2, "resolve", f"{G1}.{DOMAIN}") == ip1
        assert probe(lab, api, ip1, "ping", WORLD_ADDRESS) == "ok"      # masqueraded to the upstream
        assert probe(lab, api, ip1, "ping", lab.node("hv3").address) == "fail"   # never the cluster
        dig = proc.run(["dig", "+short", "+time=2", "+tries=2", f"@{FLOATING_ADDRESS}", f"{G1}.{DOMAIN}"],
                       netns=lab.node("hv2").netns, check=False).stdout.strip()
        assert dig == ip1                                                   # the cluster DNS view
        wait("g1 ran its user-data", lambda: f"PVC-USERDATA-RAN {G1}" in console(api, G1), 60)

        # an ACL blocks g1 -> g2:80 (g2 -> g1 stays open); removing it restores the flow
        assert "hello from" in probe(lab, api, ip1, "http", ip2)
        call(api, "POST", f"/network/{VNI}/acl", params={
            "description": "block-g1-web", "direction": "in",
            "rule": f"ip saddr {ip1} ip daddr {ip2} tcp dport 80 drop"})
        wait("the ACL to block g1 -> g2", lambda: probe(lab, api, ip1, "http", ip2) == "fail", 30)
        assert "hello from" in probe(lab, api, ip2, "http", ip1)
        call(api, "DELETE", f"/network/{VNI}/acl/block-g1-web")
        wait("the flow back", lambda: "hello from" in probe(lab, api, ip1, "http", ip2), 30)

        # hand the primary over while g2 pings the gateway every 50 ms
        target = next(n.name for n in lab.coordinators if n.name != first)
        assert probe(lab, api, ip2, "pingstart", f"{SUBNET}.1") == "ok"
        time.sleep(1)
        call(api, "POST", f"/node/{target}/coordinator-state", params={"state": "primary"})
        wait(f"{target} primary", lambda: primary(api) == target, 60)
        wait("the gateway on the new primary",
             lambda: has_address(lab, target, f"vmbr{VNI}", f"{SUBNET}.1"), 30)
        assert not has_address(lab, first, f"vmbr{VNI}", f"{SUBNET}.1")
        time.sleep(2)
        gap, replies = ping_gaps(probe(lab, api, ip2, "pingstop"))
        print(f"gateway gap seen by {G2} during the hand-over: {gap * 1000:.0f} ms ({replies} replies)")
        assert replies > 20          # the gap is measured by bench/net_failover, not asserted
        for ip in (ip1, ip2):
            assert probe(lab, api, ip, "renew") == "ok"
        wait("g1 renewed with the new primary", lambda: re.search(
            rf"renew {re.escape(ip1)} ", probe(lab, api, ip1, "events")), 30)
        assert probe(lab, api, ip1, "resolve", f"{G2}.{DOMAIN}") == ip2   # leases moved over
        assert probe(lab, api, ip2, "ping", f"{SUBNET}.1") == "ok"
    finally:
        for name in (G1, G2):
            if vm_exists(api, name):
                call(api, "POST", f"/vm/{name}/state", params={"state": "stop"})
        for name in (G1, G2):
            if vm_exists(api, name):
                wait(f"{name} stopped",
                     lambda name=name: call(api, "GET", f"/vm/{name}")[0]["state"] == "stop", 60)
                call(api, "DELETE", f"/vm/{name}")
        zk.delete(schema.profile("systest-prof"))
        zk.delete(schema.userdata("systest-ud"))
        zk.stop()

    # remove: nothing left on any node (devices, dnsmasq, nft chains)
    call(api, "DELETE", f"/network/{VNI}")
    for node in lab.nodes:
        wait(f"vmbr{VNI} gone from {node.name}", lambda node=node: not (
            {f"vmbr{VNI}", f"vxlan{VNI}"} & set(links(lab, node.name))), 30)
        wait(f"nft chains gone on {node.name}", lambda node=node: f"vxlan{VNI}" not in proc.run(
            ["nft", "list", "ruleset"], netns=node.netns).stdout, 30)
    # the primary stops the network's dnsmasq in the same pass, just after the devices and rules
    wait("the network's dnsmasq stopped", lambda: not [
        p for p in proc.run(["ip", "netns", "pids", lab.node(primary(api)).netns]).stdout.split()
        if f"vmbr{VNI}" in _cmdline(p)], 30)


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_bridged_network_plumbing(lab: LabPlan, api: httpx.Client) -> None:
    """A bridged network: vlan<vni> (the lab's stand-in for an 802.1Q sub-interface) in vmbr<vni>
    on every node; two namespaces plugged into the bridges of two nodes reach each other."""
    vni = 210
    call(api, "POST", "/network", params={"vni": vni, "description": "systest-br", "nettype": "bridged"})
    probes = []
    try:
        for node in lab.nodes:
            wait(f"vmbr{vni} on {node.name}", lambda node=node: links(lab, node.name).get(
                f"vlan{vni}", {}).get("master") == f"vmbr{vni}", 30)
        for i, node in ((1, lab.node("hv1")), (2, lab.node("hv2"))):
            ns = f"{lab.name}-brp{i}"
            probes.append(ns)
            proc.run(["ip", "netns", "add", ns])
            proc.run(["ip", "-n", node.netns, "link", "add", f"brp{i}", "type", "veth",
                      "peer", "name", "eth0", "netns", ns])
            proc.run(["ip", "-n", node.netns, "link", "set", f"brp{i}", "master", f"vmbr{vni}", "up"])
            proc.run(["ip", "-n", ns, "addr", "add", f"10.220.0.{i}/24", "dev", "eth0"])
            proc.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        wait("the bridged segment", lambda: proc.run(
            ["ping", "-c", "1", "-W", "1", "10.220.0.2"], netns=probes[0], check=False).returncode == 0, 20)
    finally:
        for ns in probes:
            proc.run(["ip", "netns", "del", ns], check=False)
        call(api, "DELETE", f"/network/{vni}")
    for node in lab.nodes:
        wait(f"vmbr{vni} gone from {node.name}", lambda node=node: not (
            {f"vmbr{vni}", f"vlan{vni}"} & set(links(lab, node.name))), 30)
