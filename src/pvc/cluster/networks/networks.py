"""Client network operations (pvc-facts §5, §8.3 "Networks"): networks, ACLs, DHCP reservations, leases.

The API only writes desired state (DESIGN D2); every node's network reconciler builds bridges, VXLAN
or VLAN devices, gateways, dnsmasq and nftables from these documents:

    /networks/<vni>                 the API's network item (see `network_doc`)
    /netacls/<vni>                  {"in": [{description, rule}, ...], "out": [...]}; list index = order
    /netreservations/<vni>/<mac>    {mac_address, ip4_address, hostname}
    /netleases/<vni>/<mac>          {mac_address, ip4_address, hostname, clientid, expiry, timestamp}
                                    (written by the primary's dnsmasq hook)

Every operation validates all of its input against the whole cluster first and writes nothing when
it refuses (InvalidInput/Conflict -> 400, NotFound -> 404, each message naming the field). Writes are
single transactions guarded by znode versions, so a concurrent writer makes the loser re-validate
instead of slipping past a uniqueness or overlap check:

- network add/modify/remove bump the data version of /networks itself, which serialises them;
- reservation writes bump /netreservations/<vni> and check the network's version, so a subnet
  change and a reservation cannot race past each other;
- an ACL change is one compare-and-set of /netacls/<vni>.

Fixed upstream defects (pvc-facts §13.6, 13.7): name_servers take repeated keys (a single value is
not split per character), an ACL direction other than in/out is refused (not turned into "in"),
and ACL lists show each rule's own text.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pvc.adapters.network import NetworkError, Nftables
from pvc.cluster import vms as vms_mod
from pvc.cluster.common import check_name, limit_matcher
from pvc.core import netconfig, schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK, TxOp, op_check, op_create, op_delete, op_set

NETWORK_TYPES = netconfig.NETWORK_TYPES
DIRECTIONS = netconfig.ACL_DIRECTIONS
VNI_MIN, VNI_MAX = netconfig.VNI_MIN, netconfig.VNI_MAX
VLAN_MIN, VLAN_MAX = netconfig.VLAN_MIN, netconfig.VLAN_MAX
MTU_MIN, MTU_MAX = 576, 9000          # IPv4's minimum datagram size; jumbo frames
IP4_PREFIX_MIN, IP4_PREFIX_MAX = 8, 30
IP6_PREFIX = 64                       # SLAAC/RA and dnsmasq's constructor ranges need a /64
DOMAIN_MAX = 253
ATTEMPTS = 25
STATIC = "static"                     # the timestamp of a reservation in lease lists (upstream)

_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")

# Fields a bridged network cannot carry: PVC only bridges the VLAN, the guests bring their own IP.
MANAGED_ONLY = ("domain", "name_servers", "ip4_network", "ip4_gateway", "dhcp4", "dhcp4_start", "dhcp4_end",
                "ip6_network", "ip6_gateway")

Checker = Callable[[str], None] | Nftables
"""What validates ACL rule text with the real nft: `Nftables.check` or any callable like it."""

Net4 = ipaddress.IPv4Network
Net6 = ipaddress.IPv6Network


# -- validation of single values (pure) ----------------------------------------------------------------

def _text(value: Any) -> str | None:
    """None for unset values: missing, "" (upstream clients send empty options) or blank."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_vni(value: Any, nettype: str = "managed", field: str = "vni") -> int:
    """A VNI: 1..16777215 (24-bit VXLAN id); for bridged networks 1..4094, an 802.1Q VLAN id."""
    text = _text(value)
    if text is None:
        raise InvalidInput(f"{field}: a VNI is required (a whole number, {VNI_MIN}..{VNI_MAX})")
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a VNI (a whole number, {VNI_MIN}..{VNI_MAX})")
    vni = int(text)
    if not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidInput(f"{field}: {vni} is out of range: a VNI is {VNI_MIN}..{VNI_MAX} (24-bit VXLAN id)")
    if nettype == "bridged" and not VLAN_MIN <= vni <= VLAN_MAX:
        raise InvalidInput(f"{field}: {vni} is out of range for a bridged network: its VNI is the 802.1Q "
                           f"VLAN id, {VLAN_MIN}..{VLAN_MAX}")
    return vni


def check_nettype(value: Any, field: str = "nettype") -> str:
    text = _text(value)
    if text not in NETWORK_TYPES:
        raise InvalidInput(f"{field}: '{value}' is not one of {', '.join(NETWORK_TYPES)}")
    return text


def check_description(value: Any, field: str = "description") -> str:
    """Descriptions name networks (GET /network/<x> takes a VNI or a description, and the default
    domain is built from it): a name without blanks or '/', and not only digits (a VNI)."""
    text = _text(value)
    if text is None:
        raise InvalidInput(f"{field}: a description is required (letters, digits, '.', '_', '-')")
    check_name(text, field)
    if re.fullmatch(r"[0-9]+", text):
        raise InvalidInput(f"{field}: '{text}' may not be only digits (it would be taken for a VNI)")
    return text


def check_mtu(value: Any, field: str = "mtu") -> int | None:
    """None (the base device's MTU, set by each node) or 576..9000; each node clamps it to what its
    base device can carry."""
    text = _text(value)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not an MTU (a whole number, {MTU_MIN}..{MTU_MAX})")
    mtu = int(text)
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise InvalidInput(f"{field}: {mtu} is out of range ({MTU_MIN}..{MTU_MAX})")
    return mtu


def check_domain(value: Any, field: str = "domain") -> str | None:
    """A DNS domain name (lower-cased, without the trailing dot)."""
    text = _text(value)
    if text is None:
        return None
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if len(name) > DOMAIN_MAX or not all(_LABEL_RE.match(label) for label in labels):
        raise InvalidInput(f"{field}: '{text[:80]}' is not a DNS domain name (labels of letters, digits and "
                           f"'-', at most 63 characters each, separated by '.')")
    return name


def default_domain(description: str, vni: int) -> str:
    """Upstream's `<description>.local`, with the description made DNS-safe."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", description.lower())
    labels = [label.strip("-")[:63].strip("-") for label in cleaned.split(".")]
    domain = ".".join(label for label in labels if label) + ".local"
    try:
        return check_domain(domain) or f"net{vni}.local"
    except InvalidInput:
        return f"net{vni}.local"


def check_ip(value: Any, field: str, version: int | None = None) -> str:
    text = _text(value) or ""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        kind = f"an IPv{version}" if version else "an IP"
        raise InvalidInput(f"{field}: '{text[:60]}' is not {kind} address") from None
    if version and address.version != version:
        raise InvalidInput(f"{field}: '{text}' is not an IPv{version} address")
    return str(address)


def check_ip4_network(value: Any, field: str = "ip4_network") -> Net4:
    """An IPv4 network in CIDR form with its host bits zero, /8 to /30 (room for a gateway and clients)."""
    text = _text(value) or ""
    if "/" not in text:
        raise InvalidInput(f"{field}: '{text[:60]}' is not a network in CIDR form (e.g. 10.100.0.0/24)")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"{field}: '{text[:60]}' is not a network in CIDR form (e.g. 10.100.0.0/24)"
                           ) from None
    if not isinstance(network, Net4):
        raise InvalidInput(f"{field}: '{text}' is not an IPv4 network")
    if ipaddress.ip_interface(text).ip != network.network_address:
        raise InvalidInput(f"{field}: '{text}' has host bits set; the network is '{network}'")
    if not IP4_PREFIX_MIN <= network.prefixlen <= IP4_PREFIX_MAX:
        raise InvalidInput(f"{field}: a /{network.prefixlen} network is not allowed (/{IP4_PREFIX_MIN} to "
                           f"/{IP4_PREFIX_MAX})")
    return network


def check_ip6_network(value: Any, field: str = "ip6_network") -> Net6:
    """An IPv6 /64 in CIDR form: DHCPv6 is always on for IPv6 networks (upstream), and router
    advertisements with SLAAC (dnsmasq's constructor ranges) only work on a /64."""
    text = _text(value) or ""
    try:
        network = ipaddress.ip_network(text, strict=False) if "/" in text else None
    except ValueError:
        network = None
    if network is None:
        raise InvalidInput(f"{field}: '{text[:60]}' is not a network in CIDR form (e.g. fd00:100::/64)")
    if not isinstance(network, Net6):
        raise InvalidInput(f"{field}: '{text}' is not an IPv6 network")
    if ipaddress.ip_interface(text).ip != network.network_address:
        raise InvalidInput(f"{field}: '{text}' has host bits set; the network is '{network}'")
    if network.prefixlen != IP6_PREFIX:
        raise InvalidInput(f"{field}: a /{network.prefixlen} network is not allowed: DHCPv6 and router "
                           f"advertisements (always on for IPv6 networks) need a /{IP6_PREFIX}")
    return network


def check_host(value: Any, network: Net4 | Net6, field: str) -> str:
    """An address usable by a host in network: inside it, not its network address (nor, in IPv4,
    its broadcast address)."""
    address = ipaddress.ip_address(check_ip(value, field, network.version))
    if address not in network:
        raise InvalidInput(f"{field}: {address} is not inside the network {network}")
    if address == network.network_address:
        raise InvalidInput(f"{field}: {address} is the network address of {network}")
    if isinstance(network, Net4) and address == network.broadcast_address:
        raise InvalidInput(f"{field}: {address} is the broadcast address of {network}")
    return str(address)


def normalize_mac(value: Any, field: str = "macaddress") -> str:
    """A unicast MAC address, lowercase with ':' ("52:54:00:12:34:56"); '-' separators are accepted."""
    text = (_text(value) or "").lower()
    if not _MAC_RE.match(text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a MAC address (six hex pairs separated by ':', "
                           f"e.g. 52:54:00:12:34:56)")
    mac = text.replace("-", ":")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput(f"{field}: {mac} is the all-zero address, not a host's MAC")
    if int(mac[:2], 16) & 1:
        what = "the broadcast address" if mac == "ff:ff:ff:ff:ff:ff" else "a multicast address"
        raise InvalidInput(f"{field}: {mac} is {what}, not a host's (unicast) MAC")
    return mac


def check_hostname(value: Any, field: str = "hostname") -> str | None:
    """An optional DNS label (dnsmasq hands it out and resolves it in the network's domain)."""
    text = _text(value)
    if text is None:
        return None
    if not _HOSTNAME_RE.match(text):
        raise InvalidInput(f"{field}: '{text[:70]}' is not a host name (one DNS label: letters, digits and "
                           f"'-', at most 63 characters, not starting or ending with '-')")
    return text


def check_order(value: Any, field: str = "order") -> int | None:
    text = _text(value)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a position in the chain (0 is the first)")
    return int(text)


def check_direction(value: Any, field: str = "direction") -> str:
    text = _text(value)
    if text not in DIRECTIONS:
        raise InvalidInput(f"{field}: '{value}' is not one of {', '.join(DIRECTIONS)}")
    return text


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "on", "1"):
        return True
    if text in ("false", "f", "no", "n", "off", "0", "", "none"):
        return False
    raise InvalidInput(f"{field}: '{value}' is not a boolean (use true or false)")


def _name_servers(values: Any) -> list[str]:
    """Repeated keys and/or comma-separated values (the swagger's "CSV list"), each an IP address."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            if part.strip():
                address = check_ip(part, "name_servers")
                if address not in out:
                    out.append(address)
    return out


# -- the network document (pure) -----------------------------------------------------------------------

FIELDS = ("vni", "nettype", "description", "mtu", "domain", "name_servers", "ip4_network", "ip4_gateway",
          "dhcp4", "dhcp4_start", "dhcp4_end", "ip6_network", "ip6_gateway")


def network_doc(values: Mapping[str, Any]) -> dict[str, Any]:
    """The validated /networks/<vni> document for the inputs named as in the API (FIELDS).

    Unset values may be None or "" (upstream's CLI sends `mtu=""`, `dhcp4=False` for every add).
    Managed networks get upstream's defaults: the domain `<description>.local`, the IPv6 gateway
    `<prefix>::1`, DHCPv6 whenever there is an IPv6 network. Every refusal names its field.
    """
    nettype = check_nettype(values.get("nettype"))
    vni = parse_vni(values.get("vni"), nettype)
    description = check_description(values.get("description"))
    mtu = check_mtu(values.get("mtu"))
    dhcp4 = _flag(values.get("dhcp4"), "dhcp4")
    if nettype == "bridged":
        for field in MANAGED_ONLY:
            value = values.get(field)
            given = dhcp4 if field == "dhcp4" else bool(_name_servers(value)) if field == "name_servers" \
                else _text(value) is not None
            if given:
                raise InvalidInput(f"{field}: bridged networks carry no IP, DHCP or DNS configuration (PVC "
                                   f"only bridges VLAN {vni} to the VMs); leave it out or use a managed "
                                   f"network")
        return _doc(vni, "bridged", description, mtu)
    domain = check_domain(values.get("domain")) or default_domain(description, vni)
    name_servers = _name_servers(values.get("name_servers"))
    ip4: dict[str, Any] = {"network": None, "gateway": None, "dhcp_flag": dhcp4, "dhcp_start": None,
                           "dhcp_end": None}
    net4 = check_ip4_network(values["ip4_network"]) if _text(values.get("ip4_network")) else None
    gateway4 = _text(values.get("ip4_gateway"))
    start, end = _text(values.get("dhcp4_start")), _text(values.get("dhcp4_end"))
    if net4 is None:
        for field, value in (("ip4_gateway", gateway4), ("dhcp4_start", start), ("dhcp4_end", end)):
            if value is not None:
                raise InvalidInput(f"{field}: needs an IPv4 network (give ip4_network)")
        if dhcp4:
            raise InvalidInput("dhcp4: DHCPv4 needs an IPv4 network (give ip4_network, ip4_gateway, "
                               "dhcp4_start and dhcp4_end)")
    else:
        if gateway4 is None:
            raise InvalidInput(f"ip4_gateway: a managed network with an IPv4 network needs its gateway "
                               f"address (e.g. {next(net4.hosts())})")
        gw4 = check_host(gateway4, net4, "ip4_gateway")
        ip4.update(network=str(net4), gateway=gw4)
        if dhcp4 and (start is None or end is None):
            missing = "dhcp4_start" if start is None else "dhcp4_end"
            raise InvalidInput(f"{missing}: DHCPv4 needs the start and end addresses of its range "
                               f"(dhcp4_start, dhcp4_end)")
        if start is not None or end is not None:
            first = check_host(start, net4, "dhcp4_start") if start is not None else None
            last = check_host(end, net4, "dhcp4_end") if end is not None else None
            if first and last:
                low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
                if low > high:
                    raise InvalidInput(f"dhcp4_end: {last} comes before dhcp4_start {first}")
                if low <= ipaddress.ip_address(gw4) <= high:
                    raise InvalidInput(f"dhcp4_start, dhcp4_end: the range {first} - {last} contains the "
                                       f"gateway {gw4}; DHCP would hand it out")
            ip4.update(dhcp_start=first, dhcp_end=last)
    ip6: dict[str, Any] = {"network": None, "gateway": None, "dhcp_flag": False}
    gateway6 = _text(values.get("ip6_gateway"))
    if _text(values.get("ip6_network")):
        net6 = check_ip6_network(values["ip6_network"])
        gw6 = check_host(gateway6, net6, "ip6_gateway") if gateway6 else str(net6.network_address + 1)
        ip6.update(network=str(net6), gateway=gw6, dhcp_flag=True)
    elif gateway6 is not None:
        raise InvalidInput("ip6_gateway: needs an IPv6 network (give ip6_network)")
    return _doc(vni, "managed", description, mtu, domain, name_servers, ip4, ip6)


def _doc(vni: int, nettype: str, description: str, mtu: int | None, domain: str | None = None,
         name_servers: Sequence[str] = (), ip4: Mapping[str, Any] | None = None,
         ip6: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "vni": vni, "description": description, "type": nettype, "mtu": mtu, "domain": domain,
        "name_servers": list(name_servers),
        "ip4": dict(ip4 or {"network": None, "gateway": None, "dhcp_flag": False, "dhcp_start": None,
                            "dhcp_end": None}),
        "ip6": dict(ip6 or {"network": None, "gateway": None, "dhcp_flag": False}),
    }


def doc_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as network_doc inputs (for merging a modification into it)."""
    ip4, ip6 = doc.get("ip4") or {}, doc.get("ip6") or {}
    return {"vni": doc.get("vni"), "nettype": doc.get("type"), "description": doc.get("description"),
            "mtu": doc.get("mtu"), "domain": doc.get("domain"), "name_servers": doc.get("name_servers") or [],
            "ip4_network": ip4.get("network"), "ip4_gateway": ip4.get("gateway"),
            "dhcp4": bool(ip4.get("dhcp_flag")), "dhcp4_start": ip4.get("dhcp_start"),
            "dhcp4_end": ip4.get("dhcp_end"), "ip6_network": ip6.get("network"),
            "ip6_gateway": ip6.get("gateway")}


def merge_changes(doc: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a modification: the stored values with `changes` over them.

    Only given fields change; "" clears a field (upstream CLI: `--ipnet ""`). Clearing a network
    also clears what depends on it unless given too (its gateway; for IPv4 the DHCP range); a new
    IPv6 network without a gateway gets the default gateway again (upstream).
    """
    if "nettype" in changes and _text(changes["nettype"]) not in (None, doc.get("type")):
        raise InvalidInput(f"nettype: a network's type cannot be changed ({doc.get('type')}); remove the "
                           f"network and add it again as {changes['nettype']}")
    if "vni" in changes and _text(changes["vni"]) not in (None, str(doc.get("vni"))):
        raise InvalidInput("vni: a network's VNI cannot be changed; remove it and add it again")
    values = doc_values(doc)
    given = {k: v for k, v in changes.items()
             if k in FIELDS and k not in ("vni", "nettype") and v is not None}
    values.update(given)
    if "ip4_network" in given and _text(given["ip4_network"]) is None:
        for field in ("ip4_gateway", "dhcp4_start", "dhcp4_end"):
            values[field] = given.get(field)
        values["dhcp4"] = given.get("dhcp4", False)
    if "ip6_network" in given:
        values["ip6_gateway"] = given.get("ip6_gateway")
    return values


def _networks_of(doc: Mapping[str, Any]) -> list[Net4 | Net6]:
    out: list[Net4 | Net6] = []
    for key in ("ip4", "ip6"):
        text = (doc.get(key) or {}).get("network")
        if text:
            try:
                out.append(ipaddress.ip_network(str(text), strict=False))
            except ValueError:
                continue
    return out


def check_cluster(doc: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a document that clashes with the other networks: its VNI, its description, or a
    subnet overlapping one of theirs (both would route the same addresses)."""
    mine = _networks_of(doc)
    for other in others:
        other_vni = other.get("vni")
        if str(other_vni) == str(doc["vni"]):
            raise Conflict(f'vni: a network with VNI {doc["vni"]} already exists '
                           f'("{other.get("description")}")')
        if str(other.get("description", "")).lower() == doc["description"].lower():
            raise Conflict(f'description: network {other_vni} is already named "{other.get("description")}"')
        for net in mine:
            for theirs in _networks_of(other):
                if net.version == theirs.version and net.overlaps(theirs):  # type: ignore[arg-type]
                    raise Conflict(f"ip{net.version}_network: {net} overlaps {theirs} of network {other_vni} "
                                   f'("{other.get("description")}")')


# -- ZooKeeper reads --------------------------------------------------------------------------------------

def _docs(zk: ZK) -> dict[str, dict[str, Any]]:
    names = zk.children(schema.NETWORKS)
    docs = zk.get_many([schema.network(n) for n in names])
    return {n: d for n in names if isinstance(d := docs.get(schema.network(n)), dict)}


def _find(docs: Mapping[str, dict[str, Any]], net: str) -> tuple[str, dict[str, Any]] | None:
    """By VNI, else by description (pvc-facts §13.14: /network/<x> takes either)."""
    text = str(net).strip()
    if text in docs:
        return text, docs[text]
    if re.fullmatch(r"[0-9]{1,9}", text) and str(int(text)) in docs:
        return str(int(text)), docs[str(int(text))]
    for key, doc in docs.items():
        if doc.get("description") == text:
            return key, doc
    return None


def get_network(zk: ZK, net: str | int) -> dict[str, Any]:
    """The stored document of the network with VNI or description `net`; NotFound otherwise."""
    text = str(net).strip()
    if re.fullmatch(r"[0-9]{1,9}", text):
        doc = zk.get(schema.network(int(text)), None)
        if isinstance(doc, dict):
            return doc
    found = _find(_docs(zk), text) if text else None
    if found is None:
        raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
    return found[1]


def _managed(doc: Mapping[str, Any], what: str) -> int:
    if doc.get("type") != "managed":
        raise Conflict(f"Network {doc.get('vni')} is a bridged network: PVC manages no {what} on it (only on "
                       f"managed networks).")
    return int(doc["vni"])


def network_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The network item of API v1 (pvc-facts §8.5). Unset values are JSON null, except `domain`,
    which is "" when unset: PVC's own CLI (1.0.x) measures it with len() in `network list`."""
    ip4, ip6 = doc.get("ip4") or {}, doc.get("ip6") or {}
    return {
        "vni": int(doc.get("vni", 0)),
        "description": str(doc.get("description", "")),
        "type": doc.get("type", "managed"),
        "mtu": doc.get("mtu"),
        "domain": doc.get("domain") or "",
        "name_servers": list(doc.get("name_servers") or []),
        "ip4": {"network": ip4.get("network"), "gateway": ip4.get("gateway"),
                "dhcp_flag": bool(ip4.get("dhcp_flag")), "dhcp_start": ip4.get("dhcp_start"),
                "dhcp_end": ip4.get("dhcp_end")},
        "ip6": {"network": ip6.get("network"), "gateway": ip6.get("gateway"),
                "dhcp_flag": bool(ip6.get("dhcp_flag"))},
    }


def _matches(limit: str | None) -> Callable[[str], bool]:
    matcher = limit_matcher(limit)
    return (lambda _text: True) if matcher is None else (lambda text: matcher.fullmatch(text) is not None)


def list_networks(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """Network items whose VNI or description matches limit (fuzzy regex), sorted by VNI."""
    keep = _matches(limit)
    docs = [d for vni, d in _docs(zk).items() if keep(vni) or keep(str(d.get("description", "")))]
    return [network_view(d) for d in sorted(docs, key=lambda d: int(d.get("vni", 0)))]


def network_item(zk: ZK, net: str) -> dict[str, Any]:
    """One network item by VNI or description (GET /network/<x>)."""
    try:
        return network_view(get_network(zk, net))
    except NotFound:
        raise NotFound("Network not found.") from None


def network_users(zk: ZK, vni: int) -> list[str]:
    """Names of the VMs with an interface on the network's bridge vmbr<vni>."""
    users = []
    for entry in vms_mod.load_entries(zk):
        for nic in vms_mod.domain_summary(entry.record.xml).get("networks", []):
            if nic.get("type") not in ("direct", "hostdev") and str(nic.get("vni")) == str(vni):
                users.append(entry.record.name)
                break
    return sorted(users)


# -- ZooKeeper writes -------------------------------------------------------------------------------------

Op = TxOp
_create, _set, _delete, _check = op_create, op_set, op_delete, op_check


def _version(zk: ZK, path: str) -> int | None:
    found = zk.get_raw(path)
    return None if found is None else found[1].version


def _transact(zk: ZK, plan: Callable[[], tuple[list[Op], str]]) -> str:
    """Run plan() (read, validate, return the ops and the answer) and commit its ops in one
    transaction; when a version check fails, another writer won: plan again on the new state."""
    for _attempt in range(ATTEMPTS):
        ops, answer = plan()
        if not ops or zk.commit_ops(ops):
            return answer
    raise Conflict("Too many concurrent changes to the networks; try again.")


def _parent(zk: ZK) -> int:
    version = _version(zk, schema.NETWORKS)
    if version is None:
        zk.ensure(schema.NETWORKS)
        version = _version(zk, schema.NETWORKS) or 0
    return version


def _aux_ops(zk: ZK, vni: int) -> list[Op]:
    """Create the network's ACL document and reservation/lease parents, replacing leftovers (a
    lease the dnsmasq hook wrote just after an earlier network with this VNI was removed)."""
    ops: list[Op] = []
    empty_acls = {"in": [], "out": []}
    if zk.exists(schema.network_acls(vni)):
        ops.append(_set(schema.network_acls(vni), empty_acls))
    else:
        ops.append(_create(schema.network_acls(vni), empty_acls))
    for parent in (schema.network_reservations(vni), schema.network_leases(vni)):
        if zk.exists(parent):
            ops += [_delete(f"{parent}/{child}") for child in zk.children(parent)]
        else:
            ops.append(_create(parent))
    return ops


def add_network(zk: ZK, vni: Any, description: Any, nettype: Any, mtu: Any = None, domain: Any = None,
                name_servers: Any = None, ip4_network: Any = None, ip4_gateway: Any = None,
                ip6_network: Any = None, ip6_gateway: Any = None, dhcp4: Any = False,
                dhcp4_start: Any = None, dhcp4_end: Any = None) -> str:
    """Add a network (with its empty ACLs, reservations and leases) in one transaction."""
    values = {"vni": vni, "description": description, "nettype": nettype, "mtu": mtu, "domain": domain,
              "name_servers": name_servers, "ip4_network": ip4_network, "ip4_gateway": ip4_gateway,
              "ip6_network": ip6_network, "ip6_gateway": ip6_gateway, "dhcp4": dhcp4,
              "dhcp4_start": dhcp4_start, "dhcp4_end": dhcp4_end}
    doc = network_doc(values)

    def plan() -> tuple[list[Op], str]:
        version = _parent(zk)
        check_cluster(doc, _docs(zk).values())
        ops = [_set(schema.NETWORKS, None, version), _create(schema.network(doc["vni"]), doc),
               *_aux_ops(zk, doc["vni"])]
        return ops, f'Network "{doc["description"]}" added successfully!'

    return _transact(zk, plan)


def modify_network(zk: ZK, net: str | int, **changes: Any) -> str:
    """Change the given fields of a network (None = keep, "" = clear); the result is validated as
    a whole, against the other networks and the network's DHCP reservations."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))}: not a network field")

    def plan() -> tuple[list[Op], str]:
        version = _parent(zk)
        docs = _docs(zk)
        found = _find(docs, str(net))
        if found is None:
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        key, current = found
        vni = int(current["vni"])
        doc = network_doc(merge_changes(current, changes))
        check_cluster(doc, [d for k, d in docs.items() if k != key])
        reservations_version = _version(zk, schema.network_reservations(vni))
        _check_reservations(zk, vni, doc)
        if doc == current:
            return [], f'Network "{vni}" is unchanged.'
        ops = [_set(schema.NETWORKS, None, version), _set(schema.network(vni), doc)]
        if reservations_version is not None:
            ops.append(_check(schema.network_reservations(vni), reservations_version))
        return ops, f'Network "{vni}" modified successfully!'

    return _transact(zk, plan)


def _check_reservations(zk: ZK, vni: int, doc: Mapping[str, Any]) -> None:
    """A network change must keep every DHCP reservation usable: inside the IPv4 network, not its
    gateway (dnsmasq would refuse or hand out a wrong address)."""
    reservations = _reservations(zk, vni)
    if not reservations:
        return
    ip4 = doc.get("ip4") or {}
    macs = ", ".join(sorted(reservations))
    if doc.get("type") != "managed" or not ip4.get("network"):
        raise Conflict(f"ip4_network: network {vni} has DHCP reservations ({macs}), which need its IPv4 "
                       f"network; remove them first.")
    network = ipaddress.ip_network(ip4["network"])
    for mac, res in sorted(reservations.items()):
        try:
            check_host(res.get("ip4_address"), network, "ip4_network")
        except InvalidInput:
            raise Conflict(f"ip4_network: the DHCP reservation {mac} ({res.get('ip4_address')}) would be "
                           f"outside {network}; remove or change it first.") from None
        if res.get("ip4_address") == ip4.get("gateway"):
            raise Conflict(f"ip4_gateway: {ip4.get('gateway')} is reserved for {mac} by DHCP; remove that "
                           f"reservation first.")


def remove_network(zk: ZK, net: str | int) -> str:
    """Remove a network with its ACLs, reservations and leases (one transaction); refused while a
    VM has an interface on it, since that VM would lose its network."""

    def plan() -> tuple[list[Op], str]:
        version = _parent(zk)
        found = _find(_docs(zk), str(net))
        if found is None:
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        key, doc = found
        vni = int(doc["vni"])
        users = network_users(zk, vni)
        if users:
            names = ", ".join(f'"{u}"' for u in users)
            raise Conflict(f"Cannot remove network {vni}: VM{'s' if len(users) > 1 else ''} {names} "
                           f"{'have' if len(users) > 1 else 'has'} an interface on it (vmbr{vni}); remove "
                           f"{'them' if len(users) > 1 else 'it'} from the VM first.")
        ops: list[Op] = [_set(schema.NETWORKS, None, version), _delete(schema.network(key))]
        if zk.exists(schema.network_acls(vni)):
            ops.append(_delete(schema.network_acls(vni)))
        for parent in (schema.network_reservations(vni), schema.network_leases(vni)):
            if zk.exists(parent):
                ops += [_delete(f"{parent}/{child}") for child in zk.children(parent)]
                ops.append(_delete(parent))
        return ops, f'Network "{doc.get("description")}" removed successfully!'

    return _transact(zk, plan)


# -- ACLs --------------------------------------------------------------------------------------------------

def _acl_doc(data: Any) -> dict[str, list[dict[str, Any]]]:
    doc = data if isinstance(data, dict) else {}
    return {d: [r for r in doc.get(d) or [] if isinstance(r, dict)] for d in DIRECTIONS}


def acl_views(acls: Mapping[str, Sequence[Mapping[str, Any]]], direction: str | None = None
              ) -> list[dict[str, Any]]:
    """ACL items {direction, order, description, rule}: `in` then `out`, each in chain order."""
    return [{"direction": d, "order": i, "description": str(r.get("description", "")),
             "rule": str(r.get("rule", ""))}
            for d in DIRECTIONS if direction in (None, d) for i, r in enumerate(acls.get(d) or [])]


def list_acls(zk: ZK, net: str, limit: str | None = None, direction: str | None = None
              ) -> list[dict[str, Any]]:
    """The network's ACLs whose description matches limit, of one direction if given."""
    if direction is not None:
        direction = check_direction(direction)
    doc = get_network(zk, net)
    keep = _matches(limit)
    acls = _acl_doc(zk.get(schema.network_acls(doc["vni"]), None))
    return [item for item in acl_views(acls, direction) if keep(item["description"])]


def get_acl(zk: ZK, net: str, description: str) -> dict[str, Any]:
    doc = get_network(zk, net)
    for item in acl_views(_acl_doc(zk.get(schema.network_acls(doc["vni"]), None))):
        if item["description"] == description:
            return item
    raise NotFound(f'ACL "{description}" not found in network {doc["vni"]}.')


def unquote_rule(rule: str) -> str:
    """The rule without one pair of quotes around all of it: PVC's own acceptance script passes
    `--rule "'ip daddr 10.0.0.0/8 counter'"`, and a whole rule in quotes is never valid nft."""
    text = rule.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1]:
        return text[1:-1]
    return text


def check_rule(net: Mapping[str, Any], direction: str, rule: Any, checker: Checker) -> str:
    """The rule text, stripped, if it is one nft rule that nft itself accepts in the network's chain
    (`nft --check` of a throwaway table, so nothing is applied); else InvalidInput with nft's words."""
    try:
        text = netconfig.validate_rule_text(unquote_rule(str(rule or "")))
        ruleset = netconfig.acl_check_ruleset(netconfig.NetSpec.from_doc(net), direction, [text])
    except ValueError as exc:
        raise InvalidInput(f"rule: {exc}") from None
    check = checker.check if isinstance(checker, Nftables) else checker
    try:
        check(ruleset)
    except NetworkError as exc:
        detail = str(exc).strip().removeprefix("nft check:").strip()
        raise InvalidInput(f"rule: nft refuses the rule '{text}': {detail}") from None
    return text


def add_acl(zk: ZK, net: str, description: Any, rule: Any, checker: Checker, direction: Any = "in",
            order: Any = None) -> str:
    """Add a rule to the network's in or out chain at `order` (default: the end; past the end is
    the end, as upstream); later rules move down. Descriptions are unique in both directions."""
    direction = check_direction(_text(direction) or "in")
    description = check_name(_text(description) or "", "description")
    position = check_order(order)
    doc = get_network(zk, net)
    vni = _managed(doc, "firewall rules")
    text = check_rule(doc, direction, rule, checker)

    def change(current: Any) -> dict[str, Any]:
        acls = _acl_doc(current)
        for other in DIRECTIONS:
            if any(r.get("description") == description for r in acls[other]):
                raise Conflict(f'description: network {vni} already has a rule "{description}" ({other}); '
                               f"descriptions name rules in both directions.")
        chain = acls[direction]
        chain.insert(len(chain) if position is None else min(position, len(chain)),
                     {"description": description, "rule": text})
        return acls

    _acl_update(zk, vni, change)
    return f'Firewall rule "{description}" added successfully!'


def remove_acl(zk: ZK, net: str, description: str) -> str:
    """Remove a rule by description; the rules after it move up."""
    doc = get_network(zk, net)
    vni = int(doc["vni"])

    def change(current: Any) -> dict[str, Any]:
        acls = _acl_doc(current)
        for direction in DIRECTIONS:
            kept = [r for r in acls[direction] if r.get("description") != description]
            if len(kept) != len(acls[direction]):
                acls[direction] = kept
                return acls
        raise NotFound(f'No firewall rule exists matching description "{description}" in network {vni}.')

    _acl_update(zk, vni, change)
    return f'Firewall rule "{description}" removed successfully!'


def _acl_update(zk: ZK, vni: int, change: Callable[[Any], dict[str, Any]]) -> None:
    """One compare-and-set of /netacls/<vni>; created if missing while the network exists."""
    if not zk.exists(schema.network(vni)):
        raise NotFound(f"Network {vni} not found.")
    zk.update(schema.network_acls(vni), change, create=True)


# -- DHCP reservations and leases --------------------------------------------------------------------------

def _reservations(zk: ZK, vni: int) -> dict[str, dict[str, Any]]:
    macs = zk.children(schema.network_reservations(vni))
    docs = zk.get_many([schema.network_reservation(vni, m) for m in macs])
    return {m: d for m in macs if isinstance(d := docs.get(schema.network_reservation(vni, m)), dict)}


def _leases(zk: ZK, vni: int) -> dict[str, dict[str, Any]]:
    macs = zk.children(schema.network_leases(vni))
    docs = zk.get_many([schema.network_lease(vni, m) for m in macs])
    return {m: d for m in macs if isinstance(d := docs.get(schema.network_lease(vni, m)), dict)}


def lease_view(mac: str, doc: Mapping[str, Any], static: bool) -> dict[str, Any]:
    """The lease item {hostname, ip4_address, mac_address, timestamp}: "static" for reservations,
    the expiry (UNIX time) for dynamic leases. A missing hostname is "" (PVC's CLI sorts by it)."""
    if static:
        timestamp: Any = STATIC
    else:
        try:
            timestamp = int(doc.get("expiry", doc.get("timestamp", 0)) or 0)
        except (TypeError, ValueError):
            timestamp = 0
    return {"hostname": str(doc.get("hostname") or ""), "ip4_address": str(doc.get("ip4_address") or ""),
            "mac_address": str(doc.get("mac_address") or mac), "timestamp": timestamp}


def list_leases(zk: ZK, net: str, limit: str | None = None, static: bool = False) -> list[dict[str, Any]]:
    """Reservations (sorted by MAC), then dynamic leases unless `static`; limit matches the MAC,
    host name or address."""
    doc = get_network(zk, net)
    vni = int(doc["vni"])
    keep = _matches(limit)
    items = [lease_view(m, d, True) for m, d in sorted(_reservations(zk, vni).items())]
    if not static:
        items += [lease_view(m, d, False) for m, d in sorted(_leases(zk, vni).items())]
    return [i for i in items if keep(i["mac_address"]) or keep(i["hostname"]) or keep(i["ip4_address"])]


def get_lease(zk: ZK, net: str, mac: str) -> dict[str, Any]:
    """The reservation of `mac`, else its dynamic lease."""
    doc = get_network(zk, net)
    vni = int(doc["vni"])
    try:
        key = normalize_mac(mac)
    except InvalidInput:
        raise NotFound(f'Lease "{mac}" not found in network {vni}.') from None
    for static, path in ((True, schema.network_reservation(vni, key)),
                         (False, schema.network_lease(vni, key))):
        found = zk.get(path, None)
        if isinstance(found, dict):
            return lease_view(key, found, static)
    raise NotFound(f'Lease "{mac}" not found in network {vni}.')


def add_reservation(zk: ZK, net: str, macaddress: Any, ipaddress_: Any, hostname: Any = None) -> str:
    """Reserve an IPv4 address of the network for a MAC (dnsmasq hands it out, with the host name)."""
    mac = normalize_mac(macaddress, "macaddress")
    if _text(ipaddress_) is None:
        raise InvalidInput("ipaddress: an IPv4 address is required")
    host = check_hostname(hostname)

    def plan() -> tuple[list[Op], str]:
        found = zk.get_doc(schema.network(int(get_network(zk, net)["vni"])))
        if found is None or not isinstance(found.data, dict):
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        doc = found.data
        vni = _managed(doc, "DHCP")
        ip4 = doc.get("ip4") or {}
        if not ip4.get("network"):
            raise Conflict(f"Network {vni} has no IPv4 network: DHCP reservations need one.")
        network = ipaddress.ip_network(ip4["network"])
        address = check_host(ipaddress_, network, "ipaddress")
        if address == ip4.get("gateway"):
            raise InvalidInput(f"ipaddress: {address} is the gateway of network {vni}")
        parent = schema.network_reservations(vni)
        parent_version = _version(zk, parent)
        reservations = _reservations(zk, vni)
        if mac in reservations:
            raise Conflict(f'macaddress: a reservation with MAC "{mac}" already exists in network {vni} '
                           f"({reservations[mac].get('ip4_address')}).")
        for other, res in sorted(reservations.items()):
            if res.get("ip4_address") == address:
                raise Conflict(f"ipaddress: {address} is already reserved for {other} in network {vni}.")
        reservation = {"mac_address": mac, "ip4_address": address, "hostname": host}
        ops = [_check(schema.network(vni), found.version)]
        ops.append(_create(parent) if parent_version is None else _set(parent, None, parent_version))
        ops.append(_create(schema.network_reservation(vni, mac), reservation))
        return ops, f'DHCP reservation "{mac}" added successfully!'

    return _transact(zk, plan)


def remove_lease(zk: ZK, net: str, match: str) -> str:
    """Remove the reservation, or else the dynamic lease, whose MAC, host name or address is
    `match` (upstream); several matches of one kind are refused as ambiguous."""

    def plan() -> tuple[list[Op], str]:
        doc = get_network(zk, net)
        vni = int(doc["vni"])
        try:
            mac = normalize_mac(match)
        except InvalidInput:
            mac = None
        for kind, parent, entries in (("static reservation", schema.network_reservations(vni),
                                       _reservations(zk, vni)),
                                      ("dynamic lease", schema.network_leases(vni), _leases(zk, vni))):
            hits = sorted(m for m, d in entries.items()
                          if m == mac or match in (d.get("hostname"), d.get("ip4_address")))
            if len(hits) > 1:
                raise Conflict(f'"{match}" matches several {kind}s in network {vni} ({", ".join(hits)}); '
                               f"give the MAC address.")
            if hits:
                ops: list[Op] = [_delete(f"{parent}/{hits[0]}")]
                if kind == "static reservation":
                    ops.insert(0, _set(parent, None, _version(zk, parent) or 0))
                return ops, f'DHCP {kind} "{hits[0]}" removed successfully!'
        raise NotFound(f'No DHCP reservation or lease exists matching "{match}" in network {vni}.')

    return _transact(zk, plan)
