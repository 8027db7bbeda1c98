"""System templates: vCPUs, memory, consoles and the PVC metadata (placement, migration) of a VM.

    {id, name, vcpu_count, vram_mb, serial, vnc, vnc_bind, node_limit (list|null), node_selector,
     node_autostart, migration_method, migration_max_downtime, ova}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pvc.cluster import networks as nets
from pvc.cluster.common import check_name, csv_items, optional_text
from pvc.cluster.provisioner.store import docs_of, get_doc, matching, ova_ref
from pvc.cluster.provisioner.transactions import create_document, remove_document, update_document
from pvc.cluster.provisioner.validation import check_object_name, flag, refuse_unknown, whole_number
from pvc.core.errors import InvalidInput
from pvc.core.vocabulary import MIGRATION_METHODS, SELECTOR_CHOICES, SELECTORS
from pvc.core.zk import ZK

VCPU_MIN, VCPU_MAX = 1, 1024
VRAM_MIN, VRAM_MAX = 32, 16 * 1024 * 1024          # MB
DOWNTIME_DEFAULT = 300                              # ms (upstream's default)
DOWNTIME_MAX = 3_600_000

SYSTEM_FIELDS = ("vcpus", "vram", "serial", "vnc", "vnc_bind", "node_limit", "node_selector",
                 "node_autostart", "migration_method", "migration_max_downtime")


# -- validation (pure) -----------------------------------------------------------------------------

def check_vnc_bind(value: Any, field: str = "vnc_bind") -> str | None:
    text = optional_text(value)
    return None if text is None else nets.check_ip(text, field)


def parse_node_limit(value: Any, field: str = "node_limit") -> list[str] | None:
    """A node limit from a comma-separated string and/or a list; None when empty."""
    return list(dict.fromkeys(check_name(node, field) for node in csv_items(value))) or None


def check_node_selector(value: Any, field: str = "node_selector") -> str | None:
    text = optional_text(value)
    if text is None or text.lower() == "none":
        return None
    if text not in SELECTORS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join(SELECTOR_CHOICES)}")
    return text


def check_migration_method(value: Any, field: str = "migration_method") -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    if text.lower() not in MIGRATION_METHODS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join(MIGRATION_METHODS)}")
    return text.lower()


def system_template_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The validated fields of a system template document (without id, name and ova), from the
    inputs named as in the API (SYSTEM_FIELDS): vcpus, vram, serial and vnc are required."""
    downtime = values.get("migration_max_downtime")
    return {
        "vcpu_count": whole_number(values.get("vcpus"), "vcpus", VCPU_MIN, VCPU_MAX, "a vCPU count"),
        "vram_mb": whole_number(values.get("vram"), "vram", VRAM_MIN, VRAM_MAX, "memory in MB"),
        "serial": flag(values.get("serial"), "serial"),
        "vnc": flag(values.get("vnc"), "vnc"),
        "vnc_bind": check_vnc_bind(values.get("vnc_bind")),
        "node_limit": parse_node_limit(values.get("node_limit")),
        "node_selector": check_node_selector(values.get("node_selector")),
        "node_autostart": flag(values.get("node_autostart"), "node_autostart", False),
        "migration_method": check_migration_method(values.get("migration_method")),
        "migration_max_downtime": DOWNTIME_DEFAULT if optional_text(downtime) is None else whole_number(
            downtime, "migration_max_downtime", 1, DOWNTIME_MAX, "milliseconds"),
    }


def system_template_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as system_template_values inputs (for merging a modification into it)."""
    return {"vcpus": doc.get("vcpu_count"), "vram": doc.get("vram_mb"), "serial": bool(doc.get("serial")),
            "vnc": bool(doc.get("vnc")), "vnc_bind": doc.get("vnc_bind"), "node_limit": doc.get("node_limit"),
            "node_selector": doc.get("node_selector"), "node_autostart": bool(doc.get("node_autostart")),
            "migration_method": doc.get("migration_method"),
            "migration_max_downtime": doc.get("migration_max_downtime")}


def system_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    limit = doc.get("node_limit")
    return {"id": doc.get("id"), "name": doc.get("name"), "vcpu_count": doc.get("vcpu_count"),
            "vram_mb": doc.get("vram_mb"), "serial": bool(doc.get("serial")), "vnc": bool(doc.get("vnc")),
            "vnc_bind": doc.get("vnc_bind"), "node_limit": ",".join(limit) if limit else None,
            "node_selector": doc.get("node_selector"), "node_autostart": bool(doc.get("node_autostart")),
            "migration_method": doc.get("migration_method"),
            "migration_max_downtime": doc.get("migration_max_downtime", DOWNTIME_DEFAULT),
            "ova": doc.get("ova")}


# -- reads -----------------------------------------------------------------------------------------

def get_system_template(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "system_template", name)


def list_system_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [system_template_view(d) for d in matching(docs_of(zk, "system_template"), limit)]


def system_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return system_template_view(get_system_template(zk, name))


# -- writes ----------------------------------------------------------------------------------------

def add_system_template(zk: ZK, name: Any, vcpus: Any, vram: Any, serial: Any, vnc: Any, vnc_bind: Any = None,
                        node_limit: Any = None, node_selector: Any = None, node_autostart: Any = False,
                        migration_method: Any = None, migration_max_downtime: Any = None,
                        ova: Any = None) -> str:
    name = check_object_name(name)
    values = system_template_values({
        "vcpus": vcpus, "vram": vram, "serial": serial, "vnc": vnc, "vnc_bind": vnc_bind,
        "node_limit": node_limit, "node_selector": node_selector, "node_autostart": node_autostart,
        "migration_method": migration_method, "migration_max_downtime": migration_max_downtime})
    return create_document(zk, "system_template", name, f'Added new system template "{name}".',
                           lambda: {**values, "ova": ova_ref(zk, ova)})


def modify_system_template(zk: ZK, name: str, **changes: Any) -> str:
    """Change the given fields (None = keep; "" clears an optional one); validated as a whole."""
    refuse_unknown(changes, SYSTEM_FIELDS, "system template")

    def change(current: dict[str, Any]) -> dict[str, Any]:
        inputs = system_template_inputs(current)
        for field, value in changes.items():
            if value is None:
                continue
            if field in ("vcpus", "vram", "serial", "vnc") and optional_text(value) is None:
                raise InvalidInput(f"{field}: cannot be cleared")
            inputs[field] = value
        return {**current, **system_template_values(inputs)}

    return update_document(zk, "system_template", name, change, f'Modified system template "{name}".',
                           unchanged=f'System template "{name}" is unchanged.')


def remove_system_template(zk: ZK, name: str) -> str:
    return remove_document(zk, "system_template", name, f'Removed system template "{name}".')
