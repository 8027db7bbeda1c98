"""Network templates: a VM's networks (VNIs, in the order added) and its MAC address template.

    {id, name, mac_template, ova, networks: [{id, vni}]}
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from pvc.cluster import networks as nets
from pvc.cluster.common import optional_text
from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.store import docs_of, get_doc, matching, ova_ref
from pvc.cluster.provisioner.transactions import create_document, remove_document, update_document
from pvc.cluster.provisioner.validation import check_object_name, flag
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK

SPECIAL_NETWORKS = ("upstream", "cluster", "storage")   # host bridges br<name> (pvc-facts §7.2)
MAC_PREFIX = "52:54:01"


# -- validation (pure) -----------------------------------------------------------------------------

def check_mac_template(value: Any, field: str = "mac_template") -> str | None:
    """A MAC template: a MAC address once {prefix} (52:54:01), {vmid} and {netid} (one hex digit
    each) are filled in, e.g. '{prefix}:ff:ff:{vmid}{netid}'."""
    text = optional_text(value)
    if text is None:
        return None
    try:
        for _literal, name, spec, conversion in string.Formatter().parse(text):
            if name is not None and (name not in ("prefix", "vmid", "netid") or spec or conversion):
                raise ValueError(text)  # only the plain placeholders (no attributes, widths, ...)
        mac = text.format(prefix=MAC_PREFIX, vmid="0", netid="0")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise InvalidInput(f"{field}: '{text[:60]}' is not a MAC template: only {{prefix}}, {{vmid}} and "
                           f"{{netid}} may be filled in (e.g. {{prefix}}:ff:ff:{{vmid}}{{netid}})") from None
    try:
        nets.normalize_mac(mac, field)
    except InvalidInput:
        raise InvalidInput(f"{field}: '{text[:60]}' does not make a unicast MAC address (it gives "
                           f"'{mac[:40]}'; e.g. {{prefix}}:ff:ff:{{vmid}}{{netid}})") from None
    return text


def parse_template_vni(value: Any, field: str = "vni") -> str:
    """A network template's VNI: a PVC network's VNI, or upstream/cluster/storage (host bridges)."""
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: a VNI is required (a network's VNI, or one of "
                           f"{', '.join(SPECIAL_NETWORKS)})")
    if text in SPECIAL_NETWORKS:
        return text
    return str(nets.parse_vni(text, field=field))


def template_network_view(template: Mapping[str, Any], net: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": net.get("id"), "network_template": template.get("id"), "vni": str(net.get("vni"))}


def network_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"), "mac_template": doc.get("mac_template"),
            "ova": doc.get("ova"),
            "networks": [template_network_view(doc, n) for n in doc.get("networks") or []]}


# -- reads -----------------------------------------------------------------------------------------

def get_network_template(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "network_template", name)


def list_network_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [network_template_view(d) for d in matching(docs_of(zk, "network_template"), limit)]


def network_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return network_template_view(get_network_template(zk, name))


def list_template_networks(zk: ZK, template: str) -> list[dict[str, Any]]:
    doc = get_network_template(zk, template)
    return [template_network_view(doc, n) for n in doc.get("networks") or []]


def get_template_network(zk: ZK, template: str, vni: str) -> dict[str, Any]:
    doc = get_network_template(zk, template)
    for net in doc.get("networks") or []:
        if str(net.get("vni")) == str(vni).strip():
            return template_network_view(doc, net)
    raise NotFound(f"The network '{vni}' is not in network template '{template}'.")


# -- writes ----------------------------------------------------------------------------------------

def add_network_template(zk: ZK, name: Any, mac_template: Any = None, ova: Any = None) -> str:
    name = check_object_name(name)
    mac = check_mac_template(mac_template)

    return create_document(zk, "network_template", name, f'Added new network template "{name}".',
                           lambda: {"mac_template": mac, "ova": ova_ref(zk, ova), "networks": []})


def remove_network_template(zk: ZK, name: str) -> str:
    return remove_document(zk, "network_template", name, f'Removed network template "{name}".')


def add_template_network(zk: ZK, template: str, vni: Any, permit_duplicate: Any = False) -> str:
    """Append a network to a network template: the VNI of an existing PVC network (or upstream,
    cluster, storage); each VNI once unless permit_duplicate."""
    text = parse_template_vni(vni)
    duplicate = flag(permit_duplicate, "permit_duplicate", False)

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        if text not in SPECIAL_NETWORKS and not zk.exists(schema.network(int(text))):
            raise InvalidInput(f"vni: the network {text} does not exist (add it with 'pvc network add' "
                               f"first)")
        networks = list(doc.get("networks") or [])
        if not duplicate and any(str(n.get("vni")) == text for n in networks):
            raise Conflict(f"vni: the VNI '{text}' in network template '{template}' already exists "
                           f"(permit_duplicate allows it twice)")
        networks.append({"id": next_id(zk, "network"), "vni": text})
        return {**doc, "networks": networks}

    return update_document(zk, "network_template", template, change,
                           f'Added new network "{text}" to network template "{template}".')


def remove_template_network(zk: ZK, template: str, vni: str) -> str:
    """Remove a VNI from a network template (its last occurrence, if it is there twice)."""
    def change(doc: dict[str, Any]) -> dict[str, Any]:
        networks = list(doc.get("networks") or [])
        found = [i for i, n in enumerate(networks) if str(n.get("vni")) == str(vni).strip()]
        if not found:
            raise NotFound(f"The network '{vni}' is not in network template '{template}'.")
        del networks[found[-1]]
        return {**doc, "networks": networks}

    return update_document(zk, "network_template", template, change,
                           f'Removed network "{vni}" from network template "{template}".')
