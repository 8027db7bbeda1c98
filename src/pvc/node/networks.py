"""The node's network reconciler (DESIGN D2, D8): client networks on this host follow ZooKeeper.

Level-triggered like the VM reconciler: watches on /networks, /netacls, /netreservations and
/nodes only wake the loop, and a full pass runs every keepalive. Each pass compares what the
documents ask for with what `ip link`/`nft`/the running helpers show, and fixes the difference:

every node
    `vxlan<vni>` (managed) or `vlan<vni>` (bridged) enslaved to `vmbr<vni>`, MTUs clamped to
    what the underlay allows, VXLAN flood lists = every other node's cluster address (or FRR/EVPN
    when `networking.bgp` is set), the nftables table `inet pvc` with the networks' ACLs (bridged
    VM-to-VM traffic passes the forward hook through br_netfilter, so ACLs hold on every node) and
    guest isolation (guests reach neither the nodes' own addresses and networks nor
    `guest_denied_networks`, nor the node itself beyond DHCP/DNS/ICMP/metadata), and the table
    `bridge pvc_guard`: anti-spoofing on the taps of the VMs this node runs (their MAC, their
    lease/reservation addresses), rebuilt as soon as a tap appears, so it follows a migrating VM.
the primary only
    gateway addresses on the managed bridges, all with one shared virtual MAC so guests keep their
    ARP entry across a primary change (plus a gratuitous ARP), one dnsmasq per managed network
    (DHCP, DNS, reservations from /netreservations, leases to /netleases through the hook, the
    network's TFTP root if it has one), one chronyd per managed network answering NTP on its
    gateways (pvc.node.ntp_tftp), NAT and the guest-facing input filter, the cluster DNS view
    and the metadata address.

Only devices carrying PVC's ifalias (`pvc:<vni>`) are ever removed. A node that stops being
primary drops every primary-only piece in the same pass, gateways first; a node that becomes
primary adds the gateways first, so the guests' gap is as short as possible. A pass ends by
settling this node's network faults (pvc.node.networks_faults): one per step that failed in it,
every other one resolved (also when a network goes or the primary role moves on).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc.adapters.network import Link, NetworkError, NetworkHost, Nftables, Services
from pvc.core import netconfig, schema
from pvc.core.config import Settings
from pvc.core.zk import ZK
from pvc.node import networks_faults, ntp_tftp

log = logging.getLogger(__name__)

METADATA_DEVICE = "lo"
DNS_VIEW = "dns-view"
ZEBRA, BGPD = "frr-zebra", "frr-bgpd"
FRR_DAEMONS = "/usr/lib/frr"


def dnsmasq_key(vni: int) -> str:
    return f"dnsmasq-{vni}"


def local_mac(node: str, vni: int) -> str:
    """A stable, node-unique bridge MAC (a Linux bridge otherwise takes its lowest port's MAC,
    which changes as VMs come and go)."""
    digest = hashlib.sha256(f"{node}/{vni}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02 | (digest[0] & 0xFC), *digest[1:6]))


@dataclass
class Desired:
    """Everything one pass needs from ZooKeeper, read in one go."""
    nets: dict[int, netconfig.NetSpec] = field(default_factory=dict)
    acls: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    reservations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    leases: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    remotes: set[str] = field(default_factory=set)   # other nodes' cluster addresses
    peer_addresses: set[str] = field(default_factory=set)   # every address other nodes hold


class NetworkReconciler:
    def __init__(self, zk: ZK, host: NetworkHost, nft: Nftables, services: Services, settings: Settings,
                 node: str, run_dir: str | Path) -> None:
        self.zk = zk
        self.host, self.nft, self.services = host, nft, services
        self.settings = settings
        self.net = settings.networking
        self.node = node
        self.run_dir = Path(run_dir)
        self.primary = False
        self.gateway_mac = self.net.gateway_mac or netconfig.gateway_mac(settings.cluster.name)
        self.upstream_device = self.net.upstream_device or self.net.cluster_device
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._loop: threading.Thread | None = None
        self._nft_text: str | None = None
        self._guard_text: str | None = None
        self._link_watch: Any = None
        self._argv: dict[str, list[str]] = {}
        self._frr_config: str | None = None
        self._floods: dict[str, set[str]] | None = None
        self._last: Desired | None = None
        self.problems: dict[str, str] = {}     # the failed steps of the last pass (key -> message)
        self._failures: dict[str, str] = {}    # those of the pass under way
        self.faults = networks_faults.FaultBook(zk, node)
        self.passes = 0
        self.last_pass = 0.0
        self.metadata: Any = None        # pvc.node.metadata.MetadataService, set by the daemon
        self.ntp = ntp_tftp.NtpServers(services, self.run_dir)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, interval: float) -> None:
        """Watch the network trees (watches only wake the loop) and run passes in a thread."""
        for path in (schema.NETWORKS, schema.NET_ACLS, schema.NET_RESERVATIONS, schema.NODES):
            self.zk.ensure(path)
            self.zk.watch_children(path, self._on_children(path))
        # a new lease opens the guest's tap for its address (anti-spoofing), so wake at once
        self.zk.ensure(schema.NET_LEASES)
        self.zk.watch_children(schema.NET_LEASES, self._on_lease_networks())
        if self.net.guest_port_guard:
            try:     # a new tap (a VM starting or migrating in) is guarded before it runs
                self._link_watch = self.host.watch_links(self.wake)
            except NetworkError as exc:
                log.warning("no link events (taps are guarded on the next pass): %s", exc)
        self._loop = threading.Thread(target=self._run, args=(interval,), name="net-reconciler", daemon=True)
        self._loop.start()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self._link_watch is not None:
            with contextlib.suppress(Exception):
                self._link_watch()
        if self._loop is not None:
            self._loop.join(10)

    def wake(self) -> None:
        self._wake.set()

    def _on_children(self, path: str) -> Callable[[list[str]], bool]:
        watched: set[str] = set()

        def on_children(children: list[str]) -> bool:
            if self.stopping.is_set():
                return False
            for child in children:
                if path != schema.NODES and child not in watched:
                    watched.add(child)
                    self.zk.watch_data(f"{path}/{child}", self._on_data)
            self.wake()
            return True

        return on_children

    def _on_lease_networks(self) -> Callable[[list[str]], bool]:
        watched: set[str] = set()

        def on_children(children: list[str]) -> bool:
            if self.stopping.is_set():
                return False
            for vni in children:
                if vni not in watched:
                    watched.add(vni)
                    self.zk.watch_children(f"{schema.NET_LEASES}/{vni}", self._on_leases)
            return True

        return on_children

    def _on_leases(self, _children: list[str]) -> bool:
        if self.stopping.is_set():
            return False
        self.wake()
        return True

    def _on_data(self, _data: bytes | None, _stat: Any) -> bool:
        if self.stopping.is_set():
            return False
        self.wake()
        return True

    def _run(self, interval: float) -> None:
        while not self.stopping.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self.stopping.is_set():
                break
            try:
                self.reconcile()
            except Exception:
                log.exception("network reconcile pass failed")

    def set_primary(self, primary: bool) -> None:
        """Called by the daemon on a primary change, before the election lock moves on.

        Taking over: the gateways from the last pass's documents at once (no ZooKeeper round
        trips before the guests have their gateway back), then a full pass. Giving up: only the
        primary's pieces, gateways last, so the lock is released right after; the rest of the
        pass (the ruleset without NAT) follows in the loop."""
        self.primary = primary
        try:
            with self._lock:
                links = self.host.links()
                if primary and self._last is not None:
                    self._gateways(self._last, links)       # the pass below settles the faults
                elif not primary:       # the primary's failures end here, not on the next pass
                    self._failures = networks_faults.after_relinquish(self.problems)
                    self._drop_primary_services(links)
                    self._settle()
            if primary:
                self.reconcile()
            else:
                self.wake()
        except Exception:
            log.exception("network %s failed", "takeover" if primary else "relinquish")

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> Desired:
        desired = Desired()
        vnis = self.zk.children(schema.NETWORKS)
        docs = self.zk.get_many([schema.network(v) for v in vnis] + [schema.network_acls(v) for v in vnis])
        for vni in vnis:
            doc = docs.get(schema.network(vni))
            if not isinstance(doc, dict):
                continue
            try:
                spec = netconfig.NetSpec.from_doc(doc)
            except (KeyError, TypeError, ValueError) as exc:
                self._problem(f"doc-{vni}", f"network {vni}: unreadable document ({exc})")
                continue
            self._problem(f"doc-{vni}", "")
            desired.nets[spec.vni] = spec
            acls = docs.get(schema.network_acls(vni))
            desired.acls[spec.vni] = acls if isinstance(acls, dict) else {"in": [], "out": []}
        if self.primary:
            keyed = {vni: self.zk.children(schema.network_reservations(vni)) for vni in vnis}
            paths = [schema.network_reservation(v, m) for v, macs in keyed.items() for m in macs]
            found = self.zk.get_many(paths) if paths else {}
            for vni, macs in keyed.items():
                items = [found.get(schema.network_reservation(vni, m)) for m in macs]
                desired.reservations[int(vni)] = [i for i in items if isinstance(i, dict)]
        desired.remotes, desired.peer_addresses = self._peers()
        return desired

    def leases(self, vni: int) -> list[dict[str, Any]]:
        macs = self.zk.children(schema.network_leases(vni))
        found = self.zk.get_many([schema.network_lease(vni, m) for m in macs]) if macs else {}
        return [d for d in found.values() if isinstance(d, dict)]

    def _peers(self) -> tuple[set[str], set[str]]:
        """Other nodes' cluster addresses (VXLAN flood lists) and every address they published
        (`addresses` in their node documents: what guests may not reach)."""
        names = self.zk.children(schema.NODES)
        docs = [d for d in self.zk.get_many([schema.node(n) for n in names if n != self.node]).values()
                if isinstance(d, dict)]
        remotes = {str(d["cluster_address"]) for d in docs if d.get("cluster_address")}
        addresses: set[str] = set()
        for doc in docs:
            for item in str(doc.get("addresses") or "").split(","):
                with contextlib.suppress(ValueError):
                    addresses.add(str(ipaddress.ip_address(item.strip())))
        return remotes - {self.local_address() or ""}, addresses

    def own_addresses(self, links: dict[str, Link] | None = None) -> list[str]:
        """Every global address of this node outside the guests' bridges (cluster, storage,
        upstream, floating...): published in the node document so every node keeps guests
        away from all of them."""
        links = links if links is not None else self.host.links()
        found = set()
        for name, link in links.items():
            if name == METADATA_DEVICE or not self._host_link(link, links):
                continue
            for cidr in link.addresses:
                ip = ipaddress.ip_interface(cidr).ip
                if not (ip.is_link_local or ip.is_loopback):
                    found.add(str(ip))
        return sorted(found)

    @staticmethod
    def _host_link(link: Link, links: dict[str, Link]) -> bool:
        """A link of the node itself: not PVC's, not a tap, not a port of a guest bridge."""
        if (link.alias or "").startswith("pvc:") or link.kind == "tun":
            return False
        master = links.get(link.master or "")
        return master is None or not (master.alias or "").startswith("pvc:")

    def local_address(self, links: dict[str, Link] | None = None) -> str | None:
        """This node's VTEP address: configured, or the cluster device's first IPv4 address."""
        if self.net.cluster_address:
            return self.net.cluster_address
        links = links if links is not None else self.host.links()
        device = links.get(self.net.cluster_device)
        if device is None:
            return None
        for cidr in sorted(device.addresses):
            iface = ipaddress.ip_interface(cidr)
            if iface.version == 4 and str(iface.ip) != self._floating_ip():
                return str(iface.ip)
        return None

    def _floating_ip(self) -> str | None:
        floating = self.net.floating_address
        return str(ipaddress.ip_interface(floating).ip) if floating else None

    # -- the pass --------------------------------------------------------------------------------

    def reconcile(self) -> None:
        with self._lock:
            self._failures = {}
            desired = self._last = self.read()
            links = self.host.links()
            if self.primary:
                self._gateways(desired, links)      # first: the guests' gap is what matters
            else:
                self._drop_primary_services(links)
            created = self._devices(desired, links)
            self._firewall(desired, links)
            self._guard(desired)
            if self.primary:
                links = self.host.links() if created else links
                if created:
                    self._gateways(desired, links)           # bridges made in this pass
                self._primary_services(desired, links)
            self._frr(desired)
            self._settle()
            self.passes += 1
            self.last_pass = time.time()

    def _step(self, key: str, what: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except (NetworkError, OSError, ValueError) as exc:
            self._problem(key, f"{what}: {exc}")
            return False
        self._problem(key, "")
        return True

    def _problem(self, key: str, message: str) -> None:
        """Record step `key`'s outcome in this pass ("" = it worked; the last outcome of a step
        run twice in a pass counts)."""
        if message:
            self._failures[key] = message
        else:
            self._failures.pop(key, None)

    def _settle(self) -> None:
        """End of a pass: log what failed anew and what is over (not one line per pass while a
        failure lasts), and make this node's network faults match (pvc.node.networks_faults)."""
        failures = dict(self._failures)
        appeared, over = networks_faults.changes(self.problems, failures)
        for message in appeared.values():
            log.error("%s", message)
        for key in over:
            log.info("network %s: no longer failing", key)
        self.problems = failures
        self.faults.settle(failures)

    # -- every node: devices ---------------------------------------------------------------------

    def max_mtu(self, net: netconfig.NetSpec, links: dict[str, Link]) -> int:
        if net.type == "managed":
            device = links.get(self.net.cluster_device)
            underlay = self.net.cluster_mtu or (device.mtu if device else 1500)
            local = self.local_address(links) or "0.0.0.0"
            return netconfig.vxlan_max_mtu(underlay, ipaddress.ip_address(local).version == 6)
        trunk = links.get(self.net.bridge_device)
        return self.net.bridge_mtu or (trunk.mtu if trunk else 1500)

    def _devices(self, desired: Desired, links: dict[str, Link]) -> bool:
        """Returns whether a bridge was created (its gateway is added in the same pass)."""
        wanted: set[str] = set()
        self._floods: dict[str, set[str]] | None = None
        if self.net.bgp is None and any(n.type == "managed" for n in desired.nets.values()):
            try:
                self._floods = self.host.flood_lists()
            except NetworkError as exc:
                self._problem("fdb", f"reading the VXLAN flood lists: {exc}")
        for vni, net in sorted(desired.nets.items()):
            bridge = netconfig.bridge_name(vni)
            base = netconfig.vxlan_name(vni) if net.type == "managed" else netconfig.vlan_name(vni)
            wanted.update((bridge, base))
            self._step(f"dev-{vni}", f"network {vni}", lambda net=net, bridge=bridge, base=base:
                       self._network_devices(net, bridge, base, desired, links))
        for name, link in links.items():
            if link.alias and link.alias.startswith("pvc:") and name not in wanted:
                log.info("removing %s (its network is gone)", name)
                self._step(f"del-{name}", f"removing {name}", lambda name=name: self.host.delete_link(name))
        return any(netconfig.bridge_name(vni) not in links for vni in desired.nets)

    def _network_devices(self, net: netconfig.NetSpec, bridge: str, base: str, desired: Desired,
                         links: dict[str, Link]) -> None:
        mtu = net.effective_mtu(self.max_mtu(net, links))
        alias = netconfig.alias(net.vni)
        mac = self.gateway_mac if self.primary and net.type == "managed" else local_mac(self.node, net.vni)
        have = links.get(bridge)
        if have is None:
            self.host.create_bridge(bridge, mtu, mac, alias, ipv6=net.type == "managed")
        elif have.kind != "bridge":
            raise NetworkError(f"{bridge} exists and is not a bridge ({have.kind}); remove it")
        else:
            changes: dict[str, Any] = {}
            if have.mtu != mtu:
                changes["mtu"] = mtu
            if have.mac != mac:
                changes["mac"] = mac
            if not have.up:
                changes["up"] = True
            if changes:
                self.host.set_link(bridge, **changes)
        port = links.get(base)
        if port is not None and (port.kind != ("vxlan" if net.type == "managed" else port.kind)
                                 or (port.vni is not None and port.vni != net.vni)):
            self.host.delete_link(base)
            port = None
        if port is None:
            if net.type == "managed":
                local = self.local_address(links)
                if not local:
                    raise NetworkError(f"no VTEP address: {self.net.cluster_device} has no IPv4 address "
                                       f"and networking.cluster_address is not set")
                self.host.create_vxlan(base, net.vni, local, self.net.cluster_device, self.net.vxlan_port,
                                       mtu, alias, learning=False)
            else:
                self.host.create_vlan(base, self.net.bridge_device, net.vni, mtu, alias)
            self.host.set_link(base, master=bridge, up=True)
        else:
            changes = {}
            if port.mtu != mtu:
                changes["mtu"] = mtu
            if port.master != bridge:
                changes["master"] = bridge
            if not port.up:
                changes["up"] = True
            if changes:
                self.host.set_link(base, **changes)
        if net.type == "managed" and self.net.bgp is None:
            known = (self._floods or {}).get(base)
            if known is None or known != desired.remotes:
                self.host.set_flood_list(base, set(desired.remotes))

    # -- every node: firewall --------------------------------------------------------------------

    def guest_denied(self, desired: Desired, links: dict[str, Link]) -> list[str]:
        """What guests may never reach (DESIGN D14): every node's cluster address and every
        address the other nodes published, this node's own addresses with their networks
        (cluster, storage, ...; only the addresses on a separate upstream device, whose network
        is the guests' way out), the floating address, and networking.guest_denied_networks."""
        peers = sorted(desired.remotes | desired.peer_addresses)
        denied = [f"{a}/{32 if ':' not in a else 128}" for a in peers]
        local = self.local_address(links)
        if local:
            denied.append(f"{local}/{32 if ':' not in local else 128}")
        if self.net.floating_address:
            ip = ipaddress.ip_interface(self.net.floating_address).ip
            denied.append(f"{ip}/{ip.max_prefixlen}")
        separate_upstream = self.upstream_device != self.net.cluster_device
        for name, link in sorted(links.items()):
            if name == METADATA_DEVICE or not self._host_link(link, links):
                continue
            for cidr in sorted(link.addresses):
                iface = ipaddress.ip_interface(cidr)
                if iface.ip.is_link_local or iface.ip.is_loopback:
                    continue
                only_host = separate_upstream and name == self.upstream_device
                denied.append(f"{iface.ip}/{iface.ip.max_prefixlen}" if only_host else str(iface.network))
        denied += netconfig.guest_denied_networks(self.net.guest_denied_networks)
        return denied

    def _firewall(self, desired: Desired, links: dict[str, Link]) -> None:
        api_access = None
        if self.net.guest_api_access and self.net.floating_address:
            api_access = (str(ipaddress.ip_interface(self.net.floating_address).ip),
                          self.settings.api.listen.port)
        try:
            text = netconfig.render_nft(list(desired.nets.values()), desired.acls, primary=self.primary,
                                        upstream_device=self.upstream_device,
                                        metadata_address=self.net.metadata_address,
                                        metadata_port=self.net.metadata_port,
                                        denied=self.guest_denied(desired, links), api_access=api_access)
        except ValueError as exc:
            self._problem("nft", f"rendering the nftables ruleset: {exc}")
            return

        def apply() -> None:
            if text != self._nft_text or ("inet", "pvc") not in self.nft.tables():
                self.nft.apply(text)
                self._nft_text = text

        self._step("nft", "applying the nftables ruleset", apply)

    # -- every node: anti-spoofing on the VMs' taps ----------------------------------------------

    def guest_ports(self, desired: Desired, links: dict[str, Link]) -> list[netconfig.GuestPort]:
        """The taps of this node's VMs on PVC bridges, each with the (MAC, IPv4) pairs of the
        leases and reservations of its network that belong to it (matched by the tap's MAC)."""
        taps: list[tuple[Link, netconfig.NetSpec]] = []
        by_bridge = {n.bridge: n for n in desired.nets.values()}
        for link in links.values():
            net = by_bridge.get(link.master or "")
            if net is not None and link.kind == "tun" and link.mac:
                taps.append((link, net))
        vnis = sorted({net.vni for _, net in taps if net.managed})
        bound: dict[int, list[tuple[str, str]]] = {vni: [] for vni in vnis}
        for vni in vnis:
            docs = self.leases(vni)
            macs = self.zk.children(schema.network_reservations(vni))
            if macs:
                found = self.zk.get_many([schema.network_reservation(vni, m) for m in macs])
                docs += [d for d in found.values() if isinstance(d, dict)]
            for doc in docs:
                mac, ip = str(doc.get("mac_address") or "").lower(), doc.get("ip4_address")
                with contextlib.suppress(ValueError):
                    bound[vni].append((mac, str(ipaddress.IPv4Address(str(ip)))))
        ports = []
        for link, net in sorted(taps, key=lambda t: t[0].name):
            pairs = tuple(sorted({(m, ip) for m, ip in bound.get(net.vni, [])
                                  if netconfig.mac_matches_tap(m, link.mac)}))
            ports.append(netconfig.GuestPort(link.name, net.vni, net.managed, link.mac, pairs,
                                             ip6=net.ip6_network is not None))
        return ports

    def _guard(self, desired: Desired) -> None:
        def apply() -> None:
            if not self.net.guest_port_guard:
                if self._guard_text is not None or (("bridge", netconfig.GUARD_TABLE) in self.nft.tables()):
                    self.nft.delete_table("bridge", netconfig.GUARD_TABLE)
                self._guard_text = None
                return
            text = netconfig.render_guard(self.guest_ports(desired, self.host.links()))
            if text != self._guard_text or ("bridge", netconfig.GUARD_TABLE) not in self.nft.tables():
                self.nft.apply(text)
                self._guard_text = text

        self._step("guard", "applying the VM port guard (anti-spoofing)", apply)

    # -- primary: gateways and services ----------------------------------------------------------

    def _gateways(self, desired: Desired, links: dict[str, Link]) -> None:
        """Gateway addresses with the shared MAC on every managed bridge, then a gratuitous ARP."""
        for vni, net in sorted(desired.nets.items()):
            if net.type != "managed":
                continue
            bridge = netconfig.bridge_name(vni)
            link = links.get(bridge)
            if link is None:
                continue            # created by _devices in this pass; gateways follow next pass
            cidrs = [c for c in (net.gateway4_cidr, net.gateway6_cidr) if c]

            def add(link: Link = link, bridge: str = bridge, cidrs: list[str] = cidrs) -> None:
                if link.mac != self.gateway_mac:
                    self.host.set_link(bridge, mac=self.gateway_mac)
                for cidr in cidrs:
                    if cidr not in link.addresses:
                        self.host.add_address(bridge, cidr)
                        self.host.announce(bridge, str(ipaddress.ip_interface(cidr).ip), self.gateway_mac)
                for cidr in link.addresses - set(cidrs):
                    if not ipaddress.ip_interface(cidr).ip.is_link_local:
                        self.host.del_address(bridge, cidr)

            self._step(f"gw-{vni}", f"network {vni} gateway", add)
        floating = self.net.floating_address
        if floating:
            device = links.get(self.upstream_device)

            def add_floating() -> None:
                if device is not None and floating not in device.addresses:
                    self.host.add_address(self.upstream_device, floating)
                    ip = str(ipaddress.ip_interface(floating).ip)
                    self.host.announce(self.upstream_device, ip, device.mac)

            self._step("floating", "floating address", add_floating)
        meta = f"{self.net.metadata_address}/32"
        lo = links.get(METADATA_DEVICE)
        if lo is not None and meta not in lo.addresses:
            self._step("meta-addr", "metadata address", lambda: self.host.add_address(METADATA_DEVICE, meta))

    def _drop_primary_services(self, links: dict[str, Link]) -> None:
        """Everything only the primary may hold: the helpers first, then the addresses, gateways
        last, so the guests lose their gateway only just before the new primary takes it."""
        if self.metadata is not None:
            self.metadata.stop()
        for key in self.services.names():
            if key.startswith("dnsmasq-") or key == DNS_VIEW or ntp_tftp.is_chrony_key(key):
                self._step(f"svc-{key}", f"stopping {key}", lambda key=key: self.services.stop(key))
                self._argv.pop(key, None)
        meta = f"{self.net.metadata_address}/32"
        lo = links.get(METADATA_DEVICE)
        if lo is not None and meta in lo.addresses:
            self._step("meta-addr", "removing the metadata address",
                       lambda: self.host.del_address(METADATA_DEVICE, meta))
        floating = self.net.floating_address
        device = links.get(self.upstream_device)
        if floating and device is not None and floating in device.addresses:
            self._step("floating", "removing the floating address",
                       lambda: self.host.del_address(self.upstream_device, floating))
        for name, link in links.items():
            if not (link.alias or "").startswith("pvc:") or link.kind != "bridge":
                continue
            tail = link.alias.split(":", 1)[1]
            vni = int(tail) if tail.isdigit() else None
            gateway_cidrs = [c for c in link.addresses if not ipaddress.ip_interface(c).ip.is_link_local]
            for cidr in gateway_cidrs:
                self._step(f"gwdel-{name}", f"removing {cidr} from {name}",
                           lambda name=name, cidr=cidr: self.host.del_address(name, cidr))
            if vni is not None and link.mac == self.gateway_mac:
                self._step(f"mac-{name}", f"resetting the MAC of {name}",
                           lambda name=name, vni=vni: self.host.set_link(name, mac=local_mac(self.node, vni)))

    def hook_path(self) -> Path:
        """A tiny executable for dnsmasq's --dhcp-script (it takes a path, not a command line),
        running this interpreter on pvc.node.dnsmasq_hook."""
        path = self.run_dir / "dnsmasq-hook"
        text = (f"#!{sys.executable}\nimport sys\nfrom pvc.node.dnsmasq_hook import main\n"
                f"sys.exit(main())\n")
        if not path.exists() or path.read_text() != text:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
        return path

    def _primary_services(self, desired: Desired, links: dict[str, Link]) -> None:
        managed = {vni: n for vni, n in desired.nets.items() if n.type == "managed"}
        for vni, net in sorted(managed.items()):
            self._step(f"dnsmasq-{vni}", f"network {vni} dnsmasq",
                       lambda vni=vni, net=net: self._dnsmasq(vni, net, desired, links))
            self._step(ntp_tftp.chrony_key(vni), f"network {vni} NTP (chronyd)",
                       lambda net=net: self.ntp.ensure(net))
        for key in self.ntp.running_keys():
            if int(key.removeprefix(ntp_tftp.PREFIX)) not in managed:
                self._step(f"svc-{key}", f"stopping {key}", lambda key=key: self.ntp.stop(key))
        for key in self.services.names():
            if key.startswith("dnsmasq-") and key.removeprefix("dnsmasq-").isdigit() \
                    and int(key.removeprefix("dnsmasq-")) not in managed:
                self._step(f"svc-{key}", f"stopping {key}", lambda key=key: self.services.stop(key))
                self._argv.pop(key, None)
        self._step(DNS_VIEW, "cluster DNS view", lambda: self._dns_view(list(managed.values())))
        if self.metadata is not None:
            self._step("metadata", "metadata service", self.metadata.start)

    def _dnsmasq(self, vni: int, net: netconfig.NetSpec, desired: Desired, links: dict[str, Link]) -> None:
        key = dnsmasq_key(vni)
        if not (net.ip4_network or net.ip6_network) or not (net.gateway4_cidr or net.gateway6_cidr):
            if self.services.pid(key):
                self.services.stop(key)
            self._argv.pop(key, None)
            return
        tftp_root, why = ntp_tftp.tftp_root(net)
        self._problem(f"tftp-{vni}", why)         # DNS and DHCP go on without TFTP
        directory = self.run_dir / key
        hosts = directory / "hosts"
        hosts.mkdir(parents=True, exist_ok=True)
        removed = self._sync_reservations(hosts, desired.reservations.get(vni, []))
        mtu = net.effective_mtu(self.max_mtu(net, links))
        argv = netconfig.dnsmasq_argv(net, mtu=mtu, hosts_dir=str(hosts), hook=[str(self.hook_path())],
                                      upstream_dns=self.net.upstream_dns, dns_port=self.net.dns_port,
                                      tftp_root=tftp_root)
        running = self.services.pid(key)
        if running and key not in self._argv and self.services.argv(key) == argv:
            self._argv[key] = argv            # started by a previous pvcnoded: adopt it
        if running and self._argv.get(key) == argv:
            if removed:
                self.services.signal(key, signal.SIGHUP)     # re-reads the hosts directory
            return
        if running:
            self.services.stop(key)
        self._write_lease_snapshot(directory, vni)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "PVC_CONFIG_FILE": self.settings.source or os.environ.get("PVC_CONFIG_FILE", ""),
               "PVC_NETWORK_VNI": str(vni), "PVC_LEASE_SNAPSHOT": str(directory / "leases.init")}
        self.services.start(key, argv, env)
        self._argv[key] = argv
        log.info("network %s: dnsmasq started (%s)", vni, shlex.join(argv[:3]) + " ...")

    def _sync_reservations(self, hosts: Path, reservations: Iterable[dict[str, Any]]) -> bool:
        """One file per MAC (dnsmasq reads new files itself); True when a file went away, which
        dnsmasq only notices on SIGHUP."""
        wanted = {}
        for item in reservations:
            mac = str(item.get("mac_address", "")).lower()
            if mac:
                ip, hostname = str(item.get("ip4_address")), item.get("hostname")
                wanted[mac] = netconfig.reservation_line(mac, ip, hostname)
        removed = False
        for path in hosts.iterdir():
            if path.name not in wanted:
                path.unlink(missing_ok=True)
                removed = True
        for mac, line in wanted.items():
            path = hosts / mac
            if not path.exists() or path.read_text() != line:
                tmp = hosts / f".{mac}.tmp"
                tmp.write_text(line)
                tmp.replace(path)
                removed = True        # a changed reservation also needs a re-read
        return removed

    def _write_lease_snapshot(self, directory: Path, vni: int) -> None:
        """The leases dnsmasq's `init` call hands back (--leasefile-ro): the cluster's, so a new
        primary's dnsmasq knows every lease its predecessor gave out."""
        lines = []
        for lease in self.leases(vni):
            lines.append(" ".join(str(x) for x in (
                int(lease.get("expiry") or 0), lease.get("mac_address"), lease.get("ip4_address"),
                lease.get("hostname") or "*", lease.get("clientid") or "*")))
        tmp = directory / "leases.init.tmp"
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(directory / "leases.init")

    def _dns_view(self, managed: list[netconfig.NetSpec]) -> None:
        listen = [str(ipaddress.ip_interface(self.net.floating_address).ip)] if self.net.floating_address \
            else [a for a in [self.local_address()] if a]
        if not managed or not listen:
            if self.services.pid(DNS_VIEW):
                self.services.stop(DNS_VIEW)
            self._argv.pop(DNS_VIEW, None)
            return
        argv = netconfig.dns_view_argv(managed, listen=listen, port=self.net.dns_port,
                                       upstream_dns=self.net.upstream_dns)
        running = self.services.pid(DNS_VIEW)
        if running and DNS_VIEW not in self._argv and self.services.argv(DNS_VIEW) == argv:
            self._argv[DNS_VIEW] = argv
        if running and self._argv.get(DNS_VIEW) == argv:
            return
        if running:
            self.services.stop(DNS_VIEW)
        self.services.start(DNS_VIEW, argv)
        self._argv[DNS_VIEW] = argv

    # -- EVPN ------------------------------------------------------------------------------------

    def _frr(self, desired: Desired) -> None:
        bgp = self.net.bgp
        if bgp is None:
            return
        local = self.local_address()
        if not local:
            self._problem("frr", "EVPN: no cluster address for the BGP router id")
            return
        peers = list(bgp.peers) or sorted(desired.remotes)
        directory = self.run_dir / "frr"
        config = netconfig.frr_config(hostname=self.node, router_id=local, asn=bgp.asn, peers=peers,
                                      log_file=str(directory / "frr.log"))

        def run() -> None:
            directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(KeyError, PermissionError):
                import pwd

                frr = pwd.getpwnam("frr")
                os.chown(directory, frr.pw_uid, frr.pw_gid)
            changed = config != self._frr_config
            (directory / "frr.conf").write_text(config)
            common = ["-f", str(directory / "frr.conf"), "-z", str(directory / "zserv.api"),
                      "--vty_socket", str(directory), "-P", "0", "-u", "frr", "-g", "frr"]
            for key, daemon in ((ZEBRA, "zebra"), (BGPD, "bgpd")):
                if changed and self.services.pid(key):
                    self.services.stop(key)
                if not self.services.pid(key):
                    pid_file = ["-i", str(directory / f"{daemon}.pid")]
                    self.services.start(key, [f"{FRR_DAEMONS}/{daemon}", *common, *pid_file])
                    time.sleep(0.2 if daemon == "zebra" else 0)   # bgpd connects to zebra's socket
            self._frr_config = config

        self._step("frr", "EVPN (FRR)", run)

    # -- shutdown --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"passes": self.passes, "last_pass": self.last_pass, "problems": dict(self.problems)}
