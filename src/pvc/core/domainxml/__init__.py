"""libvirt domain XML as typed objects and pure functions (no libvirt connection, no I/O).

Why: PVC stores each VM as libvirt XML text (upstream does too, and clients send and fetch it),
but the cluster has to understand that text — memory and vCPUs for placement, RBD volumes for
storage operations, bridges for networks — and has to change it (add a NIC, attach a volume,
adapt it to a host without KVM). Everything here is a pure function from text (or a `Domain`)
to text (or a `Domain`/dict), so it is tested with golden files and property tests, in the
spirit of Nova's typed libvirt config objects and Incus's "QEMU config as pure functions".

Two ways to produce XML, on purpose:

* the edit helpers (`set_vcpus`, `add_interface`, …) change the parsed *tree* of the given XML
  and keep every element and attribute they do not touch, as upstream's CLI edits XML text;
* `render(domain)` writes canonical XML from the typed model. The model keeps unmodelled
  top-level elements, unmodelled devices and unmodelled children/attributes of the devices it
  does model verbatim, so `parse(render(d)) == d`; only unknown attributes of the small modelled
  sub-elements (e.g. `<target tray=…>`'s children, `<mac type=…>`) are not carried.

Every input is treated as hostile: the parser never resolves entities, never touches the
network, refuses DTDs, bounds the document size and reports every problem as
`InvalidDomainXML` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from pvc.core.errors import InvalidInput

__all__ = [
    "OS",
    "Chardev",
    "Controller",
    "Disk",
    "DiskAuth",
    "DiskDriver",
    "DiskSource",
    "Domain",
    "DomainEditError",
    "Graphics",
    "InvalidDomainXML",
    "Nic",
    "Topology",
    "adapt_for_host",
    "add_interface",
    "add_rbd_disk",
    "device_xml",
    "fill_rbd",
    "fill_rbd_device",
    "mac_address",
    "parse",
    "remove_disk",
    "remove_interface",
    "rename",
    "render",
    "serial_log",
    "set_memory",
    "set_vcpus",
    "summary",
    "vnc_address",
]

MAX_XML_BYTES = 1024 * 1024  # a ZooKeeper znode holds at most 1 MiB; no real domain comes close
MAX_VCPUS = 4096  # QEMU's x86 maximum; the API checks the real node limit
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

DISK_TYPES = ("network", "file", "block")
DISK_DEVICES = ("disk", "cdrom", "floppy", "lun")
NIC_TYPES = ("bridge", "network", "direct", "hostdev", "user")
DISK_BUSES = ("virtio", "scsi", "sata", "ide", "usb")
_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
_PREFIX_BUS = (("xvd", "xen"), ("vd", "virtio"), ("sd", "scsi"), ("hd", "ide"), ("fd", "fdc"))

Attrs = tuple[tuple[str, str], ...]  # attributes PVC does not model, kept in document order
Raw = tuple[str, ...]  # elements PVC does not model, kept verbatim as serialized XML


class InvalidDomainXML(InvalidInput):
    """The XML is not a domain PVC can run; the message names what is wrong."""


class DomainEditError(InvalidInput):
    """An edit cannot be applied (bad argument, device missing or already present)."""


# --------------------------------------------------------------------------------------------
# The typed model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """`<cpu><topology>`; libvirt insists sockets*dies*cores*threads equals `<vcpu>`."""

    sockets: int
    cores: int
    threads: int
    dies: int = 1

    @property
    def vcpus(self) -> int:
        return self.sockets * self.dies * self.cores * self.threads

    def __str__(self) -> str:
        return f"{self.sockets}/{self.cores}/{self.threads}"


@dataclass(frozen=True)
class OS:
    """`<os>`: direct kernel boot and boot order; loader/nvram/bios… stay in `other`."""

    type: str = "hvm"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    boot: tuple[str, ...] = ()
    other_attrs: Attrs = ()
    other: Raw = ()


@dataclass(frozen=True)
class DiskSource:
    """`<source>` of a disk: rbd (protocol, pool/volume name, monitors), file path or block dev."""

    protocol: str | None = None
    name: str | None = None
    hosts: tuple[tuple[str, str | None], ...] = ()
    file: str | None = None
    dev: str | None = None
    other_attrs: Attrs = ()
    other: Raw = ()

    @property
    def pool(self) -> str | None:
        return self.name.split("/", 1)[0] if self.name and "/" in self.name else None

    @property
    def volume(self) -> str | None:
        return self.name.split("/", 1)[1] if self.name and "/" in self.name else None


@dataclass(frozen=True)
class DiskAuth:
    """Ceph credentials of an rbd disk: the client user and the libvirt secret holding its key."""

    username: str | None = None
    secret_type: str | None = None
    secret_uuid: str | None = None
    secret_usage: str | None = None


@dataclass(frozen=True)
class DiskDriver:
    """`<driver>`; `event_idx='off'` keeps TCG guests alive across live migration."""

    name: str | None = None
    type: str | None = None
    cache: str | None = None
    event_idx: str | None = None
    discard: str | None = None
    other_attrs: Attrs = ()


@dataclass(frozen=True)
class Disk:
    """`<disk>`; `type` is network (rbd on a cluster), file or block (both node-local)."""

    type: str
    target: str
    device: str = "disk"
    bus: str | None = None
    source: DiskSource | None = None
    driver: DiskDriver | None = None
    auth: DiskAuth | None = None
    target_attrs: Attrs = ()
    other_attrs: Attrs = ()
    other: Raw = ()

    @property
    def effective_bus(self) -> str | None:
        """The bus libvirt will use: the explicit one, else guessed from the target prefix."""
        if self.bus:
            return self.bus
        return next((bus for prefix, bus in _PREFIX_BUS if self.target.startswith(prefix)), None)


@dataclass(frozen=True)
class Nic:
    """`<interface>`; `source` is the bridge, libvirt network, macvtap dev or PCI address."""

    type: str
    mac: str | None = None
    source: str | None = None
    source_mode: str | None = None
    model: str | None = None
    mtu: int | None = None
    sriov_device: str | None = None  # upstream PVC names the VF of a hostdev NIC here
    source_attrs: Attrs = ()
    other_attrs: Attrs = ()
    other: Raw = ()


@dataclass(frozen=True)
class Chardev:
    """`<serial>` or `<console>`: pty or file, plus the `<log>` PVC's console log reads."""

    type: str | None = "pty"
    source_path: str | None = None
    log_file: str | None = None
    log_append: str | None = None
    target_type: str | None = None
    target_port: int | None = None
    source_attrs: Attrs = ()
    other_attrs: Attrs = ()
    other: Raw = ()


@dataclass(frozen=True)
class Graphics:
    """`<graphics>`; the live XML's listen/port become the VM's VNC address."""

    type: str
    listen: str | None = None
    port: int | None = None
    autoport: str | None = None
    other_attrs: Attrs = ()
    other: Raw = ()


@dataclass(frozen=True)
class Controller:
    """`<controller>` (type and model are part of PVC's VM item)."""

    type: str
    index: int | None = None
    model: str | None = None
    other_attrs: Attrs = ()
    other: Raw = ()


@dataclass(frozen=True)
class Domain:
    """A libvirt domain as PVC sees it; `warnings` (not part of equality) flag node-local parts."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    type: str = "kvm"
    description: str | None = None
    topology: Topology | None = None
    cpu_mode: str | None = None
    arch: str | None = None
    machine: str | None = None
    os: OS = OS()
    emulator: str | None = None
    features: tuple[str, ...] = ()
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Nic, ...] = ()
    serials: tuple[Chardev, ...] = ()
    consoles: tuple[Chardev, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    controllers: tuple[Controller, ...] = ()
    vcpu_attrs: Attrs = ()
    cpu_attrs: Attrs = ()
    cpu_other: Raw = ()
    feature_other: Raw = ()
    devices_other: Raw = ()
    other_attrs: Attrs = ()
    other: Raw = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def rbd_volumes(self) -> list[str]:
        """`pool/volume` of each rbd disk, in order (PVC's `rbdlist`)."""
        return [
            d.source.name
            for d in self.disks
            if d.type == "network" and d.source and d.source.protocol == "rbd" and d.source.name
        ]

    @property
    def macs(self) -> list[str]:
        return [n.mac for n in self.interfaces if n.mac]


# --------------------------------------------------------------------------------------------
# Safe loading and small validators
# --------------------------------------------------------------------------------------------


def _parser(encoding: str | None) -> etree.XMLParser:
    """A parser that cannot be turned against the host: no entities, no DTD, no network (XXE)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        collect_ids=False,
        encoding=encoding,
    )


def _load_root(xml: str | bytes, what: str = "domain XML") -> etree._Element:
    if isinstance(xml, str):
        try:
            data = xml.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidDomainXML(f"{what} is not XML: it contains unencodable characters") from None
        encoding: str | None = "utf-8"
    elif isinstance(xml, bytes | bytearray):
        data, encoding = bytes(xml), None
    else:
        raise InvalidDomainXML(f"{what} must be text, not {type(xml).__name__}")
    if not data.strip():
        raise InvalidDomainXML(f"{what} is empty")
    if len(data) > MAX_XML_BYTES:
        raise InvalidDomainXML(f"{what} is larger than {MAX_XML_BYTES // 1024} KiB")
    try:
        root = etree.fromstring(data, _parser(encoding))
    except etree.XMLSyntaxError as exc:
        raise InvalidDomainXML(f"{what} is not XML: {exc.msg or exc}") from None
    except (etree.LxmlError, ValueError, LookupError) as exc:
        raise InvalidDomainXML(f"{what} is not XML: {exc}") from None
    if root is None:
        raise InvalidDomainXML(f"{what} is not XML: no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidDomainXML(f"{what}: DOCTYPE and entity declarations are not allowed")
    _strip_blanks(root)
    return root


def _mixed(el: etree._Element) -> bool:
    return bool((el.text or "").strip()) or any((child.tail or "").strip() for child in el)


def _strip_blanks(root: etree._Element) -> None:
    """Drop indentation whitespace (the exact inverse of `_indent`; mixed content is left alone).

    Done here rather than with libxml2's remove_blank_text, whose heuristics keep long
    whitespace runs and would make canonical output depend on nesting depth.
    """
    for el in root.iter(etree.Element):
        if len(el) and not _mixed(el):
            if el.text is not None and not el.text.strip():
                el.text = None
            for child in el:
                if child.tail is not None and not child.tail.strip():
                    child.tail = None


def _elements(el: etree._Element) -> list[etree._Element]:
    """Child elements only (comments and processing instructions are not part of the model)."""
    return list(el.iterchildren(tag=etree.Element))


def _raw(el: etree._Element) -> str:
    """An element as standalone XML, declaring only the namespaces it really uses."""
    if not el.nsmap:  # the common case: nothing to clean up, no copy needed
        return etree.tostring(el, encoding="unicode", with_tail=False)
    copy = deepcopy(el)
    copy.tail = None
    etree.cleanup_namespaces(copy)
    return etree.tostring(copy, encoding="unicode")


def _from_raw(raw: str) -> etree._Element:
    return _load_root(raw, f"element {raw[:40]!r}")


def _attrs(el: etree._Element, known: Iterable[str]) -> Attrs:
    skip = set(known)
    return tuple((str(k), str(v)) for k, v in el.attrib.items() if k not in skip)


def _text(el: etree._Element, what: str) -> str:
    """Text content; comments inside (e.g. `<name><!-- c -->x</name>`) do not cut it short."""
    if _elements(el):
        raise InvalidDomainXML(f"<{what}> must contain only text")
    return (el.text or "") + "".join(child.tail or "" for child in el)


_INT_RE = re.compile(r"^\s*(-?[0-9]{1,18})\s*$")


def _int(value: str | None, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    match = _INT_RE.match(value or "")
    if not match:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not an integer")
    number = int(match.group(1))
    if minimum is not None and number < minimum:
        raise InvalidDomainXML(f"{what} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise InvalidDomainXML(f"{what} must be at most {maximum}, not {number}")
    return number


def _opt_int(value: str | None, what: str, minimum: int | None = None) -> int | None:
    return None if value is None else _int(value, what, minimum)


_UNIT_RE = re.compile(r"^(?:(?P<bytes>b|bytes?)|(?P<p>[kmgtpe])(?P<si>b)?|(?P<pi>[kmgtpe])ib)$", re.I)


def _unit_factor(unit: str | None, what: str) -> int:
    """Bytes per unit as libvirt reads them: default KiB; 'KB' is 1000, 'K'/'KiB' 1024 …"""
    if unit is None or unit == "":
        return 1024
    match = _UNIT_RE.match(unit.strip())
    if not match:
        raise InvalidDomainXML(f"{what}: unknown unit '{unit}' (use b, KiB, MiB, GiB, …)")
    if match.group("bytes"):
        return 1
    letter = (match.group("p") or match.group("pi")).lower()
    power = "kmgtpe".index(letter) + 1
    return (1000 if match.group("si") else 1024) ** power


_UUID_RE = re.compile(r"^[0-9a-fA-F-]+$")


def _uuid(value: str | None, what: str = "uuid") -> str:
    """Canonical lower-case UUID; libvirt allows dashes anywhere and rejects all-equal digits."""
    text = (value or "").strip()
    digits = text.replace("-", "")
    if not text or not _UUID_RE.match(text) or len(digits) != 32:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not a valid UUID")
    if len(set(digits.lower())) == 1:
        raise InvalidDomainXML(f"{what} '{value}' is not a valid UUID (all digits are the same)")
    return str(uuidlib.UUID(hex=digits))


def _check_name(name: str, what: str = "name") -> str:
    if not name:
        raise InvalidDomainXML(f"{what} is empty")
    if name != name.strip():
        raise InvalidDomainXML(f"{what} '{name}' has leading or trailing whitespace")
    if "/" in name:
        raise InvalidDomainXML(f"{what} '{name}' contains '/'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidDomainXML(f"{what} contains control characters")
    if len(name) > 255:
        raise InvalidDomainXML(f"{what} is longer than 255 characters")
    return name


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _mac(value: str | None, what: str) -> str:
    if value is None or not _MAC_RE.match(value):
        raise InvalidDomainXML(f"{what}: '{value or ''}' is not a MAC address (xx:xx:xx:xx:xx:xx)")
    if int(value[:2], 16) & 1:
        raise InvalidDomainXML(f"{what}: {value} is a multicast MAC address; a NIC needs a unicast one")
    return value.lower()


def _pci_part(value: str | None, what: str, maximum: int) -> int:
    text = (value or "").strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]{1,4}", text):
        number = int(text[2:], 16)
    elif re.fullmatch(r"[0-9]{1,5}", text):
        number = int(text, 10)
    else:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not a number")
    if number > maximum:
        raise InvalidDomainXML(f"{what} {text} is out of range")
    return number


def _pci_address(el: etree._Element | None, what: str) -> str:
    if el is None or el.get("type", "pci") != "pci":
        raise InvalidDomainXML(f"{what}: a hostdev interface needs <source><address type='pci' …/>")
    domain = _pci_part(el.get("domain", "0"), f"{what} PCI domain", 0xFFFF)
    bus = _pci_part(el.get("bus"), f"{what} PCI bus", 0xFF)
    slot = _pci_part(el.get("slot"), f"{what} PCI slot", 0x1F)
    function = _pci_part(el.get("function"), f"{what} PCI function", 7)
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


_PCI_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")


# --------------------------------------------------------------------------------------------
# Parsing: tree -> Domain
# --------------------------------------------------------------------------------------------


def parse(xml: str | bytes) -> Domain:
    """Parse and validate domain XML; raise InvalidDomainXML naming the first problem."""
    return _domain_from_root(_load_root(xml))


def _single(children: dict[str, list[etree._Element]], tag: str, where: str) -> etree._Element | None:
    found = children.get(tag, [])
    if len(found) > 1:
        raise InvalidDomainXML(f"{where} has more than one <{tag}>")
    return found[0] if found else None


def _group(el: etree._Element) -> dict[str, list[etree._Element]]:
    groups: dict[str, list[etree._Element]] = {}
    for child in _elements(el):
        groups.setdefault(child.tag, []).append(child)
    return groups


def _domain_from_root(root: etree._Element) -> Domain:
    warnings: list[str] = []
    if root.tag != "domain":
        raise InvalidDomainXML(f"the root element is <{root.tag}>, not <domain>")
    dtype = root.get("type")
    if dtype is None:
        raise InvalidDomainXML("<domain> has no type attribute (kvm or qemu)")
    if dtype not in ("kvm", "qemu"):
        raise InvalidDomainXML(f"domain type '{dtype}' is not supported (kvm or qemu)")
    top = _group(root)

    name_el = _single(top, "name", "<domain>")
    if name_el is None:
        raise InvalidDomainXML("no <name>")
    name = _check_name(_text(name_el, "name"))

    uuid_el = _single(top, "uuid", "<domain>")
    if uuid_el is None:
        raise InvalidDomainXML("no <uuid>")
    uuid = _uuid(_text(uuid_el, "uuid"))

    desc_el = _single(top, "description", "<domain>")
    description = None if desc_el is None else _text(desc_el, "description")

    mem_el = _single(top, "memory", "<domain>")
    if mem_el is None:
        raise InvalidDomainXML("no <memory>")
    mem_units = _int(_text(mem_el, "memory"), "memory", minimum=0)
    mem_bytes = mem_units * _unit_factor(mem_el.get("unit"), "memory")
    if mem_bytes <= 0:
        raise InvalidDomainXML("memory must be greater than zero")
    memory_mib = math.ceil(mem_bytes / 1024**2)  # QEMU rounds guest RAM up to whole MiB too
    if memory_mib > MAX_MEMORY_MIB:
        raise InvalidDomainXML(f"memory {memory_mib} MiB is more than {MAX_MEMORY_MIB} MiB")

    vcpu_el = _single(top, "vcpu", "<domain>")
    if vcpu_el is None:
        raise InvalidDomainXML("no <vcpu>")
    vcpus = _int(_text(vcpu_el, "vcpu"), "vcpu", minimum=1, maximum=MAX_VCPUS)
    if vcpu_el.get("current") is not None:
        _int(vcpu_el.get("current"), "vcpu current", minimum=1, maximum=vcpus)

    topology, cpu_mode, cpu_attrs, cpu_other = None, None, (), ()
    cpu_el = _single(top, "cpu", "<domain>")
    if cpu_el is not None:
        cpu_mode = cpu_el.get("mode")
        cpu_attrs = _attrs(cpu_el, ["mode"])
        rest = []
        for child in _elements(cpu_el):
            if child.tag == "topology":
                if topology is not None:
                    raise InvalidDomainXML("<cpu> has more than one <topology>")
                topology = _topology(child)
            else:
                rest.append(_raw(child))
        cpu_other = tuple(rest)
        if topology is not None and topology.vcpus != vcpus:
            raise InvalidDomainXML(
                f"cpu topology {topology} ({topology.vcpus} vCPUs) does not match <vcpu> {vcpus}"
            )

    os_el = _single(top, "os", "<domain>")
    os_, arch, machine = _os(os_el)
    if os_.kernel:
        warnings.append(f"os kernel {os_.kernel} is a host file: it must exist on every node")

    features: list[str] = []
    feature_other: list[str] = []
    feat_el = _single(top, "features", "<domain>")
    if feat_el is not None:
        for child in _elements(feat_el):
            features.append(child.tag)
            if child.attrib or len(child) or (child.text or "").strip():
                feature_other.append(_raw(child))

    dev_el = _single(top, "devices", "<domain>")
    if dev_el is None:
        raise InvalidDomainXML("no <devices>")
    devices = _devices(dev_el, warnings)

    modelled = {"name", "uuid", "description", "memory", "vcpu", "cpu", "os", "features", "devices"}
    other = []
    for child in _elements(root):
        if child.tag in modelled:
            continue
        if child.tag == f"{{{QEMU_NS}}}commandline":
            warnings.append("<qemu:commandline> passes raw arguments to QEMU; PVC cannot check them")
        other.append(_raw(child))

    return Domain(
        name=name,
        uuid=uuid,
        memory_mib=memory_mib,
        vcpus=vcpus,
        type=dtype,
        description=description,
        topology=topology,
        cpu_mode=cpu_mode,
        arch=arch,
        machine=machine,
        os=os_,
        features=tuple(features),
        vcpu_attrs=_attrs(vcpu_el, []),
        cpu_attrs=cpu_attrs,
        cpu_other=cpu_other,
        feature_other=tuple(feature_other),
        other_attrs=_attrs(root, ["type"]),
        other=tuple(other),
        warnings=tuple(warnings),
        **devices,
    )


def _topology(el: etree._Element) -> Topology:
    values = {}
    for key in ("sockets", "cores", "threads"):
        if el.get(key) is None:
            raise InvalidDomainXML(f"cpu topology has no {key} attribute")
        values[key] = _int(el.get(key), f"cpu topology {key}", minimum=1, maximum=MAX_VCPUS)
    dies = _int(el.get("dies", "1"), "cpu topology dies", minimum=1, maximum=MAX_VCPUS)
    return Topology(dies=dies, **values)


def _os(el: etree._Element | None) -> tuple[OS, str | None, str | None]:
    if el is None:
        raise InvalidDomainXML("no <os> (it needs at least <type>hvm</type>)")
    type_el, kernel, initrd, cmdline, boot, other = None, None, None, None, [], []
    for child in _elements(el):
        if child.tag == "type" and type_el is None:
            type_el = child
        elif child.tag == "kernel" and kernel is None:
            kernel = _text(child, "kernel")
        elif child.tag == "initrd" and initrd is None:
            initrd = _text(child, "initrd")
        elif child.tag == "cmdline" and cmdline is None:
            cmdline = _text(child, "cmdline")
        elif child.tag == "boot" and child.get("dev") is not None and len(child.attrib) == 1:
            boot.append(child.get("dev"))
        else:
            other.append(_raw(child))
    if type_el is None:
        raise InvalidDomainXML("no <os><type> (use hvm)")
    os_type = _text(type_el, "os type").strip()
    if os_type != "hvm":
        raise InvalidDomainXML(f"os type '{os_type}' is not supported (hvm)")
    os_ = OS(
        type=os_type,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        boot=tuple(boot),
        other_attrs=_attrs(el, []),
        other=tuple(other),
    )
    return os_, type_el.get("arch"), type_el.get("machine")


def _devices(el: etree._Element, warnings: list[str]) -> dict[str, Any]:
    emulator: str | None = None
    disks: list[Disk] = []
    nics: list[Nic] = []
    serials: list[Chardev] = []
    consoles: list[Chardev] = []
    graphics: list[Graphics] = []
    controllers: list[Controller] = []
    other: list[str] = []
    for child in _elements(el):
        tag = child.tag
        if tag == "emulator":
            if emulator is not None:
                raise InvalidDomainXML("<devices> has more than one <emulator>")
            emulator = _text(child, "emulator").strip()
        elif tag == "disk":
            disks.append(_disk(child, len(disks), warnings))
        elif tag == "interface":
            nics.append(_nic(child, len(nics), warnings))
        elif tag == "serial":
            serials.append(_chardev(child, f"serial #{len(serials)}"))
        elif tag == "console":
            consoles.append(_chardev(child, f"console #{len(consoles)}"))
        elif tag == "graphics":
            graphics.append(_graphics(child, len(graphics)))
        elif tag == "controller":
            controllers.append(_controller(child, len(controllers)))
        else:
            if tag == "hostdev":
                warnings.append("<hostdev> passes a host device through: the VM can run only where it is")
            other.append(_raw(child))

    targets = [d.target for d in disks]
    for target in targets:
        if targets.count(target) > 1:
            raise InvalidDomainXML(f"disk target {target} is used by more than one disk")
    macs = [n.mac for n in nics if n.mac]
    for mac in macs:
        if macs.count(mac) > 1:
            raise InvalidDomainXML(f"MAC address {mac} is used by more than one interface")
    return {
        "emulator": emulator,
        "disks": tuple(disks),
        "interfaces": tuple(nics),
        "serials": tuple(serials),
        "consoles": tuple(consoles),
        "graphics": tuple(graphics),
        "controllers": tuple(controllers),
        "devices_other": tuple(other),
    }


def _disk(el: etree._Element, index: int, warnings: list[str]) -> Disk:
    children = _group(el)
    target_el = _single(children, "target", f"disk #{index}")
    if target_el is None or not target_el.get("dev"):
        raise InvalidDomainXML(f"disk #{index} has no <target dev=…>")
    target = target_el.get("dev", "")
    what = f"disk {target}"
    if not re.fullmatch(r"[a-z]{2,4}[a-z]{1,3}", target):
        raise InvalidDomainXML(f"{what}: target '{target}' is not a disk name like vda or sdb")
    dtype = el.get("type", "file")
    if dtype not in DISK_TYPES:
        raise InvalidDomainXML(f"{what}: type '{dtype}' is not supported ({', '.join(DISK_TYPES)})")
    device = el.get("device", "disk")
    if device not in DISK_DEVICES:
        raise InvalidDomainXML(f"{what}: device '{device}' is not supported ({', '.join(DISK_DEVICES)})")

    auth = None
    auth_el = _single(children, "auth", what)
    source = None
    source_el = _single(children, "source", what)
    if source_el is not None:
        src_children = _group(source_el)
        src_auth = _single(src_children, "auth", f"{what} <source>")
        if src_auth is not None:
            if auth_el is not None:
                raise InvalidDomainXML(f"{what} has <auth> both in <disk> and in <source>")
            auth_el = src_auth
        hosts = []
        for host in src_children.get("host", []):
            host_name = host.get("name")
            if not host_name:
                raise InvalidDomainXML(f"{what}: a <source><host> has no name")
            port = host.get("port")
            if port is not None and not re.fullmatch(r"[0-9]{1,5}", port):
                raise InvalidDomainXML(f"{what}: host port '{port}' is not a port number")
            hosts.append((host_name, port))
        source = DiskSource(
            protocol=source_el.get("protocol"),
            name=source_el.get("name"),
            hosts=tuple(hosts),
            file=source_el.get("file"),
            dev=source_el.get("dev"),
            other_attrs=_attrs(source_el, ["protocol", "name", "file", "dev"]),
            other=tuple(_raw(c) for c in _elements(source_el) if c.tag not in ("host", "auth")),
        )
    if auth_el is not None:
        secret = _single(_group(auth_el), "secret", f"{what} <auth>")
        auth = DiskAuth(
            username=auth_el.get("username"),
            secret_type=secret.get("type") if secret is not None else None,
            secret_uuid=_uuid(secret.get("uuid"), f"{what} secret uuid")
            if secret is not None and secret.get("uuid") is not None
            else None,
            secret_usage=secret.get("usage") if secret is not None else None,
        )

    if dtype == "network":
        if source is None or not source.protocol:
            raise InvalidDomainXML(f"{what}: a network disk needs <source protocol=…>")
        if source.protocol == "rbd":
            pool, _, volume = (source.name or "").partition("/")
            if not pool or not volume:
                raise InvalidDomainXML(f"{what}: rbd source name '{source.name or ''}' is not pool/volume")
    elif dtype == "file" and source is not None and source.file:
        warnings.append(f"disk {target}: file {source.file} is node-local, not shared storage")
    elif dtype == "block" and source is not None and source.dev:
        warnings.append(f"disk {target}: block device {source.dev} is node-local, not shared storage")

    driver = None
    driver_el = _single(children, "driver", what)
    if driver_el is not None:
        known = ("name", "type", "cache", "event_idx", "discard")
        driver = DiskDriver(**{k: driver_el.get(k) for k in known}, other_attrs=_attrs(driver_el, known))
    modelled = ("target", "source", "driver", "auth")
    return Disk(
        type=dtype,
        target=target,
        device=device,
        bus=target_el.get("bus"),
        source=source,
        driver=driver,
        auth=auth,
        target_attrs=_attrs(target_el, ["dev", "bus"]),
        other_attrs=_attrs(el, ["type", "device"]),
        other=tuple(_raw(c) for c in _elements(el) if c.tag not in modelled),
    )


def _nic(el: etree._Element, index: int, warnings: list[str]) -> Nic:
    children = _group(el)
    what = f"interface #{index}"
    mac = None
    mac_el = _single(children, "mac", what)
    if mac_el is not None:
        mac = _mac(mac_el.get("address"), what)
        what = f"interface {mac}"
    ntype = el.get("type")
    if ntype not in NIC_TYPES:
        raise InvalidDomainXML(f"{what}: type '{ntype or ''}' is not supported ({', '.join(NIC_TYPES)})")
    source_el = _single(children, "source", what)
    source, mode, source_attrs = None, None, ()
    if ntype in ("bridge", "network", "direct"):
        key = {"bridge": "bridge", "network": "network", "direct": "dev"}[ntype]
        source = source_el.get(key) if source_el is not None else None
        if not source:
            raise InvalidDomainXML(f"{what}: a {ntype} interface needs <source {key}=…>")
        if ntype == "direct":
            mode = source_el.get("mode")
        source_attrs = _attrs(source_el, [key, "mode"] if ntype == "direct" else [key])
        if ntype == "network":
            warnings.append(f"{what}: libvirt network '{source}' must exist on every node")
    elif ntype == "hostdev":
        address = _single(_group(source_el), "address", what) if source_el is not None else None
        source = _pci_address(address, what)
    else:  # user
        warnings.append(f"{what}: user-mode networking is private to each node")
    model_el = _single(children, "model", what)
    mtu_el = _single(children, "mtu", what)
    sriov_el = _single(children, "sriov_device", what)
    mtu = None
    if mtu_el is not None:
        mtu = _int(mtu_el.get("size"), f"{what} mtu", minimum=68, maximum=65535)
    modelled = ("mac", "model", "mtu", "sriov_device") + (() if ntype == "user" else ("source",))
    return Nic(
        type=ntype,
        mac=mac,
        source=source,
        source_mode=mode,
        model=model_el.get("type") if model_el is not None else None,
        mtu=mtu,
        sriov_device=_text(sriov_el, "sriov_device").strip() if sriov_el is not None else None,
        source_attrs=source_attrs,
        other_attrs=_attrs(el, ["type"]),
        other=tuple(_raw(c) for c in _elements(el) if c.tag not in modelled),
    )


def _chardev(el: etree._Element, what: str) -> Chardev:
    children = _group(el)
    source_el = _single(children, "source", what)
    log_el = _single(children, "log", what)
    target_el = _single(children, "target", what)
    return Chardev(
        type=el.get("type"),
        source_path=source_el.get("path") if source_el is not None else None,
        log_file=log_el.get("file") if log_el is not None else None,
        log_append=log_el.get("append") if log_el is not None else None,
        target_type=target_el.get("type") if target_el is not None else None,
        target_port=_opt_int(target_el.get("port"), f"{what} target port", 0)
        if target_el is not None
        else None,
        source_attrs=_attrs(source_el, ["path"]) if source_el is not None else (),
        other_attrs=_attrs(el, ["type"]),
        other=tuple(_raw(c) for c in _elements(el) if c.tag not in ("source", "log", "target")),
    )


def _graphics(el: etree._Element, index: int) -> Graphics:
    gtype = el.get("type")
    if not gtype:
        raise InvalidDomainXML(f"graphics #{index} has no type")
    listen = el.get("listen")
    if listen is None:
        for child in _elements(el):
            if child.tag == "listen" and child.get("address"):
                listen = child.get("address")
                break
    port = el.get("port")
    return Graphics(
        type=gtype,
        listen=listen,
        port=None if port is None else _int(port, f"graphics {gtype} port", minimum=-1, maximum=65535),
        autoport=el.get("autoport"),
        other_attrs=_attrs(el, ["type", "listen", "port", "autoport"]),
        other=tuple(_raw(c) for c in _elements(el)),
    )


def _controller(el: etree._Element, index: int) -> Controller:
    ctype = el.get("type")
    if not ctype:
        raise InvalidDomainXML(f"controller #{index} has no type")
    idx = el.get("index")
    return Controller(
        type=ctype,
        index=None if idx is None else _int(idx, f"controller {ctype} index", minimum=0, maximum=65535),
        model=el.get("model"),
        other_attrs=_attrs(el, ["type", "index", "model"]),
        other=tuple(_raw(c) for c in _elements(el)),
    )


# --------------------------------------------------------------------------------------------
# Rendering: Domain -> tree -> canonical text
# --------------------------------------------------------------------------------------------


def _indent(el: etree._Element, level: int = 0) -> None:
    """Pretty-print like etree.indent, but leave mixed content (text beside elements) alone,
    so whitespace the author put there survives and canonical output is a fixed point."""
    if not len(el) or _mixed(el):
        return
    el.text = "\n" + "  " * (level + 1)
    for child in el:
        _indent(child, level + 1)
        child.tail = "\n" + "  " * (level + 1)
    el[-1].tail = "\n" + "  " * level


def _serialize(root: etree._Element) -> str:
    _indent(root)
    root.tail = None
    return etree.tostring(root, encoding="unicode") + "\n"


def _set(el: etree._Element, key: str, value: object) -> None:
    if value is not None:
        el.set(key, str(value))


def _sub(parent: etree._Element, tag: str, attrs: Sequence[tuple[str, object]] = (), text: str | None = None,
         ) -> etree._Element:
    el = etree.SubElement(parent, tag)
    for key, value in attrs:
        _set(el, key, value)
    if text is not None:
        el.text = text
    return el


def _append_raw(parent: etree._Element, raws: Iterable[str]) -> None:
    for raw in raws:
        parent.append(_from_raw(raw))


def render(domain: Domain) -> str:
    """Canonical XML for a Domain; refuses (InvalidDomainXML) a Domain that would not parse back."""
    try:
        root = _domain_to_root(domain)
    except InvalidDomainXML:
        raise
    except (etree.LxmlError, ValueError, TypeError) as exc:
        raise InvalidDomainXML(f"cannot render domain {domain.name!r}: {exc}") from None
    _domain_from_root(root)
    return _serialize(root)


def _domain_to_root(d: Domain) -> etree._Element:
    root = etree.Element("domain")
    root.set("type", d.type)
    for key, value in d.other_attrs:
        root.set(key, value)
    _sub(root, "name", text=d.name)
    _sub(root, "uuid", text=d.uuid)
    if d.description is not None:
        _sub(root, "description", text=d.description)
    _sub(root, "memory", [("unit", "MiB")], text=str(d.memory_mib))
    _sub(root, "vcpu", d.vcpu_attrs, text=str(d.vcpus))
    if d.cpu_mode is not None or d.topology is not None or d.cpu_attrs or d.cpu_other:
        cpu = _sub(root, "cpu", [("mode", d.cpu_mode), *d.cpu_attrs])
        if d.topology is not None:
            t = d.topology
            dies = t.dies if t.dies != 1 else None
            _sub(cpu, "topology", [("sockets", t.sockets), ("dies", dies), ("cores", t.cores),
                                   ("threads", t.threads)])
        _append_raw(cpu, d.cpu_other)
    os_el = _sub(root, "os", d.os.other_attrs)
    _sub(os_el, "type", [("arch", d.arch), ("machine", d.machine)], text=d.os.type)
    for tag in ("kernel", "initrd", "cmdline"):
        value = getattr(d.os, tag)
        if value is not None:
            _sub(os_el, tag, text=value)
    for dev in d.os.boot:
        _sub(os_el, "boot", [("dev", dev)])
    _append_raw(os_el, d.os.other)
    if d.features or d.feature_other:
        feats = _sub(root, "features")
        pending = [_from_raw(raw) for raw in d.feature_other]
        for name in d.features:
            match = next((el for el in pending if el.tag == name), None)
            if match is not None:
                pending.remove(match)
                feats.append(match)
            else:
                _sub(feats, name)
        for el in pending:
            feats.append(el)
    _append_raw(root, d.other)
    devices = _sub(root, "devices")
    if d.emulator is not None:
        _sub(devices, "emulator", text=d.emulator)
    for disk in d.disks:
        devices.append(_disk_el(disk))
    for ctl in d.controllers:
        el = _sub(devices, "controller", [("type", ctl.type), ("index", ctl.index), ("model", ctl.model),
                                          *ctl.other_attrs])
        _append_raw(el, ctl.other)
    for nic in d.interfaces:
        devices.append(_nic_el(nic))
    for tag, chardevs in (("serial", d.serials), ("console", d.consoles)):
        for chardev in chardevs:
            devices.append(_chardev_el(tag, chardev))
    for g in d.graphics:
        el = _sub(devices, "graphics", [("type", g.type), ("port", g.port), ("autoport", g.autoport),
                                        ("listen", g.listen), *g.other_attrs])
        _append_raw(el, g.other)
    _append_raw(devices, d.devices_other)
    return root


def _disk_el(disk: Disk) -> etree._Element:
    el = etree.Element("disk")
    for key, value in (("type", disk.type), ("device", disk.device), *disk.other_attrs):
        _set(el, key, value)
    if disk.driver is not None:
        drv = disk.driver
        _sub(el, "driver", [("name", drv.name), ("type", drv.type), ("cache", drv.cache),
                            ("discard", drv.discard), ("event_idx", drv.event_idx), *drv.other_attrs])
    if disk.auth is not None:
        auth = _sub(el, "auth", [("username", disk.auth.username)])
        if disk.auth.secret_type or disk.auth.secret_uuid or disk.auth.secret_usage:
            _sub(auth, "secret", [("type", disk.auth.secret_type), ("uuid", disk.auth.secret_uuid),
                                  ("usage", disk.auth.secret_usage)])
    if disk.source is not None:
        src = disk.source
        src_el = _sub(el, "source", [("protocol", src.protocol), ("name", src.name), ("file", src.file),
                                     ("dev", src.dev), *src.other_attrs])
        for host, port in src.hosts:
            _sub(src_el, "host", [("name", host), ("port", port)])
        _append_raw(src_el, src.other)
    _sub(el, "target", [("dev", disk.target), ("bus", disk.bus), *disk.target_attrs])
    _append_raw(el, disk.other)
    return el


def _nic_el(nic: Nic) -> etree._Element:
    el = etree.Element("interface")
    el.set("type", nic.type)
    for key, value in nic.other_attrs:
        el.set(key, value)
    if nic.mac is not None:
        _sub(el, "mac", [("address", nic.mac)])
    if nic.type == "hostdev" and nic.source is not None:
        match = _PCI_RE.match(nic.source)
        if not match:
            raise InvalidDomainXML(f"interface {nic.mac}: hostdev source '{nic.source}' is not a PCI address")
        src = _sub(el, "source", nic.source_attrs)
        d, b, s, f = match.groups()
        _sub(src, "address", [("type", "pci"), ("domain", f"0x{d}"), ("bus", f"0x{b}"), ("slot", f"0x{s}"),
                              ("function", f"0x{f}")])
    elif nic.source is not None:
        key = {"bridge": "bridge", "network": "network", "direct": "dev"}.get(nic.type, "bridge")
        _sub(el, "source", [(key, nic.source), ("mode", nic.source_mode), *nic.source_attrs])
    if nic.model is not None:
        _sub(el, "model", [("type", nic.model)])
    if nic.mtu is not None:
        _sub(el, "mtu", [("size", nic.mtu)])
    if nic.sriov_device is not None:
        _sub(el, "sriov_device", text=nic.sriov_device)
    _append_raw(el, nic.other)
    return el


def _chardev_el(tag: str, c: Chardev) -> etree._Element:
    el = etree.Element(tag)
    for key, value in (("type", c.type), *c.other_attrs):
        _set(el, key, value)
    if c.source_path is not None or c.source_attrs:
        _sub(el, "source", [("path", c.source_path), *c.source_attrs])
    if c.log_file is not None or c.log_append is not None:
        _sub(el, "log", [("file", c.log_file), ("append", c.log_append)])
    if c.target_type is not None or c.target_port is not None:
        _sub(el, "target", [("type", c.target_type), ("port", c.target_port)])
    _append_raw(el, c.other)
    return el


# --------------------------------------------------------------------------------------------
# Edit helpers: XML text in, XML text out, everything not touched is kept
# --------------------------------------------------------------------------------------------


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


def fill_rbd(
    xml: str | bytes,
    hosts: Sequence[str | tuple[str, int | str | None]],
    username: str | None,
    secret_uuid: str | None,
) -> str:
    """Give every rbd disk what QEMU needs to reach Ceph: monitors (`<host>`) and cephx `<auth>`.

    Stored definitions may name only `pool/volume` (the API and the provisioner add volumes that
    way); the node fills the rest in at start. Disks that already have hosts or auth keep theirs.
    Every node has the same monitor list and the same secret UUID, so the result is the same on
    every node and a live migration can carry it unchanged. No username or secret: no auth added.
    """
    monitors = [_monitor(h) for h in hosts]
    secret = _check_access(username, secret_uuid)
    root, _domain = _edit(xml)
    for disk in root.iterfind("devices/disk"):
        _fill_rbd_disk(disk, monitors, username, secret)
    try:
        return _finish(root)
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None


def _check_access(username: str | None, secret_uuid: str | None) -> str | None:
    if username is not None and (not isinstance(username, str) or not _TOKEN_RE.match(username)):
        raise DomainEditError(f"Ceph user '{username}' is not valid")
    try:
        return _uuid(secret_uuid, "secret uuid") if secret_uuid is not None else None
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None


def _fill_rbd_disk(disk: etree._Element, monitors: list[tuple[str, str | None]], username: str | None,
                   secret: str | None) -> None:
    source = disk.find("source")
    if disk.get("type") != "network" or source is None or source.get("protocol") != "rbd":
        return
    if monitors and source.find("host") is None:
        for index, (host, port) in enumerate(monitors):
            el = etree.Element("host", name=host)
            if port is not None:
                el.set("port", port)
            source.insert(index, el)
    if username and secret and disk.find("auth") is None and source.find("auth") is None:
        auth = etree.Element("auth", username=username)
        etree.SubElement(auth, "secret", type="ceph", uuid=secret)
        source.addprevious(auth)


def fill_rbd_device(
    device: str | bytes,
    hosts: Sequence[str | tuple[str, int | str | None]],
    username: str | None,
    secret_uuid: str | None,
) -> str:
    """fill_rbd for one device's XML (a live attach); anything but an rbd disk is returned as is."""
    monitors = [_monitor(h) for h in hosts]
    secret = _check_access(username, secret_uuid)
    el = _load_root(device, "device XML")
    if el.tag == "disk":
        _fill_rbd_disk(el, monitors, username, secret)
    return etree.tostring(el, encoding="unicode")


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


def adapt_for_host(xml: str | bytes, kvm_available: bool, emulator: str | None = None) -> str:
    """Make a stored definition runnable on this host (applied at start, not written back).

    Without usable KVM: domain type `qemu` (TCG); `event_idx='off'` on every virtio-blk disk
    (otherwise a guest writing to its disk dies after live migration under QEMU 7.2/TCG); no
    `host-passthrough` CPU (TCG cannot pass the host CPU through; topology and NUMA are kept).
    With KVM: domain type `kvm`. `emulator` replaces the emulator path when given.
    """
    root, domain = _edit(xml)
    root.set("type", "kvm" if kvm_available else "qemu")
    if not kvm_available:
        for disk_el, disk in zip(root.findall("devices/disk"), domain.disks, strict=True):
            if disk.effective_bus != "virtio":
                continue
            driver = disk_el.find("driver")
            if driver is None:
                driver = etree.Element("driver", name="qemu")
                disk_el.insert(0, driver)
            driver.set("event_idx", "off")
        cpu = root.find("cpu")
        if cpu is not None and cpu.get("mode") == "host-passthrough":
            for key in ("mode", "match", "check", "migratable"):
                cpu.attrib.pop(key, None)
            for child in list(cpu):
                if child.tag not in ("topology", "numa"):
                    cpu.remove(child)
            if not len(cpu) and not cpu.attrib:
                root.remove(cpu)
    if emulator is not None:
        if not emulator.startswith("/") or any(ord(c) < 32 for c in emulator):
            raise DomainEditError(f"emulator '{emulator}' is not an absolute path")
        devices = _devices_el(root)
        em = devices.find("emulator")
        if em is None:
            em = etree.Element("emulator")
            devices.insert(0, em)
        em.text = emulator
    return _finish(root)


def _serial_port(serial: etree._Element) -> str | None:
    target = serial.find("target")
    return target.get("port") if target is not None else None


def serial_log(xml: str | bytes, path: str) -> str:
    """Ensure serial port 0 exists and logs to `path` (what `pvc vm log` tails), with a console.

    A serial of type file already writing to `path` is left as it is (a log would write twice).
    """
    if not isinstance(path, str) or not path.startswith("/") or any(ord(c) < 32 for c in path):
        raise DomainEditError(f"console log path '{path}' is not an absolute path")
    root, domain = _edit(xml)
    devices = _devices_el(root)
    serials = devices.findall("serial")
    serial = next((s for s in serials if _serial_port(s) in (None, "0")), serials[0] if serials else None)
    if serial is None:
        serial = etree.Element("serial", type="pty")
        _sub(serial, "target", [("port", 0)])
        _insert_device(devices, serial)
    source = serial.find("source")
    if serial.get("type") == "file" and source is not None and source.get("path") == path:
        return _finish(root)
    log = serial.find("log")
    if log is None:
        log = etree.Element("log")
        if source is not None:
            source.addnext(log)
        else:
            serial.insert(0, log)
    log.set("file", path)
    log.set("append", "on")
    if not domain.consoles:
        console = etree.Element("console", type="pty")
        _sub(console, "target", [("type", "serial"), ("port", 0)])
        serial.addnext(console)
    return _finish(root)


def device_xml(xml: str | bytes, *, mac: str | None = None, target: str | None = None,
               source: str | None = None) -> str:
    """The XML of one NIC (by MAC) or disk (by target or source) for hot attach/detach.

    Take it from the new XML after an add (attach) or from the old XML before a remove (detach),
    after `adapt_for_host` on a TCG node so the device matches the running domain.
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
    return _serialize(_from_raw(_raw(found[0])))


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------

_VNI_RE = re.compile(r"[vm]*br([0-9a-z]+)")


def _network_item(nic: Nic) -> dict[str, Any]:
    if nic.type == "direct":
        vni, source = f"macvtap:{nic.source}", nic.source
    elif nic.type == "hostdev":
        source = nic.sriov_device or nic.source
        vni = f"hostdev:{source}"
    else:
        source = nic.source
        match = _VNI_RE.match(source or "")
        vni = match.group(1) if match else (source or "")
    return {"type": nic.type, "vni": vni, "mac": nic.mac, "source": source, "model": nic.model}


def _disk_item(disk: Disk) -> dict[str, Any]:
    src = disk.source or DiskSource()
    if disk.type == "network":
        kind, name = src.protocol, src.name
    elif disk.type == "file":
        kind, name = "file", src.file
    else:
        kind, name = "block", src.dev
    return {"type": kind, "name": name, "dev": disk.target, "bus": disk.effective_bus}


def summary(domain: Domain) -> dict[str, Any]:
    """The XML-derived fields of PVC's VM item (API v1), shaped and named as upstream does.

    As upstream: `type` is the OS type (hvm), `description` is "N/A" when absent, `vnc` holds
    strings with "None" when there is no VNC display. Unlike upstream, nothing raises on a
    domain without console/emulator, and block disks are described instead of being `{}`.
    """
    vnc = next((g for g in domain.graphics if g.type == "vnc"), None)
    vnc_port = "None" if vnc is None or vnc.port is None or vnc.port <= 0 else str(vnc.port)
    console = next((c.type or "pty" for c in domain.consoles), None)
    if console is None:
        console = next((s.type or "pty" for s in domain.serials), "none")
    return {
        "name": domain.name,
        "uuid": domain.uuid,
        "description": "N/A" if domain.description is None else domain.description,
        "memory": domain.memory_mib,
        "vcpu": domain.vcpus,
        "vcpu_topology": str(domain.topology) if domain.topology else "N/A",
        "type": domain.os.type,
        "arch": domain.arch,
        "machine": domain.machine,
        "console": console,
        "vnc": {"listen": (vnc.listen or "None") if vnc else "None", "port": vnc_port},
        "emulator": domain.emulator,
        "features": list(domain.features),
        "networks": [_network_item(n) for n in domain.interfaces],
        "disks": [_disk_item(d) for d in domain.disks],
        "controllers": [{"type": c.type, "model": c.model} for c in domain.controllers],
    }


def vnc_address(live_xml: str | bytes) -> str:
    """'listen:port' of the running VM's VNC display (from libvirt's live XML), or ''."""
    root = _load_root(live_xml, "live XML")
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("type") != "vnc":
            continue
        port = graphics.get("port")
        if port is None or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) <= 0:
            return ""
        listen = graphics.get("listen")
        if not listen:
            listen_el = graphics.find("listen")
            listen = listen_el.get("address") if listen_el is not None else None
        return f"{listen}:{port}" if listen else ""
    return ""
