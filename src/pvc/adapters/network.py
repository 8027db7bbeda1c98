"""The network host driver: the only code in PVC that changes a node's network stack (DESIGN D8, D11).

Three narrow interfaces, used by the node's network reconciler (`pvc.node.networks`):

- `NetworkHost`: links (bridges, VXLAN and VLAN devices), bridge ports, VXLAN flood lists (FDB),
  addresses, gratuitous ARP / unsolicited NA, sysctls. Implemented with pyroute2.
- `Nftables`: the whole PVC ruleset, replaced atomically; `check` validates text without applying.
- `Services`: the long-running helpers PVC starts itself (one dnsmasq per managed network, the
  cluster DNS view, FRR's zebra and bgpd), tracked by pid files in a run directory.

Every implementation takes an optional `netns`: None acts in the caller's own namespace (a real
node, or pvcnoded inside a lab node's namespace); a name acts inside that namespace (tests and
benchmarks, which never touch the root namespace). `pvc.adapters.fakes` has in-memory versions.

PVC marks every device it creates with the ifalias `pvc:<vni>`, so the reconciler removes only its
own devices and never an administrator's.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError


class NetworkError(Exception):
    """A network operation failed; the message names the operation, the device and the cause."""


@dataclass(frozen=True)
class Link:
    name: str
    kind: str                  # "bridge", "vxlan", "vlan", "veth", "" for plain devices
    mtu: int
    mac: str                   # lowercase, colon separated
    up: bool                   # administratively up
    master: str | None = None  # the bridge this link is a port of
    alias: str | None = None   # ifalias ("pvc:<vni>" on PVC's own devices)
    vni: int | None = None     # VXLAN id (vxlan) or VLAN id (vlan)
    addresses: frozenset[str] = field(default_factory=frozenset)  # "10.1.0.1/24", "fd00::1/64"


class NetworkHost(abc.ABC):
    @abc.abstractmethod
    def links(self) -> dict[str, Link]:
        """Every link in the namespace, by name."""

    @abc.abstractmethod
    def create_bridge(self, name: str, mtu: int, mac: str | None, alias: str, ipv6: bool = True) -> None:
        """An up bridge without STP (ports forward at once) and forward_delay 0. ipv6=False
        disables IPv6 on it (bridged networks: the host takes no part in the guests' network)."""

    @abc.abstractmethod
    def create_vxlan(self, name: str, vni: int, local: str, device: str, port: int, mtu: int,
                     alias: str, learning: bool = False) -> None:
        """An up VXLAN device on `device` sourced from `local` (no remote, no group): flooding
        goes to the all-zero FDB entries (set_flood_list) or to what FRR/EVPN installs."""

    @abc.abstractmethod
    def create_vlan(self, name: str, parent: str, vlan_id: int, mtu: int, alias: str) -> None:
        """An up 802.1Q sub-interface `name` of `parent`. NetworkError if the kernel cannot."""

    @abc.abstractmethod
    def delete_link(self, name: str) -> None:
        """Remove a link; removing one that does not exist is not an error."""

    @abc.abstractmethod
    def set_link(self, name: str, *, mtu: int | None = None, mac: str | None = None,
                 master: str | None = None, up: bool | None = None) -> None:
        """Change what is given; master="" detaches the link from its bridge."""

    @abc.abstractmethod
    def flood_list(self, vxlan: str) -> set[str]:
        """The remote VTEP addresses of the all-zero (head-end replication) FDB entries."""

    @abc.abstractmethod
    def flood_lists(self) -> dict[str, set[str]]:
        """flood_list of every VXLAN device, from one FDB dump (a pass over 100 networks must
        not dump the whole table 100 times)."""

    @abc.abstractmethod
    def set_flood_list(self, vxlan: str, remotes: set[str]) -> None:
        """Add and remove all-zero FDB entries until they are exactly `remotes`."""

    @abc.abstractmethod
    def add_address(self, name: str, cidr: str) -> None:
        """Add an address (IPv6 without DAD); adding one that is present is not an error."""

    @abc.abstractmethod
    def del_address(self, name: str, cidr: str) -> None:
        """Remove an address; removing one that is absent is not an error."""

    @abc.abstractmethod
    def announce(self, name: str, ip: str, mac: str) -> None:
        """Tell the segment that `ip` is at `mac`: a gratuitous ARP (IPv4) or an unsolicited
        neighbour advertisement (IPv6), sent out of `name`."""

    @abc.abstractmethod
    def set_sysctl(self, key: str, value: str) -> None:
        """Write a sysctl in the namespace (key with dots: net.ipv4.ip_forward)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release netlink sockets."""


class Nftables(abc.ABC):
    @abc.abstractmethod
    def apply(self, ruleset: str) -> None:
        """Load ruleset text in one transaction (`nft -f -`): all of it or none of it."""

    @abc.abstractmethod
    def check(self, ruleset: str) -> None:
        """Validate ruleset text without applying it (`nft --check -f -`); NetworkError with
        nft's own message (the offending line) when it is wrong."""

    @abc.abstractmethod
    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in the namespace."""

    @abc.abstractmethod
    def delete_table(self, family: str, name: str) -> None:
        """Delete a table; deleting one that does not exist is not an error."""


class Services(abc.ABC):
    @abc.abstractmethod
    def pid(self, key: str) -> int | None:
        """The pid of the running service `key` (pid file present and the process alive and
        still the program that was started), else None."""

    @abc.abstractmethod
    def start(self, key: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Start argv (a foreground program) detached, in its own session, with stdout and stderr
        appended to <run_dir>/<key>.log; record the pid in <run_dir>/<key>.pid; return the pid.
        Raises NetworkError if the program exits within its first ~100 ms (with its log tail)."""

    @abc.abstractmethod
    def argv(self, key: str) -> list[str] | None:
        """The command line the running service `key` was started with, else None: a restarted
        pvcnoded adopts a helper that runs with the configuration it wants, instead of
        restarting it."""

    @abc.abstractmethod
    def stop(self, key: str, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after timeout; stopping a service that is not running is fine."""

    @abc.abstractmethod
    def signal(self, key: str, signum: int) -> None:
        """Send a signal (SIGHUP makes dnsmasq re-read its hosts directory)."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Keys of every service with a pid file in the run directory (running or not)."""


# --------------------------------------------------------------------------------------------
# Linux implementations

_NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_NUD_PERMANENT = 0x80
_IFA_F_NODAD = 0x02
_ZERO_MAC = "00:00:00:00:00:00"
_SCOPE_LINK = 253
_EOPNOTSUPP = 95
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_NFT_WORD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LAB_VLAN_RE = re.compile(r"^vlan(\d{1,4})$")

T = TypeVar("T")


def _netns_path(netns: str) -> Path:
    path = _NETNS_DIR / netns
    if "/" in netns or not path.exists():
        raise NetworkError(f"network namespace '{netns}' does not exist")
    return path


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run fn inside a named namespace: in a short-lived thread that setns()es first (a network
    namespace switch affects only the calling thread), so sockets it opens and /proc/sys files it
    writes belong to that namespace while the rest of the process stays where it is."""
    if netns is None:
        return fn()
    path = _netns_path(netns)
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetworkError(f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:   # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`ip netns exec` execs the program after setns, so the pid stays the program's."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def _write_sysctl(key: str, value: str) -> None:
    if not key or any(part in ("", ".", "..") for part in key.split(".")) or "/" in key:
        raise NetworkError(f"sysctl {key}: not a sysctl key")
    try:
        Path("/proc/sys", *key.split(".")).write_text(value)
    except OSError as e:
        raise NetworkError(f"sysctl {key}={value}: {e.strerror or e}") from None


def _mac_bytes(mac: str) -> bytes:
    try:
        raw = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise NetworkError(f"'{mac}' is not a MAC address")
    return raw


def _garp_frames(ip: ipaddress.IPv4Address, mac: bytes) -> list[bytes]:
    """What `arping -U` and `arping -A` send: a broadcast request and a broadcast reply, both
    saying ip is at mac (receivers update an existing entry from either)."""
    bcast = b"\xff" * 6
    eth = bcast + mac + struct.pack("!H", 0x0806)
    head = struct.pack("!HHBB", 1, 0x0800, 6, 4)
    request = eth + head + struct.pack("!H", 1) + mac + ip.packed + bcast + ip.packed
    reply = eth + head + struct.pack("!H", 2) + mac + ip.packed + mac + ip.packed
    return [frame.ljust(60, b"\0") for frame in (request, reply)]


def _unsolicited_na(ip: ipaddress.IPv6Address, mac: bytes) -> bytes:
    """ICMPv6 neighbour advertisement with Router and Override set (PVC announces gateways: a NA
    without R would make guests drop the gateway from their default routers) and the target
    link-layer address option; the kernel fills in the checksum."""
    return struct.pack("!BBHI", 136, 0, 0, 0xA0000000) + ip.packed + struct.pack("!BB", 2, 1) + mac


def _send_announcement(name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: bytes) -> None:
    if isinstance(ip, ipaddress.IPv4Address):
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind((name, 0x0806))
            for frame in _garp_frames(ip, mac):
                sock.send(frame)
        return
    index = socket.if_nametoindex(name)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        with contextlib.suppress(OSError):    # source = the address itself when it is local
            sock.bind((str(ip), 0, 0, index))
        sock.sendto(_unsolicited_na(ip, mac), ("ff02::1", 0, 0, index))


class LinuxNetworkHost(NetworkHost):
    """NetworkHost over netlink (pyroute2), in this namespace or a named one.

    `links()` lists global addresses only (link-local ones are the kernel's, not PVC's).
    vlan_backend="lab-switch" replaces 802.1Q sub-interfaces, which kernels without
    CONFIG_VLAN_8021Q cannot make, by a veth `vlan<id>` whose peer is a port of bridge `v<id>`
    in the lab's switch namespace: lab only (recipes/network.md §5 option 1). Such a veth is
    reported as kind "vlan" with its id, so the reconciler sees what it asked for.
    """

    def __init__(self, netns: str | None = None, *, vlan_backend: str = "kernel",
                 lab_switch_netns: str | None = None) -> None:
        if vlan_backend not in ("kernel", "lab-switch"):
            raise NetworkError(f"unknown vlan_backend '{vlan_backend}'")
        if vlan_backend == "lab-switch" and not lab_switch_netns:
            raise NetworkError("vlan_backend lab-switch needs lab_switch_netns")
        self.netns = netns
        self.vlan_backend = vlan_backend
        self.lab_switch_netns = lab_switch_netns
        if netns is not None:
            _netns_path(netns)
        self._ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"LinuxNetworkHost(netns={self.netns!r}, vlan_backend={self.vlan_backend!r})"

    # -- helpers

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except NetlinkError as e:
            raise NetworkError(f"{what}: {os.strerror(e.code) if e.code else e}") from None
        except (OSError, ValueError) as e:     # pyroute2 refusing a value, a socket error
            raise NetworkError(f"{what}: {e}") from None

    def _index(self, name: str, what: str) -> int:
        found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise NetworkError(f"{what}: no link {name}")
        return int(found[0])

    def _exists(self, name: str) -> bool:
        return bool(self._ipr.link_lookup(ifname=name))

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME_RE.match(name):
            raise NetworkError(f"'{name}' is not a valid interface name")

    def _existing(self, name: str, kind: str, what: str) -> bool:
        """True if `name` exists as `kind` (creation is then an update), NetworkError if it exists
        as something else (an administrator's device is never taken over). One `get`, not a
        dump: creating 100 networks must not list every link 200 times."""
        try:
            msg = self._ipr.link("get", ifname=name)[0]
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return False
            raise
        found = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
        if found != kind:
            raise NetworkError(f"{what}: {name} exists as a {found or 'plain'} device")
        return True

    # -- NetworkHost

    def links(self) -> dict[str, Link]:
        with self._op("list links"):
            raw = list(self._ipr.get_links())
            addrs = list(self._ipr.get_addr())
        by_index = {int(msg["index"]): msg for msg in raw}
        addresses: dict[int, set[str]] = {}
        for msg in addrs:
            if msg.get("scope") == _SCOPE_LINK:
                continue
            address = msg.get("address") if msg.get("family") == socket.AF_INET6 else (
                msg.get("local") or msg.get("address"))
            if address:
                addresses.setdefault(int(msg["index"]), set()).add(f"{address}/{msg['prefixlen']}")
        result: dict[str, Link] = {}
        for index, msg in by_index.items():
            name = msg.get("ifname")
            kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
            vni: int | None = None
            if kind == "vxlan":
                vni = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_ID")
            elif kind == "vlan":
                vni = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
            link_alias = msg.get("ifalias")
            if self.vlan_backend == "lab-switch" and kind == "veth" and link_alias and link_alias.startswith(
                    "pvc:") and (m := _LAB_VLAN_RE.match(name)):
                kind, vni = "vlan", int(m.group(1))
            master = msg.get("master")
            result[name] = Link(
                name=name, kind=kind, mtu=int(msg.get("mtu") or 0),
                mac=str(msg.get("address") or "").lower(), up=bool(msg["flags"] & 1),
                master=by_index[master].get("ifname") if master in by_index else None,
                alias=link_alias or None, vni=int(vni) if vni is not None else None,
                addresses=frozenset(addresses.get(index, ())))
        return result

    def create_bridge(self, name: str, mtu: int, mac: str | None, alias: str, ipv6: bool = True) -> None:
        what = f"create bridge {name}"
        self._check_name(name)
        with self._op(what):
            if not self._existing(name, "bridge", what):
                self._ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            index = self._index(name, what)
            if not ipv6:   # before up, so the bridge never gets a link-local address
                self.set_sysctl(f"net.ipv6.conf.{name}.disable_ipv6", "1")
            changes: dict[str, Any] = {"mtu": mtu, "IFLA_IFALIAS": alias}
            if mac:
                changes["address"] = mac.lower()
            self._ipr.link("set", index=index, **changes)
            self._ipr.link("set", index=index, state="up")

    def create_vxlan(self, name: str, vni: int, local: str, device: str, port: int, mtu: int,
                     alias: str, learning: bool = False) -> None:
        what = f"create vxlan {name} (vni {vni}) on {device}"
        self._check_name(name)
        try:
            local_ip = ipaddress.ip_address(local)
        except ValueError:
            raise NetworkError(f"{what}: '{local}' is not an IP address") from None
        with self._op(what):
            if not self._existing(name, "vxlan", what):
                source = {"vxlan_local": str(local_ip)} if local_ip.version == 4 else {
                    "vxlan_local6": str(local_ip)}
                self._ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=port,
                               vxlan_link=self._index(device, what), vxlan_learning=int(learning), **source)
            index = self._index(name, what)
            self._ipr.link("set", index=index, mtu=mtu, IFLA_IFALIAS=alias)
            self._ipr.link("set", index=index, state="up")

    def create_vlan(self, name: str, parent: str, vlan_id: int, mtu: int, alias: str) -> None:
        what = f"create vlan {name} (id {vlan_id}) on {parent}"
        self._check_name(name)
        if not 1 <= vlan_id <= 4094:
            raise NetworkError(f"{what}: a VLAN id must be 1..4094")
        if self.vlan_backend == "lab-switch":
            self._create_lab_vlan(name, vlan_id, mtu, alias)
            return
        with self._op(what):
            if not self._existing(name, "vlan", what):
                try:
                    self._ipr.link("add", ifname=name, kind="vlan", link=self._index(parent, what),
                                   vlan_id=vlan_id)
                except NetlinkError as e:
                    if e.code == _EOPNOTSUPP:
                        raise NetworkError(
                            f"{what}: the kernel has no 802.1Q support (CONFIG_VLAN_8021Q); in a lab, "
                            f"set networking.vlan_backend: lab-switch") from None
                    raise
            index = self._index(name, what)
            self._ipr.link("set", index=index, mtu=mtu, IFLA_IFALIAS=alias)
            self._ipr.link("set", index=index, state="up")

    def _lab_peer_name(self, vlan_id: int) -> str:
        """A switch-side name unique per node namespace: the namespace's inode."""
        ino = (_netns_path(self.netns) if self.netns else Path("/proc/self/ns/net")).stat().st_ino
        return f"v{vlan_id}n{ino & 0xFFFFFFFF:08x}"

    def _create_lab_vlan(self, name: str, vlan_id: int, mtu: int, alias: str) -> None:
        sw_ns = self.lab_switch_netns or ""
        what = f"create lab-switch vlan {name} (id {vlan_id}) via {sw_ns}"
        peer = self._lab_peer_name(vlan_id)
        segment = f"v{vlan_id}"
        sw_path = str(_netns_path(sw_ns))
        with self._op(what), IPRoute(netns=sw_ns, flags=0) as sw:
            if not sw.link_lookup(ifname=segment):
                sw.link("add", ifname=segment, kind="bridge", br_stp_state=0, br_forward_delay=0)
            seg_index = sw.link_lookup(ifname=segment)[0]
            sw.link("set", index=seg_index, state="up")
            link = self.links().get(name)
            if link is not None and link.kind != "vlan":
                raise NetworkError(f"{what}: {name} exists as a {link.kind or 'plain'} device")
            if link is None:
                if sw.link_lookup(ifname=peer):       # a leftover half: start over
                    sw.link("del", index=sw.link_lookup(ifname=peer)[0])
                self._ipr.link("add", ifname=name, kind="veth", mtu=mtu,
                               peer={"ifname": peer, "mtu": mtu, "net_ns_fd": sw_path})
            index = self._index(name, what)
            self._ipr.link("set", index=index, mtu=mtu, IFLA_IFALIAS=alias)
            self._ipr.link("set", index=index, state="up")
            peer_index = sw.link_lookup(ifname=peer)
            if not peer_index:
                raise NetworkError(f"{what}: the switch side {peer} is missing")
            sw.link("set", index=peer_index[0], mtu=mtu, master=seg_index)
            sw.link("set", index=peer_index[0], state="up")

    def delete_link(self, name: str) -> None:
        with self._op(f"delete link {name}"):
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                return
            try:
                self._ipr.link("del", index=found[0])
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise

    def set_link(self, name: str, *, mtu: int | None = None, mac: str | None = None,
                 master: str | None = None, up: bool | None = None) -> None:
        what = f"set link {name}"
        with self._op(what):
            index = self._index(name, what)
            changes: dict[str, Any] = {}
            if mtu is not None:
                changes["mtu"] = mtu
            if mac is not None:
                changes["address"] = mac.lower()
            if master is not None:
                changes["master"] = self._index(master, what) if master else 0
            if changes:
                self._ipr.link("set", index=index, **changes)
            if up is not None:
                self._ipr.link("set", index=index, state="up" if up else "down")

    def flood_list(self, vxlan: str) -> set[str]:
        what = f"flood list of {vxlan}"
        with self._op(what):
            index = self._index(vxlan, what)
            entries = list(self._ipr.fdb("dump", ifindex=index))
        return {str(e.get("NDA_DST")) for e in entries
                if e.get("ifindex") == index and e.get("NDA_LLADDR") == _ZERO_MAC and e.get("NDA_DST")}

    def flood_lists(self) -> dict[str, set[str]]:
        with self._op("flood lists"):
            names = {int(m["index"]): m.get("ifname") for m in self._ipr.get_links()
                     if (m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "") == "vxlan"}
            entries = list(self._ipr.fdb("dump"))
        result: dict[str, set[str]] = {name: set() for name in names.values()}
        for e in entries:
            name = names.get(int(e.get("ifindex") or 0))
            if name and e.get("NDA_LLADDR") == _ZERO_MAC and e.get("NDA_DST"):
                result[name].add(str(e.get("NDA_DST")))
        return result

    def set_flood_list(self, vxlan: str, remotes: set[str]) -> None:
        what = f"set flood list of {vxlan}"
        wanted = set()
        for remote in remotes:
            try:
                wanted.add(str(ipaddress.ip_address(remote)))
            except ValueError:
                raise NetworkError(f"{what}: '{remote}' is not an IP address") from None
        current = self.flood_list(vxlan)
        with self._op(what):
            index = self._index(vxlan, what)
            for remote in sorted(wanted - current):
                self._ipr.fdb("append", ifindex=index, lladdr=_ZERO_MAC, dst=remote, state=_NUD_PERMANENT)
            for remote in sorted(current - wanted):
                try:
                    self._ipr.fdb("del", ifindex=index, lladdr=_ZERO_MAC, dst=remote)
                except NetlinkError as e:
                    if e.code != errno.ENOENT:
                        raise

    def _interface(self, cidr: str, what: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        try:
            return ipaddress.ip_interface(cidr)
        except ValueError:
            raise NetworkError(f"{what}: '{cidr}' is not an address with a prefix length") from None

    def add_address(self, name: str, cidr: str) -> None:
        what = f"add address {cidr} to {name}"
        iface = self._interface(cidr, what)
        with self._op(what):
            index = self._index(name, what)
            extra = {"flags": _IFA_F_NODAD} if iface.version == 6 else {}
            try:
                self._ipr.addr("add", index=index, address=str(iface.ip),
                               prefixlen=iface.network.prefixlen, **extra)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise

    def del_address(self, name: str, cidr: str) -> None:
        what = f"remove address {cidr} from {name}"
        iface = self._interface(cidr, what)
        with self._op(what):
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                return
            try:
                self._ipr.addr("del", index=found[0], address=str(iface.ip),
                               prefixlen=iface.network.prefixlen)
            except NetlinkError as e:
                if e.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                    raise

    def announce(self, name: str, ip: str, mac: str) -> None:
        what = f"announce {ip} at {mac} on {name}"
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise NetworkError(f"{what}: '{ip}' is not an IP address") from None
        raw_mac = _mac_bytes(mac)
        try:
            in_netns(self.netns, lambda: _send_announcement(name, addr, raw_mac))
        except OSError as e:
            raise NetworkError(f"{what}: {e.strerror or e}") from None

    def set_sysctl(self, key: str, value: str) -> None:
        in_netns(self.netns, lambda: _write_sysctl(key, value))

    def close(self) -> None:
        with self._lock:
            self._ipr.close()


class LinuxNftables(Nftables):
    """Nftables through the `nft` program (no Python binding exists for the venv's Python)."""

    def __init__(self, netns: str | None = None, timeout: float = 30.0) -> None:
        self.netns = netns
        self.timeout = timeout

    def _run(self, args: Sequence[str], what: str, stdin: str | None = None) -> str:
        argv = _netns_argv(self.netns, ["nft", *args])
        try:
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NetworkError(f"{what}: {e}") from None
        if result.returncode != 0:
            raise NetworkError(f"{what}: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def apply(self, ruleset: str) -> None:
        self._run(["-f", "-"], "nft apply", ruleset)

    def check(self, ruleset: str) -> None:
        self._run(["--check", "-f", "-"], "nft check", ruleset)

    def tables(self) -> list[tuple[str, str]]:
        out = self._run(["-j", "list", "tables"], "nft list tables")
        try:
            items = json.loads(out or "{}").get("nftables", [])
        except ValueError as e:
            raise NetworkError(f"nft list tables: unreadable JSON: {e}") from None
        return [(t["table"]["family"], t["table"]["name"]) for t in items if "table" in t]

    def delete_table(self, family: str, name: str) -> None:
        if not (_NFT_WORD_RE.match(family) and _NFT_WORD_RE.match(name)):
            raise NetworkError(f"delete table {family} {name}: not a table name")
        # declaring it first makes the delete a no-op when it is absent, in one transaction
        self._run(["-f", "-"], f"delete table {family} {name}",
                  f"table {family} {name}\ndelete table {family} {name}\n")


class ProcessServices(Services):
    """Services as plain child processes in their own sessions, tracked by pid files
    (`<pid>\\n<program>\\n`) so a restarted pvcnoded finds and stops what its predecessor
    started; the program name guards against a recycled pid."""

    START_GRACE = 0.1

    def __init__(self, run_dir: str | Path, netns: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.netns = netns
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ProcessServices({str(self.run_dir)!r}, netns={self.netns!r})"

    def _path(self, key: str, suffix: str) -> Path:
        if not _KEY_RE.match(key):
            raise NetworkError(f"'{key}' is not a service key")
        return self.run_dir / f"{key}{suffix}"

    def _record(self, key: str) -> tuple[int, str] | None:
        try:
            lines = self._path(key, ".pid").read_text().split("\n")
            return int(lines[0]), lines[1].strip() if len(lines) > 1 else ""
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int, program: str) -> bool:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
            return False
        argv0 = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline else ""
        if argv0 == program:
            return True
        # `ip netns exec` between fork and exec
        return bool(self.netns) and cmdline[:3] == [b"ip", b"netns", b"exec"]

    def pid(self, key: str) -> int | None:
        record = self._record(key)
        if record is None:
            return None
        return record[0] if self._alive(*record) else None

    def start(self, key: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        if not argv:
            raise NetworkError(f"start {key}: empty command")
        pidfile, log = self._path(key, ".pid"), self._path(key, ".log")
        program = os.path.basename(argv[0])
        with self._lock:
            if self.pid(key) is not None:
                raise NetworkError(f"start {key}: already running (pid {self.pid(key)})")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {shlex.join(argv)}\n".encode())
                out.flush()
                try:
                    child = subprocess.Popen(_netns_argv(self.netns, argv), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                             env={**os.environ, **(env or {})})
                except OSError as e:
                    raise NetworkError(f"start {key}: {argv[0]}: {e.strerror or e}") from None
            self._children[child.pid] = child
            tmp = pidfile.with_suffix(".pid.tmp")
            tmp.write_text(f"{child.pid}\n{program}\n")
            tmp.replace(pidfile)
            deadline = time.monotonic() + self.START_GRACE
            while time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.01)
            if child.poll() is not None:
                self._children.pop(child.pid, None)
                pidfile.unlink(missing_ok=True)
                raise NetworkError(f"start {key}: {program} exited at once (status {child.returncode}): "
                                   f"{_tail(log)}")
            return child.pid

    def argv(self, key: str) -> list[str] | None:
        pid = self.pid(key)
        if pid is None:
            return None
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]

    def _wait_gone(self, pid: int, program: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid, program):
                return True
            time.sleep(0.01)
        return not self._alive(pid, program)

    def stop(self, key: str, timeout: float = 5.0) -> None:
        pidfile = self._path(key, ".pid")
        with self._lock:
            record = self._record(key)
            if record is not None and self._alive(*record):
                pid, program = record
                for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                    try:   # the whole session's group: dnsmasq's script helper goes too
                        os.killpg(pid, signum)
                    except ProcessLookupError:
                        break
                    except PermissionError:
                        os.kill(pid, signum)
                    if self._wait_gone(pid, program, wait):
                        break
                else:
                    raise NetworkError(f"stop {key}: pid {pid} survived SIGKILL")
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait()
            pidfile.unlink(missing_ok=True)

    def signal(self, key: str, signum: int) -> None:
        pid = self.pid(key)
        if pid is None:
            raise NetworkError(f"signal {key}: not running")
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            raise NetworkError(f"signal {key}: not running") from None

    def names(self) -> list[str]:
        if not self.run_dir.is_dir():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.pid") if _KEY_RE.match(p.stem))


def _tail(path: Path, limit: int = 800) -> str:
    try:
        text = path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if not line.startswith("--- ")]
    return " | ".join(lines[-8:]).strip() or "(no output)"
