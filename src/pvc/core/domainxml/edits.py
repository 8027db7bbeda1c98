"""Edits asked for by clients and the API: XML text in, XML text out, untouched parts kept.

vCPUs and memory, NICs, RBD disks, rename, and the one-device XML for hot attach/detach. Each
edit parses its input first (an invalid domain is refused before anything changes) and checks
its result before returning it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from lxml import etree

from pvc.core.domainxml.checks import _check_name, _int, _mac, _unit_factor, _uuid
from pvc.core.domainxml.model import (
    _BUS_PREFIX,
    DISK_BUSES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    Disk,
    DiskAuth,
    DiskDriver,
    DiskSource,
    Domain,
    DomainEditError,
    InvalidDomainXML,
    Nic,
    Topology,
)
from pvc.core.domainxml.parsing import _domain_from_root
from pvc.core.domainxml.rendering import _disk_el, _nic_el
from pvc.core.domainxml.tree import _detached, _elements, _load_root, _serialize


def _edit(xml: str | bytes) -> tuple[etree._Element, Domain]:
    root = _load_root(xml)
    return root, _domain_from_root(root)


def _finish(root: etree._Element) -> str:
    """Serialize an edited tree, after checking that the edit left a domain PVC accepts."""
    _domain_from_root(root)
    return _serialize(root)


def _devices_el(root: etree._Element) -> etree._Element:
    devices = root.find("devices")
    assert devices is not None  # _domain_from_root guarantees it
    return devices


def _insert_device(devices: etree._Element, el: etree._Element) -> None:
    """Put a new device after the last one of its kind (upstream's habit), else at the end."""
    same = [child for child in _elements(devices) if child.tag == el.tag]
    if same:
        same[-1].addnext(el)
    else:
        devices.append(el)


def _positive(value: object, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DomainEditError(f"{what} must be an integer, not {value!r}")
    if not 1 <= value <= maximum:
        raise DomainEditError(f"{what} must be between 1 and {maximum}, not {value}")
    return value


def set_vcpus(xml: str | bytes, vcpus: int, topology: Topology | Sequence[int] | None = None) -> str:
    """Set `<vcpu>` and keep `<cpu><topology>` consistent (libvirt refuses a mismatch).

    Without an explicit topology an existing one becomes 1 socket, vcpus cores, 1 thread, as
    upstream's `pvc vm vcpu set` does.
    """
    vcpus = _positive(vcpus, "vcpus", MAX_VCPUS)
    topo = _coerce_topology(topology)
    if topo is not None and topo.vcpus != vcpus:
        raise DomainEditError(f"topology {topo} gives {topo.vcpus} vCPUs, not {vcpus}")
    root, _ = _edit(xml)
    cpu = root.find("cpu")
    if cpu is not None and cpu.find("numa") is not None:
        raise DomainEditError("vCPUs are assigned to NUMA cells in this domain; edit its XML instead")
    vcpu = root.find("vcpu")
    assert vcpu is not None
    vcpu.text = str(vcpus)
    current = vcpu.get("current")
    if current is not None and int(current) > vcpus:
        del vcpu.attrib["current"]
    existing = cpu.find("topology") if cpu is not None else None
    if topo is None and existing is not None:
        topo = Topology(1, vcpus, 1)
    if topo is not None:
        if cpu is None:
            cpu = etree.Element("cpu")
            vcpu.addnext(cpu)
        if existing is None:
            existing = etree.SubElement(cpu, "topology")
        existing.set("sockets", str(topo.sockets))
        if topo.dies != 1 or "dies" in existing.attrib:
            existing.set("dies", str(topo.dies))
        existing.set("cores", str(topo.cores))
        existing.set("threads", str(topo.threads))
    return _finish(root)


def _coerce_topology(topology: Topology | Sequence[int] | None) -> Topology | None:
    if topology is None or isinstance(topology, Topology):
        return topology
    values = list(topology)
    if len(values) != 3:
        raise DomainEditError(f"topology must be (sockets, cores, threads), not {topology!r}")
    sockets, cores, threads = (_positive(v, "topology value", MAX_VCPUS) for v in values)
    return Topology(sockets, cores, threads)


def set_memory(xml: str | bytes, memory_mib: int) -> str:
    """Set `<memory>` (and `<currentMemory>`, which may not exceed it) in MiB."""
    memory_mib = _positive(memory_mib, "memory (MiB)", MAX_MEMORY_MIB)
    root, _ = _edit(xml)
    cpu = root.find("cpu")
    if cpu is not None and cpu.find("numa") is not None:
        raise DomainEditError("memory is split over NUMA cells in this domain; edit its XML instead")
    max_el = root.find("maxMemory")
    if max_el is not None:
        limit = _int(max_el.text, "maxMemory", 0) * _unit_factor(max_el.get("unit"), "maxMemory")
        if memory_mib * 1024**2 > limit:
            raise DomainEditError(f"memory {memory_mib} MiB is more than maxMemory ({limit // 1024**2} MiB)")
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None:
            el.set("unit", "MiB")
            el.text = str(memory_mib)
    return _finish(root)


_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def mac_address(seed: str) -> str:
    """A stable locally-administered 52:54:00 MAC from a seed (octets 0x10-0xee, as upstream)."""
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return "52:54:00:" + ":".join(f"{0x10 + b % 0xDF:02x}" for b in digest[:3])


def add_interface(xml: str | bytes, bridge: str, mac: str | None = None, model: str = "virtio") -> str:
    """Add a bridged NIC; without a MAC one is derived from the VM UUID and bridge (stable)."""
    if not isinstance(bridge, str) or not _IFNAME_RE.match(bridge):
        raise DomainEditError(f"bridge '{bridge}' is not an interface name (at most 15 characters)")
    if not isinstance(model, str) or not _TOKEN_RE.match(model):
        raise DomainEditError(f"NIC model '{model}' is not valid")
    root, domain = _edit(xml)
    taken = set(domain.macs)
    if mac is None:
        n = 0
        mac = mac_address(f"{domain.uuid}/{bridge}/{n}")
        while mac in taken:
            n += 1
            mac = mac_address(f"{domain.uuid}/{bridge}/{n}")
    else:
        try:
            mac = _mac(mac, "mac")
        except InvalidDomainXML as exc:
            raise DomainEditError(exc.message) from None
        if mac in taken:
            raise DomainEditError(f"MAC address {mac} is already used by an interface of {domain.name}")
    el = _nic_el(Nic(type="bridge", mac=mac, source=bridge, model=model))
    _insert_device(_devices_el(root), el)
    return _finish(root)


def _nic_matches(el: etree._Element, mac: str | None, bridge: str | None) -> bool:
    if mac is not None:
        mac_el = el.find("mac")
        if mac_el is None or (mac_el.get("address") or "").lower() != mac.lower():
            return False
    if bridge is not None:
        src = el.find("source")
        if src is None or src.get("bridge") != bridge:
            return False
    return True


def remove_interface(xml: str | bytes, mac: str | None = None, bridge: str | None = None) -> str:
    """Remove the NIC with this MAC and/or on this bridge; ambiguity is an error, not a guess."""
    if mac is None and bridge is None:
        raise DomainEditError("give the MAC address or the bridge of the interface to remove")
    root, domain = _edit(xml)
    devices = _devices_el(root)
    found = [el for el in devices.findall("interface") if _nic_matches(el, mac, bridge)]
    wanted = " and ".join(f"{k} {v}" for k, v in (("MAC", mac), ("bridge", bridge)) if v is not None)
    if not found:
        raise DomainEditError(f"{domain.name} has no interface with {wanted}")
    if len(found) > 1:
        raise DomainEditError(f"{domain.name} has {len(found)} interfaces with {wanted}; give the MAC")
    devices.remove(found[0])
    return _finish(root)


def _monitor(value: str | tuple[str, int | str | None]) -> tuple[str, str | None]:
    if isinstance(value, tuple):
        host, port = value[0], value[1]
    else:
        text = str(value).strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, None
    port_text = None if port is None or port == "" else str(port)
    if not host or any(c.isspace() or c in "/'\"<>&" for c in host):
        raise DomainEditError(f"Ceph monitor '{value}' is not a host name or address")
    if port_text is not None and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise DomainEditError(f"Ceph monitor '{value}' has an invalid port")
    return host, port_text


def _next_target(existing: Iterable[str], bus: str) -> str:
    prefix = _BUS_PREFIX[bus]
    taken = set(existing)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for suffix in [*letters, *(a + b for a in letters for b in letters)]:
        if prefix + suffix not in taken:
            return prefix + suffix
    raise DomainEditError(f"no free {prefix}* disk target left")


_RBD_NAME_RE = re.compile(r"^[A-Za-z0-9_.+=:-]+$")


def add_rbd_disk(
    xml: str | bytes,
    pool: str,
    volume: str,
    monitors: Sequence[str | tuple[str, int | str | None]],
    secret_uuid: str | None,
    user: str = "libvirt",
    target: str | None = None,
    bus: str = "virtio",
) -> str:
    """Attach a Ceph RBD volume as a network disk (raw, cache=none, discard=unmap as upstream).

    The next free target for the bus is chosen when none is given; a scsi disk gets a
    virtio-scsi controller if the domain has no scsi controller (libvirt would add lsilogic).
    """
    for what, value in (("pool", pool), ("volume", volume)):
        if not isinstance(value, str) or not _RBD_NAME_RE.match(value):
            raise DomainEditError(f"{what} '{value}' is not a valid RBD name")
    if bus not in DISK_BUSES:
        raise DomainEditError(f"bus '{bus}' is not supported ({', '.join(DISK_BUSES)})")
    if not isinstance(user, str) or not _TOKEN_RE.match(user):
        raise DomainEditError(f"Ceph user '{user}' is not valid")
    hosts = [_monitor(m) for m in monitors]
    try:
        secret = _uuid(secret_uuid, "secret uuid") if secret_uuid is not None else None
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None
    root, domain = _edit(xml)
    name = f"{pool}/{volume}"
    if name in domain.rbd_volumes:
        raise DomainEditError(f"volume {name} is already attached to {domain.name}")
    targets = [d.target for d in domain.disks]
    if target is None:
        target = _next_target(targets, bus)
    elif target in targets:
        raise DomainEditError(f"disk target {target} is already used by {domain.name}")
    disk = Disk(
        type="network",
        target=target,
        bus=bus,
        driver=DiskDriver(name="qemu", type="raw", cache="none", discard="unmap"),
        auth=DiskAuth(username=user, secret_type="ceph", secret_uuid=secret) if secret else None,
        source=DiskSource(protocol="rbd", name=name, hosts=tuple(hosts)),
    )
    devices = _devices_el(root)
    try:
        el = _disk_el(disk)
    except ValueError as exc:
        raise DomainEditError(str(exc)) from None
    _insert_device(devices, el)
    if bus == "scsi" and not any(c.type == "scsi" for c in domain.controllers):
        _insert_device(devices, etree.Element("controller", type="scsi", index="0", model="virtio-scsi"))
    try:
        return _finish(root)
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None


def _disk_matches(el: etree._Element, key: str) -> bool:
    target = el.find("target")
    source = el.find("source")
    if target is not None and target.get("dev") == key:
        return True
    return source is not None and key in (source.get("name"), source.get("file"), source.get("dev"))


def remove_disk(xml: str | bytes, target_or_source: str) -> str:
    """Remove the disk with this target (vdb) or source (pool/volume, file or device path)."""
    root, domain = _edit(xml)
    devices = _devices_el(root)
    found = [el for el in devices.findall("disk") if _disk_matches(el, target_or_source)]
    if not found:
        raise DomainEditError(f"{domain.name} has no disk {target_or_source}")
    for el in found:
        devices.remove(el)
    return _finish(root)


def rename(xml: str | bytes, new_name: str) -> str:
    """Rename the domain, its `<old>_*` RBD volumes and its `<old>.log` console logs.

    Upstream substitutes the name everywhere in the text; this touches only those three places,
    so a name that also appears in, say, a kernel command line is left alone.
    """
    try:
        new_name = _check_name(new_name, "new name")
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None
    root, domain = _edit(xml)
    old = domain.name
    name_el = root.find("name")
    assert name_el is not None
    name_el.text = new_name
    for source in root.iterfind("devices/disk/source"):
        if source.get("protocol") == "rbd" and source.get("name"):
            pool, _, volume = source.get("name", "").partition("/")
            if volume == old or volume.startswith(old + "_"):
                source.set("name", f"{pool}/{new_name}{volume[len(old):]}")
    for tag in ("serial", "console"):
        for chardev in root.iterfind(f"devices/{tag}"):
            for child, key in ((chardev.find("log"), "file"), (chardev.find("source"), "path")):
                path = child.get(key) if child is not None else None
                if child is not None and path and path.rsplit("/", 1)[-1] == f"{old}.log":
                    child.set(key, path[: -len(f"{old}.log")] + f"{new_name}.log")
    try:
        return _finish(root)
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None


def device_xml(xml: str | bytes, *, mac: str | None = None, target: str | None = None,
               source: str | None = None) -> str:
    """The XML of one NIC (by MAC) or disk (by target or source) for hot attach/detach.

    Take it from the new XML after an add (attach) or from the old XML before a remove (detach),
    after `prepare_for_host` on a TCG node so the device matches the running domain.
    """
    if sum(v is not None for v in (mac, target, source)) != 1:
        raise DomainEditError("give exactly one of mac, target or source")
    root, domain = _edit(xml)
    devices = _devices_el(root)
    if mac is not None:
        found = [el for el in devices.findall("interface") if _nic_matches(el, mac, None)]
        wanted = f"interface with MAC {mac}"
    else:
        key = target if target is not None else source
        assert key is not None
        found = [el for el in devices.findall("disk") if _disk_matches(el, key)]
        wanted = f"disk {key}"
    if len(found) != 1:
        raise DomainEditError(f"{domain.name} has {'no' if not found else len(found)} {wanted}")
    return _serialize(_detached(found[0]))
