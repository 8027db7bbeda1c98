"""`LinuxNetworkHost`: the NetworkHost over netlink (pyroute2), in this namespace or a named one."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pvc.adapters.network.announce import mac_bytes, send_announcement
from pvc.adapters.network.base import Link, NetworkError, NetworkHost
from pvc.adapters.network.netns import in_netns, netns_path, write_sysctl

_NUD_PERMANENT = 0x80
_NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80     # reachable, stale, delay, probe, permanent
_IFA_F_NODAD = 0x02
_ZERO_MAC = "00:00:00:00:00:00"
_SCOPE_LINK = 253
_EOPNOTSUPP = 95
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_LAB_VLAN_RE = re.compile(r"^vlan(\d{1,4})$")
_RTMGRP_LINK = 0x1
_NETLINK_ROUTE = 0

log = logging.getLogger(__name__)


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
            netns_path(netns)
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
        ino = (netns_path(self.netns) if self.netns else Path("/proc/self/ns/net")).stat().st_ino
        return f"v{vlan_id}n{ino & 0xFFFFFFFF:08x}"

    def _create_lab_vlan(self, name: str, vlan_id: int, mtu: int, alias: str) -> None:
        sw_ns = self.lab_switch_netns or ""
        what = f"create lab-switch vlan {name} (id {vlan_id}) via {sw_ns}"
        peer = self._lab_peer_name(vlan_id)
        segment = f"v{vlan_id}"
        sw_path = str(netns_path(sw_ns))
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
        raw_mac = mac_bytes(mac)
        try:
            in_netns(self.netns, lambda: send_announcement(name, addr, raw_mac))
        except OSError as e:
            raise NetworkError(f"{what}: {e.strerror or e}") from None

    def set_sysctl(self, key: str, value: str) -> None:
        in_netns(self.netns, lambda: write_sysctl(key, value))

    def neighbour(self, device: str, ip: str) -> str | None:
        what = f"neighbour of {ip} on {device}"
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise NetworkError(f"{what}: '{ip}' is not an IP address") from None
        with self._op(what):
            index = self._index(device, what)
            family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
            entries = list(self._ipr.get_neighbours(family=family, ifindex=index))
        for entry in entries:
            usable = entry.get("state", 0) & _NUD_USABLE and entry.get("NDA_LLADDR")
            if usable and entry.get("NDA_DST") == str(addr):
                return str(entry.get("NDA_LLADDR")).lower()
        return None

    def bridge_port(self, bridge: str, mac: str) -> str | None:
        what = f"bridge port of {mac} on {bridge}"
        with self._op(what):
            index = self._index(bridge, what)
            entries = list(self._ipr.fdb("dump", master=index))
            names = {int(m["index"]): m.get("ifname") for m in self._ipr.get_links()}
        for entry in entries:
            same = str(entry.get("NDA_LLADDR") or "").lower() == mac.lower()
            if same and entry.get("NDA_MASTER") == index and entry.get("ifindex") != index:
                return names.get(int(entry.get("ifindex") or 0))
        return None

    def watch_links(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """A raw rtnetlink socket subscribed to link events (RTMGRP_LINK), opened in the
        namespace and read by a daemon thread; on_change runs once per burst of messages (their
        content does not matter: the caller re-reads everything)."""
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
            sock.bind((0, _RTMGRP_LINK))
            return sock

        try:
            sock = in_netns(self.netns, open_socket)
        except OSError as e:
            raise NetworkError(f"watch links: {e}") from None
        stopped = threading.Event()

        def run() -> None:
            try:
                while not stopped.is_set():
                    ready, _, _ = select.select([sock], [], [], 1.0)
                    if not ready:
                        continue
                    while True:                      # drain the burst, then one call
                        try:
                            sock.recv(65536, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            break
                    if not stopped.is_set():
                        try:
                            on_change()
                        except Exception:
                            log.exception("link event handler failed")
            except OSError:
                if not stopped.is_set():
                    log.warning("link events stopped", exc_info=True)
            finally:
                sock.close()

        threading.Thread(target=run, name="link-events", daemon=True).start()
        return stopped.set

    def close(self) -> None:
        with self._lock:
            self._ipr.close()
