"""Networks: the validated network document, its clashes with the other networks, and
listing, adding, modifying and removing networks (with their ACLs, reservations and leases)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pvc.cluster import vms as vms_mod
from pvc.cluster.common import optional_text
from pvc.cluster.networks.store import (
    find_network,
    get_network,
    name_filter,
    network_docs,
    reservations_of,
    transact,
    version_of,
)
from pvc.cluster.networks.validation import (
    Net4,
    Net6,
    check_description,
    check_dhcp_boot,
    check_domain,
    check_flag,
    check_host,
    check_ip4_network,
    check_ip6_network,
    check_mtu,
    check_name_servers,
    check_nettype,
    check_tftp_root,
    default_domain,
    parse_vni,
)
from pvc.core import netconfig, schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK, TxOp, op_check, op_create, op_delete, op_set

# Fields a bridged network cannot carry: PVC only bridges the VLAN, the guests bring their own IP.
MANAGED_ONLY = ("domain", "name_servers", "ip4_network", "ip4_gateway", "dhcp4", "dhcp4_start", "dhcp4_end",
                "ip6_network", "ip6_gateway", "tftp_root", "dhcp_boot")
# The inputs of a network, named as in the API.
FIELDS = ("vni", "nettype", "description", "mtu", "domain", "name_servers", "ip4_network", "ip4_gateway",
          "dhcp4", "dhcp4_start", "dhcp4_end", "ip6_network", "ip6_gateway", "tftp_root", "dhcp_boot")


# -- the network document (pure) -----------------------------------------------------------------------

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
    dhcp4 = check_flag(values.get("dhcp4"), "dhcp4")
    if nettype == "bridged":
        for field in MANAGED_ONLY:
            value = values.get(field)
            given = (dhcp4 if field == "dhcp4" else bool(check_name_servers(value))
                     if field == "name_servers" else optional_text(value) is not None)
            if given:
                raise InvalidInput(f"{field}: bridged networks carry no IP, DHCP or DNS configuration (PVC "
                                   f"only bridges VLAN {vni} to the VMs); leave it out or use a managed "
                                   f"network")
        return _doc(vni, "bridged", description, mtu)
    domain = check_domain(values.get("domain")) or default_domain(description, vni)
    name_servers = check_name_servers(values.get("name_servers"))
    ip4 = _ip4_config(values, dhcp4)
    ip6: dict[str, Any] = {"network": None, "gateway": None, "dhcp_flag": False}
    gateway6 = optional_text(values.get("ip6_gateway"))
    if optional_text(values.get("ip6_network")):
        net6 = check_ip6_network(values["ip6_network"])
        gw6 = check_host(gateway6, net6, "ip6_gateway") if gateway6 else str(net6.network_address + 1)
        ip6.update(network=str(net6), gateway=gw6, dhcp_flag=True)
    elif gateway6 is not None:
        raise InvalidInput("ip6_gateway: needs an IPv6 network (give ip6_network)")
    doc = _doc(vni, "managed", description, mtu, domain, name_servers, ip4, ip6)
    doc.update(_tftp(values, ip4, ip6))
    return doc


def _tftp(values: Mapping[str, Any], ip4: Mapping[str, Any], ip6: Mapping[str, Any]) -> dict[str, Any]:
    """`tftp_root` and `dhcp_boot`, only when set (so documents without TFTP keep upstream's
    shape): a root needs a gateway to serve on, a boot file needs the root and DHCPv4."""
    root, boot = check_tftp_root(values.get("tftp_root")), check_dhcp_boot(values.get("dhcp_boot"))
    out: dict[str, Any] = {}
    if root is not None:
        if not (ip4.get("gateway") or ip6.get("gateway")):
            raise InvalidInput("tftp_root: TFTP is served on the network's gateway; give it an IPv4 or IPv6 "
                               "network first")
        out["tftp_root"] = root
    if boot is not None:
        if root is None:
            raise InvalidInput("dhcp_boot: the boot file is served from the network's TFTP root (give "
                               "tftp_root)")
        if not ip4.get("dhcp_flag"):
            raise InvalidInput("dhcp_boot: the boot file is named by DHCPv4 (enable dhcp4)")
        out["dhcp_boot"] = boot
    return out


def check_tftp_on_host(doc: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> None:
    """A new or changed TFTP root must be a directory here (the API runs on the primary, whose
    dnsmasq serves it) that does not resolve out of the confined trees; every node checks
    again before its dnsmasq serves it."""
    root = doc.get("tftp_root")
    if not root or (before is not None and before.get("tftp_root") == root):
        return
    if not os.path.isdir(root):
        raise InvalidInput(f"tftp_root: {root} is not a directory on this node; create it (on every node, "
                           f"since the primary serves it) first")
    try:
        netconfig.tftp_root_on_host(root, os.path.realpath(root))
    except ValueError as exc:
        raise InvalidInput(f"tftp_root: {exc}") from None


def _ip4_config(values: Mapping[str, Any], dhcp4: bool) -> dict[str, Any]:
    """The `ip4` part of a managed network: network, gateway inside it, a DHCP range that is
    inside it and does not contain the gateway; nothing IPv4 without a network."""
    ip4: dict[str, Any] = {"network": None, "gateway": None, "dhcp_flag": dhcp4, "dhcp_start": None,
                           "dhcp_end": None}
    net4 = check_ip4_network(values["ip4_network"]) if optional_text(values.get("ip4_network")) else None
    gateway4 = optional_text(values.get("ip4_gateway"))
    start, end = optional_text(values.get("dhcp4_start")), optional_text(values.get("dhcp4_end"))
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
    return ip4


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
            "ip6_gateway": ip6.get("gateway"), "tftp_root": doc.get("tftp_root"),
            "dhcp_boot": doc.get("dhcp_boot")}


def merge_changes(doc: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a modification: the stored values with `changes` over them.

    Only given fields change; "" clears a field (upstream CLI: `--ipnet ""`). Clearing a network
    also clears what depends on it unless given too (its gateway; for IPv4 the DHCP range); a new
    IPv6 network without a gateway gets the default gateway again (upstream).
    """
    if "nettype" in changes and optional_text(changes["nettype"]) not in (None, doc.get("type")):
        raise InvalidInput(f"nettype: a network's type cannot be changed ({doc.get('type')}); remove the "
                           f"network and add it again as {changes['nettype']}")
    if "vni" in changes and optional_text(changes["vni"]) not in (None, str(doc.get("vni"))):
        raise InvalidInput("vni: a network's VNI cannot be changed; remove it and add it again")
    values = doc_values(doc)
    given = {k: v for k, v in changes.items()
             if k in FIELDS and k not in ("vni", "nettype") and v is not None}
    values.update(given)
    if "ip4_network" in given and optional_text(given["ip4_network"]) is None:
        for field in ("ip4_gateway", "dhcp4_start", "dhcp4_end"):
            values[field] = given.get(field)
        values["dhcp4"] = given.get("dhcp4", False)
    if "ip6_network" in given:
        values["ip6_gateway"] = given.get("ip6_gateway")
    if "tftp_root" in given and optional_text(given["tftp_root"]) is None:
        values["dhcp_boot"] = given.get("dhcp_boot")       # no root: no boot file from it
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


# -- reading ---------------------------------------------------------------------------------------------

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
        **{k: doc[k] for k in ("tftp_root", "dhcp_boot") if doc.get(k)},    # PVC's own, only when set
    }


def list_networks(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """Network items whose VNI or description matches limit (fuzzy regex), sorted by VNI."""
    keep = name_filter(limit)
    docs = [d for vni, d in network_docs(zk).items() if keep(vni) or keep(str(d.get("description", "")))]
    return [network_view(d) for d in sorted(docs, key=lambda d: int(d.get("vni", 0)))]


def network_item(zk: ZK, net: str) -> dict[str, Any]:
    """One network item by VNI or description (GET /network/<x>)."""
    try:
        return network_view(get_network(zk, net))
    except NotFound:
        raise NotFound("Network not found.") from None


def network_users(zk: ZK, vni: int, fresh: bool = False) -> list[str]:
    """Names of the VMs with an interface on the network's bridge vmbr<vni>.

    fresh=True for a check that guards a write (read from ZooKeeper, not the API's watch cache,
    which may not show a VM defined a moment ago; vms.load_entries); displays may leave it off.
    """
    users = []
    for entry in vms_mod.load_entries(zk, fresh=fresh):
        for nic in vms_mod.record_summary(entry.record).get("networks", []):
            if nic.get("type") not in ("direct", "hostdev") and str(nic.get("vni")) == str(vni):
                users.append(entry.record.name)
                break
    return sorted(users)


# -- writing ---------------------------------------------------------------------------------------------

def _parent(zk: ZK) -> int:
    version = version_of(zk, schema.NETWORKS)
    if version is None:
        zk.ensure(schema.NETWORKS)
        version = version_of(zk, schema.NETWORKS) or 0
    return version


def _aux_ops(zk: ZK, vni: int) -> list[TxOp]:
    """Create the network's ACL document and reservation/lease parents, replacing leftovers (a
    lease the dnsmasq hook wrote just after an earlier network with this VNI was removed)."""
    ops: list[TxOp] = []
    empty_acls = {"in": [], "out": []}
    if zk.exists(schema.network_acls(vni)):
        ops.append(op_set(schema.network_acls(vni), empty_acls))
    else:
        ops.append(op_create(schema.network_acls(vni), empty_acls))
    for parent in (schema.network_reservations(vni), schema.network_leases(vni)):
        if zk.exists(parent):
            ops += [op_delete(f"{parent}/{child}") for child in zk.children(parent)]
        else:
            ops.append(op_create(parent))
    return ops


def add_network(zk: ZK, vni: Any, description: Any, nettype: Any, mtu: Any = None, domain: Any = None,
                name_servers: Any = None, ip4_network: Any = None, ip4_gateway: Any = None,
                ip6_network: Any = None, ip6_gateway: Any = None, dhcp4: Any = False,
                dhcp4_start: Any = None, dhcp4_end: Any = None, tftp_root: Any = None,
                dhcp_boot: Any = None) -> str:
    """Add a network (with its empty ACLs, reservations and leases) in one transaction."""
    values = {"vni": vni, "description": description, "nettype": nettype, "mtu": mtu, "domain": domain,
              "name_servers": name_servers, "ip4_network": ip4_network, "ip4_gateway": ip4_gateway,
              "ip6_network": ip6_network, "ip6_gateway": ip6_gateway, "dhcp4": dhcp4,
              "dhcp4_start": dhcp4_start, "dhcp4_end": dhcp4_end, "tftp_root": tftp_root,
              "dhcp_boot": dhcp_boot}
    doc = network_doc(values)
    check_tftp_on_host(doc)

    def plan() -> tuple[list[TxOp], str]:
        version = _parent(zk)
        check_cluster(doc, network_docs(zk).values())
        ops = [op_set(schema.NETWORKS, None, version), op_create(schema.network(doc["vni"]), doc),
               *_aux_ops(zk, doc["vni"])]
        return ops, f'Network "{doc["description"]}" added successfully!'

    return transact(zk, plan)


def modify_network(zk: ZK, net: str | int, **changes: Any) -> str:
    """Change the given fields of a network (None = keep, "" = clear); the result is validated as
    a whole, against the other networks and the network's DHCP reservations."""
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))}: not a network field")

    def plan() -> tuple[list[TxOp], str]:
        version = _parent(zk)
        docs = network_docs(zk)
        found = find_network(docs, str(net))
        if found is None:
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        key, current = found
        vni = int(current["vni"])
        doc = network_doc(merge_changes(current, changes))
        check_tftp_on_host(doc, current)
        check_cluster(doc, [d for k, d in docs.items() if k != key])
        reservations_version = version_of(zk, schema.network_reservations(vni))
        _check_reservations(zk, vni, doc)
        if doc == current:
            return [], f'Network "{vni}" is unchanged.'
        ops = [op_set(schema.NETWORKS, None, version), op_set(schema.network(vni), doc)]
        if reservations_version is not None:
            ops.append(op_check(schema.network_reservations(vni), reservations_version))
        return ops, f'Network "{vni}" modified successfully!'

    return transact(zk, plan)


def _check_reservations(zk: ZK, vni: int, doc: Mapping[str, Any]) -> None:
    """A network change must keep every DHCP reservation usable: inside the IPv4 network, not its
    gateway (dnsmasq would refuse or hand out a wrong address)."""
    reservations = reservations_of(zk, vni)
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

    def plan() -> tuple[list[TxOp], str]:
        version = _parent(zk)
        found = find_network(network_docs(zk), str(net))
        if found is None:
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        key, doc = found
        vni = int(doc["vni"])
        users = network_users(zk, vni, fresh=True)
        if users:
            names = ", ".join(f'"{u}"' for u in users)
            raise Conflict(f"Cannot remove network {vni}: VM{'s' if len(users) > 1 else ''} {names} "
                           f"{'have' if len(users) > 1 else 'has'} an interface on it (vmbr{vni}); remove "
                           f"{'them' if len(users) > 1 else 'it'} from the VM first.")
        ops: list[TxOp] = [op_set(schema.NETWORKS, None, version), op_delete(schema.network(key))]
        if zk.exists(schema.network_acls(vni)):
            ops.append(op_delete(schema.network_acls(vni)))
        for parent in (schema.network_reservations(vni), schema.network_leases(vni)):
            if zk.exists(parent):
                ops += [op_delete(f"{parent}/{child}") for child in zk.children(parent)]
                ops.append(op_delete(parent))
        return ops, f'Network "{doc.get("description")}" removed successfully!'

    return transact(zk, plan)
