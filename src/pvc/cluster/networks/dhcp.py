"""DHCP reservations (/netreservations/<vni>/<mac>, written here) and leases (/netleases/<vni>/<mac>,
written by the primary's dnsmasq hook) of managed networks."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pvc.cluster.common import optional_text
from pvc.cluster.networks.store import (
    get_network,
    managed_vni,
    name_filter,
    reservations_of,
    transact,
    version_of,
)
from pvc.cluster.networks.validation import check_host, check_hostname, normalize_mac
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK, TxOp, op_check, op_create, op_delete, op_set

STATIC = "static"                     # the timestamp of a reservation in lease lists (upstream)


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
    keep = name_filter(limit)
    items = [lease_view(m, d, True) for m, d in sorted(reservations_of(zk, vni).items())]
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
    if optional_text(ipaddress_) is None:
        raise InvalidInput("ipaddress: an IPv4 address is required")
    host = check_hostname(hostname)

    def plan() -> tuple[list[TxOp], str]:
        found = zk.get_doc(schema.network(int(get_network(zk, net)["vni"])))
        if found is None or not isinstance(found.data, dict):
            raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
        doc = found.data
        vni = managed_vni(doc, "DHCP")
        ip4 = doc.get("ip4") or {}
        if not ip4.get("network"):
            raise Conflict(f"Network {vni} has no IPv4 network: DHCP reservations need one.")
        network = ipaddress.ip_network(ip4["network"])
        address = check_host(ipaddress_, network, "ipaddress")
        if address == ip4.get("gateway"):
            raise InvalidInput(f"ipaddress: {address} is the gateway of network {vni}")
        parent = schema.network_reservations(vni)
        parent_version = version_of(zk, parent)
        reservations = reservations_of(zk, vni)
        if mac in reservations:
            raise Conflict(f'macaddress: a reservation with MAC "{mac}" already exists in network {vni} '
                           f"({reservations[mac].get('ip4_address')}).")
        for other, res in sorted(reservations.items()):
            if res.get("ip4_address") == address:
                raise Conflict(f"ipaddress: {address} is already reserved for {other} in network {vni}.")
        reservation = {"mac_address": mac, "ip4_address": address, "hostname": host}
        ops = [op_check(schema.network(vni), found.version)]
        ops.append(op_create(parent) if parent_version is None else op_set(parent, None, parent_version))
        ops.append(op_create(schema.network_reservation(vni, mac), reservation))
        return ops, f'DHCP reservation "{mac}" added successfully!'

    return transact(zk, plan)


def remove_lease(zk: ZK, net: str, match: str) -> str:
    """Remove the reservation, or else the dynamic lease, whose MAC, host name or address is
    `match` (upstream); several matches of one kind are refused as ambiguous."""

    def plan() -> tuple[list[TxOp], str]:
        doc = get_network(zk, net)
        vni = int(doc["vni"])
        try:
            mac = normalize_mac(match)
        except InvalidInput:
            mac = None
        for kind, parent, entries in (("static reservation", schema.network_reservations(vni),
                                       reservations_of(zk, vni)),
                                      ("dynamic lease", schema.network_leases(vni), _leases(zk, vni))):
            hits = sorted(m for m, d in entries.items()
                          if m == mac or match in (d.get("hostname"), d.get("ip4_address")))
            if len(hits) > 1:
                raise Conflict(f'"{match}" matches several {kind}s in network {vni} ({", ".join(hits)}); '
                               f"give the MAC address.")
            if hits:
                ops: list[TxOp] = [op_delete(f"{parent}/{hits[0]}")]
                if kind == "static reservation":
                    ops.insert(0, op_set(parent, None, version_of(zk, parent) or 0))
                return ops, f'DHCP {kind} "{hits[0]}" removed successfully!'
        raise NotFound(f'No DHCP reservation or lease exists matching "{match}" in network {vni}.')

    return transact(zk, plan)
