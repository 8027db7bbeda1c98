"""The three network interfaces the node's reconciler uses, their error and the Link value."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


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

    def neighbour(self, device: str, ip: str) -> str | None:
        """The MAC the neighbour table holds for `ip` on `device` (a usable entry: reachable,
        stale, delay, probe or permanent), else None."""
        raise NetworkError(f"neighbour of {ip} on {device}: not available here")

    def bridge_port(self, bridge: str, mac: str) -> str | None:
        """The port of `bridge` its forwarding database reaches `mac` through, else None."""
        raise NetworkError(f"bridge port of {mac} on {bridge}: not available here")

    def watch_links(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call on_change (from a thread of its own) whenever a link appears, goes or changes,
        e.g. a VM's tap joining a bridge; returns a function that stops watching. The default
        has no events: NetworkError, and the caller relies on its periodic passes."""
        raise NetworkError("link events are not available here")

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
