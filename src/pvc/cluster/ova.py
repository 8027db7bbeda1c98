"""OVA upload (pvc-facts §7.2 "OVA flow"; the seed's "Deploying VMs from OVA images").

An OVA is an uncompressed tar holding an OVF descriptor (XML) and the disk images it references
(VMDK, usually streamOptimized). `upload_ova` reads it from a binary stream without holding it in
memory: a seekable stream (the API's spooled multipart file) is read in place, anything else is
first copied in chunks to a temporary file. Then:

1. the OVF is parsed safely (lxml without DTDs, entities or network access; any DOCTYPE is refused):
   vCPUs (RASD ResourceType 3), memory (4, in AllocationUnits), NICs (10), disks (17, through their
   HostResource to the DiskSection's Disk and the References' File, with capacities) and graphics
   (24); every problem is an InvalidInput naming it;
2. each disk becomes a volume `ova_<name>_sd{a,b,...}` in the pool, sized exactly to its VMDK file,
   holding the VMDK bytes as they are (a streamOptimized VMDK keeps its footer at the very end of
   the file, so the volume must not be larger); the conversion to raw happens at deploy time in the
   OVA provisioner script (examples/4-ova.py);
3. one ZooKeeper transaction writes the OVA document, a system template `<name>` (vCPUs, memory,
   VNC if the OVF has a graphics controller, else a serial console) and a profile `<name>` of type
   ova using the script `ova` (or `default_ova`), which must be stored before the upload.

Nothing is left behind on any error: the volumes made so far are removed again.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from lxml import etree

from pvc.adapters import images
from pvc.adapters.ceph import Storage
from pvc.cluster import provisioner as prov
from pvc.cluster import storage as storage_mod
from pvc.cluster.provisioner.transactions import Op, refuse_existing, transact
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput
from pvc.core.revert import Reverter
from pvc.core.zk import ZK, op_create

SPOOL_CHUNK = 4 << 20
OVF_MAX = 512 * 1024                    # the OVF is stored in the OVA document (ZooKeeper: < 1 MB)
MAX_DISKS = 26                          # sda..sdz
DISK_MAX_BYTES = prov.DISK_MAX_GB << 30
VMDK_MAGIC = b"KDMV"
OVA_SCRIPTS = ("ova", "default_ova")
GIB = 1 << 30
MIB = 1 << 20

RES_CPU, RES_MEMORY, RES_ETHERNET, RES_DISK, RES_GRAPHICS = 3, 4, 10, 17, 24
_UNIT_WORDS = {"byte": 1, "bytes": 1, "b": 1, "kb": 1 << 10, "kilobytes": 1 << 10, "kib": 1 << 10,
               "mb": MIB, "megabytes": MIB, "mib": MIB, "gb": GIB, "gigabytes": GIB, "gib": GIB,
               "tb": 1 << 40, "terabytes": 1 << 40, "tib": 1 << 40}


@dataclass(frozen=True)
class OvfDisk:
    disk_ref: str              # the OVF Disk's diskId (or File id for a direct file reference)
    href: str                  # the disk file inside the archive
    capacity: int | None       # bytes, from the OVF (None if it gives none)
    format: str | None         # the Disk's format URI


@dataclass(frozen=True)
class OvfInfo:
    name: str | None
    vcpus: int
    memory_mb: int
    nics: int
    graphics: bool
    disks: list[OvfDisk] = field(default_factory=list)


# -- the OVF descriptor ---------------------------------------------------------------------------

def _local(node: Any) -> str:
    tag = node.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _attr(node: Any, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (ovf:href, href, ...)."""
    for key, value in node.attrib.items():
        if etree.QName(key).localname == name:
            return str(value)
    return None


def _children(node: Any, name: str) -> list[Any]:
    return [c for c in node if _local(c) == name]


def _child_text(node: Any, name: str) -> str | None:
    for child in node:
        if _local(child) == name:
            return (child.text or "").strip()
    return None


def parse_units(text: str | None, default: int, what: str) -> int:
    """Bytes per unit of a DMTF programmatic unit ('byte * 2^20', 'byte*1024', 'MegaBytes', 'KB')."""
    if text is None or not text.strip():
        return default
    raw = text.strip()
    word = _UNIT_WORDS.get(raw.lower())
    if word is not None:
        return word
    factor = 1
    terms = [t.strip() for t in raw.split("*")]
    if not terms or terms[0].lower() not in ("byte", "bytes"):
        raise InvalidInput(f"file: the OVF gives {what} in an unknown unit '{raw[:40]}' (e.g. 'byte * 2^20')")
    for term in terms[1:]:
        match = re.fullmatch(r"(\d{1,4})(?:\s*\^\s*(\d{1,3}))?", term)
        if not match:
            raise InvalidInput(f"file: the OVF gives {what} in an unknown unit '{raw[:40]}' "
                               f"(e.g. 'byte * 2^20')")
        factor *= int(match.group(1)) ** int(match.group(2) or 1)
        if factor > 1 << 60:
            raise InvalidInput(f"file: the OVF's unit for {what} '{raw[:40]}' is absurdly large")
    return factor


def _number(text: str | None, what: str) -> int:
    value = (text or "").strip()
    if not re.fullmatch(r"\d{1,20}", value):
        shown = value[:40] or "nothing"
        raise InvalidInput(f"file: the OVF's {what} is '{shown}', not a whole number")
    return int(value)


def parse_ovf(data: bytes) -> OvfInfo:
    """The parts of an OVF descriptor PVC uses; InvalidInput naming whatever is wrong."""
    if len(data) > OVF_MAX:
        raise InvalidInput(f"file: the OVF descriptor is too large ({len(data)} bytes, at most {OVF_MAX})")
    if re.search(rb"<!DOCTYPE|<!ENTITY", data[:OVF_MAX], re.IGNORECASE):
        raise InvalidInput("file: the OVF descriptor contains a DOCTYPE or entity declaration, which is "
                           "not allowed")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"file: the OVF descriptor is not well-formed XML: {exc}") from None
    if root is None or _local(root) != "Envelope":
        raise InvalidInput("file: the OVF descriptor's root element is not an OVF Envelope")
    if root.getroottree().docinfo.internalDTD is not None:
        raise InvalidInput("file: the OVF descriptor contains a DOCTYPE, which is not allowed")

    files: dict[str, str] = {}
    for references in _children(root, "References"):
        for item in _children(references, "File"):
            file_id, href = _attr(item, "id"), _attr(item, "href")
            if not file_id or not href:
                raise InvalidInput("file: the OVF has a File reference without an id or href")
            files[file_id] = href
    disk_section: dict[str, Any] = {}
    for section in _children(root, "DiskSection"):
        for disk in _children(section, "Disk"):
            disk_id = _attr(disk, "diskId")
            if not disk_id:
                raise InvalidInput("file: the OVF has a Disk without a diskId")
            disk_section[disk_id] = disk

    systems = _children(root, "VirtualSystem")
    if not systems:
        if _children(root, "VirtualSystemCollection"):
            raise InvalidInput("file: the OVF describes several VMs (a VirtualSystemCollection); only OVAs "
                               "with one VirtualSystem are supported")
        raise InvalidInput("file: the OVF has no VirtualSystem")
    system = systems[0]
    hardware = _children(system, "VirtualHardwareSection")
    if not hardware:
        raise InvalidInput("file: the OVF's VirtualSystem has no VirtualHardwareSection")
    items = [i for i in hardware[0] if _local(i) in ("Item", "StorageItem", "EthernetPortItem")]

    vcpus = 0
    memory: int | None = None
    nics = 0
    graphics = False
    disks: list[OvfDisk] = []
    for item in items:
        kind = _child_text(item, "ResourceType")
        if kind is None:
            continue
        resource = _number(kind, "ResourceType of an Item")
        label = _child_text(item, "ElementName") or _child_text(item, "InstanceID") or "?"
        if resource == RES_CPU:
            vcpus += _number(_child_text(item, "VirtualQuantity"), f"vCPU count (Item '{label}')")
        elif resource == RES_MEMORY:
            quantity = _number(_child_text(item, "VirtualQuantity"), f"memory size (Item '{label}')")
            unit = parse_units(_child_text(item, "AllocationUnits"), MIB, "the memory size")
            memory = (memory or 0) + quantity * unit
        elif resource == RES_ETHERNET:
            nics += 1
        elif resource == RES_GRAPHICS:
            graphics = True
        elif resource == RES_DISK:
            disks.append(_disk(item, label, files, disk_section))
    if vcpus < 1:
        raise InvalidInput("file: the OVF gives no vCPU count (an Item of ResourceType 3 with a "
                           "VirtualQuantity of at least 1)")
    if memory is None or memory < 1:
        raise InvalidInput("file: the OVF gives no memory size (an Item of ResourceType 4)")
    memory_mb = -(-memory // MIB)
    if not prov.VCPU_MIN <= vcpus <= prov.VCPU_MAX:
        raise InvalidInput(f"file: the OVF asks for {vcpus} vCPUs (at most {prov.VCPU_MAX})")
    if not prov.VRAM_MIN <= memory_mb <= prov.VRAM_MAX:
        raise InvalidInput(f"file: the OVF asks for {memory_mb} MB of memory ({prov.VRAM_MIN}.."
                           f"{prov.VRAM_MAX} MB)")
    if not disks:
        raise InvalidInput("file: the OVF has no disk (an Item of ResourceType 17)")
    if len(disks) > MAX_DISKS:
        raise InvalidInput(f"file: the OVF has {len(disks)} disks (at most {MAX_DISKS})")
    hrefs = [d.href for d in disks]
    duplicate = next((h for h in hrefs if hrefs.count(h) > 1), None)
    if duplicate is not None:
        raise InvalidInput(f"file: the OVF uses the disk file '{duplicate}' for two disks")
    name = _child_text(system, "Name") or _attr(system, "id")
    return OvfInfo(name=name, vcpus=vcpus, memory_mb=memory_mb, nics=nics, graphics=graphics, disks=disks)


def _disk(item: Any, label: str, files: dict[str, str], disk_section: dict[str, Any]) -> OvfDisk:
    host = _child_text(item, "HostResource")
    if not host:
        raise InvalidInput(f"file: the OVF's disk Item '{label}' has no HostResource (no disk or file)")
    match = re.fullmatch(r"(?:ovf:)?/?(disk|file)/(.+)", host)
    if not match:
        raise InvalidInput(f"file: the OVF's disk Item '{label}' has a HostResource '{host[:60]}' that is "
                           f"neither ovf:/disk/<id> nor ovf:/file/<id>")
    kind, ref = match.groups()
    if kind == "file":
        if ref not in files:
            raise InvalidInput(f"file: the OVF's disk Item '{label}' references the file '{ref}', which "
                               f"is not in its References")
        return OvfDisk(disk_ref=ref, href=files[ref], capacity=None, format=None)
    disk = disk_section.get(ref)
    if disk is None:
        raise InvalidInput(f"file: the OVF's disk Item '{label}' references the disk '{ref}', which is not "
                           f"in its DiskSection")
    file_ref = _attr(disk, "fileRef")
    if not file_ref:
        raise InvalidInput(f"file: the OVF's disk '{ref}' has no file (blank disks are not supported; add "
                           f"a disk to the profile's storage template instead)")
    if file_ref not in files:
        raise InvalidInput(f"file: the OVF's disk '{ref}' references the file '{file_ref}', which is not in "
                           f"its References")
    capacity_text = _attr(disk, "capacity")
    capacity = None
    if capacity_text is not None:
        if "${" in capacity_text:
            raise InvalidInput(f"file: the OVF's disk '{ref}' takes its capacity from a property "
                               f"('{capacity_text[:40]}'), which is not supported")
        units = parse_units(_attr(disk, "capacityAllocationUnits"), 1, f"the capacity of disk '{ref}'")
        capacity = _number(capacity_text, f"capacity of disk '{ref}'") * units
        if capacity < 1 or capacity > DISK_MAX_BYTES:
            raise InvalidInput(f"file: the OVF's disk '{ref}' has an absurd capacity of {capacity} bytes "
                               f"(1 byte..{prov.DISK_MAX_GB} GiB)")
    fmt = _attr(disk, "format")
    if fmt and "vmdk" not in fmt.lower():
        raise InvalidInput(f"file: the OVF's disk '{ref}' is in the format '{fmt[:80]}'; only VMDK disks are "
                           f"supported")
    return OvfDisk(disk_ref=ref, href=files[file_ref], capacity=capacity, format=fmt)


# -- the archive ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OvaDisk:
    disk_id: str               # sda, sdb, ...
    member: tarfile.TarInfo
    file_size: int             # bytes of the VMDK file (the volume's size)
    capacity: int              # the disk's virtual size in bytes (max of OVF and VMDK header)

    @property
    def disk_size_gb(self) -> int:
        return max(1, math.ceil(self.capacity / GIB))


@dataclass(frozen=True)
class OvaContents:
    ovf_name: str
    ovf_text: str
    info: OvfInfo
    disks: list[OvaDisk]


@contextmanager
def seekable(source: BinaryIO) -> Iterator[BinaryIO]:
    """The stream itself when it can seek (e.g. a spooled upload), else a temporary file it is
    copied to in chunks (removed afterwards)."""
    try:
        can_seek = bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        can_seek = False
    if can_seek:
        source.seek(0)
        yield source
        return
    with tempfile.TemporaryFile(prefix="pvc-ova-") as spool:
        shutil.copyfileobj(source, spool, SPOOL_CHUNK)
        spool.seek(0)
        yield spool


def vmdk_capacity(header: bytes, href: str) -> int:
    """The virtual size in bytes from a sparse (incl. streamOptimized) VMDK's header."""
    if len(header) < 512 or header[:4] != VMDK_MAGIC:
        hint = " (a descriptor-only VMDK refers to extent files; use a streamOptimized VMDK)" \
            if header.lstrip().startswith(b"#") else ""
        raise InvalidInput(f"file: the disk '{href}' is not a VMDK image (no 'KDMV' header){hint}")
    (capacity_sectors,) = struct.unpack_from("<Q", header, 12)
    capacity = capacity_sectors * 512
    if capacity < 1 or capacity > DISK_MAX_BYTES:
        raise InvalidInput(f"file: the VMDK disk '{href}' has an absurd size of {capacity} bytes "
                           f"(1 byte..{prov.DISK_MAX_GB} GiB)")
    return capacity


def _member(members: dict[str, tarfile.TarInfo], href: str) -> tarfile.TarInfo:
    member = members.get(href[2:] if href.startswith("./") else href)
    if member is None:
        raise InvalidInput(f"file: the disk file '{href}' named in the OVF is not in the archive")
    if not member.isreg():
        raise InvalidInput(f"file: the disk file '{href}' in the archive is not a regular file")
    if member.size < 512:
        raise InvalidInput(f"file: the disk file '{href}' in the archive is empty or truncated "
                           f"({member.size} bytes)")
    return member


def read_ova(tar: tarfile.TarFile) -> OvaContents:
    """Find and parse the OVF, and check each disk file it names (present, a VMDK, sane sizes)."""
    try:
        listed = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"file: the OVA archive is damaged: {exc}") from None
    members: dict[str, tarfile.TarInfo] = {}
    for member in listed:
        members.setdefault(member.name[2:] if member.name.startswith("./") else member.name, member)
    ovfs = [m for m in listed if m.name.lower().endswith(".ovf") and m.isreg()]
    if not ovfs:
        raise InvalidInput("file: the OVA archive has no .ovf descriptor")
    if len(ovfs) > 1:
        raise InvalidInput(f"file: the OVA archive has {len(ovfs)} .ovf descriptors "
                           f"({', '.join(m.name for m in ovfs[:4])}); it must have exactly one")
    ovf_member = ovfs[0]
    if ovf_member.size > OVF_MAX:
        raise InvalidInput(f"file: the OVF descriptor is too large ({ovf_member.size} bytes, at most "
                           f"{OVF_MAX})")
    data = _read(tar, ovf_member, ovf_member.size)
    info = parse_ovf(data)
    try:
        ovf_text = data.decode("utf-8")
    except UnicodeDecodeError:
        ovf_text = data.decode("latin-1")
    disks: list[OvaDisk] = []
    for index, disk in enumerate(info.disks):
        member = _member(members, disk.href)
        head = _read(tar, member, min(member.size, images.HEADER_BYTES))
        capacity = vmdk_capacity(head, disk.href)
        _check_references(tar, member, head, disk.href)
        disks.append(OvaDisk(disk_id=f"sd{chr(ord('a') + index)}", member=member, file_size=member.size,
                             capacity=max(capacity, disk.capacity or 0)))
    return OvaContents(ovf_name=ovf_member.name, ovf_text=ovf_text, info=info, disks=disks)


def _check_references(tar: tarfile.TarFile, member: tarfile.TarInfo, head: bytes, href: str) -> None:
    """The VMDK names no parent (backing) file and no extent outside itself: the provisioner's
    qemu-img would open them on the node (pvc.adapters.images)."""
    def read(offset: int, length: int) -> bytes:
        handle = tar.extractfile(member)
        if handle is None:
            raise InvalidInput(f"file: '{member.name}' in the OVA archive cannot be read")
        handle.seek(offset)
        return handle.read(length)

    try:
        images.check_vmdk_sparse(head, read, href)
    except images.ImageRefused as exc:
        raise InvalidInput(f"file: the disk '{href}': {exc.message}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"file: '{member.name}' in the OVA archive cannot be read: {exc}") from None


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, size: int) -> bytes:
    try:
        handle = tar.extractfile(member)
        if handle is None:
            raise InvalidInput(f"file: '{member.name}' in the OVA archive cannot be read")
        data = handle.read(size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"file: '{member.name}' in the OVA archive cannot be read: {exc}") from None
    if len(data) < min(size, member.size):
        raise InvalidInput(f"file: '{member.name}' in the OVA archive is truncated")
    return data


@contextmanager
def open_ova(stream: BinaryIO) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"file: the upload is not an OVA (a tar archive): {exc}") from None
    with tar:
        yield tar


# -- the upload -----------------------------------------------------------------------------------

def volume_name(name: str, disk_id: str) -> str:
    return f"ova_{name}_{disk_id}"


def ova_script(zk: ZK) -> str:
    """The stored OVA provisioner script's name (`ova`, else `default_ova`)."""
    for script in OVA_SCRIPTS:
        if zk.exists(schema.script(script)):
            return script
    raise InvalidInput("The OVA provisioner script is not stored: add it as script 'ova' before uploading an "
                       "OVA (e.g. pvc provisioner script add ova <the shipped example 4-ova.py>)")


def check_ova_request(zk: ZK, name: Any, pool: Any) -> tuple[str, str, str]:
    """(name, pool, script) of an upload that may go ahead; nothing is read or written yet."""
    name = prov.check_object_name(name)
    storage_mod.check_name(volume_name(name, "sda"), "name")
    pool = prov.check_object_name(pool, "pool")
    if not zk.exists(schema.pool(pool)):
        raise InvalidInput(f"pool: the storage pool '{pool}' does not exist")
    for kind in ("ova", "system_template", "profile"):
        if zk.exists(prov.PATHS[kind](name)):
            raise Conflict(f"name: the {prov.WHAT[kind]} '{name}' already exists; remove it (pvc provisioner "
                           f"ova remove) or choose another name")
    return name, pool, ova_script(zk)


def upload_ova(zk: ZK, storage: Storage, name: Any, pool: Any, source: BinaryIO,
               progress: Callable[[str], None] | None = None) -> str:
    """Store the OVA read from `source` (module docstring); the answer's message."""
    name, pool, _script = check_ova_request(zk, name, pool)
    with seekable(source) as stream, open_ova(stream) as tar:
        contents = read_ova(tar)
        names = [volume_name(name, d.disk_id) for d in contents.disks]
        for volume in names:
            if zk.exists(schema.volume(pool, volume)):
                raise Conflict(f"name: the volume '{volume}' already exists in pool '{pool}' (left from "
                               f"another OVA?); remove it or choose another name")
        total = sum(d.file_size for d in contents.disks)
        storage_mod.check_space(total, storage_mod.pool_space(zk, storage, pool), pool, force=False,
                                field="file")
        with Reverter() as revert:
            for disk, volume in zip(contents.disks, names, strict=True):
                storage_mod.add_volume(zk, storage, pool, volume, disk.file_size)
                revert.add(f"remove volume {pool}/{volume}",
                           lambda volume=volume: storage_mod.remove_volume(zk, storage, pool, volume))
                _write_disk(zk, storage, pool, volume, tar, disk)
                if progress is not None:
                    progress(f"Wrote disk {disk.disk_id} ({disk.member.name}) to volume {volume}")
            text = _store(zk, name, pool, contents, names)
            revert.commit()
    return text


class _Checked(io.RawIOBase):
    """The member's bytes for write_volume; a short read is an error, not a short volume."""

    def __init__(self, handle: BinaryIO, disk: OvaDisk) -> None:
        self.handle, self.disk, self.count = handle, disk, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        block = self.handle.read(size)
        self.count += len(block)
        if not block and self.count < self.disk.file_size:
            raise InvalidInput(f"file: '{self.disk.member.name}' in the OVA archive is truncated")
        return block


def _write_disk(zk: ZK, storage: Storage, pool: str, volume: str, tar: tarfile.TarFile,
                disk: OvaDisk) -> None:
    """Copy one disk's VMDK bytes from the archive into its volume."""
    handle = tar.extractfile(disk.member)
    if handle is None:
        raise InvalidInput(f"file: '{disk.member.name}' in the OVA archive cannot be read")
    try:
        storage_mod.write_upload(zk, storage, pool, volume, "raw", source=_Checked(handle, disk))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"file: '{disk.member.name}' in the OVA archive cannot be read: "
                           f"{exc}") from None


def _store(zk: ZK, name: str, pool: str, contents: OvaContents, volumes: list[str]) -> str:
    info = contents.info
    system_values = prov.system_template_values({"vcpus": info.vcpus, "vram": info.memory_mb,
                                                 "serial": not info.graphics, "vnc": info.graphics})

    def plan(_lock: Op) -> tuple[list[Op], str]:
        for kind in ("ova", "system_template", "profile"):
            refuse_existing(zk, kind, name)
        script = ova_script(zk)
        ova_doc = {"id": prov.next_id(zk, "ova"), "name": name, "ovf": contents.ovf_text,
                   "volumes": [{"id": prov.next_id(zk, "ova_volume"), "pool": pool, "volume_name": volume,
                                "volume_format": "vmdk", "disk_id": disk.disk_id,
                                "disk_size_gb": disk.disk_size_gb}
                               for disk, volume in zip(contents.disks, volumes, strict=True)]}
        system_doc = {"id": prov.next_id(zk, "system_template"), "name": name, **system_values, "ova": name}
        profile_doc = {"id": prov.next_id(zk, "profile"), "name": name, "profile_type": "ova",
                       "system_template": name, "network_template": None, "storage_template": None,
                       "userdata": None, "script": script, "ova": name, "arguments": []}
        ops = [op_create(schema.ova(name), ova_doc),
               op_create(schema.system_template(name), system_doc),
               op_create(schema.profile(name), profile_doc)]
        disks = len(volumes)
        return ops, (f'Imported OVA image "{name}" ({info.vcpus} vCPU{"s" if info.vcpus != 1 else ""}, '
                     f'{info.memory_mb} MB, {disks} disk{"s" if disks != 1 else ""}, {info.nics} '
                     f'NIC{"s" if info.nics != 1 else ""}): profile and system template "{name}".')

    for parent in (schema.OVAS, schema.SYSTEM_TEMPLATES, schema.PROFILES):
        zk.ensure(parent)
    return transact(zk, plan)
