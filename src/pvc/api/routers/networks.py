"""Network routes (pvc-facts §8.3 "Networks"): client networks, their DHCP reservations and leases,
and their firewall ACLs.

Decisions and writes live in pvc.cluster.networks; these routes parse inputs, call it and shape
answers as PVC clients expect (element GETs are one-element arrays, an empty list is a 404). The
network in the URL may be given by VNI or by description (pvc-facts §13.14). New ACL rules are
checked by the real `nft --check` (in a throwaway table; nothing is applied) through `get_nft`,
which tests replace with `app.dependency_overrides[get_nft]`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field, WithJsonSchema

from pvc.adapters.network import LinuxNftables, Nftables
from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Doc, Message
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import networks as nets
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.zk import ZK

router = APIRouter(prefix="/network", tags=["network"], dependencies=[Depends(require_auth)])

NOT_FOUND = (404,)
NetType = Literal["managed", "bridged"]
Direction = Literal["in", "out"]
# An MTU arrives as text: upstream's CLI sends `mtu=""` for "not set" (and "" resets it on PUT).
Mtu = Annotated[str | None, WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": nets.MTU_MIN, "maximum": nets.MTU_MAX},
    {"type": "string", "maxLength": 0}]})]

MANAGED = ' ("managed" networks only)'
CLEAR = '; on PUT an empty value removes it'
HELP = {
    "vni": f"The VNI of the network: {nets.VNI_MIN}..{nets.VNI_MAX} (managed: the VXLAN id), "
           f"{nets.VLAN_MIN}..{nets.VLAN_MAX} for bridged networks (the 802.1Q VLAN id)",
    "description": "The description (name) of the network: unique, letters, digits, '.', '_', '-', not only "
                   "digits",
    "nettype": "The type of network: managed (VXLAN with gateway, DHCP, DNS and ACLs) or bridged (a VLAN "
               "bridged to the VMs)",
    "mtu": f"The MTU of the network ({nets.MTU_MIN}..{nets.MTU_MAX}); empty: the underlying device's MTU",
    "domain": "The DNS domain of the network [default: <description>.local]" + MANAGED,
    "name_servers": "DNS name servers (IP addresses) of the network's NS records: repeat the key or give a "
                    "comma-separated list" + MANAGED,
    "ip4_network": "The IPv4 network in CIDR form, /8 to /30; IPv4 is disabled if unset" + MANAGED,
    "ip4_gateway": "The IPv4 gateway address (required with ip4_network)" + MANAGED,
    "dhcp4": "Whether to enable DHCPv4 (needs ip4_network, dhcp4_start and dhcp4_end)" + MANAGED,
    "dhcp4_start": "The first address of the DHCPv4 range, inside ip4_network" + MANAGED,
    "dhcp4_end": "The last address of the DHCPv4 range, inside ip4_network" + MANAGED,
    "ip6_network": "The IPv6 network in CIDR form, a /64; DHCPv6 and router advertisements are always on for "
                   "it; IPv6 is disabled if unset" + MANAGED,
    "ip6_gateway": "The IPv6 gateway address [default: the network's ::1]" + MANAGED,
    "tftp_root": "A directory the network's gateway serves read-only over TFTP (PXE): absolute, below /srv "
                 "or /var/lib/tftpboot, existing on the nodes; world-readable files only" + MANAGED,
    "dhcp_boot": "The boot file DHCPv4 names (option 67), relative to tftp_root" + MANAGED,
}
LIMIT_HELP = "A regex on the {what}; fuzzy unless anchored with ^ or $"
ORDER_HELP = ("The position of the rule in its chain (0 is the first; later rules move down) [default: the "
              "end]")
RULE_HELP = ("The nft rule (one rule, e.g. 'tcp dport 22 ct state new accept'), checked with `nft --check` "
             "before it is stored")


def get_nft() -> Nftables:
    """Dependency: the nftables adapter whose `check` validates ACL rule text (`nft --check`)."""
    return LinuxNftables()


# -- response shapes ---------------------------------------------------------------------------------

class NetworkIp4(Doc):
    network: str = Field(description="The IPv4 network in CIDR form; 'None' if none")
    gateway: str = Field(description="The IPv4 gateway address; 'None' if none")
    dhcp_flag: Literal["True", "False"] = Field(description="Whether DHCPv4 is enabled")
    dhcp_start: str = Field(description="The first address of the DHCPv4 range; 'None' if none")
    dhcp_end: str = Field(description="The last address of the DHCPv4 range; 'None' if none")


class NetworkIp6(Doc):
    network: str = Field(description="The IPv6 network in CIDR form; 'None' if none")
    gateway: str = Field(description="The IPv6 gateway address; 'None' if none")
    dhcp_flag: Literal["True", "False"] = Field(description="Whether DHCPv6 is enabled (always, with an IPv6 "
                                                            "network)")


class Network(Doc):
    vni: int
    description: str
    type: NetType
    mtu: str = Field(description="The MTU if set (digits); empty: the underlying device's MTU")
    domain: str = Field(description="The DNS domain (managed networks); empty if none")
    name_servers: list[str]
    ip4: NetworkIp4
    ip6: NetworkIp6
    tftp_root: str | None = Field(None, description="PVC only, present when set: the TFTP root")
    dhcp_boot: str | None = Field(None, description="PVC only, present when set: the DHCP boot file")


def _text(value: Any) -> str:
    return "None" if value in (None, "") else str(value)


def wire_network(item: dict[str, Any]) -> dict[str, Any]:
    """A network item in upstream's wire types: upstream's client formats these fields with a width
    (None crashes it) and tests `dhcp_flag == "True"` and `network != "None"`, as upstream sends
    them: the MTU is text ("" when unset), unset addresses are "None", the flags "True"/"False"."""
    ip4, ip6 = item.get("ip4") or {}, item.get("ip6") or {}
    mtu = item.get("mtu")
    return {
        **item,
        "mtu": "" if mtu in (None, "") else str(mtu),
        "domain": item.get("domain") or "",
        "ip4": {**ip4, **{k: _text(ip4.get(k)) for k in ("network", "gateway", "dhcp_start", "dhcp_end")},
                "dhcp_flag": str(bool(ip4.get("dhcp_flag")))},
        "ip6": {**ip6, **{k: _text(ip6.get(k)) for k in ("network", "gateway")},
                "dhcp_flag": str(bool(ip6.get("dhcp_flag")))},
    }


class Lease(Doc):
    hostname: str = Field(description="The host name; empty if none")
    ip4_address: str
    mac_address: str
    timestamp: int | Literal["static"] = Field(description="'static' for a reservation; the expiry (UNIX "
                                                           "time) of a dynamic lease")


class ACL(Doc):
    direction: Direction
    order: int = Field(description="The position of the rule in its chain, from 0")
    description: str
    rule: str = Field(description="The nft rule text")


# -- inputs ------------------------------------------------------------------------------------------

class LimitInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="VNI or description"))


class NetworkElementAddInputs(Inputs):
    description: str = Field(description=HELP["description"])
    nettype: NetType = Field(description=HELP["nettype"])
    mtu: Mtu = Field(None, description=HELP["mtu"])
    domain: str | None = Field(None, description=HELP["domain"])
    name_servers: list[str] = Field(default_factory=list, description=HELP["name_servers"])
    ip4_network: str | None = Field(None, description=HELP["ip4_network"])
    ip4_gateway: str | None = Field(None, description=HELP["ip4_gateway"])
    dhcp4: Bool = Field(False, description=HELP["dhcp4"])
    dhcp4_start: str | None = Field(None, description=HELP["dhcp4_start"])
    dhcp4_end: str | None = Field(None, description=HELP["dhcp4_end"])
    ip6_network: str | None = Field(None, description=HELP["ip6_network"])
    ip6_gateway: str | None = Field(None, description=HELP["ip6_gateway"])
    tftp_root: str | None = Field(None, description=HELP["tftp_root"])
    dhcp_boot: str | None = Field(None, description=HELP["dhcp_boot"])


class NetworkAddInputs(NetworkElementAddInputs):
    vni: int = Field(description=HELP["vni"])


class NetworkModifyInputs(Inputs):
    description: str | None = Field(None, description=HELP["description"])
    nettype: NetType | None = Field(None, description="The type of the network; it cannot be changed (given "
                                                      "only to check it)")
    mtu: Mtu = Field(None, description=HELP["mtu"])
    domain: str | None = Field(None, description=HELP["domain"] + "; empty: the default")
    name_servers: list[str] | None = Field(None, description=HELP["name_servers"] + "; an empty value "
                                                                                     "removes them")
    ip4_network: str | None = Field(None, description=HELP["ip4_network"] + CLEAR + " (with its gateway "
                                                                                 "and DHCP range)")
    ip4_gateway: str | None = Field(None, description=HELP["ip4_gateway"])
    dhcp4: Bool | None = Field(None, description=HELP["dhcp4"])
    dhcp4_start: str | None = Field(None, description=HELP["dhcp4_start"])
    dhcp4_end: str | None = Field(None, description=HELP["dhcp4_end"])
    ip6_network: str | None = Field(None, description=HELP["ip6_network"] + CLEAR)
    ip6_gateway: str | None = Field(None, description=HELP["ip6_gateway"])
    tftp_root: str | None = Field(None, description=HELP["tftp_root"] + CLEAR + " (with dhcp_boot)")
    dhcp_boot: str | None = Field(None, description=HELP["dhcp_boot"] + CLEAR)


class LeaseListInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="MAC address, host name or address"))
    static: Bool = Field(False, description="Only static reservations, no dynamic leases")


class LeaseAddInputs(Inputs):
    macaddress: str = Field(description="The MAC address of the host (e.g. 52:54:00:12:34:56)")
    ipaddress: str = Field(description="The reserved IPv4 address, inside the network's IPv4 network")
    hostname: str | None = Field(None, description="The host name handed out with the address (a DNS label)")


class LeaseElementAddInputs(Inputs):
    ipaddress: str = Field(description="The reserved IPv4 address, inside the network's IPv4 network")
    hostname: str | None = Field(None, description="The host name handed out with the address (a DNS label)")
    macaddress: str | None = Field(None, description="The MAC address; if given, it must be the one in the "
                                                     "path")


class AclListInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="rule description"))
    direction: Direction | None = Field(None, description="Only the rules of this direction [default: both]")


class AclElementAddInputs(Inputs):
    direction: Direction = Field("in", description="The chain: in (to the network) or out (from it)")
    order: int | None = Field(None, ge=0, description=ORDER_HELP)
    rule: str = Field(description=RULE_HELP)


class AclAddInputs(AclElementAddInputs):
    description: str = Field(description="The name of the rule: unique in the network (both directions), "
                                          "letters, digits, '.', '_', '-'")


def _listing(items: list[dict[str, Any]], thing: str) -> JSONResponse:
    if not items:
        raise NotFound(f"{thing} not found.")
    return ok(items)


def _add(zk: ZK, vni: Any, params: NetworkElementAddInputs) -> str:
    return nets.add_network(zk, vni, params.description, params.nettype, mtu=params.mtu, domain=params.domain,
                            name_servers=params.name_servers, ip4_network=params.ip4_network,
                            ip4_gateway=params.ip4_gateway, ip6_network=params.ip6_network,
                            ip6_gateway=params.ip6_gateway, dhcp4=params.dhcp4,
                            dhcp4_start=params.dhcp4_start, dhcp4_end=params.dhcp4_end,
                            tftp_root=params.tftp_root, dhcp_boot=params.dhcp_boot)


# -- networks ----------------------------------------------------------------------------------------

@router.get("", summary="Return a list of networks", responses=responses(list[Network], 200, *NOT_FOUND))
def network_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing([wire_network(n) for n in nets.list_networks(zk, params.limit)], "Network")


@router.post("", summary="Create a new network", responses=responses(Message, 200))
def network_add(params: NetworkAddInputs = inputs(NetworkAddInputs), zk: ZK = Depends(get_zk)
                ) -> JSONResponse:
    return message(_add(zk, params.vni, params))


@router.get("/{vni}", summary="Return information about network {vni} (by VNI or description; a one-element "
                              "array)",
            responses=responses(list[Network], 200, *NOT_FOUND))
def network_get(vni: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([wire_network(nets.network_item(zk, vni))])


@router.post("/{vni}", summary="Create the new network {vni}", responses=responses(Message, 200))
def network_add_named(vni: str, params: NetworkElementAddInputs = inputs(NetworkElementAddInputs),
                      zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(_add(zk, vni, params))


@router.put("/{vni}", summary="Update details of network {vni}: only the given fields change (its type "
                              "cannot)",
            responses=responses(Message, 200, *NOT_FOUND))
def network_modify(vni: str, params: NetworkModifyInputs = inputs(NetworkModifyInputs),
                   zk: ZK = Depends(get_zk)) -> JSONResponse:
    changes = {name: getattr(params, name) for name in NetworkModifyInputs.model_fields}
    return message(nets.modify_network(zk, vni, **changes))


@router.delete("/{vni}", summary="Remove network {vni} with its ACLs, reservations and leases (not while a "
                                 "VM uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def network_remove(vni: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(nets.remove_network(zk, vni))


# -- DHCP leases and reservations ----------------------------------------------------------------------

@router.get("/{vni}/lease", summary="Return a list of DHCP reservations and leases in network {vni}",
            responses=responses(list[Lease], 200, *NOT_FOUND))
def lease_list(vni: str, params: LeaseListInputs = inputs(LeaseListInputs),
               zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(nets.list_leases(zk, vni, params.limit, params.static), "Lease")


@router.post("/{vni}/lease", summary="Create a new static DHCP reservation in network {vni}",
             responses=responses(Message, 200, *NOT_FOUND))
def lease_add(vni: str, params: LeaseAddInputs = inputs(LeaseAddInputs), zk: ZK = Depends(get_zk)
              ) -> JSONResponse:
    return message(nets.add_reservation(zk, vni, params.macaddress, params.ipaddress, params.hostname))


@router.get("/{vni}/lease/{mac}", summary="Return the DHCP reservation or lease of {mac} in network {vni} "
                                          "(a one-element array)",
            responses=responses(list[Lease], 200, *NOT_FOUND))
def lease_get(vni: str, mac: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([nets.get_lease(zk, vni, mac)])


@router.post("/{vni}/lease/{mac}", summary="Create a new static DHCP reservation for {mac} in network {vni}",
             responses=responses(Message, 200, *NOT_FOUND))
def lease_add_named(vni: str, mac: str, params: LeaseElementAddInputs = inputs(LeaseElementAddInputs),
                    zk: ZK = Depends(get_zk)) -> JSONResponse:
    if params.macaddress and nets.normalize_mac(params.macaddress) != nets.normalize_mac(mac, "mac"):
        raise InvalidInput(f"macaddress: '{params.macaddress}' is not the MAC address in the path ('{mac}')")
    return message(nets.add_reservation(zk, vni, mac, params.ipaddress, params.hostname))


@router.delete("/{vni}/lease/{mac}", summary="Remove the DHCP reservation, else the dynamic lease, matching "
                                             "{mac} (a MAC address, host name or IP address)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def lease_remove(vni: str, mac: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(nets.remove_lease(zk, vni, mac))


# -- ACLs --------------------------------------------------------------------------------------------

@router.get("/{vni}/acl", summary="Return a list of the firewall ACLs of network {vni}",
            responses=responses(list[ACL], 200, *NOT_FOUND))
def acl_list(vni: str, params: AclListInputs = inputs(AclListInputs), zk: ZK = Depends(get_zk)
             ) -> JSONResponse:
    return _listing(nets.list_acls(zk, vni, params.limit, params.direction), "ACL")


@router.post("/{vni}/acl", summary="Create a new firewall ACL in network {vni} (managed networks)",
             responses=responses(Message, 200, *NOT_FOUND))
def acl_add(vni: str, params: AclAddInputs = inputs(AclAddInputs), zk: ZK = Depends(get_zk),
            nft: Nftables = Depends(get_nft)) -> JSONResponse:
    return message(nets.add_acl(zk, vni, params.description, params.rule, nft, params.direction,
                                params.order))


@router.get("/{vni}/acl/{description}", summary="Return the firewall ACL {description} of network {vni} (a "
                                                "one-element array)",
            responses=responses(list[ACL], 200, *NOT_FOUND))
def acl_get(vni: str, description: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([nets.get_acl(zk, vni, description)])


@router.post("/{vni}/acl/{description}", summary="Create the new firewall ACL {description} in network {vni} "
                                                 "(managed networks)",
             responses=responses(Message, 200, *NOT_FOUND))
def acl_add_named(vni: str, description: str, params: AclElementAddInputs = inputs(AclElementAddInputs),
                  zk: ZK = Depends(get_zk), nft: Nftables = Depends(get_nft)) -> JSONResponse:
    return message(nets.add_acl(zk, vni, description, params.rule, nft, params.direction, params.order))


@router.delete("/{vni}/acl/{description}", summary="Remove the firewall ACL {description} from network {vni}",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def acl_remove(vni: str, description: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(nets.remove_acl(zk, vni, description))
