"""A profile's documents, and the `vm_data` dict a provisioner script receives.

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

The documents are read straight from ZooKeeper (paths in pvc.core.schema; shapes in the
provisioner data layer, pvc.cluster.provisioner).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.zk import ZK

SPECIAL_BRIDGES = ("upstream", "cluster", "storage")
DEFAULT_MON_PORT = 6789


@dataclass
class ProfileDocs:
    """Everything a job needs from the provisioner's documents."""

    name: str
    profile: dict[str, Any]
    system: dict[str, Any]
    script_name: str
    script: str
    network: dict[str, Any] | None = None
    storage: dict[str, Any] | None = None
    ova: dict[str, Any] | None = None
    userdata: str | None = None
    arguments: list[str] = field(default_factory=list)


def _doc(zk: ZK, path: str) -> dict[str, Any] | None:
    data = zk.get(path, None)
    return data if isinstance(data, dict) else None


def _named(zk: ZK, profile: str, kind: str, path: str, name: str) -> dict[str, Any]:
    doc = _doc(zk, path)
    if doc is None:
        raise InvalidInput(f'Profile "{profile}" names {kind} "{name}", which does not exist.')
    return doc


def load_profile(zk: ZK, name: str) -> ProfileDocs:
    """Read a profile and what it names; a missing piece is a clear error."""
    profile = _doc(zk, schema.profile(name)) if name and "/" not in name else None
    if profile is None:
        raise NotFound(f'Profile "{name}" not found.')
    system_name = profile.get("system_template")
    if not system_name:
        raise InvalidInput(f'Profile "{name}" has no system template.')
    system = _named(zk, name, "system template", schema.system_template(system_name), system_name)
    script_name = profile.get("script")
    if not script_name:
        raise InvalidInput(f'Profile "{name}" has no script.')
    script = _named(zk, name, "script", schema.script(script_name), script_name)
    docs = ProfileDocs(name=name, profile=profile, system=system, script_name=script_name,
                       script=str(script.get("script") or ""), arguments=list(profile.get("arguments") or []))
    if profile.get("network_template"):
        net = profile["network_template"]
        docs.network = _named(zk, name, "network template", schema.network_template(net), net)
    if profile.get("storage_template"):
        disks = profile["storage_template"]
        docs.storage = _named(zk, name, "storage template", schema.storage_template(disks), disks)
    if profile.get("ova"):
        docs.ova = _named(zk, name, "OVA", schema.ova(profile["ova"]), profile["ova"])
    elif profile.get("profile_type") == "ova":
        raise InvalidInput(f'Profile "{name}" is of type ova but names no OVA.')
    if profile.get("userdata"):
        userdata = _doc(zk, schema.userdata(profile["userdata"]))
        docs.userdata = str(userdata.get("userdata") or "") if userdata else None
    return docs


def parse_arguments(items: list[str] | tuple[str, ...] | None, what: str = "arg") -> dict[str, str]:
    """`key=value` items into a dict (later items win); an item without '=' is an error."""
    out: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, str) or "=" not in item:
            raise InvalidInput(f"{what}: '{item}' is not in key=value form")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise InvalidInput(f"{what}: '{item}' has an empty key")
        out[key] = value
    return out


def eth_bridge(vni: str | int) -> str:
    text = str(vni)
    return f"br{text}" if text in SPECIAL_BRIDGES else f"vmbr{text}"


def network_list(docs: ProfileDocs) -> list[dict[str, Any]]:
    if not docs.network:
        return []
    template_id = docs.network.get("id")
    return [{"id": net.get("id"), "network_template": template_id, "vni": str(net.get("vni")),
             "eth_bridge": eth_bridge(net.get("vni"))} for net in docs.network.get("networks") or []]


def _args_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def volume_list(docs: ProfileDocs) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    if docs.ova:
        for vol in docs.ova.get("volumes") or []:
            volumes.append({**vol, "ova": docs.ova.get("id")})
    if docs.storage:
        template_id = docs.storage.get("id")
        disks = sorted(docs.storage.get("disks") or [], key=lambda d: str(d.get("disk_id")))
        for disk in disks:
            volumes.append({
                "id": disk.get("id"), "storage_template": template_id, "disk_id": disk.get("disk_id"),
                "pool": disk.get("pool"), "source_volume": disk.get("source_volume"),
                "disk_size_gb": disk.get("disk_size_gb"), "filesystem": disk.get("filesystem"),
                "filesystem_args": _args_text(disk.get("filesystem_args")),
                "mountpoint": disk.get("mountpoint"),
            })
    return volumes


def build_vm_data(docs: ProfileDocs, run_args: list[str] | None = None,
                  monitors: list[tuple[str, int]] | None = None, secret: str = "",
                  architecture: str | None = None) -> dict[str, Any]:
    """The vm_data dict (module docstring); pure apart from `uname -m` when not given."""
    arguments = parse_arguments(docs.arguments, "profile arguments")
    arguments.update(parse_arguments(run_args, "arg"))
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
