"""Guests never reach the cluster's own services (DESIGN D14), on the lab.

An attacker guest on a managed network tries every node's ZooKeeper, Ceph monitors, libvirtd and
the API, on the cluster and on the upstream segment: every connect must come back "closed"
(dropped by the node's firewall), while its gateway, DHCP, DNS, the metadata service and the
upstream ("world") segment keep working. It then takes the victim guest's address and asks the
metadata service for the victim's user-data: it must not get it. A namespace plugged into a
bridged network (a guest there) is refused by the node too, even though the node answers its ARP.

Guests are probed through their busybox httpd CGIs (pvc.lab.guest.CGI), from the primary.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pvc.core import schema
from pvc.lab import proc
from pvc.lab.labtls import LIBVIRT_TLS_PORT
from pvc.lab.plan import (
    API_PORT,
    CEPH_MON_V1,
    CEPH_MON_V2,
    LIBVIRT_TCP_PORT,
    WORLD_ADDRESS,
    ZK_CLIENT_PORT,
    LabPlan,
)
from pvc.lab.pvcnodes import FLOATING_ADDRESS, lab_zk
from tests.system.helpers import booted_ip, call, nic_xml, primary, probe, vm_exists, wait

pytestmark = pytest.mark.system

VNI, BRIDGED_VNI = 1100, 211
SUBNET = "10.211.10"
GATEWAY = f"{SUBNET}.1"
DOMAIN = "isol.test"
ATTACKER, VICTIM = "isol-att", "isol-vic"
MAC_A, MAC_V = "52:54:00:11:00:01", "52:54:00:11:00:02"
VICTIM_IP = f"{SUBNET}.60"
SECRET = "PVC-VICTIM-SECRET-USERDATA"
SERVICE_PORTS = (ZK_CLIENT_PORT, CEPH_MON_V1, CEPH_MON_V2, LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT, API_PORT)
WORLD_PORT = 8080
PARALLEL_PROBES = 6        # concurrent CGI probes in the 1-vCPU guest (busybox httpd forks per request)


def connects(lab: LabPlan, node: str, address: str, port: int) -> bool:
    """Whether a node (not a guest) can open address:port: the service is really there."""
    return proc.run(["timeout", "5", "busybox", "nc", "-w", "2", address, str(port), "-e", "/bin/true"],
                    netns=lab.node(node).netns, check=False).returncode == 0


@pytest.fixture
def world(lab: LabPlan) -> object:
    """A web server on the upstream segment: what guests should reach through NAT."""
    root = Path(tempfile.mkdtemp(prefix="pvc-world-"))
    (root / "index.html").write_text("world-ok\n")
    server = subprocess.Popen(["ip", "netns", "exec", lab.world_netns, "busybox", "httpd", "-f",
                               "-p", f"{WORLD_ADDRESS}:{WORLD_PORT}", "-h", str(root)])
    yield server
    server.terminate()
    server.wait(10)


def test_guests_reach_only_their_own_services_and_the_upstream(lab: LabPlan, lab_api: httpx.Client,
                                                              world: object) -> None:
    api = lab_api
    zk = lab_zk(lab)
    uuids = {ATTACKER: str(uuidlib.uuid4()), VICTIM: str(uuidlib.uuid4())}
    try:
        call(api, "POST", "/network", params={
            "vni": VNI, "description": "isolation", "nettype": "managed", "domain": DOMAIN,
            "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": GATEWAY, "dhcp4": True,
            "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199"})
        call(api, "POST", f"/network/{VNI}/lease",
             params={"macaddress": MAC_V, "ipaddress": VICTIM_IP, "hostname": VICTIM})
        zk.put(schema.userdata("isol-ud"), {"name": "isol-ud", "userdata": f"#!/bin/sh\necho {SECRET}\n"})
        zk.put(schema.profile("isol-prof"), {"name": "isol-prof", "userdata": "isol-ud"})
        for name, node, mac in ((ATTACKER, "hv2", MAC_A), (VICTIM, "hv3", MAC_V)):
            call(api, "POST", "/vm", data={"xml": nic_xml(lab, name, uuids[name], mac, VNI), "node": node})
        call(api, "POST", f"/vm/{VICTIM}/meta", params={"profile": "isol-prof"})
        for name in (ATTACKER, VICTIM):
            call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        ip_a = wait("the attacker booted with a lease", lambda: booted_ip(api, ATTACKER), 120)
        ip_v = wait("the victim booted with a lease", lambda: booted_ip(api, VICTIM), 120)
        assert ip_v == VICTIM_IP and ip_a != ip_v

        # what a guest is given: gateway, DHCP (it booted with a lease), DNS, metadata, upstream
        assert probe(lab, api, ip_a, "ping", GATEWAY) == "ok"
        assert probe(lab, api, ip_a, "resolve", f"{VICTIM}.{DOMAIN}") == ip_v
        assert SECRET in probe(lab, api, ip_v, "userdata")          # the victim's own, to itself
        assert probe(lab, api, ip_a, "ping", WORLD_ADDRESS) == "ok"
        assert probe(lab, api, ip_a, "tcp", f"{WORLD_ADDRESS} {WORLD_PORT}") == "open"
        assert probe(lab, api, ip_a, "ping", ip_v) == "ok"          # guests see each other

        # the cluster's services are there (from a node) ...
        first = primary(api)
        for node in lab.coordinators:
            assert connects(lab, first, node.address, ZK_CLIENT_PORT), f"ZooKeeper on {node.name}"
        assert connects(lab, first, lab.node(first).address, API_PORT), "the API on the primary"
        assert connects(lab, first, lab.node("hv3").address, LIBVIRT_TLS_PORT), "libvirtd on hv3"
        # ... and a guest reaches none of them, on any node address, nor the floating address
        targets = [(n.address, p) for n in lab.nodes for p in SERVICE_PORTS]
        targets += [(n.upstream_address, p) for n in lab.nodes for p in (ZK_CLIENT_PORT, API_PORT)]
        targets += [(FLOATING_ADDRESS, API_PORT), (FLOATING_ADDRESS, 53), (GATEWAY, ZK_CLIENT_PORT),
                    (GATEWAY, API_PORT), ("169.254.169.254", ZK_CLIENT_PORT)]
        # each "closed" costs the probe's 2 s connect timeout in the guest: a few at a time
        with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
            pending = {f"{a}:{p}": pool.submit(probe, lab, api, ip_a, "tcp", f"{a} {p}", 30)
                       for a, p in targets}
            pings = {n.name: pool.submit(probe, lab, api, ip_a, "ping", n.address) for n in lab.nodes}
            results = {t: f.result() for t, f in pending.items()}
            pinged = {n: f.result() for n, f in pings.items()}
        opened = {t: r for t, r in results.items() if r != "closed"}
        assert not opened, f"a guest got an answer from the cluster: {opened}"
        assert set(pinged.values()) == {"fail"}, f"a guest pinged a node: {pinged}"

        # taking the victim's address gets the attacker nothing of the victim's
        stolen = probe(lab, api, ip_a, "spoofmeta", f"{ip_v} {GATEWAY}", timeout=30)
        assert SECRET not in stolen and stolen == "fail", stolen
        # and the victim still works, and so does the attacker with its own address
        assert SECRET in probe(lab, api, ip_v, "userdata")
        assert probe(lab, api, ip_a, "ping", GATEWAY) == "ok"
        # the drops were counted
        ruleset = proc.run(["nft", "list", "table", "inet", "pvc"], netns=lab.node("hv2").netns).stdout
        assert "guest-forward-drop" in ruleset
    finally:
        for name in (ATTACKER, VICTIM):
            if vm_exists(api, name):
                call(api, "POST", f"/vm/{name}/state", params={"state": "stop"})
        for name in (ATTACKER, VICTIM):
            if vm_exists(api, name):
                wait(f"{name} stopped",
                     lambda name=name: call(api, "GET", f"/vm/{name}")[0]["state"] == "stop", 60)
                call(api, "DELETE", f"/vm/{name}")
        zk.delete(schema.profile("isol-prof"))
        zk.delete(schema.userdata("isol-ud"))
        zk.stop()
        api.delete(f"/network/{VNI}")


def test_a_guest_on_a_bridged_network_cannot_reach_the_node(lab: LabPlan, lab_api: httpx.Client) -> None:
    """A 'guest' namespace on a bridged network takes a cluster address and talks to the node
    it is plugged into: the node answers its ARP (Linux answers for any local address), but
    drops everything it sends to the node itself."""
    api = lab_api
    node = lab.node("hv1")
    ns = f"{lab.name}-brg"
    call(api, "POST", "/network", params={"vni": BRIDGED_VNI, "description": "isol-br", "nettype": "bridged"})
    try:
        wait(f"vmbr{BRIDGED_VNI} on hv1", lambda: f"vmbr{BRIDGED_VNI}" in proc.run(
            ["ip", "-o", "link", "show"], netns=node.netns).stdout, 30)
        proc.run(["ip", "netns", "add", ns])
        proc.run(["ip", "-n", node.netns, "link", "add", "brg0", "type", "veth", "peer", "name", "eth0",
                  "netns", ns])
        proc.run(["ip", "-n", node.netns, "link", "set", "brg0", "master", f"vmbr{BRIDGED_VNI}", "up"])
        proc.run(["ip", "-n", ns, "addr", "add", "10.200.0.77/24", "dev", "eth0"])
        proc.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        proc.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        assert connects(lab, "hv2", node.address, ZK_CLIENT_PORT)          # ZooKeeper is there
        for port in (ZK_CLIENT_PORT, CEPH_MON_V1, LIBVIRT_TCP_PORT):
            result = proc.run(["timeout", "5", "busybox", "nc", "-w", "2", node.address, str(port),
                               "-e", "/bin/true"], netns=ns, check=False)
            assert result.returncode != 0, f"a bridged guest opened {node.address}:{port}"
        ping = proc.run(["ping", "-c", "1", "-W", "1", node.address], netns=ns, check=False)
        assert ping.returncode != 0
    finally:
        proc.run(["ip", "netns", "del", ns], check=False)
        proc.run(["ip", "-n", node.netns, "link", "del", "brg0"], check=False)
        call(api, "DELETE", f"/network/{BRIDGED_VNI}")


def test_the_port_guard_follows_a_migrating_guest(lab: LabPlan, lab_api: httpx.Client) -> None:
    """A guest live-migrates onto the primary: the new node guards its tap (its MAC and lease
    only) as soon as the tap appears, the old node forgets it, and the guest keeps its gateway
    and its metadata (now through a local tap instead of the VXLAN)."""
    api = lab_api
    zk = lab_zk(lab)
    name, mac, uuid = "isol-mig", "52:54:00:11:00:03", str(uuidlib.uuid4())
    first = primary(api)
    source = next(n.name for n in lab.nodes if n.name != first)
    try:
        call(api, "POST", "/network", params={
            "vni": VNI, "description": "isolation", "nettype": "managed", "domain": DOMAIN,
            "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": GATEWAY, "dhcp4": True,
            "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199"})
        zk.put(schema.userdata("isol-ud"), {"name": "isol-ud", "userdata": f"#!/bin/sh\necho {SECRET}\n"})
        zk.put(schema.profile("isol-prof"), {"name": "isol-prof", "userdata": "isol-ud"})
        call(api, "POST", "/vm", data={"xml": nic_xml(lab, name, uuid, mac, VNI), "node": source})
        call(api, "POST", f"/vm/{name}/meta", params={"profile": "isol-prof"})
        call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        ip = wait("the guest booted with a lease", lambda: booted_ip(api, name), 120)

        def guard(node: str) -> str:
            return proc.run(["nft", "list", "table", "bridge", "pvc_guard"],
                            netns=lab.node(node).netns).stdout

        wait(f"{source} guards the guest's lease", lambda: f"{mac} . {ip}" in guard(source), 30)
        assert mac not in guard(first)
        assert SECRET in probe(lab, api, ip, "userdata")                    # through the VXLAN
        assert probe(lab, api, ip, "pingstart", GATEWAY) == "ok"
        call(api, "POST", f"/vm/{name}/node", params={"action": "migrate", "node": first, "wait": "true",
                                                      "force_live": "true"})
        wait(f"{first} guards the guest's lease", lambda: f"{mac} . {ip}" in guard(first), 30)
        wait(f"{source} forgets the guest", lambda: mac not in guard(source), 30)
        replies = probe(lab, api, ip, "pingstop").count("seq=")
        assert replies > 0
        assert probe(lab, api, ip, "ping", GATEWAY) == "ok"
        assert SECRET in probe(lab, api, ip, "userdata")                    # through its local tap
        assert probe(lab, api, ip, "tcp", f"{lab.node(first).address} {ZK_CLIENT_PORT}") == "closed"
    finally:
        if vm_exists(api, name):
            call(api, "POST", f"/vm/{name}/state", params={"state": "stop"})
            wait(f"{name} stopped", lambda: call(api, "GET", f"/vm/{name}")[0]["state"] == "stop", 60)
            call(api, "DELETE", f"/vm/{name}")
        zk.delete(schema.profile("isol-prof"))
        zk.delete(schema.userdata("isol-ud"))
        zk.stop()
        api.delete(f"/network/{VNI}")
