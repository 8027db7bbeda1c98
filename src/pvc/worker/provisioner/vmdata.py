"""The `vm_data` dict a provisioner script receives, built from a profile's documents.

`vm_data` has upstream's shape (the seed's example), so upstream scripts find what they expect:

    ceph_monitor_list    ["hv1.example", ...]   monitor hosts
    ceph_monitor_port    "6789"                 (a string, as upstream)
    ceph_monitor_secret  libvirt secret UUID of the cluster's Ceph key
    mac_template         the network template's MAC template, or None
    networks             [{id, network_template, vni (string), eth_bridge}] in template order;
                         eth_bridge is br<name> for upstream/cluster/storage, else vmbr<vni>
    script               the script's text
    script_arguments     {key: value}: the profile's arguments, overridden by the run's
    system_architecture  `uname -m`
    system_details       the system template document
    volumes              storage template disks ordered by disk_id ({id, storage_template, disk_id,
                         pool, source_volume, disk_size_gb, filesystem, filesystem_args (one
                         space-joined string), mountpoint}); for OVA profiles the OVA's volumes first
    ova_details          the OVA document (OVA profiles only)

The profile and the documents it names are read by pvc.cluster.provisioner.load_profile (the one
reader, shapes in that package); this module only turns them into `vm_data`.
"""

from __future__ import annotations

import os
from typing import Any

from pvc.cluster.provisioner import (
    SPECIAL_NETWORKS,
    ProfileDocs,
    arguments_dict,
    storage_template_view,
    template_network_view,
)

DEFAULT_MON_PORT = 6789


def eth_bridge(vni: str | int) -> str:
    """The host bridge of a template network: br<name> for upstream/cluster/storage, else vmbr<vni>."""
    text = str(vni)
    return f"br{text}" if text in SPECIAL_NETWORKS else f"vmbr{text}"


def network_list(docs: ProfileDocs) -> list[dict[str, Any]]:
    """The template's networks as the API shows them, plus the bridge each NIC joins."""
    if not docs.network:
        return []
    return [{**template_network_view(docs.network, net), "eth_bridge": eth_bridge(net.get("vni"))}
            for net in docs.network.get("networks") or []]


def volume_list(docs: ProfileDocs) -> list[dict[str, Any]]:
    """The OVA's volumes first (each with its OVA's id), then the storage template's disks as the
    API shows them (ordered by disk_id, filesystem_args one space-joined string, as upstream)."""
    volumes: list[dict[str, Any]] = []
    if docs.ova:
        for vol in docs.ova.get("volumes") or []:
            volumes.append({**vol, "ova": docs.ova.get("id")})
    if docs.storage:
        volumes += storage_template_view(docs.storage)["disks"]
    return volumes


def build_vm_data(docs: ProfileDocs, run_args: list[str] | None = None,
                  monitors: list[tuple[str, int]] | None = None, secret: str = "",
                  architecture: str | None = None) -> dict[str, Any]:
    """The vm_data dict (module docstring); pure apart from `uname -m` when not given."""
    arguments = arguments_dict(docs.arguments, "profile arguments")
    arguments.update(arguments_dict(run_args, "arg"))
    hosts = [host for host, _port in monitors or []]
    ports = sorted({port for _host, port in monitors or []})
    data: dict[str, Any] = {
        "ceph_monitor_list": hosts,
        "ceph_monitor_port": str(ports[0] if ports else DEFAULT_MON_PORT),
        "ceph_monitor_secret": secret,
        "mac_template": (docs.network or {}).get("mac_template") or None,
        "networks": network_list(docs),
        "script": docs.script,
        "script_arguments": arguments,
        "system_architecture": architecture or os.uname().machine,
        "system_details": dict(docs.system),
        "volumes": volume_list(docs),
    }
    if docs.ova:
        data["ova_details"] = {k: v for k, v in docs.ova.items() if k != "volumes"}
    return data


def volume_names(vm_name: str, vm_data: dict[str, Any]) -> list[tuple[str, str]]:
    """(pool, `<vm>_<disk_id>`) of every volume the job creates."""
    return [(str(v["pool"]), f"{vm_name}_{v['disk_id']}") for v in vm_data.get("volumes") or []
            if v.get("pool") and v.get("disk_id")]
