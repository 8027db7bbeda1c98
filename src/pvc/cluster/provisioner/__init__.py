"""Provisioner data (pvc-facts §7, §8.3 "Provisioner"): templates, userdata, scripts, profiles, OVAs.

Everything lives in ZooKeeper (DESIGN D1), one JSON document per object (paths in core.schema),
one module per document kind (each module's docstring gives its document's shape):

    system_templates   vCPUs, memory, consoles, placement and migration metadata
    network_templates  networks (VNIs in order added) and a MAC template
    storage_templates  disks (pool, size or clone source, filesystem, mountpoint)
    userdata           cloud-init documents ("empty" always exists and cannot be removed)
    scripts            provisioning scripts (class VMBuilderScript(VMBuilder))
    documents          what userdata and scripts share: TextDocuments (USERDATA, SCRIPTS)
    profiles           what a job combines; `load_profile` reads one with all it names
    ovas               uploaded OVA images (the upload itself is pvc.cluster.ova)

and what they share: validation (single values), ids (integer ids from one sequence znode per
kind under schema.PROVISIONER_IDS, as upstream's API shows them), store (paths and reads) and
transactions (the create, update and remove every kind makes). Every operation validates all of
its input first and writes nothing when it refuses (InvalidInput/Conflict -> 400, NotFound -> 404,
each message naming the field). Writes are single transactions that also bump the data version of
/provisioner, so concurrent writers serialise: a profile cannot be added with a template that is
being removed.
"""

from __future__ import annotations

from typing import Any

from pvc.cluster.provisioner.documents import TextDocuments
from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.network_templates import (
    MAC_PREFIX,
    SPECIAL_NETWORKS,
    add_network_template,
    add_template_network,
    check_mac_template,
    get_network_template,
    get_template_network,
    list_network_templates,
    list_template_networks,
    network_template_item,
    network_template_view,
    parse_template_vni,
    remove_network_template,
    remove_template_network,
    template_network_view,
)
from pvc.cluster.provisioner.ovas import get_ova, list_ovas, ova_item, ova_view, remove_ova
from pvc.cluster.provisioner.profiles import (
    NA,
    PROFILE_FIELDS,
    PROFILE_REFS,
    PROFILE_TYPES,
    ProfileDocs,
    add_profile,
    arguments_dict,
    check_profile_type,
    get_profile,
    list_profiles,
    load_profile,
    modify_profile,
    parse_arguments,
    profile_item,
    profile_values,
    profile_view,
    remove_profile,
)
from pvc.cluster.provisioner.scripts import SCRIPTS, check_script
from pvc.cluster.provisioner.storage_templates import (
    DISK_MAX_GB,
    DISK_MIN_GB,
    FILESYSTEMS,
    add_storage_template,
    add_template_disk,
    check_disk_id,
    check_disks,
    check_filesystem,
    check_mountpoint,
    disk_doc,
    get_storage_template,
    get_template_disk,
    list_storage_templates,
    list_template_disks,
    parse_filesystem_args,
    remove_storage_template,
    remove_template_disk,
    storage_template_item,
    storage_template_view,
    template_disk_view,
)
from pvc.cluster.provisioner.store import PATHS, WHAT, profiles_using
from pvc.cluster.provisioner.system_templates import (
    DOWNTIME_DEFAULT,
    DOWNTIME_MAX,
    SYSTEM_FIELDS,
    VCPU_MAX,
    VCPU_MIN,
    VRAM_MAX,
    VRAM_MIN,
    add_system_template,
    check_migration_method,
    check_node_selector,
    check_vnc_bind,
    get_system_template,
    list_system_templates,
    modify_system_template,
    parse_node_limit,
    remove_system_template,
    system_template_inputs,
    system_template_item,
    system_template_values,
    system_template_view,
)
from pvc.cluster.provisioner.userdata import EMPTY, USERDATA, check_userdata, ensure_empty_userdata
from pvc.cluster.provisioner.validation import TEXT_MAX, check_object_name
from pvc.core.zk import ZK


def list_templates(zk: ZK, limit: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """GET /provisioner/template: the three lists (keys with underscores, as upstream's code)."""
    return {"system_templates": list_system_templates(zk, limit),
            "network_templates": list_network_templates(zk, limit),
            "storage_templates": list_storage_templates(zk, limit)}


__all__ = [
    "DISK_MAX_GB", "DISK_MIN_GB", "DOWNTIME_DEFAULT", "DOWNTIME_MAX", "EMPTY", "FILESYSTEMS", "MAC_PREFIX",
    "NA", "PATHS", "PROFILE_FIELDS", "PROFILE_REFS", "PROFILE_TYPES", "SCRIPTS", "SPECIAL_NETWORKS",
    "SYSTEM_FIELDS", "TEXT_MAX", "USERDATA", "VCPU_MAX", "VCPU_MIN", "VRAM_MAX", "VRAM_MIN", "WHAT",
    "ProfileDocs", "TextDocuments", "add_network_template", "add_profile", "add_storage_template",
    "add_system_template", "add_template_disk", "add_template_network", "arguments_dict", "check_disk_id",
    "check_disks", "check_filesystem", "check_mac_template", "check_migration_method", "check_mountpoint",
    "check_node_selector", "check_object_name", "check_profile_type", "check_script", "check_userdata",
    "check_vnc_bind", "disk_doc", "ensure_empty_userdata", "get_network_template", "get_ova", "get_profile",
    "get_storage_template", "get_system_template", "get_template_disk", "get_template_network",
    "list_network_templates", "list_ovas", "list_profiles", "list_storage_templates", "list_system_templates",
    "list_template_disks", "list_template_networks", "list_templates", "load_profile", "modify_profile",
    "modify_system_template", "network_template_item", "network_template_view", "next_id", "ova_item",
    "ova_view", "parse_arguments", "parse_filesystem_args", "parse_node_limit", "parse_template_vni",
    "profile_item", "profile_values", "profile_view", "profiles_using", "remove_network_template",
    "remove_ova", "remove_profile", "remove_storage_template", "remove_system_template",
    "remove_template_disk", "remove_template_network", "storage_template_item", "storage_template_view",
    "system_template_inputs", "system_template_item", "system_template_values", "system_template_view",
    "template_disk_view", "template_network_view",
]
