"""`pvc network`: client networks, their DHCP reservations and leases, and their firewall ACLs.

Options and requests are upstream's (`pvc network add 10001 --description testing --type managed
--ipnet 10.100.100.0/24 --gateway 10.100.100.1 --dhcp --dhcp-start ... --dhcp-end ...`): scalar
arguments travel as query parameters, repeated options (`--dns-server`) as repeated keys, and
`modify` sends only what is given ("" clears a field), so this client works against upstream PVC
and upstream's client against us. The API validates everything; its message is what the user sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click
from rich.console import Group, RenderableType
from rich.text import Text

from pvc.cli.commands.sriov import group as sriov_group
from pvc.cli.output import json_formatters, key_values, table
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.core.vocabulary import NETWORK_TYPES

NETTYPES = NETWORK_TYPES
NA = "N/A"


# -- formatters --------------------------------------------------------------------------------------

def _flag(value: Any) -> Text:
    """True/False in green/blue, as upstream colours its flags."""
    on = value is True or str(value).lower() == "true"
    return Text("True" if on else "False", style="green" if on else "blue")


def _set(value: Any) -> bool:
    return value not in (None, "", "None")


def _ip(net: dict[str, Any], version: int) -> dict[str, Any]:
    data = net.get(f"ip{version}")
    return data if isinstance(data, dict) else {}


def format_info(net: dict[str, Any], long: bool = False) -> RenderableType:
    """`pvc network info`: the network's configuration; `long` adds its reservations/leases and ACLs
    (fetched by the command into `leases` and `acls`)."""
    items: list[tuple[str, Any]] = [
        ("VNI", net.get("vni", "")),
        ("Type", net.get("type", "")),
        ("MTU", net.get("mtu") if _set(net.get("mtu")) else "default"),
        ("Description", net.get("description", "")),
    ]
    if net.get("type") == "managed":
        ip4, ip6 = _ip(net, 4), _ip(net, 6)
        items += [("Domain", net.get("domain") or NA),
                  ("DNS Servers", ", ".join(str(s) for s in net.get("name_servers") or []) or NA)]
        if _set(ip6.get("network")):
            items += [("", ""), ("IPv6 network", ip6.get("network")),
                      ("IPv6 gateway", ip6.get("gateway") or NA),
                      ("DHCPv6 enabled", _flag(ip6.get("dhcp_flag")))]
        if _set(ip4.get("network")):
            items += [("", ""), ("IPv4 network", ip4.get("network")),
                      ("IPv4 gateway", ip4.get("gateway") or NA),
                      ("DHCPv4 enabled", _flag(ip4.get("dhcp_flag")))]
            if _flag(ip4.get("dhcp_flag")).plain == "True":
                items.append(("DHCPv4 range", f"{ip4.get('dhcp_start')} - {ip4.get('dhcp_end')}"))
        if _set(net.get("tftp_root")):
            items += [("", ""), ("TFTP root", net.get("tftp_root")),
                      ("DHCP boot file", net.get("dhcp_boot") if _set(net.get("dhcp_boot")) else NA)]
    blocks: list[RenderableType] = [key_values(items)]
    if long and net.get("type") == "managed":
        leases, acls = net.get("leases") or [], net.get("acls") or []
        blocks += ["", Text("Client DHCPv4 reservations and leases:", style="bold"), "",
                   format_lease_list(leases) if leases else "No leases found.",
                   "", Text("Network firewall rules:", style="bold"), "",
                   format_acl_list(acls) if acls else "No ACLs found."]
    return Group(*blocks) if len(blocks) > 1 else blocks[0]


def format_info_long(net: dict[str, Any]) -> RenderableType:
    return format_info(net, long=True)


INFO_FORMATS = {"pretty": lambda n: format_info(n), "long": format_info_long, **json_formatters()}


def _vni(net: dict[str, Any]) -> int:
    try:
        return int(net.get("vni", 0))
    except (TypeError, ValueError):
        return 0


def format_list(nets: Sequence[dict[str, Any]]) -> RenderableType:
    if not nets:
        return "No networks found."
    rows = []
    for net in sorted(nets, key=_vni):
        ip4, ip6 = _ip(net, 4), _ip(net, 6)
        rows.append([net.get("vni", ""), net.get("description", ""), net.get("type", ""),
                     net.get("mtu") if _set(net.get("mtu")) else "default", net.get("domain") or NA,
                     _flag(_set(ip6.get("network"))), _flag(ip6.get("dhcp_flag")),
                     _flag(_set(ip4.get("network"))), _flag(ip4.get("dhcp_flag"))])
    return table([("VNI", "right"), "Description", "Type", ("MTU", "right"), "Domain", "IPv6", "DHCPv6",
                  "IPv4", "DHCPv4"], rows)


LIST_FORMATS = {"pretty": format_list, "raw": lambda nets: "\n".join(str(n.get("vni")) for n in
                                                                        sorted(nets, key=_vni)),
                **json_formatters()}


def _timestamp(value: Any) -> str:
    """'static' for reservations; a dynamic lease's expiry as UTC time."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def format_lease_list(leases: Sequence[dict[str, Any]]) -> RenderableType:
    if not leases:
        return "No leases found."
    return table(["Hostname", "IP Address", "MAC Address", "Timestamp"],
                 ([lease.get("hostname") or NA, lease.get("ip4_address", ""), lease.get("mac_address", ""),
                   _timestamp(lease.get("timestamp"))] for lease in leases))


LEASE_FORMATS = {
    "pretty": format_lease_list,
    "raw": lambda leases: "\n".join(f"{x.get('mac_address')}|{x.get('ip4_address')}|{x.get('hostname')}"
                                    for x in leases),
    **json_formatters(),
}


def format_acl_list(acls: Sequence[dict[str, Any]]) -> RenderableType:
    if not acls:
        return "No ACLs found."
    return table(["Direction", ("Order", "right"), "Description", "Rule"],
                 ([acl.get("direction", ""), acl.get("order", ""), acl.get("description", ""),
                   acl.get("rule", "")] for acl in acls))


ACL_FORMATS = {
    "pretty": format_acl_list,
    "raw": lambda acls: "\n".join(f"{a.get('direction')}|{a.get('order')}|{a.get('rule')}" for a in acls),
    **json_formatters(),
}


# -- plumbing ----------------------------------------------------------------------------------------

def _p(value: str | int) -> str:
    """A path element as typed (a description, MAC or host name), safely quoted."""
    return quote(str(value), safe=":")


def _say(method: str, path: str, params: dict[str, Any] | None = None) -> None:
    """A call answered with `{"message": ...}`: print the message (errors exit non-zero)."""
    state = get_state()
    state.out(state.api().message(method, path, params=params))


def _list(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [item for item in get_state().api().get_list(path, params=params) if isinstance(item, dict)]


def _servers(values: tuple[str, ...]) -> list[str] | None:
    return list(values) if values else None


# -- network -----------------------------------------------------------------------------------------

@click.group(name="network", short_help="Manage PVC networks.")
def group() -> None:
    """Manage and view the client networks of a PVC cluster."""


IPNET_HELP = "CIDR-format IPv4 network address for the subnet (e.g. 10.100.0.0/24)."
IPNET6_HELP = "CIDR-format IPv6 network address for the subnet; a /64 ending \"::/64\"."
TFTP_HELP = ("Directory the gateway serves read-only over TFTP (PXE), below /srv or /var/lib/tftpboot, on "
             "every node; world-readable files only.")
BOOT_HELP = "Boot file DHCPv4 names (option 67), relative to the TFTP root."


@group.command(name="add", short_help="Add a new virtual network.")
@click.argument("vni")
@click.option("-d", "--description", "description", required=True,
              help="Description of the network; unique, without whitespace.")
@click.option("-p", "--type", "nettype", required=True, type=click.Choice(NETTYPES),
              help="managed: PVC runs its addressing (VXLAN, gateway, DHCP, DNS, ACLs); bridged: a plain "
                   "VLAN bridge (the other options do not apply).")
@click.option("-m", "--mtu", "mtu", default=None,
              help="MTU of the network [default: the underlying device's].")
@click.option("-n", "--domain", "domain", default=None, help="DNS domain of the network [default: "
                                                             "<description>.local].")
@click.option("--dns-server", "name_servers", multiple=True,
              help="DNS name server of the network (NS records); repeatable.")
@click.option("-i", "--ipnet", "ip4_network", default=None, help=IPNET_HELP)
@click.option("-i6", "--ipnet6", "ip6_network", default=None, help=IPNET6_HELP)
@click.option("-g", "--gateway", "ip4_gateway", default=None, help="IPv4 gateway address of the subnet.")
@click.option("-g6", "--gateway6", "ip6_gateway", default=None,
              help="IPv6 gateway address of the subnet [default: \"X::1\"].")
@click.option("--dhcp/--no-dhcp", "dhcp4", default=False, help="Enable/disable IPv4 DHCP on the subnet.")
@click.option("--dhcp-start", "dhcp4_start", default=None, help="IPv4 DHCP range start address.")
@click.option("--dhcp-end", "dhcp4_end", default=None, help="IPv4 DHCP range end address.")
@click.option("--tftp-root", "tftp_root", default=None, help=TFTP_HELP)
@click.option("--dhcp-boot", "dhcp_boot", default=None, help=BOOT_HELP)
def add(vni: str, description: str, nettype: str, mtu: str | None, domain: str | None,
        name_servers: tuple[str, ...], ip4_network: str | None, ip6_network: str | None,
        ip4_gateway: str | None, ip6_gateway: str | None, dhcp4: bool, dhcp4_start: str | None,
        dhcp4_end: str | None, tftp_root: str | None, dhcp_boot: str | None) -> None:
    """Add a new virtual network with VXLAN identifier (managed) or VLAN ID (bridged) VNI.

    \b
    Examples:
      pvc network add 101 --description my-bridged-net --type bridged
      pvc network add 1001 --description my-managed-net --type managed --domain test.local \\
          --ipnet 10.1.1.0/24 --gateway 10.1.1.1 --dhcp --dhcp-start 10.1.1.100 --dhcp-end 10.1.1.199

    The MTU may not exceed the underlying device's (bridge_mtu for bridged networks, cluster_mtu
    minus 50 for managed ones); each node clamps it. IPv6 (--ipnet6, a /64) gets DHCPv6 and router
    advertisements. The gateway answers NTP and DHCP names it as time server; --tftp-root (with
    --dhcp-boot) serves PXE files from the gateway.
    """
    _say("POST", "/network", {"vni": vni, "description": description, "nettype": nettype, "mtu": mtu,
                              "domain": domain, "name_servers": _servers(name_servers),
                              "ip4_network": ip4_network, "ip4_gateway": ip4_gateway,
                              "ip6_network": ip6_network, "ip6_gateway": ip6_gateway, "dhcp4": dhcp4,
                              "dhcp4_start": dhcp4_start, "dhcp4_end": dhcp4_end, "tftp_root": tftp_root,
                              "dhcp_boot": dhcp_boot})


@group.command(name="modify", short_help="Modify an existing virtual network.")
@click.argument("vni")
@click.option("-d", "--description", "description", default=None, help="Description of the network.")
@click.option("-m", "--mtu", "mtu", default=None, help="MTU of the network; \"\" resets it to the default.")
@click.option("-n", "--domain", "domain", default=None, help="DNS domain of the network.")
@click.option("--dns-server", "name_servers", multiple=True,
              help="DNS name server of the network; repeatable (replaces all previous ones; \"\" removes "
                   "them).")
@click.option("-i", "--ipnet", "ip4_network", default=None, help=IPNET_HELP[:-1] + "; \"\" disables IPv4.")
@click.option("-i6", "--ipnet6", "ip6_network", default=None, help=IPNET6_HELP[:-1] + "; \"\" disables IPv6.")
@click.option("-g", "--gateway", "ip4_gateway", default=None, help="IPv4 gateway address of the subnet.")
@click.option("-g6", "--gateway6", "ip6_gateway", default=None, help="IPv6 gateway address of the subnet.")
@click.option("--dhcp/--no-dhcp", "dhcp4", default=None, help="Enable/disable IPv4 DHCP on the subnet.")
@click.option("--dhcp-start", "dhcp4_start", default=None, help="IPv4 DHCP range start address.")
@click.option("--dhcp-end", "dhcp4_end", default=None, help="IPv4 DHCP range end address.")
@click.option("--tftp-root", "tftp_root", default=None, help=TFTP_HELP[:-1] + "; \"\" stops TFTP.")
@click.option("--dhcp-boot", "dhcp_boot", default=None, help=BOOT_HELP[:-1] + "; \"\" removes it.")
def modify(vni: str, description: str | None, mtu: str | None, domain: str | None,
           name_servers: tuple[str, ...], ip4_network: str | None, ip6_network: str | None,
           ip4_gateway: str | None, ip6_gateway: str | None, dhcp4: bool | None, dhcp4_start: str | None,
           dhcp4_end: str | None, tftp_root: str | None, dhcp_boot: str | None) -> None:
    """Modify the virtual network VNI; only the given options change.

    Example: pvc network modify 1001 --gateway 10.1.1.1 --dhcp
    """
    _say("PUT", f"/network/{_p(vni)}", {"description": description, "mtu": mtu, "domain": domain,
                                    "name_servers": _servers(name_servers), "ip4_network": ip4_network,
                                    "ip4_gateway": ip4_gateway, "ip6_network": ip6_network,
                                    "ip6_gateway": ip6_gateway, "dhcp4": dhcp4, "dhcp4_start": dhcp4_start,
                                    "dhcp4_end": dhcp4_end, "tftp_root": tftp_root, "dhcp_boot": dhcp_boot})


@group.command(name="remove", short_help="Remove a virtual network.")
@click.argument("net")
@confirm_option("Remove network {net}")
def remove(net: str) -> None:
    """Remove the virtual network NET (a VNI or description) with its ACLs and DHCP reservations.

    Refused while a VM has an interface on it: remove those first ('pvc vm network remove').
    """
    _say("DELETE", f"/network/{_p(net)}")


@group.command(name="info", short_help="Show details of a network.")
@click.argument("vni")
@format_option(INFO_FORMATS)
def info(vni: str, formatter: Any) -> None:
    """Show the virtual network VNI (a VNI or description).

    Formats: pretty, long (adds DHCP reservations, leases and firewall rules), json, json-pretty.
    """
    state = get_state()
    net = state.api().get_one(f"/network/{_p(vni)}", what="Network")
    if formatter is format_info_long and net.get("type") == "managed":
        base = f"/network/{net['vni']}"
        net = {**net, "leases": _list(f"{base}/lease"), "acls": _list(f"{base}/acl")}
    state.emit(net, formatter)


@group.command(name="list", short_help="List all networks.")
@click.argument("limit", required=False, default=None)
@format_option(LIST_FORMATS)
def list_(limit: str | None, formatter: Any) -> None:
    """List the virtual networks; optionally only those whose VNI or description matches the regex LIMIT.

    Formats: pretty, raw (VNIs), json, json-pretty.
    """
    get_state().emit(_list("/network", {"limit": limit}), formatter)


# -- dhcp --------------------------------------------------------------------------------------------

@group.group(name="dhcp", short_help="Manage IPv4 DHCP leases in a PVC virtual network.")
def dhcp() -> None:
    """Manage the IPv4 DHCP reservations and leases of managed networks."""


@dhcp.command(name="add", short_help="Add a DHCP static reservation.")
@click.argument("net")
@click.argument("ipaddr")
@click.argument("hostname")
@click.argument("macaddr")
def dhcp_add(net: str, ipaddr: str, hostname: str, macaddr: str) -> None:
    """Reserve the IPv4 address IPADDR with host name HOSTNAME for MAC address MACADDR in network NET."""
    _say("POST", f"/network/{_p(net)}/lease",
         {"macaddress": macaddr, "ipaddress": ipaddr, "hostname": hostname})


@dhcp.command(name="remove", short_help="Remove a DHCP static reservation.")
@click.argument("net")
@click.argument("macaddr")
@confirm_option("Remove DHCP reservation {macaddr} from network {net}")
def dhcp_remove(net: str, macaddr: str) -> None:
    """Remove the DHCP reservation (or else the dynamic lease) of MACADDR from network NET.

    MACADDR may also be the host name or IP address of the reservation or lease.
    """
    _say("DELETE", f"/network/{_p(net)}/lease/{_p(macaddr)}")


@dhcp.command(name="list", short_help="List DHCP reservations and leases.")
@click.argument("net")
@click.argument("limit", required=False, default=None)
@click.option("-s", "--static", "static", is_flag=True, default=False, help="Show only static reservations.")
@format_option(LEASE_FORMATS)
def dhcp_list(net: str, limit: str | None, static: bool, formatter: Any) -> None:
    """List the DHCP reservations and leases of network NET; optionally only those matching the regex LIMIT.

    Formats: pretty, raw (mac|ip|hostname), json, json-pretty.
    """
    get_state().emit(_list(f"/network/{_p(net)}/lease", {"limit": limit, "static": static}), formatter)


# -- acl ---------------------------------------------------------------------------------------------

@group.group(name="acl", short_help="Manage a PVC virtual network firewall ACL rule.")
def acl() -> None:
    """Manage the firewall ACLs (nftables rules) of managed networks."""


@acl.command(name="add", short_help="Add firewall ACL.")
@click.argument("net")
@click.option("--in/--out", "inbound", default=True, help="Inbound (default) or outbound rule set.")
@click.option("-d", "--description", "description", required=True,
              help="Description of the rule; unique within the network (both directions), no whitespace.")
@click.option("-r", "--rule", "rule", required=True,
              help="The nft rule, e.g. 'tcp dport 22 ct state new accept'.")
@click.option("-o", "--order", "order", type=click.IntRange(min=0), default=None,
              help="Position of the rule in its chain (see 'list'); later rules move down [default: last].")
def acl_add(net: str, inbound: bool, description: str, rule: str, order: int | None) -> None:
    """Add an nft firewall rule to network NET's forward chain for traffic in to or out of it.

    All networks allow everything by default: for a default-deny setup, add the deny rule last.
    The API checks the rule with `nft --check` before storing it.

    Example: pvc network acl add 1001 --in --rule "tcp dport 22 ct state new accept" --description ssh-in
    """
    _say("POST", f"/network/{_p(net)}/acl",
         {"description": description, "direction": "in" if inbound else "out", "rule": rule, "order": order})


@acl.command(name="remove", short_help="Remove firewall ACL.")
@click.argument("net")
@click.argument("rule")
@confirm_option("Remove firewall rule {rule} from network {net}")
def acl_remove(net: str, rule: str) -> None:
    """Remove the firewall rule with description RULE from network NET."""
    _say("DELETE", f"/network/{_p(net)}/acl/{_p(rule)}")


@acl.command(name="list", short_help="List firewall ACLs.")
@click.argument("net")
@click.argument("limit", required=False, default=None)
@click.option("--in/--out", "inbound", default=None, help="Only the inbound or outbound rule set.")
@format_option(ACL_FORMATS)
def acl_list(net: str, limit: str | None, inbound: bool | None, formatter: Any) -> None:
    """List the firewall rules of network NET; optionally only those whose description matches LIMIT.

    Formats: pretty, raw (direction|order|rule), json, json-pretty.
    """
    direction = None if inbound is None else ("in" if inbound else "out")
    get_state().emit(_list(f"/network/{_p(net)}/acl", {"limit": limit, "direction": direction}), formatter)


group.add_command(sriov_group)    # pvc network sriov pf|vf ... (pvc.cli.commands.sriov)
