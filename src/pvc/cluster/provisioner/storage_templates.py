"""Storage templates: a VM's disks, with their pools, sizes or clone sources, filesystems and mounts.

    {id, name, ova, disks: [{id, disk_id, pool, source_volume, disk_size_gb, filesystem,
     filesystem_args: [...], mountpoint}]}                             (sorted by disk_id)
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pvc.cluster.common import check_name, optional_text
from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.store import docs_of, get_doc, matching, ova_ref
from pvc.cluster.provisioner.transactions import create_document, remove_document, update_document
from pvc.cluster.provisioner.validation import check_object_name, whole_number
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK

FILESYSTEMS: dict[str, str] = {"ext2": "mkfs.ext2", "ext3": "mkfs.ext3", "ext4": "mkfs.ext4",
                               "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs", "f2fs": "mkfs.f2fs",
                               "vfat": "mkfs.vfat", "swap": "mkswap"}
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
DISK_MIN_GB, DISK_MAX_GB = 1, 1024 * 1024

_DISK_ID_RE = re.compile(r"^(sd|vd)[a-z]$")
_FSARG_RE = re.compile(r"^-\S*$")

Which = Callable[[str], str | None]


def _which(program: str) -> str | None:
    return shutil.which(program, path=SBIN_PATH)


# -- validation (pure, apart from looking for mkfs) ------------------------------------------------

def check_disk_id(value: Any, field: str = "disk_id") -> str:
    text = optional_text(value) or ""
    if not _DISK_ID_RE.match(text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a disk id (sdX or vdX, e.g. sda, vdb)")
    return text


def check_filesystem(value: Any, which: Which | None = None, field: str = "filesystem") -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    if text not in FILESYSTEMS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join(FILESYSTEMS)}")
    program = FILESYSTEMS[text]
    if (which or _which)(program) is None:
        raise InvalidInput(f"{field}: {program} is not installed on this node, so {text} filesystems "
                           f"cannot be created")
    return text


def parse_filesystem_args(values: Any, field: str = "filesystem_arg") -> list[str]:
    """mkfs arguments, each one word starting with '-' (e.g. -L=root), repeated keys."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not _FSARG_RE.match(text):
            raise InvalidInput(f"{field}: '{text[:40]}' is not an mkfs argument (one word starting with '-', "
                               f"e.g. -L=root)")
        out.append(text)
    return out


def check_mountpoint(value: Any, field: str = "mountpoint") -> str | None:
    text = optional_text(value)
    if text is None:
        return None
    parts = text.split("/")
    if not text.startswith("/") or any(p in (".", "..") for p in parts) or re.search(r"[\s\x00]", text):
        raise InvalidInput(f"{field}: '{text[:60]}' is not an absolute path without blanks (e.g. /var)")
    return "/" + "/".join(p for p in parts if p)


def disk_doc(values: Mapping[str, Any], which: Which | None = None) -> dict[str, Any]:
    """A storage template disk (without id) from the API's inputs (disk_id, pool, source_volume,
    disk_size, filesystem, filesystem_arg, mountpoint), with upstream's rules: a clone (source_volume)
    takes no size, filesystem or mountpoint; a mountpoint needs a filesystem; anything else needs a
    size."""
    disk_id = check_disk_id(values.get("disk_id"))
    pool = check_object_name(values.get("pool"), "pool")
    source = optional_text(values.get("source_volume"))
    if source is not None:
        check_name(source, "source_volume")
    size_given = optional_text(values.get("disk_size")) is not None
    size = whole_number(values.get("disk_size"), "disk_size", DISK_MIN_GB, DISK_MAX_GB, "a size in GB") \
        if size_given else None
    filesystem = optional_text(values.get("filesystem"))
    mountpoint = check_mountpoint(values.get("mountpoint"))
    fs_args = parse_filesystem_args(values.get("filesystem_arg"))
    if source is not None:
        for field, given in (("disk_size", size_given), ("filesystem", filesystem is not None),
                             ("mountpoint", mountpoint is not None), ("filesystem_arg", bool(fs_args))):
            if given:
                raise InvalidInput(f"{field}: a disk cloned from source_volume '{source}' takes no {field} "
                                   f"(the clone keeps the source's size and contents)")
    elif size is None:
        raise InvalidInput("disk_size: a size in GB is required (unless the disk is a clone of "
                           "source_volume)")
    if mountpoint is not None and filesystem is None:
        raise InvalidInput(f"mountpoint: a filesystem is required to mount the disk at {mountpoint}")
    if fs_args and filesystem is None:
        raise InvalidInput("filesystem_arg: mkfs arguments need a filesystem")
    filesystem = check_filesystem(filesystem, which)
    if filesystem == "swap" and mountpoint is not None:
        raise InvalidInput("mountpoint: a swap disk is not mounted")
    return {"disk_id": disk_id, "pool": pool, "source_volume": source, "disk_size_gb": size,
            "filesystem": filesystem, "filesystem_args": fs_args, "mountpoint": mountpoint}


def check_disks(disk: Mapping[str, Any], others: Iterable[Mapping[str, Any]], template: str) -> None:
    """A disk id and a mountpoint are used once per template."""
    for other in others:
        if other.get("disk_id") == disk["disk_id"]:
            raise Conflict(f"disk_id: the disk '{disk['disk_id']}' in storage template '{template}' already "
                           f"exists")
        if disk["mountpoint"] and other.get("mountpoint") == disk["mountpoint"]:
            raise Conflict(f"mountpoint: {disk['mountpoint']} is already the mountpoint of disk "
                           f"'{other.get('disk_id')}' in storage template '{template}'")


def template_disk_view(template: Mapping[str, Any], disk: Mapping[str, Any]) -> dict[str, Any]:
    """A disk as upstream shows it: filesystem_args space-joined (its database column)."""
    return {"id": disk.get("id"), "storage_template": template.get("id"), "disk_id": disk.get("disk_id"),
            "pool": disk.get("pool"), "source_volume": disk.get("source_volume"),
            "disk_size_gb": disk.get("disk_size_gb"), "filesystem": disk.get("filesystem"),
            "filesystem_args": " ".join(disk.get("filesystem_args") or []),
            "mountpoint": disk.get("mountpoint")}


def storage_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    disks = sorted(doc.get("disks") or [], key=lambda d: str(d.get("disk_id")))
    return {"id": doc.get("id"), "name": doc.get("name"), "ova": doc.get("ova"),
            "disks": [template_disk_view(doc, d) for d in disks]}


# -- reads -----------------------------------------------------------------------------------------

def get_storage_template(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "storage_template", name)


def list_storage_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [storage_template_view(d) for d in matching(docs_of(zk, "storage_template"), limit)]


def storage_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return storage_template_view(get_storage_template(zk, name))


def list_template_disks(zk: ZK, template: str) -> list[dict[str, Any]]:
    return storage_template_view(get_storage_template(zk, template))["disks"]


def get_template_disk(zk: ZK, template: str, disk_id: str) -> dict[str, Any]:
    for disk in list_template_disks(zk, template):
        if disk["disk_id"] == disk_id:
            return disk
    raise NotFound(f"The disk '{disk_id}' is not in storage template '{template}'.")


# -- writes ----------------------------------------------------------------------------------------

def add_storage_template(zk: ZK, name: Any, ova: Any = None) -> str:
    name = check_object_name(name)

    return create_document(zk, "storage_template", name, f'Added new storage template "{name}".',
                           lambda: {"ova": ova_ref(zk, ova), "disks": []})


def remove_storage_template(zk: ZK, name: str) -> str:
    return remove_document(zk, "storage_template", name, f'Removed storage template "{name}".')


def add_template_disk(zk: ZK, template: str, disk_id: Any, pool: Any, source_volume: Any = None,
                      disk_size: Any = None, filesystem: Any = None, filesystem_args: Any = None,
                      mountpoint: Any = None, which: Which | None = None) -> str:
    """Add a disk to a storage template (see disk_doc for the rules); the pool must exist."""
    disk = disk_doc({"disk_id": disk_id, "pool": pool, "source_volume": source_volume, "disk_size": disk_size,
                     "filesystem": filesystem, "filesystem_arg": filesystem_args, "mountpoint": mountpoint},
                    which)

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        if not zk.exists(schema.pool(disk["pool"])):
            raise InvalidInput(f"pool: the storage pool '{disk['pool']}' does not exist")
        disks = list(doc.get("disks") or [])
        check_disks(disk, disks, template)
        disks.append({"id": next_id(zk, "storage"), **disk})
        disks.sort(key=lambda d: str(d.get("disk_id")))
        return {**doc, "disks": disks}

    return update_document(zk, "storage_template", template, change,
                           f'Added new disk "{disk["disk_id"]}" to storage template "{template}".')


def remove_template_disk(zk: ZK, template: str, disk_id: str) -> str:
    def change(doc: dict[str, Any]) -> dict[str, Any]:
        disks = [d for d in doc.get("disks") or [] if d.get("disk_id") != disk_id]
        if len(disks) == len(doc.get("disks") or []):
            raise NotFound(f"The disk '{disk_id}' is not in storage template '{template}'.")
        return {**doc, "disks": disks}

    return update_document(zk, "storage_template", template, change,
                           f'Removed disk "{disk_id}" from storage template "{template}".')
