"""Checks of single network values (pure): VNIs, MTUs, domains, addresses and networks, MACs,
host names, ACL positions and directions. Every refusal is InvalidInput naming its field."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pvc.cluster.common import check_name, csv_items, digits, optional_text
from pvc.core import netconfig
from pvc.core.errors import InvalidInput

NETWORK_TYPES = netconfig.NETWORK_TYPES
DIRECTIONS = netconfig.ACL_DIRECTIONS
VNI_MIN, VNI_MAX = netconfig.VNI_MIN, netconfig.VNI_MAX
VLAN_MIN, VLAN_MAX = netconfig.VLAN_MIN, netconfig.VLAN_MAX
MTU_MIN, MTU_MAX = 576, 9000          # IPv4's minimum datagram size; jumbo frames
IP4_PREFIX_MIN, IP4_PREFIX_MAX = 8, 30
IP6_PREFIX = 64                       # SLAAC/RA and dnsmasq's constructor ranges need a /64
DOMAIN_MAX = 253

_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")

Net4 = ipaddress.IPv4Network
Net6 = ipaddress.IPv6Network


def parse_vni(value: Any, nettype: str = "managed", field: str = "vni") -> int:
    """A VNI: 1..16777215 (24-bit VXLAN id); for bridged networks 1..4094, an 802.1Q VLAN id."""
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: a VNI is required (a whole number, {VNI_MIN}..{VNI_MAX})")
    vni = digits(text, field, f"a VNI (a whole number, {VNI_MIN}..{VNI_MAX})")
    if not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidInput(f"{field}: {vni} is out of range: a VNI is {VNI_MIN}..{VNI_MAX} (24-bit VXLAN id)")
    if nettype == "bridged" and not VLAN_MIN <= vni <= VLAN_MAX:
        raise InvalidInput(f"{field}: {vni} is out of range for a bridged network: its VNI is the 802.1Q "
                           f"VLAN id, {VLAN_MIN}..{VLAN_MAX}")
    return vni


def check_nettype(value: Any, field: str = "nettype") -> str:
    text = optional_text(value)
    if text not in NETWORK_TYPES:
        raise InvalidInput(f"{field}: '{value}' is not one of {', '.join(NETWORK_TYPES)}")
    return text


def check_description(value: Any, field: str = "description") -> str:
    """Descriptions name networks (GET /network/<x> takes a VNI or a description, and the default
    domain is built from it): a name without blanks or '/', and not only digits (a VNI)."""
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: a description is required (letters, digits, '.', '_', '-')")
    check_name(text, field)
    if re.fullmatch(r"[0-9]+", text):
        raise InvalidInput(f"{field}: '{text}' may not be only digits (it would be taken for a VNI)")
    return text


def check_mtu(value: Any, field: str = "mtu") -> int | None:
    """None (the base device's MTU, set by each node) or 576..9000; each node clamps it to what its
    base device can carry."""
    text = optional_text(value)
    if text is None:
        return None
    mtu = digits(text, field, f"an MTU (a whole number, {MTU_MIN}..{MTU_MAX})")
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise InvalidInput(f"{field}: {mtu} is out of range ({MTU_MIN}..{MTU_MAX})")
    return mtu


def check_domain(value: Any, field: str = "domain") -> str | None:
    """A DNS domain name (lower-cased, without the trailing dot)."""
    text = optional_text(value)
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
    text = optional_text(value) or ""
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
    text = optional_text(value) or ""
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
    text = optional_text(value) or ""
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
    text = (optional_text(value) or "").lower()
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
    text = optional_text(value)
    if text is None:
        return None
    if not _HOSTNAME_RE.match(text):
        raise InvalidInput(f"{field}: '{text[:70]}' is not a host name (one DNS label: letters, digits and "
                           f"'-', at most 63 characters, not starting or ending with '-')")
    return text


def check_order(value: Any, field: str = "order") -> int | None:
    text = optional_text(value)
    if text is None:
        return None
    return digits(text, field, "a position in the chain (0 is the first)", 6)


def check_direction(value: Any, field: str = "direction") -> str:
    text = optional_text(value)
    if text not in DIRECTIONS:
        raise InvalidInput(f"{field}: '{value}' is not one of {', '.join(DIRECTIONS)}")
    return text


def check_flag(value: Any, field: str) -> bool:
    """A boolean as upstream clients send it (true/false, yes/no, 1/0; unset is false)."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "on", "1"):
        return True
    if text in ("false", "f", "no", "n", "off", "0", "", "none"):
        return False
    raise InvalidInput(f"{field}: '{value}' is not a boolean (use true or false)")


def check_name_servers(values: Any) -> list[str]:
    """Repeated keys and/or comma-separated values (the swagger's "CSV list"), each an IP address."""
    return list(dict.fromkeys(check_ip(part, "name_servers") for part in csv_items(values)))


def check_tftp_root(value: Any, field: str = "tftp_root") -> str | None:
    """An optional TFTP root for the network's dnsmasq (PXE): absolute, normalised, below
    /srv or /var/lib/tftpboot (never the nodes' configuration or secrets); see
    netconfig.check_tftp_root."""
    text = optional_text(value)
    if text is None:
        return None
    try:
        return netconfig.check_tftp_root(text)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}") from None


def check_dhcp_boot(value: Any, field: str = "dhcp_boot") -> str | None:
    """An optional DHCP boot file name (option 67), relative to the TFTP root."""
    text = optional_text(value)
    if text is None:
        return None
    try:
        return netconfig.check_boot_file(text)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}") from None
