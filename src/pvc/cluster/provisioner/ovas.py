"""OVA images as provisioner documents (the upload itself is pvc.cluster.ova's; these read and
remove what it stored).

    {id, name, ovf, volumes: [{pool, volume_name, volume_format, disk_id, disk_size_gb}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pvc.cluster import storage as storage_mod
from pvc.cluster.provisioner.store import docs_of, get_doc, matching, profiles_using
from pvc.cluster.provisioner.transactions import Op, transact
from pvc.core import schema
from pvc.core.errors import Conflict, NotFound
from pvc.core.zk import ZK, op_delete


def ova_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"),
            "volumes": [{"pool": v.get("pool"), "volume_name": v.get("volume_name"),
                         "volume_format": v.get("volume_format"), "disk_id": v.get("disk_id"),
                         "disk_size_gb": v.get("disk_size_gb")} for v in doc.get("volumes") or []]}


def get_ova(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "ova", name)


def list_ovas(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [ova_view(d) for d in matching(docs_of(zk, "ova"), limit)]


def ova_item(zk: ZK, name: str) -> dict[str, Any]:
    return ova_view(get_ova(zk, name))


def remove_ova(zk: ZK, name: str, storage: Any = None) -> str:
    """Remove an OVA: its volumes (through `storage`, a pvc.adapters.ceph.Storage, when given), then in
    one transaction its document and the profiles and system templates made for it. Refused while a
    profile of another OVA, or a provisioner profile, uses one of those system templates."""
    doc = get_ova(zk, name)
    profiles = [p for p, d in docs_of(zk, "profile").items() if d.get("ova") == name]
    templates = [t for t, d in docs_of(zk, "system_template").items() if d.get("ova") == name]
    for template in templates:
        others = [p for p in profiles_using(zk, "system_template", template) if p not in profiles]
        if others:
            names = ", ".join(f"'{p}'" for p in others)
            raise Conflict(f"The OVA '{name}' cannot be removed: its system template '{template}' is used by "
                           f"profile{'s' if len(others) > 1 else ''} {names}; change or remove "
                           f"{'them' if len(others) > 1 else 'it'} first.")
    if storage is not None:
        for volume in doc.get("volumes") or []:
            try:
                storage_mod.remove_volume(zk, storage, str(volume.get("pool")),
                                          str(volume.get("volume_name")))
            except NotFound:
                continue

    def plan(_lock: Op) -> tuple[list[Op], str]:
        if not zk.exists(schema.ova(name)):
            return [], f'Removed OVA image "{name}".'
        ops = [op_delete(schema.ova(name))]
        ops += [op_delete(schema.profile(p)) for p, d in docs_of(zk, "profile").items()
                if d.get("ova") == name]
        ops += [op_delete(schema.system_template(t)) for t, d in docs_of(zk, "system_template").items()
                if d.get("ova") == name]
        return ops, f'Removed OVA image "{name}".'

    return transact(zk, plan)
