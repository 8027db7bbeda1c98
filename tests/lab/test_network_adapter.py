"""The Linux network adapters against the real kernel, nft and dnsmasq, in throwaway namespaces.

Every test builds its own namespaces (prefix `nt<random>-`) and deletes them, with every process
inside, when it ends: nothing here touches the root namespace. Two "nodes" a and b are cabled by
a veth with the 1550 underlay MTU (10.211.0.1/.2); "guests" are namespaces with a veth into a
node's bridge.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pvc.adapters.network import LinuxNetworkHost, LinuxNftables, NetworkError, ProcessServices
from pvc.core import netconfig as nc

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("ip", "nft", "dnsmasq", "busybox")),
                       reason="needs iproute2, nftables, dnsmasq and busybox"),
]

GOLDEN = Path(__file__).parent.parent / "unit" / "golden" / "net"
MAC_A, MAC_B = "02:11:00:00:00:0a", "02:11:00:00:00:0b"


def run(*argv: str, netns: str | None = None, check: bool = True, input: str | None = None,
        timeout: float = 10) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    result = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(full)}: {result.returncode}: {result.stderr or result.stdout}")
    return result


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 5) -> None:
    """Poll instead of sleeping: a fresh veth may take up to ~1 s to get carrier (recipe G6)."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pings(netns: str, address: str, wait: float = 1) -> bool:
    result = run("ping", "-n", "-q", "-c", "1", "-W", str(wait), address, netns=netns, check=False)
    return result.returncode == 0


class Topo:
    def __init__(self) -> None:
        self.prefix = f"nt{secrets.token_hex(3)}"
        self.made: list[str] = []
        self.hosts: list[LinuxNetworkHost] = []

    def ns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        run("ip", "netns", "add", name)
        self.made.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def nodes(self) -> tuple[str, str]:
        """Nodes a and b with eth0 on one cable (MTU 1550)."""
        a, b = self.ns("a"), self.ns("b")
        run("ip", "-n", a, "link", "add", "eth0", "mtu", "1550", "type", "veth", "peer", "name", "eth0",
            "mtu", "1550", "netns", b)
        for ns, addr in ((a, "10.211.0.1/24"), (b, "10.211.0.2/24")):
            run("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        return a, b

    def host(self, netns: str, **kwargs: str) -> LinuxNetworkHost:
        h = LinuxNetworkHost(netns, **kwargs)
        self.hosts.append(h)
        return h

    def guest(self, node: str, port: str, suffix: str, mac: str, cidr: str | None = None) -> str:
        """A guest namespace whose eth0 is cabled to `port` in `node` (not yet in a bridge)."""
        g = self.ns(suffix)
        run("ip", "-n", node, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", g)
        run("ip", "-n", g, "link", "set", "eth0", "address", mac, "up")
        if cidr:
            run("ip", "-n", g, "addr", "add", cidr, "dev", "eth0")
        return g

    def destroy(self) -> None:
        for h in self.hosts:
            h.close()
        for ns in reversed(self.made):
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)


def managed_net(h: LinuxNetworkHost, local: str, remote: str, mac: str) -> None:
    """vmbr100 + vxlan100 (head-end replication to `remote`), as the reconciler builds it."""
    h.create_bridge("vmbr100", 1500, mac, nc.alias(100))
    h.create_vxlan("vxlan100", 100, local, "eth0", 4789, 1500, nc.alias(100))
    h.set_link("vxlan100", master="vmbr100")
    h.set_flood_list("vxlan100", {remote})


# --------------------------------------------------------------------------------------------
# NetworkHost

def test_vxlan_bridges_carry_guests_between_nodes(topo: Topo) -> None:
    t0 = time.monotonic()
    a, b = topo.nodes()
    ha, hb = topo.host(a), topo.host(b)
    managed_net(ha, "10.211.0.1", "10.211.0.2", MAC_A)
    managed_net(hb, "10.211.0.2", "10.211.0.1", MAC_B)
    g1 = topo.guest(a, "vm-g1", "g1", "52:54:00:00:01:01", "10.100.0.11/24")
    g2 = topo.guest(b, "vm-g2", "g2", "52:54:00:00:01:02", "10.100.0.12/24")
    ha.set_link("vm-g1", master="vmbr100", up=True)
    hb.set_link("vm-g2", master="vmbr100", up=True)
    wait_for("g1 -> g2 over VXLAN", lambda: pings(g1, "10.100.0.12"))
    # a 1472-byte DF ping fits: vxlan100 carries 1500 over the 1550 underlay
    assert run("ping", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", "10.100.0.11",
               netns=g2, check=False).returncode == 0
    print(f"\ntwo nodes, two guests, first ping in {time.monotonic() - t0:.2f}s")

    links = ha.links()
    br, vx, port = links["vmbr100"], links["vxlan100"], links["vm-g1"]
    assert (br.kind, br.mac, br.mtu, br.up, br.alias) == ("bridge", MAC_A, 1500, True, "pvc:100")
    assert (vx.kind, vx.vni, vx.master, vx.alias, vx.mtu, vx.up) == ("vxlan", 100, "vmbr100", "pvc:100",
                                                                      1500, True)
    assert (port.kind, port.master, port.alias) == ("veth", "vmbr100", None)
    assert links["eth0"].addresses == frozenset({"10.211.0.1/24"})      # no link-local addresses
    assert links["lo"].kind == "" and links["lo"].addresses == frozenset({"127.0.0.1/8", "::1/128"})
    assert ha.flood_list("vxlan100") == {"10.211.0.2"}

    # creating again is an update, not an error; a different kind is refused
    ha.create_bridge("vmbr100", 1400, MAC_A, nc.alias(100))
    assert ha.links()["vmbr100"].mtu == 1400
    with pytest.raises(NetworkError, match="exists as a bridge"):
        ha.create_vxlan("vmbr100", 7, "10.211.0.1", "eth0", 4789, 1500, nc.alias(7))

    # flood lists are replaced exactly; bad addresses are refused
    ha.set_flood_list("vxlan100", {"10.211.0.7", "10.211.0.8"})
    assert ha.flood_list("vxlan100") == {"10.211.0.7", "10.211.0.8"}
    assert not pings(g1, "10.100.0.12", wait=0.3)
    ha.set_flood_list("vxlan100", {"10.211.0.2"})
    assert ha.flood_list("vxlan100") == {"10.211.0.2"}
    wait_for("g1 -> g2 again", lambda: pings(g1, "10.100.0.12"))
    with pytest.raises(NetworkError, match="not an IP address"):
        ha.set_flood_list("vxlan100", {"nonsense"})

    # detach and delete
    ha.set_link("vm-g1", master="")
    assert ha.links()["vm-g1"].master is None
    ha.delete_link("vxlan100")
    ha.delete_link("vxlan100")
    assert "vxlan100" not in ha.links()
    with pytest.raises(NetworkError, match="no link vxlan100"):
        ha.flood_list("vxlan100")
    with pytest.raises(NetworkError, match="no link nosuch"):
        ha.set_link("nosuch", up=True)


def test_addresses_sysctls_and_ipv6_off(topo: Topo) -> None:
    a, _ = topo.nodes()
    h = topo.host(a)
    h.create_bridge("vmbr7", 1500, None, nc.alias(7))
    h.create_bridge("vmbr8", 1500, None, nc.alias(8), ipv6=False)
    for cidr in ("10.7.0.1/24", "fd00:7::1/64"):
        h.add_address("vmbr7", cidr)
        h.add_address("vmbr7", cidr)           # present: not an error
    assert h.links()["vmbr7"].addresses == frozenset({"10.7.0.1/24", "fd00:7::1/64"})
    shown = run("ip", "-6", "-o", "addr", "show", "dev", "vmbr7", netns=a).stdout.splitlines()
    shown = [line for line in shown if "fd00:7::1/64" in line]
    assert len(shown) == 1 and "tentative" not in shown[0]                # no DAD
    h.del_address("vmbr7", "fd00:7::1/64")
    h.del_address("vmbr7", "fd00:7::1/64")      # absent: not an error
    h.del_address("nosuch", "10.0.0.1/24")
    assert h.links()["vmbr7"].addresses == frozenset({"10.7.0.1/24"})
    with pytest.raises(NetworkError, match="not an address"):
        h.add_address("vmbr7", "10.7.0.300/24")

    assert run("sysctl", "-n", "net.ipv6.conf.vmbr8.disable_ipv6", netns=a).stdout.strip() == "1"
    assert run("sysctl", "-n", "net.ipv6.conf.vmbr7.disable_ipv6", netns=a).stdout.strip() == "0"
    h.set_sysctl("net.ipv4.ip_forward", "1")
    assert run("sysctl", "-n", "net.ipv4.ip_forward", netns=a).stdout.strip() == "1"
    with pytest.raises(NetworkError, match="sysctl"):
        h.set_sysctl("net.ipv4.no_such_key", "1")
    with pytest.raises(NetworkError, match="does not exist"):
        LinuxNetworkHost(f"{topo.prefix}-missing")


def test_announce_updates_neighbours(topo: Topo) -> None:
    a, _ = topo.nodes()
    h = topo.host(a)
    h.create_bridge("vmbr100", 1500, MAC_A, nc.alias(100))
    h.add_address("vmbr100", "10.100.0.1/24")
    h.add_address("vmbr100", "fd00:100::1/64")
    g = topo.guest(a, "vm-g1", "g1", "52:54:00:00:01:01", "10.100.0.11/24")
    run("ip", "-n", g, "addr", "add", "fd00:100::11/64", "dev", "eth0", "nodad")
    h.set_link("vm-g1", master="vmbr100", up=True)
    wait_for("guest -> gateway", lambda: pings(g, "10.100.0.1"))

    def neigh(ip: str) -> str:
        return run("ip", "neigh", "show", ip, "dev", "eth0", netns=g).stdout

    stale = "02:99:99:99:99:99"
    for ip in ("10.100.0.1", "fd00:100::1"):
        run("ip", "neigh", "replace", ip, "lladdr", stale, "dev", "eth0", "nud", "stale", netns=g)
        assert stale in neigh(ip)
        h.announce("vmbr100", ip, MAC_A)
        wait_for(f"{ip} at {MAC_A}", lambda ip=ip: MAC_A in neigh(ip), timeout=2)

    # netns=None: the same code from inside the namespace (how pvcnoded runs in a lab node)
    run("ip", "neigh", "replace", "10.100.0.1", "lladdr", stale, "dev", "eth0", "nud", "stale", netns=g)
    code = ("from pvc.adapters.network import LinuxNetworkHost as H; h = H(); "
            f"h.announce('vmbr100', '10.100.0.1', '{MAC_A}'); h.set_sysctl('net.ipv4.ip_forward', '1'); "
            "print(sorted(h.links()))")
    out = run(sys.executable, "-c", code, netns=a).stdout
    assert "vmbr100" in out
    wait_for("GARP from netns=None", lambda: MAC_A in neigh("10.100.0.1"), timeout=2)
    assert run("sysctl", "-n", "net.ipv4.ip_forward", netns=a).stdout.strip() == "1"
    with pytest.raises(NetworkError, match="not a MAC"):
        h.announce("vmbr100", "10.100.0.1", "nope")
    with pytest.raises(NetworkError, match="announce"):
        h.announce("nosuch", "10.100.0.1", MAC_A)


def test_vlan_needs_8021q_or_the_lab_switch(topo: Topo) -> None:
    a, b = topo.nodes()
    sw = topo.ns("sw")
    kernel = topo.host(a)
    try:
        kernel.create_vlan("eth0.5", "eth0", 5, 1500, nc.alias(5))
        assert kernel.links()["eth0.5"].kind == "vlan"          # a kernel with 802.1Q
    except NetworkError as e:
        assert "the kernel has no 802.1Q support" in str(e)

    ha = topo.host(a, vlan_backend="lab-switch", lab_switch_netns=sw)
    hb = topo.host(b, vlan_backend="lab-switch", lab_switch_netns=sw)
    guests = []
    for h, node, n in ((ha, a, 1), (hb, b, 2)):
        h.create_vlan("vlan100", "eth1", 100, 1500, nc.alias(100))
        h.create_vlan("vlan100", "eth1", 100, 1500, nc.alias(100))        # again: no change
        h.create_vlan("vlan200", "eth1", 200, 1500, nc.alias(200))
        h.create_bridge("vmbr100", 1500, None, nc.alias(100), ipv6=False)
        h.set_link("vlan100", master="vmbr100")
        g = topo.guest(node, "vm-g", f"g{n}", f"52:54:00:00:02:0{n}", f"10.42.0.{n}/24")
        h.set_link("vm-g", master="vmbr100", up=True)
        guests.append(g)
        link = h.links()["vlan100"]
        assert (link.kind, link.vni, link.master, link.alias) == ("vlan", 100, "vmbr100", "pvc:100")
    wait_for("g1 -> g2 over the lab switch's VLAN 100", lambda: pings(guests[0], "10.42.0.2"))
    sw_links = run("ip", "-o", "link", "show", netns=sw).stdout
    assert " v100:" in sw_links and " v200:" in sw_links and sw_links.count("master v100") == 2

    ha.delete_link("vlan100")                       # takes its switch side with it
    assert run("ip", "-o", "link", "show", netns=sw).stdout.count("master v100") == 1
    assert not pings(guests[0], "10.42.0.2", wait=0.3)
    with pytest.raises(NetworkError, match="lab_switch_netns"):
        LinuxNetworkHost(a, vlan_backend="lab-switch")


# --------------------------------------------------------------------------------------------
# Nftables

@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.nft")))
def test_golden_rulesets_pass_nft_check(topo: Topo, name: str) -> None:
    LinuxNftables(topo.ns("n")).check((GOLDEN / name).read_text())


def test_nft_apply_replace_check_delete(topo: Topo) -> None:
    a = topo.ns("a")
    nft = LinuxNftables(a)
    nets = [nc.NetSpec.from_doc({"vni": 100, "type": "managed", "ip4": {"network": "10.100.0.0/24",
                                                                       "gateway": "10.100.0.1"}})]
    acls = {100: {"in": [{"description": "ssh", "rule": "tcp dport 22 drop"}], "out": []}}
    primary = nc.render_nft(nets, acls, primary=True, upstream_device="eth0",
                            metadata_address="169.254.169.254")
    for _ in range(2):                      # the first apply creates, the second replaces
        nft.apply(primary)
    assert ("inet", "pvc") in nft.tables()
    listed = run("nft", "list", "table", "inet", "pvc", netns=a).stdout
    assert "tcp dport 22 drop" in listed and "masquerade" in listed
    nft.apply(nc.render_nft(nets, acls, primary=False, upstream_device="eth0",
                            metadata_address="169.254.169.254"))
    assert "masquerade" not in run("nft", "list", "table", "inet", "pvc", netns=a).stdout

    with pytest.raises(NetworkError, match="dorp"):
        nft.check(nc.acl_check_ruleset(nets[0], "in", ["tcp dport 22 dorp"]))
    nft.check(nc.acl_check_ruleset(nets[0], "in", ["tcp dport 22 drop",
                                                   "ip saddr { 10.0.0.1, 10.0.0.2 } accept"]))
    with pytest.raises(NetworkError, match="nft apply"):
        nft.apply("table inet pvc {\n\tchain x {\n\t\tnonsense\n\t}\n}\n")
    assert "tcp dport 22 drop" in run("nft", "list", "table", "inet", "pvc", netns=a).stdout   # unchanged
    assert ("inet", nc.CHECK_TABLE) not in nft.tables()            # --check commits nothing

    nft.delete_table("inet", "pvc")
    nft.delete_table("inet", "pvc")
    assert nft.tables() == []


# --------------------------------------------------------------------------------------------
# Services

def test_services_start_pid_stop(tmp_path: Path, topo: Topo) -> None:
    services = ProcessServices(tmp_path / "run")
    pid = services.start("sleeper", ["sleep", "60"], env={"PVC_TEST": "1"})
    assert services.pid("sleeper") == pid and services.names() == ["sleeper"]
    assert b"PVC_TEST=1" in Path(f"/proc/{pid}/environ").read_bytes()
    assert os.getpgid(pid) == pid                       # its own session
    with pytest.raises(NetworkError, match="already running"):
        services.start("sleeper", ["sleep", "60"])
    # a restarted daemon finds it by the pid file and can stop it
    again = ProcessServices(tmp_path / "run")
    assert again.pid("sleeper") == pid
    again.stop("sleeper")
    assert services.pid("sleeper") is None and again.names() == []
    again.stop("sleeper")                               # not running: fine

    # a crash is noticed; a recycled pid running something else is not "ours"
    pid = services.start("crashy", ["sleep", "60"])
    os.kill(pid, signal.SIGKILL)
    wait_for("crash noticed", lambda: services.pid("crashy") is None, timeout=2)
    (tmp_path / "run" / "other.pid").write_text(f"{os.getpid()}\nsleep\n")
    assert services.pid("other") is None
    with pytest.raises(NetworkError, match="not running"):
        services.signal("other", signal.SIGHUP)

    with pytest.raises(NetworkError, match=r"exited at once \(status 3\): .*boom"):
        services.start("failing", ["sh", "-c", "echo boom; exit 3"])
    assert services.pid("failing") is None and not (tmp_path / "run" / "failing.pid").exists()
    with pytest.raises(NetworkError, match="no-such-program"):
        services.start("missing", ["/no-such-program"])

    # a stubborn program is killed after the timeout
    pid = services.start("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    t0 = time.monotonic()
    services.stop("stubborn", timeout=0.3)
    assert services.pid("stubborn") is None and 0.3 <= time.monotonic() - t0 < 3

    # in a named namespace the pid is the program's own (ip netns exec execs)
    a = topo.ns("a")
    in_ns = ProcessServices(tmp_path / "ns", netns=a)
    pid = in_ns.start("sleeper", ["sleep", "60"])
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{a}").st_ino
    in_ns.signal("sleeper", signal.SIGTERM)
    wait_for("SIGTERM", lambda: in_ns.pid("sleeper") is None, timeout=2)
    in_ns.stop("sleeper")
    assert in_ns.names() == []


HOOK = """#!/bin/sh
echo "$@" >> {dir}/hook.events
exit 0
"""

UDHCPC = """#!/bin/sh
# Writes only into {dir}: never the host's /etc/resolv.conf (recipe G9).
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${{mask:-24}}" dev "$interface"
    echo "ip=$ip router=$router dns=$dns domain=$domain mtu=$mtu" > {dir}/udhcpc.$1 ;;
esac
exit 0
"""


def test_dnsmasq_serves_dhcp_and_dns(topo: Topo) -> None:
    a, _ = topo.nodes()
    h = topo.host(a)
    spec = nc.NetSpec.from_doc({
        "vni": 100, "type": "managed", "domain": "net100.test",
        "ip4": {"network": "10.100.0.0/24", "gateway": "10.100.0.1", "dhcp_flag": True,
                "dhcp_start": "10.100.0.100", "dhcp_end": "10.100.0.199"}})
    h.create_bridge(spec.bridge, 1500, MAC_A, nc.alias(100))
    for cidr in spec.gateway_cidrs:
        h.add_address(spec.bridge, cidr)
    mac = "52:54:00:00:01:01"
    g = topo.guest(a, "vm-g1", "g1", mac)
    h.set_link("vm-g1", master=spec.bridge, up=True)

    # dnsmasq drops to `nobody`: its files live in a world-readable directory, not pytest's tmp
    work = Path(tempfile.mkdtemp(prefix=f"{topo.prefix}-", dir="/tmp"))
    try:
        work.chmod(0o755)
        hosts = work / "hosts"
        hosts.mkdir(mode=0o755)
        (hosts / mac).write_text(nc.reservation_line(mac, "10.100.0.50", "web1"))
        hook, script = work / "hook.sh", work / "udhcpc.sh"
        hook.write_text(HOOK.format(dir=work))
        script.write_text(UDHCPC.format(dir=work))
        for f in (hook, script):
            f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        services = ProcessServices(work / "run", netns=a)
        argv = nc.dnsmasq_argv(spec, mtu=1450, hosts_dir=str(hosts), hook=[str(hook)], upstream_dns=[])
        t0 = time.monotonic()
        pid = services.start("dnsmasq-100", argv)
        assert services.pid("dnsmasq-100") == pid
        run("busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", str(script),
            "-x", "hostname:web1", "-O", "mtu", netns=g, timeout=15)
        print(f"\ndnsmasq start to DHCP lease {time.monotonic() - t0:.2f}s")
        bound = (work / "udhcpc.bound").read_text()
        assert "ip=10.100.0.50 router=10.100.0.1 dns=10.100.0.1 domain=net100.test mtu=1450" in bound
        assert "10.100.0.50/24" in run("ip", "-4", "addr", "show", "dev", "eth0", netns=g).stdout
        wait_for("the lease hook", lambda: f"add {mac} 10.100.0.50 web1" in _read(work / "hook.events"))
        answer = run("dig", "+short", "+time=1", "+tries=2", "@10.100.0.1", "web1.net100.test", netns=g,
                     check=False).stdout.strip() if shutil.which("dig") else "10.100.0.50"
        assert answer == "10.100.0.50"
        services.stop("dnsmasq-100")
        assert services.pid("dnsmasq-100") is None
        wait_for("dnsmasq and its helper gone", lambda: not run("ip", "netns", "pids", a).stdout.strip())
        assert "DHCPACK" in (work / "run" / "dnsmasq-100.log").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
