"""In-memory NetworkHost, Nftables and Services, honouring the contracts of pvc.adapters.network
(tests/unit/test_network_fakes.py), with failure-injection hooks for the pure unit tests."""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvc.adapters.network.base import Link, NetworkError, NetworkHost, Nftables, Services


@dataclass
class FakeLink:
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool = False
    master: str | None = None
    alias: str | None = None
    vni: int | None = None
    parent: str | None = None          # a VLAN's lower device, a VXLAN's underlay device
    local: str | None = None           # a VXLAN's source address
    addresses: set[str] = field(default_factory=set)

    def snapshot(self) -> Link:
        return Link(name=self.name, kind=self.kind, mtu=self.mtu, mac=self.mac, up=self.up,
                    master=self.master, alias=self.alias, vni=self.vni, addresses=frozenset(self.addresses))


_FAKE_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


@dataclass(eq=False)
class FakeNetworkHost(NetworkHost):
    """A node's network stack in memory, with the kernel's bookkeeping the reconciler relies on:
    deleting a bridge detaches its ports, deleting a link drops its addresses and FDB entries,
    deleting a device deletes the VLANs on it, creation of an existing link of the same kind is
    an update. Starts with `devices` (lo plus the default cluster and bridge devices)."""

    devices: tuple[str, ...] = ("lo", "eth0", "eth1")
    vlan_support: bool = True          # False: create_vlan fails like a kernel without 802.1Q
    sysctls: dict[str, str] = field(default_factory=dict)
    announcements: list[tuple[str, str, str]] = field(default_factory=list)   # (link, ip, mac)
    closed: bool = False

    def __post_init__(self) -> None:
        self._links: dict[str, FakeLink] = {}
        self._fdb: dict[str, set[str]] = {}
        self._macs = 0
        self._faults: dict[str, list[NetworkError]] = {}
        self._lock = threading.RLock()
        for name in self.devices:
            self.add_device(name, addresses=("127.0.0.1/8", "::1/128") if name == "lo" else ())

    # -- test hooks

    def add_device(self, name: str, mtu: int = 1500, addresses: Sequence[str] = (), kind: str = "") -> None:
        """A device PVC did not create (a NIC, a guest's tap): up, no alias."""
        mac = "00:00:00:00:00:00" if name == "lo" else self._mac()
        self._links[name] = FakeLink(name=name, kind=kind, mtu=65536 if name == "lo" else mtu, mac=mac,
                                     up=True, addresses={self._norm(a, "add_device") for a in addresses})

    def fail_next(self, op: str, message: str = "injected failure", times: int = 1) -> None:
        """The next `times` calls of method `op` raise NetworkError(message)."""
        self._faults.setdefault(op, []).extend(NetworkError(f"{op}: {message}") for _ in range(times))

    def fdb(self, vxlan: str) -> set[str]:
        return set(self._fdb.get(vxlan, set()))

    # -- helpers

    def _enter(self, op: str) -> None:
        if self._faults.get(op):
            raise self._faults[op].pop(0)

    def _mac(self) -> str:
        self._macs += 1
        return "02:fa:ce:" + ":".join(f"{b:02x}" for b in self._macs.to_bytes(3, "big"))

    def _get(self, name: str, what: str) -> FakeLink:
        link = self._links.get(name)
        if link is None:
            raise NetworkError(f"{what}: no link {name}")
        return link

    @staticmethod
    def _norm(cidr: str, what: str) -> str:
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError:
            raise NetworkError(f"{what}: '{cidr}' is not an address with a prefix length") from None
        return f"{iface.ip}/{iface.network.prefixlen}"

    def _create(self, name: str, kind: str, what: str, **attrs: Any) -> FakeLink:
        if not _FAKE_IFNAME.match(name):
            raise NetworkError(f"'{name}' is not a valid interface name")
        link = self._links.get(name)
        if link is not None and link.kind != kind:
            raise NetworkError(f"{what}: {name} exists as a {link.kind or 'plain'} device")
        if link is None:
            link = self._links[name] = FakeLink(name=name, kind=kind, mtu=1500, mac=self._mac(), **attrs)
        return link

    # -- NetworkHost

    def links(self) -> dict[str, Link]:
        with self._lock:
            self._enter("links")
            return {name: link.snapshot() for name, link in self._links.items()}

    def create_bridge(self, name: str, mtu: int, mac: str | None, alias: str, ipv6: bool = True) -> None:
        with self._lock:
            self._enter("create_bridge")
            link = self._create(name, "bridge", f"create bridge {name}")
            if not ipv6:
                self.sysctls[f"net.ipv6.conf.{name}.disable_ipv6"] = "1"
            link.mtu, link.alias, link.up = mtu, alias, True
            if mac:
                link.mac = mac.lower()

    def create_vxlan(self, name: str, vni: int, local: str, device: str, port: int, mtu: int,
                     alias: str, learning: bool = False) -> None:
        what = f"create vxlan {name} (vni {vni}) on {device}"
        with self._lock:
            self._enter("create_vxlan")
            self._get(device, what)
            try:
                ipaddress.ip_address(local)
            except ValueError:
                raise NetworkError(f"{what}: '{local}' is not an IP address") from None
            link = self._create(name, "vxlan", what, vni=vni, parent=device, local=local)
            link.mtu, link.alias, link.up = mtu, alias, True
            self._fdb.setdefault(name, set())

    def create_vlan(self, name: str, parent: str, vlan_id: int, mtu: int, alias: str) -> None:
        what = f"create vlan {name} (id {vlan_id}) on {parent}"
        with self._lock:
            self._enter("create_vlan")
            if not 1 <= vlan_id <= 4094:
                raise NetworkError(f"{what}: a VLAN id must be 1..4094")
            if not self.vlan_support:
                raise NetworkError(f"{what}: the kernel has no 802.1Q support (CONFIG_VLAN_8021Q)")
            self._get(parent, what)
            link = self._create(name, "vlan", what, vni=vlan_id, parent=parent)
            link.mtu, link.alias, link.up = mtu, alias, True

    def delete_link(self, name: str) -> None:
        with self._lock:
            self._enter("delete_link")
            if self._links.pop(name, None) is None:
                return
            self._fdb.pop(name, None)
            for other in list(self._links.values()):
                if other.master == name:
                    other.master = None
                if other.kind == "vlan" and other.parent == name:
                    self.delete_link(other.name)

    def set_link(self, name: str, *, mtu: int | None = None, mac: str | None = None,
                 master: str | None = None, up: bool | None = None) -> None:
        what = f"set link {name}"
        with self._lock:
            self._enter("set_link")
            link = self._get(name, what)
            if master:
                bridge = self._get(master, what)
                if bridge.kind != "bridge" or master == name:
                    raise NetworkError(f"{what}: {master} is not a bridge")
            if mtu is not None:
                link.mtu = mtu
            if mac is not None:
                link.mac = mac.lower()
            if master is not None:
                link.master = master or None
            if up is not None:
                link.up = up

    def flood_list(self, vxlan: str) -> set[str]:
        with self._lock:
            self._enter("flood_list")
            self._get(vxlan, f"flood list of {vxlan}")
            return set(self._fdb.get(vxlan, set()))

    def flood_lists(self) -> dict[str, set[str]]:
        with self._lock:
            self._enter("flood_lists")
            return {name: set(self._fdb.get(name, set())) for name, link in self._links.items()
                    if link.kind == "vxlan"}

    def set_flood_list(self, vxlan: str, remotes: set[str]) -> None:
        what = f"set flood list of {vxlan}"
        with self._lock:
            self._enter("set_flood_list")
            self._get(vxlan, what)
            wanted = set()
            for remote in remotes:
                try:
                    wanted.add(str(ipaddress.ip_address(remote)))
                except ValueError:
                    raise NetworkError(f"{what}: '{remote}' is not an IP address") from None
            self._fdb[vxlan] = wanted

    def add_address(self, name: str, cidr: str) -> None:
        what = f"add address {cidr} to {name}"
        with self._lock:
            self._enter("add_address")
            address = self._norm(cidr, what)
            self._get(name, what).addresses.add(address)

    def del_address(self, name: str, cidr: str) -> None:
        what = f"remove address {cidr} from {name}"
        with self._lock:
            self._enter("del_address")
            address = self._norm(cidr, what)
            link = self._links.get(name)
            if link is not None:
                link.addresses.discard(address)

    def announce(self, name: str, ip: str, mac: str) -> None:
        what = f"announce {ip} at {mac} on {name}"
        with self._lock:
            self._enter("announce")
            self._get(name, what)
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise NetworkError(f"{what}: '{ip}' is not an IP address") from None
            if not re.match(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", mac):
                raise NetworkError(f"'{mac}' is not a MAC address")
            self.announcements.append((name, str(addr), mac.lower()))

    def set_sysctl(self, key: str, value: str) -> None:
        with self._lock:
            self._enter("set_sysctl")
            if not key or "/" in key or any(part in ("", ".", "..") for part in key.split(".")):
                raise NetworkError(f"sysctl {key}: not a sysctl key")
            self.sysctls[key] = value

    def close(self) -> None:
        self.closed = True


_NFT_TABLE_LINE = re.compile(r"^(delete )?table (\w+) ([A-Za-z0-9_.-]+)( \{)?\s*$")


@dataclass(eq=False)
class FakeNftables(Nftables):
    """nft in memory: `ruleset` is the last applied text of every present table (one after the
    other, in the order they were first made), `applied` every text; tables follow the top-level
    `table`/`delete table` lines, so the atomic replacement idiom behaves as in nft.
    `fail_on(marker)` makes check() and apply() reject any text containing the marker."""

    ruleset: str | None = None
    applied: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    markers: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._tables: set[tuple[str, str]] = set()
        self._texts: dict[tuple[str, str], str] = {}

    def fail_on(self, marker: str) -> None:
        self.markers.add(marker)

    def _validate(self, ruleset: str, what: str) -> list[tuple[bool, str, str]]:
        for number, line in enumerate(ruleset.splitlines(), 1):
            for marker in self.markers:
                if marker in line:
                    raise NetworkError(f"{what}: /dev/stdin:{number}:1-{len(line)}: Error: syntax error "
                                       f"(fake: '{marker}')\n{line}")
        if ruleset.count("{") != ruleset.count("}"):
            raise NetworkError(f"{what}: /dev/stdin: Error: syntax error, unbalanced braces (fake)")
        ops = []
        for line in ruleset.splitlines():
            m = _NFT_TABLE_LINE.match(line)
            if m:
                ops.append((bool(m.group(1)), m.group(2), m.group(3)))
        return ops

    def apply(self, ruleset: str) -> None:
        tables = set(self._tables)
        made = None
        for delete, family, name in self._validate(ruleset, "nft apply"):
            if delete:
                if (family, name) not in tables:
                    raise NetworkError(f"nft apply: Error: Could not process rule: No such file or "
                                       f"directory\ndelete table {family} {name}")
                tables.discard((family, name))
            else:
                tables.add((family, name))
                made = (family, name)
        self._tables = tables
        if made is not None:
            self._texts[made] = ruleset
        self._texts = {k: v for k, v in self._texts.items() if k in tables}
        self.ruleset = "".join(self._texts.values()) or ruleset
        self.applied.append(ruleset)

    def check(self, ruleset: str) -> None:
        self.checked.append(ruleset)
        self._validate(ruleset, "nft check")

    def tables(self) -> list[tuple[str, str]]:
        return sorted(self._tables)

    def delete_table(self, family: str, name: str) -> None:
        self._tables.discard((family, name))
        self._texts.pop((family, name), None)
        self.ruleset = "".join(self._texts.values()) or None


@dataclass
class FakeService:
    key: str
    argv: tuple[str, ...]
    env: dict[str, str]
    pid: int
    running: bool = True
    signals: list[int] = field(default_factory=list)


@dataclass(eq=False)
class FakeServices(Services):
    """Services in memory: `services[key]` is the latest start of each key (argv, env, pid, the
    signals it got), `history` every start. `crash(key)` kills one (its pid file stays, as for a
    real crash); `fail_start(program)` makes starts of that program fail as if it exited at once."""

    services: dict[str, FakeService] = field(default_factory=dict)
    history: list[FakeService] = field(default_factory=list)
    next_pid: int = 1000
    failing: set[str] = field(default_factory=set)

    def crash(self, key: str) -> None:
        self.services[key].running = False

    def fail_start(self, program: str) -> None:
        self.failing.add(os.path.basename(program))

    def pid(self, key: str) -> int | None:
        svc = self.services.get(key)
        return svc.pid if svc is not None and svc.running else None

    def start(self, key: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        if not argv:
            raise NetworkError(f"start {key}: empty command")
        if self.pid(key) is not None:
            raise NetworkError(f"start {key}: already running (pid {self.pid(key)})")
        program = os.path.basename(argv[0])
        if program in self.failing:
            self.services.pop(key, None)
            raise NetworkError(f"start {key}: {program} exited at once (status 1): injected failure")
        self.next_pid += 1
        svc = FakeService(key=key, argv=tuple(argv), env=dict(env or {}), pid=self.next_pid)
        self.services[key] = svc
        self.history.append(svc)
        return svc.pid

    def argv(self, key: str) -> list[str] | None:
        svc = self.services.get(key)
        return list(svc.argv) if svc is not None and svc.running else None

    def stop(self, key: str, timeout: float = 5.0) -> None:
        svc = self.services.pop(key, None)
        if svc is not None:
            svc.running = False

    def signal(self, key: str, signum: int) -> None:
        svc = self.services.get(key)
        if svc is None or not svc.running:
            raise NetworkError(f"signal {key}: not running")
        svc.signals.append(signum)

    def names(self) -> list[str]:
        return sorted(self.services)
