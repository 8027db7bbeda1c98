"""The lab's underlay: one switch namespace with a bridge, one namespace per node, and an
upstream ("world") namespace every node reaches on its eth1 (guests' NAT goes there).

Every interface lives inside namespaces this module creates (`<lab>-sw`, `<lab>-hvN`); veths are
created inside the switch namespace with their peer placed straight into the node namespace, so
no interface or address ever touches the root namespace. Teardown is "delete every namespace with
the lab's prefix", which also destroys every veth.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

from pvc.lab.plan import UNDERLAY_MTU, WORLD_ADDRESS, LabPlan, NodePlan
from pvc.lab.proc import LabError, alive, run

BRIDGE = "ul"            # the underlay bridge in the switch namespace
NODE_IFACE = "eth0"      # the node's underlay interface, inside its namespace
WORLD_BRIDGE = "world"   # the upstream segment's bridge, in the world namespace
UPSTREAM_IFACE = "eth1"  # the node's upstream interface (networking.upstream_device)
NETNS_RUN = Path("/run/netns")

# What a hypervisor node needs from its network stack: it routes for its managed networks.
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
}


def switch_port(node: NodePlan) -> str:
    """The switch-side veth name of a node (`hv1`, ...)."""
    return node.name


def exists(netns: str) -> bool:
    return (NETNS_RUN / netns).exists()


def list_lab_netns(name: str) -> list[str]:
    """Every namespace that belongs to lab `name` (prefix `<name>-`)."""
    result = run(["ip", "netns", "list"], check=False)
    found = []
    for line in result.stdout.splitlines():
        ns = line.split(" ", 1)[0].strip()
        if ns.startswith(f"{name}-"):
            found.append(ns)
    return sorted(found)


def _add_netns(netns: str) -> None:
    if not exists(netns):
        run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def _links(netns: str) -> dict[str, dict]:
    result = run(["ip", "-n", netns, "-j", "-d", "link", "show"])
    return {link["ifname"]: link for link in json.loads(result.stdout or "[]")}


def create_switch(plan: LabPlan) -> None:
    """The switch namespace with the underlay bridge (no STP, so ports forward at once)."""
    sw = plan.switch_netns
    _add_netns(sw)
    if BRIDGE not in _links(sw):
        run(["ip", "-n", sw, "link", "add", BRIDGE, "mtu", str(UNDERLAY_MTU), "type", "bridge",
             "stp_state", "0", "forward_delay", "0"])
    run(["ip", "-n", sw, "link", "set", BRIDGE, "up"])


def create_world(plan: LabPlan) -> None:
    """The upstream segment: a bridge holding WORLD_ADDRESS in its own namespace, so guests'
    NAT has somewhere to go that is not the cluster network."""
    wd = plan.world_netns
    _add_netns(wd)
    if WORLD_BRIDGE not in _links(wd):
        run(["ip", "-n", wd, "link", "add", WORLD_BRIDGE, "type", "bridge", "stp_state", "0",
             "forward_delay", "0"])
    run(["ip", "-n", wd, "addr", "replace", f"{WORLD_ADDRESS}/24", "dev", WORLD_BRIDGE])
    run(["ip", "-n", wd, "link", "set", WORLD_BRIDGE, "up"])


def _cable_upstream(plan: LabPlan, node: NodePlan) -> None:
    wd, ns, port = plan.world_netns, node.netns, switch_port(node)
    if not exists(wd):
        create_world(plan)
    if port not in _links(wd):
        if UPSTREAM_IFACE in _links(ns):
            raise LabError(f"{ns} already has {UPSTREAM_IFACE} but the world has no port {port}")
        run(["ip", "-n", wd, "link", "add", port, "type", "veth", "peer", "name", UPSTREAM_IFACE,
             "netns", ns])
    run(["ip", "-n", wd, "link", "set", port, "master", WORLD_BRIDGE, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{node.upstream_address}/24", "dev", UPSTREAM_IFACE])
    run(["ip", "-n", ns, "link", "set", UPSTREAM_IFACE, "up"])


def create_node_netns(plan: LabPlan, node: NodePlan) -> None:
    """A node namespace cabled to the switch: eth0 with the node's /24 address, MTU 1550."""
    sw, ns, port = plan.switch_netns, node.netns, switch_port(node)
    _add_netns(ns)
    if port not in _links(sw):
        if NODE_IFACE in _links(ns):
            raise LabError(f"{ns} already has {NODE_IFACE} but the switch has no port {port}")
        run(["ip", "-n", sw, "link", "add", port, "mtu", str(UNDERLAY_MTU), "type", "veth",
             "peer", "name", NODE_IFACE, "mtu", str(UNDERLAY_MTU), "netns", ns])
    run(["ip", "-n", sw, "link", "set", port, "master", BRIDGE, "up"])
    addr = f"{node.address}/24"
    current = run(["ip", "-n", ns, "-j", "addr", "show", "dev", NODE_IFACE]).stdout
    have = {f"{a['local']}/{a['prefixlen']}" for link in json.loads(current or "[]")
            for a in link.get("addr_info", [])}
    if addr not in have:
        run(["ip", "-n", ns, "addr", "add", addr, "dev", NODE_IFACE])
    run(["ip", "-n", ns, "link", "set", NODE_IFACE, "up"])
    run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in NODE_SYSCTLS.items())], netns=ns)
    _cable_upstream(plan, node)


def _not_ready(netns: str) -> list[str]:
    """Links in `netns` that are admin-up but not passing traffic yet."""
    problems = []
    for name, link in _links(netns).items():
        flags = link.get("flags", [])
        if "UP" not in flags:
            continue
        info = link.get("linkinfo", {})
        # A bridge has carrier only while a port of it is up: an empty one (a VLAN's bridge in
        # the switch after its network was removed, a node's fenced away) has nothing to wait for.
        if "NO-CARRIER" in flags and info.get("info_kind") != "bridge":
            problems.append(f"{netns}/{name}: no carrier")
        if info.get("info_slave_kind") == "bridge":
            state = info.get("info_slave_data", {}).get("state")
            if state != "forwarding":
                problems.append(f"{netns}/{name}: bridge port {state}")
    return problems


def wait_links_ready(plan: LabPlan, timeout: float = 10) -> None:
    """Wait until every up link in the lab has carrier and every bridge port forwards.

    The kernel's linkwatch may batch a veth's carrier change for up to ~1 s (when both ends have
    the same ifindex), and the first packets then vanish; poll instead of sleeping.
    """
    deadline = time.monotonic() + timeout
    while True:
        problems = [p for ns in list_lab_netns(plan.name) for p in _not_ready(ns)]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise LabError(f"lab links not ready after {timeout:.0f}s: {', '.join(problems)}")
        time.sleep(0.02)


def isolate(plan: LabPlan, node: NodePlan) -> None:
    """Cut a node off the underlay (switch port and node's eth0 down): a network partition."""
    run(["ip", "-n", plan.switch_netns, "link", "set", switch_port(node), "down"])
    if exists(plan.world_netns):
        run(["ip", "-n", plan.world_netns, "link", "set", switch_port(node), "down"], check=False)
    if exists(node.netns):
        run(["ip", "-n", node.netns, "link", "set", NODE_IFACE, "down"], check=False)
        run(["ip", "-n", node.netns, "link", "set", UPSTREAM_IFACE, "down"], check=False)


def rejoin(plan: LabPlan, node: NodePlan, timeout: float = 10) -> None:
    """Cable an isolated node back in and wait until its links forward again."""
    run(["ip", "-n", plan.switch_netns, "link", "set", switch_port(node), "up"])
    run(["ip", "-n", node.netns, "link", "set", NODE_IFACE, "up"])
    if exists(plan.world_netns):
        run(["ip", "-n", plan.world_netns, "link", "set", switch_port(node), "up"], check=False)
        run(["ip", "-n", node.netns, "link", "set", UPSTREAM_IFACE, "up"], check=False)
    wait_links_ready(plan, timeout)


def netns_pids(netns: str) -> list[int]:
    result = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split() if p.strip().isdigit()]


def kill_netns_processes(netns: str, timeout: float = 10) -> None:
    """SIGTERM every process in a lab namespace, SIGKILL what is left after `timeout`."""
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        pids = [p for p in netns_pids(netns) if alive(p) and p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                raise LabError(f"processes {pids} in {netns} survive SIGKILL")
            sig, deadline = signal.SIGKILL, time.monotonic() + 5
        time.sleep(0.1)


def delete_all(plan: LabPlan, kill_processes: bool = True) -> list[str]:
    """Delete every namespace of the lab (stopping what runs inside first); safe when none exist."""
    namespaces = list_lab_netns(plan.name)
    if kill_processes:
        for ns in namespaces:
            kill_netns_processes(ns)
    for ns in namespaces:
        run(["ip", "netns", "del", ns], check=False)
        etc = Path("/etc/netns") / ns
        if etc.is_dir():
            shutil.rmtree(etc, ignore_errors=True)
    left = list_lab_netns(plan.name)
    if left:
        raise LabError(f"namespaces still present after delete: {', '.join(left)}")
    return namespaces
