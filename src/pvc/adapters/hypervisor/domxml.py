"""Domain and secret XML: the few fields the drivers check before acting, and small rewrites.

Pure functions, shared by LibvirtHypervisor and FakeHypervisor so both refuse the same input.
"""

from __future__ import annotations

import base64
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pvc.adapters.hypervisor.base import DomainNotFound, HypervisorError


@dataclass(frozen=True)
class DomainFacts:
    """The few fields of a domain XML that the drivers check before acting."""

    uuid: str
    name: str
    vcpus: int               # current
    max_vcpus: int
    memory_kib: int          # currentMemory (or memory)
    max_memory_kib: int


_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
          "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4,
          "tb": 1000**4}


def normalize_uuid(value: str) -> str:
    """Canonical lower-case UUID; anything else cannot name a domain."""
    try:
        return str(uuidlib.UUID(str(value)))
    except ValueError:
        raise DomainNotFound(f"no domain {value!r}: not a UUID") from None


def _kib(element: ET.Element | None) -> int | None:
    if element is None or not (element.text or "").strip():
        return None
    unit = (element.get("unit") or "KiB").lower()
    if unit not in _UNITS:
        raise HypervisorError(f"domain XML: unknown memory unit {element.get('unit')!r}")
    try:
        return int(element.text.strip()) * _UNITS[unit] // 1024  # type: ignore[union-attr]
    except ValueError:
        raise HypervisorError(f"domain XML: bad memory size {element.text!r}") from None


def domain_facts(xml: str) -> DomainFacts:
    """Parse the fields start() relies on; a clear HypervisorError for anything unusable."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise HypervisorError(f"malformed domain XML: {exc}") from None
    if root.tag != "domain":
        raise HypervisorError(f"not a libvirt domain XML (root element <{root.tag}>)")
    raw_uuid = (root.findtext("uuid") or "").strip()
    if not raw_uuid:
        raise HypervisorError("domain XML has no <uuid> (PVC names every domain by UUID)")
    try:
        uuid = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise HypervisorError(f"domain XML: <uuid> {raw_uuid!r} is not a UUID") from None
    name = (root.findtext("name") or "").strip()
    if not name:
        raise HypervisorError("domain XML has no <name>")
    vcpu = root.find("vcpu")
    try:
        max_vcpus = int((vcpu.text or "1").strip()) if vcpu is not None else 1
        vcpus = int(vcpu.get("current", max_vcpus)) if vcpu is not None else 1
    except ValueError:
        raise HypervisorError("domain XML: <vcpu> is not a number") from None
    max_kib = _kib(root.find("memory"))
    if max_kib is None:
        raise HypervisorError("domain XML has no <memory>")
    current = _kib(root.find("currentMemory"))
    return DomainFacts(uuid=uuid, name=name, vcpus=vcpus, max_vcpus=max_vcpus,
                       memory_kib=current if current is not None else max_kib, max_memory_kib=max_kib)


def disks_need_unsafe(xml: str) -> bool:
    """True when a disk has a non-network source, so libvirt needs VIR_MIGRATE_UNSAFE to migrate.

    libvirt refuses a live migration it cannot prove safe ("Migration without shared storage is
    unsafe"). It accepts network disks (RBD: PVC's own VM disks, D6) and cluster filesystems, but
    it cannot see that a file or block device on a local path is the same storage on every node
    (the lab's /tmp, a host-mounted image). For those the caller vouches for the storage, and the
    flag only switches libvirt's check off; it changes nothing in the migration itself. Keeping
    the flag off for RBD-only domains keeps libvirt's safety net where it can work.
    """
    root = ET.fromstring(xml)
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        if disk.get("type") == "network" or source is None:
            continue        # network disks are shared; an empty cdrom drive holds nothing
        if any(source.get(attr) for attr in ("file", "dev", "dir", "volume", "pool", "name")):
            return True
    return False


def force_tcg(xml: str) -> str:
    """Rewrite `<domain type='kvm'>` to `type='qemu'` (software TCG) where KVM does not work."""
    return re.sub(r"""(<domain\b[^>]*?\btype\s*=\s*)(['"])kvm\2""", r"\1\2qemu\2", xml, count=1)


def secret_args(uuid: str, usage: str, value_b64: str) -> tuple[str, bytes, str]:
    """Checked (uuid, key bytes, secret XML) for ensure_secret: a persistent, private secret of
    usage type ceph, so its value never leaves libvirtd and survives a libvirtd restart."""
    try:
        uuid = str(uuidlib.UUID(uuid))
    except (ValueError, TypeError, AttributeError):
        raise HypervisorError(f"ceph secret {uuid!r}: not a UUID") from None
    if not usage.strip() or any(c in usage for c in "<>&'\"") or any(ord(c) < 32 for c in usage):
        raise HypervisorError(f"ceph secret {uuid}: usage {usage!r} is not a plain name")
    try:
        value = base64.b64decode(value_b64, validate=True)
    except (ValueError, TypeError):
        raise HypervisorError(f"ceph secret {uuid}: the key is not base64") from None
    if not value:
        raise HypervisorError(f"ceph secret {uuid}: the key is empty")
    xml = (f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
           f"<usage type='ceph'><name>{usage}</name></usage></secret>")
    return uuid, value, xml


def rbd_target(xml: str, disk: str) -> str | None:
    """The target dev of the disk named by target (vda) or rbd source (pool/volume) in `xml`."""
    root = ET.fromstring(xml)
    for el in root.findall("devices/disk"):
        target, source = el.find("target"), el.find("source")
        dev = target.get("dev") if target is not None else None
        if dev == disk or (source is not None and disk in (source.get("name"), source.get("file"),
                                                           source.get("dev"))):
            return dev
    return None
