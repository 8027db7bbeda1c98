"""Client networks as text: device names, the nftables ruleset, dnsmasq and FRR command lines.

Pure functions of the /networks documents and the node's settings (DESIGN D8), so the node's
network reconciler only decides *what* to run and the adapters (`pvc.adapters.network`) only run
it; every output here is checked by golden files and, in the lab tests, by the real `nft --check`.

Facts behind the choices: pvc-facts §5 (upstream's layout), recipes/network.md (measured gotchas:
`fwd` is an nft keyword, a `}` must be on its own line, dnsmasq needs --no-ping/--conf-file etc.).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

VNI_MIN, VNI_MAX = 1, 16777215          # VXLAN 24-bit; bridged VLAN ids must be 1..4094
VLAN_MIN, VLAN_MAX = 1, 4094
from pvc.core.vocabulary import NETWORK_TYPES  # noqa: E402 - one spelling

ACL_DIRECTIONS = ("in", "out")
CHECK_TABLE = "pvc_check"               # acl_check_ruleset's throwaway table (never `pvc`)
ZERO_MAC = "00:00:00:00:00:00"
GUARD_TABLE = "pvc_guard"               # bridge family: anti-spoofing on VM tap ports
DENY_LOG_RATE = "10/second"             # drops are logged at most this often (and always counted)
_SUFFIX_MASK = "00:ff:ff:ff:ff:ff"

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                        r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
# TFTP: roots only below these trees (no /etc, /root, /run, PVC's own state...), and path text
# without anything dnsmasq's option parser or a shell would read differently (commas, blanks)
TFTP_ROOT_TREES = ("/srv", "/var/lib/tftpboot")
TFTP_PATH_MAX = 200
_TFTP_PATH_RE = re.compile(r"^[A-Za-z0-9._+@/-]+$")


# --------------------------------------------------------------------------------------------
# Names

def bridge_name(vni: int) -> str:
    return f"vmbr{vni}"


def vxlan_name(vni: int) -> str:
    return f"vxlan{vni}"


def vlan_name(vni: int) -> str:
    return f"vlan{vni}"


def alias(vni: int) -> str:
    """The ifalias PVC puts on every device it creates, so it never removes anybody else's."""
    return f"pvc:{vni}"


def gateway_mac(cluster_name: str) -> str:
    """The virtual gateway MAC every primary of this cluster uses: derived from the cluster name,
    so a new primary needs no coordination and guests keep their ARP entry across a takeover.
    Locally administered unicast (02:...), which no NIC vendor uses."""
    digest = hashlib.sha256(f"pvc-gateway:{cluster_name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def vxlan_max_mtu(underlay_mtu: int, ipv6_underlay: bool) -> int:
    """VXLAN adds 50 bytes of headers over IPv4, 70 over IPv6."""
    return underlay_mtu - (70 if ipv6_underlay else 50)


# --------------------------------------------------------------------------------------------
# The typed network document

def _opt_str(value: Any) -> str | None:
    """Unset values arrive as null, "" or (upstream wire format) "None"."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None") else text


def _opt_network(value: Any, version: int, what: str) -> str | None:
    text = _opt_str(value)
    if text is None:
        return None
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{what}: '{text}' is not a network") from None
    if net.version != version:
        raise ValueError(f"{what}: '{text}' is not an IPv{version} network")
    return str(net)


def _opt_address(value: Any, version: int, what: str) -> str | None:
    text = _opt_str(value)
    if text is None:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what}: '{text}' is not an IP address") from None
    if ip.version != version:
        raise ValueError(f"{what}: '{text}' is not an IPv{version} address")
    return str(ip)


def check_tftp_root(path: str) -> str:
    """A TFTP root as text: absolute, normalised (no `.`/`..` parts, no `//`, no trailing `/`),
    below one of TFTP_ROOT_TREES (not the tree itself), only [A-Za-z0-9._+@/-]. The node checks
    again, with symlinks resolved, before dnsmasq gets it (see tftp_root_on_host)."""
    text = path.strip()
    if len(text) > TFTP_PATH_MAX:
        raise ValueError(f"'{text[:60]}...' is longer than {TFTP_PATH_MAX} characters")
    if not text.startswith("/"):
        raise ValueError(f"'{text}' is not an absolute path")
    if not _TFTP_PATH_RE.match(text):
        raise ValueError(f"'{text}' may only contain letters, digits and . _ + @ / -")
    parts = text.split("/")[1:]
    if text.endswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"'{text}' is not a normalised path (no '.', '..', '//' or trailing '/')")
    if not any(text.startswith(tree + "/") for tree in TFTP_ROOT_TREES):
        raise ValueError(f"'{text}' is not below {' or '.join(TFTP_ROOT_TREES)} (TFTP roots are confined "
                         f"there, away from the nodes' configuration and secrets)")
    return text


def check_boot_file(name: str) -> str:
    """A boot file name for DHCP (option 67), relative to the TFTP root: no leading `/`, no
    `.`/`..` parts, only [A-Za-z0-9._+@/-] (dnsmasq splits --dhcp-boot at commas)."""
    text = name.strip()
    if not text or len(text) > 128:
        raise ValueError(f"'{text[:60]}' is not a boot file name (1..128 characters)")
    if not _TFTP_PATH_RE.match(text):
        raise ValueError(f"'{text}' may only contain letters, digits and . _ + @ / -")
    if text.startswith("/") or any(p in ("", ".", "..") for p in text.split("/")):
        raise ValueError(f"'{text}' must be relative to the TFTP root (no leading '/', '.', '..' or '//')")
    return text


def tftp_root_on_host(path: str, realpath: str) -> str:
    """The root dnsmasq may serve, given what it resolves to on this node (os.path.realpath):
    a symlink must not lead out of TFTP_ROOT_TREES. ValueError naming both otherwise."""
    check_tftp_root(path)
    try:
        check_tftp_root(realpath)
    except ValueError:
        trees = " or ".join(TFTP_ROOT_TREES)
        raise ValueError(f"'{path}' resolves to '{realpath}', outside {trees}") from None
    return realpath


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class NetSpec:
    """A typed view of one /networks/<vni> document (the API's network item)."""

    vni: int
    type: str                   # "managed" | "bridged"
    description: str
    mtu: int | None
    domain: str | None
    name_servers: tuple[str, ...]
    ip4_network: str | None     # normalised: "10.1.0.0/24"
    ip4_gateway: str | None
    dhcp4: bool
    dhcp4_start: str | None
    dhcp4_end: str | None
    ip6_network: str | None
    ip6_gateway: str | None
    dhcp6: bool
    tftp_root: str | None = None    # served read-only by the network's dnsmasq (PXE)
    dhcp_boot: str | None = None    # the boot file DHCPv4 names, relative to tftp_root

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> NetSpec:
        """Parse a stored document; ValueError (naming the field) if it is malformed, so the
        reconciler can skip one bad network instead of applying a wrong ruleset."""
        try:
            vni = int(doc["vni"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"network document without a valid vni: {doc.get('vni')!r}") from None
        kind = str(doc.get("type") or "managed")
        if kind not in NETWORK_TYPES:
            raise ValueError(f"network {vni}: type '{kind}' is not one of {', '.join(NETWORK_TYPES)}")
        high = VLAN_MAX if kind == "bridged" else VNI_MAX
        low = VLAN_MIN if kind == "bridged" else VNI_MIN
        if not low <= vni <= high:
            raise ValueError(f"network {vni}: a {kind} network's id must be {low}..{high}")
        mtu_raw = _opt_str(doc.get("mtu"))
        try:
            mtu = None if mtu_raw is None else int(mtu_raw)
        except ValueError:
            raise ValueError(f"network {vni}: mtu '{mtu_raw}' is not a number") from None
        if mtu is not None and mtu <= 0:
            mtu = None
        ip4: Mapping[str, Any] = doc.get("ip4") or {}
        ip6: Mapping[str, Any] = doc.get("ip6") or {}
        where = f"network {vni}"
        ip4_network = _opt_network(ip4.get("network"), 4, f"{where} ip4 network")
        ip6_network = _opt_network(ip6.get("network"), 6, f"{where} ip6 network")
        ip4_gateway = _opt_address(ip4.get("gateway"), 4, f"{where} ip4 gateway")
        ip6_gateway = _opt_address(ip6.get("gateway"), 6, f"{where} ip6 gateway")
        for gw, net, v in ((ip4_gateway, ip4_network, 4), (ip6_gateway, ip6_network, 6)):
            if gw is not None and (net is None or ipaddress.ip_address(gw) not in ipaddress.ip_network(net)):
                raise ValueError(f"{where}: ip{v} gateway {gw} is not in the ip{v} network {net}")
        name_servers = doc.get("name_servers") or ()
        if isinstance(name_servers, str):
            name_servers = [s for s in name_servers.split(",") if s.strip()]
        return cls(
            vni=vni, type=kind, description=str(doc.get("description") or ""), mtu=mtu,
            domain=_opt_str(doc.get("domain")), name_servers=tuple(str(s).strip() for s in name_servers),
            ip4_network=ip4_network, ip4_gateway=ip4_gateway, dhcp4=_flag(ip4.get("dhcp_flag")),
            dhcp4_start=_opt_address(ip4.get("dhcp_start"), 4, f"{where} dhcp_start"),
            dhcp4_end=_opt_address(ip4.get("dhcp_end"), 4, f"{where} dhcp_end"),
            ip6_network=ip6_network, ip6_gateway=ip6_gateway, dhcp6=_flag(ip6.get("dhcp_flag")),
            # checked where they are used (the node's TFTP step), so a bad one costs TFTP only
            tftp_root=_opt_str(doc.get("tftp_root")), dhcp_boot=_opt_str(doc.get("dhcp_boot")),
        )

    @property
    def managed(self) -> bool:
        return self.type == "managed"

    @property
    def bridge(self) -> str:
        return bridge_name(self.vni)

    @property
    def base_device(self) -> str:
        """The bridge's uplink port: vxlan<vni> (managed) or vlan<vni> (bridged)."""
        return vxlan_name(self.vni) if self.managed else vlan_name(self.vni)

    def effective_mtu(self, max_mtu: int) -> int:
        """The configured MTU, clamped to what the base device can carry."""
        return min(self.mtu or max_mtu, max_mtu)

    @property
    def ip4_prefixlen(self) -> int | None:
        return ipaddress.ip_network(self.ip4_network).prefixlen if self.ip4_network else None

    @property
    def ip4_netmask(self) -> str | None:
        return str(ipaddress.ip_network(self.ip4_network).netmask) if self.ip4_network else None

    @property
    def ip6_prefixlen(self) -> int | None:
        return ipaddress.ip_network(self.ip6_network).prefixlen if self.ip6_network else None

    @property
    def gateway4_cidr(self) -> str | None:
        """"10.1.0.1/24": what the primary puts on the bridge."""
        if self.ip4_gateway is None or self.ip4_network is None:
            return None
        return f"{self.ip4_gateway}/{self.ip4_prefixlen}"

    @property
    def gateway6_cidr(self) -> str | None:
        if self.ip6_gateway is None or self.ip6_network is None:
            return None
        return f"{self.ip6_gateway}/{self.ip6_prefixlen}"

    @property
    def gateway_cidrs(self) -> tuple[str, ...]:
        return tuple(c for c in (self.gateway4_cidr, self.gateway6_cidr) if c)


# --------------------------------------------------------------------------------------------
# nftables

def validate_rule_text(rule: str) -> str:
    """One nft rule, stripped; ValueError if it could be more than one rule or leave its chain
    (a newline, `;`, `#`, control characters, or braces that do not nest)."""
    text = rule.strip()
    if not text:
        raise ValueError("the rule is empty")
    if "\n" in text or "\r" in text:
        raise ValueError("the rule must be one line (it contains a newline)")
    if ";" in text:
        raise ValueError("the rule must be one rule (it contains ';')")
    if "#" in text:
        raise ValueError("the rule must not contain '#' (nft would ignore the rest of the line)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError("the rule contains a control character")
    depth = 0
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("the rule closes a '}' it did not open")
    if depth:
        raise ValueError("the rule leaves a '{' open")
    return text


def _acl_rule(rule: str) -> str:
    """Upstream counts every user rule (`counter <rule>`); a rule that counts already is kept."""
    text = validate_rule_text(rule)
    return text if text.split()[0] == "counter" else f"counter {text}"


def _chain_name(vni: int, direction: str) -> str:
    if direction not in ACL_DIRECTIONS:
        raise ValueError(f"ACL direction '{direction}' is not one of {', '.join(ACL_DIRECTIONS)}")
    return f"vxlan{vni}-{direction}"


def _ifname(name: str, what: str) -> str:
    if not _IFNAME_RE.match(name):
        raise ValueError(f"{what} '{name}' is not an interface name")
    return name


def _table(name: str, chains: Sequence[tuple[str, Sequence[str]]], family: str = "inet",
           sets: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """`table <family> <name>` replaced atomically: declaring it first makes the delete safe when
    it is absent, and every closing brace is on its own line (nft 1.0.6 needs that)."""
    out = [f"table {family} {name}", f"delete table {family} {name}", f"table {family} {name} {{"]
    for set_name, lines in sets:
        out.append(f"\tset {set_name} {{")
        out.extend(f"\t\t{line}" for line in lines)
        out.append("\t}")
    for chain, lines in chains:
        out.append(f"\tchain {chain} {{")
        out.extend(f"\t\t{line}" for line in lines)
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def _quoted(names: Sequence[str]) -> str:
    """`"a"` or `{ "a", "b" }`: one interface name or an anonymous set of them."""
    items = [f'"{n}"' for n in names]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _address_set(name: str, version: int, cidrs: Sequence[str]) -> tuple[str, list[str]]:
    """A named interval set of the given networks, merged (nft refuses overlapping intervals)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    merged = list(ipaddress.collapse_addresses(n for n in nets if n.version == version))
    lines = [f"type {'ipv4_addr' if version == 4 else 'ipv6_addr'}", "flags interval"]
    if merged:
        lines.append("elements = { " + ", ".join(str(n) for n in merged) + " }")
    return name, lines


def _deny_chain(prefix: str, quiet: Sequence[str] = ()) -> list[str]:
    """Count every drop, log a few per second (an administrator sees them in the kernel log);
    what matches a `quiet` expression (guests' everyday broadcast noise) is only counted."""
    return [*(f"{q} counter drop" for q in quiet),
            f'limit rate {DENY_LOG_RATE} log prefix "{prefix}: " level info', "counter drop"]


def guest_denied_networks(denied: Sequence[str]) -> list[str]:
    """Normalise the networks guests may never reach; ValueError naming a bad entry."""
    out = []
    for cidr in denied:
        try:
            out.append(str(ipaddress.ip_network(str(cidr).strip(), strict=False)))
        except ValueError:
            raise ValueError(f"guest denied network '{cidr}' is not a network (a.b.c.d/nn)") from None
    return out


def render_nft(nets: Sequence[NetSpec], acls: Mapping[int, Mapping[str, Sequence[Mapping[str, Any]]]], *,
               primary: bool, upstream_device: str, metadata_address: str, metadata_port: int = 80,
               denied: Sequence[str] = (), api_access: tuple[str, int] | None = None) -> str:
    """The whole PVC ruleset (`table inet pvc`) as one atomic replacement.

    Guest isolation (DESIGN D14), on every node, for managed and bridged networks alike:
    forwarded traffic from a guest bridge to `denied` (the nodes' own addresses and networks,
    BMC networks, ...) is dropped, and so is anything a guest bridge sends anywhere but its own
    bridge, another managed network's bridge or (managed only) `upstream_device`. Traffic from a
    guest bridge to the node itself is dropped except DHCP, DNS, NTP and ICMP to the gateway (and
    TFTP to it where the network has a TFTP root: its data flows are replies to dnsmasq's own
    packets) and the metadata service (primary only), and the API on `api_access` (address, port)
    when given.
    Replies to connections the other side opened pass. Every drop is counted and logged (rate
    limited) under the prefix `pvc guest-forward` or `pvc guest-input`.

    Every node filters forwarded traffic of managed networks through the per-network ACL chains
    (br_netfilter passes bridged VM-to-VM traffic through the inet forward hook too, so the ACLs
    hold between guests on one node). The primary masquerades the networks' IPv4 traffic leaving
    through `upstream_device` (and only there). ValueError if a stored ACL rule is not a single
    rule (see validate_rule_text) or a denied network is not a network."""
    _ifname(upstream_device, "upstream_device")
    meta = ipaddress.ip_address(metadata_address)
    denied_nets = guest_denied_networks(denied)
    all_nets = sorted(nets, key=lambda n: n.vni)
    managed = [n for n in all_nets if n.managed]
    bridges = [n.bridge for n in all_nets]
    managed_bridges = [n.bridge for n in managed]
    forward = ["type filter hook forward priority filter; policy accept;"]
    input_ = ["type filter hook input priority filter; policy accept;"]
    guest_forward = ["ct state established,related return",
                     "ip daddr @guest_denied4 jump guest-forward-drop",
                     "ip6 daddr @guest_denied6 jump guest-forward-drop"]
    guest_input = ["ct state established,related accept"]
    if bridges:
        forward.append(f"iifname {_quoted(bridges)} jump guest-forward")
        input_.append(f"iifname {_quoted(bridges)} jump guest-input")
    for net in all_nets:
        guest_forward.append(f'iifname "{net.bridge}" oifname "{net.bridge}" return')
    if managed_bridges:
        guest_forward += [f"iifname {_quoted(managed_bridges)} oifname {_quoted(managed_bridges)} return",
                          f'iifname {_quoted(managed_bridges)} oifname "{upstream_device}" return']
    guest_forward.append("jump guest-forward-drop")
    acl_chains: list[tuple[str, list[str]]] = []
    postrouting = ["type nat hook postrouting priority srcnat; policy accept;"]
    for net in managed:
        vin, vout = _chain_name(net.vni, "in"), _chain_name(net.vni, "out")
        if net.ip4_network:
            forward += [f"ip daddr {net.ip4_network} jump {vin}", f"ip saddr {net.ip4_network} jump {vout}"]
        if net.ip6_network:
            forward += [f"ip6 daddr {net.ip6_network} jump {vin}", f"ip6 saddr {net.ip6_network} jump {vout}"]
        net_acls = acls.get(net.vni) or {}
        for direction, chain in (("in", vin), ("out", vout)):
            rules = ["counter"]
            for i, item in enumerate(net_acls.get(direction) or ()):
                try:
                    rules.append(_acl_rule(str(item["rule"])))
                except (KeyError, ValueError) as e:
                    what = item.get("description", i) if isinstance(item, Mapping) else i
                    raise ValueError(f"network {net.vni} ACL {direction} '{what}': {e}") from None
            acl_chains.append((chain, rules))
        if not primary:
            continue
        br = f'iifname "{net.bridge}"'
        guest_input.append(f"{br} udp sport 68 udp dport 67 accept")
        if net.ip4_gateway:
            gw = f"ip daddr {net.ip4_gateway}"
            guest_input += [f"{br} {gw} udp dport 53 accept", f"{br} {gw} tcp dport 53 accept",
                            f"{br} {gw} udp dport 123 accept", f"{br} {gw} meta l4proto icmp accept"]
            if net.tftp_root:       # the data flows back from dnsmasq's port: replies (conntrack)
                guest_input.append(f"{br} {gw} udp dport 69 accept")
        if net.ip6_gateway:
            gw6 = f"ip6 daddr {net.ip6_gateway}"
            guest_input += [f"{br} {gw6} udp dport 53 accept", f"{br} {gw6} tcp dport 53 accept",
                            f"{br} {gw6} udp dport 123 accept"]
            if net.tftp_root:
                guest_input.append(f"{br} {gw6} udp dport 69 accept")
        if net.ip6_network:
            guest_input += [f"{br} meta l4proto ipv6-icmp accept", f"{br} udp dport 547 accept"]
        ip_meta = "ip" if meta.version == 4 else "ip6"
        guest_input.append(f"{br} {ip_meta} daddr {meta} tcp dport {metadata_port} accept")
        if net.ip4_network:
            postrouting.append(f'ip saddr {net.ip4_network} ip daddr != {net.ip4_network} '
                               f'oifname "{upstream_device}" masquerade')
    if primary and api_access is not None and managed_bridges:
        api_ip = ipaddress.ip_address(api_access[0])
        guest_input.append(f"iifname {_quoted(managed_bridges)} {'ip' if api_ip.version == 4 else 'ip6'} "
                           f"daddr {api_ip} tcp dport {int(api_access[1])} accept")
    guest_input.append("jump guest-input-drop")
    sets = [_address_set("guest_denied4", 4, denied_nets), _address_set("guest_denied6", 6, denied_nets)]
    return _table("pvc", [("forward", forward), ("guest-forward", guest_forward),
                          ("guest-forward-drop", _deny_chain("pvc guest-forward")), *acl_chains,
                          ("input", input_), ("guest-input", guest_input),
                          ("guest-input-drop", _deny_chain("pvc guest-input", ["meta pkttype != host"])),
                          ("postrouting", postrouting)],
                  sets=sets)


# --------------------------------------------------------------------------------------------
# Anti-spoofing on the VMs' tap ports (bridge family)

@dataclass(frozen=True)
class GuestPort:
    """One VM NIC's tap on this node: what it may send as (DESIGN D14).

    `bindings` are the (MAC, IPv4) pairs of the leases and reservations on the tap's network
    whose MAC matches the tap (see tap_mac_suffix); empty while the guest has no address yet."""

    name: str                       # the tap, e.g. vnet3
    vni: int
    managed: bool
    tap_mac: str
    bindings: tuple[tuple[str, str], ...] = ()
    ip6: bool = False               # the network has IPv6 (SLAAC: EUI-64 of the MAC)


def tap_mac_suffix(tap_mac: str) -> str:
    """The guest MAC's last five octets behind a tap MAC, as `00:xx:xx:xx:xx:xx`.

    libvirt gives a tap the guest's MAC with the first octet replaced (0xfe, or 0xfa when the
    guest's starts with 0xfe), so the tap names the guest's MAC up to its first octet."""
    mac = tap_mac.strip().lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"'{tap_mac}' is not a MAC address")
    return "00" + mac[2:]


def mac_matches_tap(mac: str, tap_mac: str) -> bool:
    mac_l = mac.strip().lower()
    return bool(_MAC_RE.match(mac_l)) and "00" + mac_l[2:] == tap_mac_suffix(tap_mac)


def _eui64(mac: str) -> str:
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    raw = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return "::" + ":".join(f"{raw[i] << 8 | raw[i + 1]:x}" for i in range(0, 8, 2))


def render_guard(ports: Sequence[GuestPort]) -> str:
    """`table bridge pvc_guard`: what each VM tap on this node may put on its bridge.

    From a tap: never a multicast source MAC; only the guest's MAC (its last five octets from the
    tap, the whole MAC once a lease or reservation names it); ARP only for its own (MAC, IP)
    pairs (or the 0.0.0.0 of a probe); IPv4 only from its lease/reservation addresses, or DHCP
    from 0.0.0.0 while it has none; IPv6 only from its EUI-64 address or `::` (DAD); nothing
    else (no other ethertypes, no VLAN tags). Bridged networks, where PVC gives out no
    addresses, get the MAC checks only; on managed ones a guest can neither answer DHCP nor send
    router advertisements or redirects (the gateway does). Drops are counted and logged
    (`pvc guest-spoof`)."""
    vmap: list[str] = []
    chains: list[tuple[str, list[str]]] = []
    for i, port in enumerate(sorted(ports, key=lambda p: p.name)):
        _ifname(port.name, "tap")
        chain = f"port{i}"
        vmap.append(f'"{port.name}" : jump {chain}')
        suffix = tap_mac_suffix(port.tap_mac)
        pairs = []
        for mac, ip in port.bindings:
            if not mac_matches_tap(mac, port.tap_mac):
                raise ValueError(f"tap {port.name}: MAC {mac} does not belong to it ({port.tap_mac})")
            pairs.append((mac.lower(), str(ipaddress.IPv4Address(ip))))
        macs = sorted({m for m, _ in pairs})
        rules = ["ether saddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 jump spoofed",
                 f"ether saddr & {_SUFFIX_MASK} != {suffix} jump spoofed",
                 f"arp saddr ether & {_SUFFIX_MASK} != {suffix} jump spoofed"]
        if macs:
            rules += [f"ether saddr != {{ {', '.join(macs)} }} jump spoofed",
                      f"arp saddr ether != {{ {', '.join(macs)} }} jump spoofed"]
        if not port.managed:
            rules += ["ether type { arp, ip, ip6 } accept", "jump spoofed"]
            chains.append((chain, rules))
            continue
        elements = ", ".join(f"{m} . {ip}" for m, ip in sorted(set(pairs)))
        # a guest never serves DHCP or routes on a managed network: the gateway does
        rules += ["udp sport { 67, 547 } jump spoofed",
                  "icmpv6 type { nd-router-advert, nd-redirect } jump spoofed",
                  "arp saddr ip 0.0.0.0 accept"]
        if elements:
            rules.append(f"ether saddr . arp saddr ip {{ {elements} }} accept")
        rules.append("ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept")
        if elements:
            rules.append(f"ether saddr . ip saddr {{ {elements} }} accept")
        if port.ip6:
            rules.append("ip6 saddr :: meta l4proto ipv6-icmp accept")
            for mac in macs:
                rules += [f"ether saddr {mac} ip6 saddr & ::ffff:ffff:ffff:ffff == {_eui64(mac)} accept"]
        else:
            rules.append("ether type ip6 counter drop")   # no IPv6 here: its chatter is no attack
        rules.append("jump spoofed")
        chains.append((chain, rules))
    prerouting = ["type filter hook prerouting priority -300; policy accept;"]
    if vmap:
        prerouting.append("iifname vmap { " + ", ".join(vmap) + " }")
    chains.append(("spoofed", _deny_chain("pvc guest-spoof")))
    return _table(GUARD_TABLE, [("prerouting", prerouting), *chains], family="bridge")


def acl_check_ruleset(net: NetSpec, direction: str, rules: Sequence[str]) -> str:
    """A standalone ruleset holding one ACL chain with `rules`, for `nft --check` before a rule
    is stored. Its own table (`pvc_check`), so even if it were applied it could not touch `pvc`."""
    chain = _chain_name(net.vni, direction)
    body = ["counter"]
    for i, rule in enumerate(rules):
        try:
            body.append(_acl_rule(rule))
        except ValueError as e:
            raise ValueError(f"rule {i}: {e}") from None
    return _table(CHECK_TABLE, [(chain, body)])


# --------------------------------------------------------------------------------------------
# dnsmasq

def _reverse_zone(network: str | None) -> str | None:
    """in-addr.arpa zone of an IPv4 network on an octet boundary (/8, /16, /24), else None."""
    if network is None:
        return None
    net = ipaddress.ip_network(network)
    if net.version != 4 or net.prefixlen not in (8, 16, 24):
        return None
    octets = str(net.network_address).split(".")[: net.prefixlen // 8]
    return ".".join(reversed(octets)) + ".in-addr.arpa"


def _domain(net: NetSpec) -> str | None:
    if net.domain is None:
        return None
    if not _DOMAIN_RE.match(net.domain):
        raise ValueError(f"network {net.vni}: '{net.domain}' is not a domain name")
    return net.domain.rstrip(".")


def dnsmasq_argv(net: NetSpec, *, mtu: int, hosts_dir: str, hook: Sequence[str], upstream_dns: Sequence[str],
                 dns_port: int = 53, tftp_root: str | None = None) -> list[str]:
    """dnsmasq in the foreground serving DNS (and DHCP when enabled) on one managed network's
    bridge. Nothing from the host leaks in (--conf-file=/dev/null, --no-hosts, --no-resolv),
    several instances coexist (--bind-interfaces, no pid file), leases live in ZooKeeper via the
    hook (--leasefile-ro), reservations are one file per MAC in hosts_dir (SIGHUP re-reads).
    DHCP names the gateway as NTP server (option 42, DHCPv6 option 31, as upstream). TFTP (and
    the network's DHCP boot file) only when the node passes `tftp_root`: the network's root as
    checked on this node (tftp_root_on_host), so a symlink cannot widen it."""
    if not net.managed:
        raise ValueError(f"network {net.vni} is bridged: PVC serves no DHCP or DNS on it")
    if len(hook) != 1:
        raise ValueError("dnsmasq runs --dhcp-script with no arguments: hook must be one program path")
    br = net.bridge
    domain = _domain(net)
    listen = [a for a in (net.ip4_gateway, net.ip6_gateway) if a]
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-hosts",
            "--no-poll", "--no-ping", "--bind-interfaces", f"--interface={br}", "--except-interface=lo"]
    if listen:
        argv.append(f"--listen-address={','.join(listen)}")
    argv.append(f"--port={dns_port}")
    if domain:
        argv += [f"--domain={domain}", f"--local=/{domain}/", "--expand-hosts"]
    argv += ["--domain-needed", "--bogus-priv"]
    rev = _reverse_zone(net.ip4_network)
    if rev:
        argv.append(f"--local=/{rev}/")
    argv.append("--no-resolv")
    argv += [f"--server={ipaddress.ip_address(s)}" for s in upstream_dns]
    dhcp4 = net.dhcp4 and net.ip4_network is not None and net.ip4_gateway is not None
    ra = net.ip6_network is not None and net.ip6_gateway is not None
    dhcp6 = ra and net.dhcp6
    if dhcp4 or dhcp6:
        argv += ["--dhcp-authoritative", "--leasefile-ro", f"--dhcp-script={hook[0]}",
                 f"--dhcp-hostsdir={hosts_dir}"]
    if dhcp4:
        if net.dhcp4_start and net.dhcp4_end:
            argv.append(f"--dhcp-range={net.dhcp4_start},{net.dhcp4_end},{net.ip4_netmask},1h")
        else:   # reservations only
            net4 = ipaddress.ip_network(net.ip4_network or "")
            argv.append(f"--dhcp-range={net4.network_address},static,{net.ip4_netmask},1h")
        argv += [f"--dhcp-option=option:router,{net.ip4_gateway}",
                 f"--dhcp-option=option:dns-server,{net.ip4_gateway}",
                 f"--dhcp-option=option:ntp-server,{net.ip4_gateway}"]     # option 42, as upstream
        if tftp_root and net.dhcp_boot:
            argv.append(f"--dhcp-boot={check_boot_file(net.dhcp_boot)}")   # next-server: this dnsmasq
        if domain:
            argv.append(f"--dhcp-option=option:domain-name,{domain}")
        if mtu < 1500:
            argv.append(f"--dhcp-option=option:mtu,{mtu}")
    if ra:
        # Router advertisements always (guests need the route); DHCPv6 stateless beside DHCPv4
        # (addresses by SLAAC, names from the RA), stateful when IPv6 is the only DHCP.
        argv.append("--enable-ra")
        if dhcp6 and dhcp4:
            argv.append(f"--dhcp-range=::,constructor:{br},ra-stateless,ra-names")
        elif dhcp6:
            argv.append(f"--dhcp-range=::2,::ffff:ffff:ffff:ffff,constructor:{br},64,1h")
        else:
            argv.append(f"--dhcp-range=::,constructor:{br},ra-only")
        if dhcp6:
            argv += [f"--dhcp-option=option6:dns-server,[{net.ip6_gateway}]",
                     f"--dhcp-option=option6:sntp-server,[{net.ip6_gateway}]"]     # option 31
            if domain:
                argv.append(f"--dhcp-option=option6:domain-search,{domain}")
        if mtu < 1500:
            argv.append(f"--ra-param={br},mtu:{mtu},60")
    if tftp_root:
        # read-only (dnsmasq has no TFTP write), on this bridge only; a root missing on this node
        # costs the TFTP service, not DNS and DHCP. dnsmasq serves as `nobody` (no --user):
        # world-readable files only.
        argv += [f"--enable-tftp={br}", f"--tftp-root={check_tftp_root(tftp_root)}", "--tftp-no-fail"]
    argv.append("--log-facility=-")
    if dhcp4 or dhcp6:
        argv.append("--log-dhcp")
    return argv


def reservation_line(mac: str, ip: str, hostname: str | None) -> str:
    """The content of one --dhcp-hostsdir file: `<mac>,<ip>[,<hostname>]`."""
    mac_l = mac.strip().lower()
    if not _MAC_RE.match(mac_l):
        raise ValueError(f"'{mac}' is not a MAC address")
    addr = ipaddress.ip_address(ip.strip())
    if addr.version != 4:
        raise ValueError(f"'{ip}' is not an IPv4 address (reservations are DHCPv4)")
    parts = [mac_l, str(addr)]
    if hostname:
        if not _HOSTNAME_RE.match(hostname):
            raise ValueError(f"'{hostname}' is not a host name")
        parts.append(hostname)
    return ",".join(parts) + "\n"


def dns_view_argv(nets: Sequence[NetSpec], *, listen: Sequence[str], port: int,
                  upstream_dns: Sequence[str]) -> list[str]:
    """The cluster DNS view: one forwarding dnsmasq (no DHCP, no names of its own) that sends
    each managed network's domain and reverse zone to that network's dnsmasq on the primary."""
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-hosts",
            "--no-poll", "--no-resolv", "--bind-interfaces"]
    argv += [f"--listen-address={ipaddress.ip_address(a)}" for a in listen]
    argv.append(f"--port={port}")
    for net in sorted((n for n in nets if n.managed), key=lambda n: n.vni):
        domain = _domain(net)
        gw = net.ip4_gateway or net.ip6_gateway
        if not domain or not gw:
            continue
        argv.append(f"--server=/{domain}/{gw}")
        rev = _reverse_zone(net.ip4_network)
        if rev:
            argv.append(f"--server=/{rev}/{gw}")
    argv += [f"--server={ipaddress.ip_address(s)}" for s in upstream_dns]
    argv.append("--log-facility=-")
    return argv


# --------------------------------------------------------------------------------------------
# FRR

def frr_config(*, hostname: str, router_id: str, asn: int, peers: Sequence[str], log_file: str) -> str:
    """FRR configuration for EVPN with head-end replication: iBGP between the nodes in one
    peer-group, l2vpn evpn only (no IPv4 unicast), every local VNI advertised. The node's own
    address is left out of `peers`, so every node can be given the same list."""
    if not _HOSTNAME_RE.match(hostname):
        raise ValueError(f"'{hostname}' is not a host name")
    rid = ipaddress.ip_address(router_id)
    if rid.version != 4:
        raise ValueError(f"the BGP router id must be an IPv4 address, not '{router_id}'")
    if not 1 <= asn <= 4294967295:
        raise ValueError(f"ASN {asn} is out of range")
    if any(c in log_file for c in "\n\r"):
        raise ValueError("the log file path contains a newline")
    neighbors = [str(ipaddress.ip_address(p)) for p in peers]
    lines = [
        "frr defaults datacenter",
        f"hostname {hostname}",
        f"log file {log_file}",
        "!",
        f"router bgp {asn}",
        f" bgp router-id {rid}",
        " no bgp default ipv4-unicast",
        " neighbor fabric peer-group",
        f" neighbor fabric remote-as {asn}",
        f" neighbor fabric update-source {rid}",
    ]
    lines += [f" neighbor {p} peer-group fabric" for p in dict.fromkeys(neighbors) if p != str(rid)]
    lines += [
        " !",
        " address-family l2vpn evpn",
        "  neighbor fabric activate",
        "  advertise-all-vni",
        " exit-address-family",
        "exit",
        "!",
    ]
    return "\n".join(lines) + "\n"
