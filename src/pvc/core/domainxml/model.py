"""The typed model of a libvirt domain: frozen dataclasses, the limits PVC enforces, its errors.

Pure data, no XML: `parsing` builds these objects from a tree, `rendering` writes them back.
Unmodelled attributes and elements ride along as `Attrs` and `Raw` so nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pvc.core.errors import InvalidInput

MAX_XML_BYTES = 1024 * 1024  # a ZooKeeper znode holds at most 1 MiB; no real domain comes close
MAX_VCPUS = 4096  # QEMU's x86 maximum; the API checks the real node limit
MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

DISK_TYPES = ("network", "file", "block")
DISK_DEVICES = ("disk", "cdrom", "floppy", "lun")
NIC_TYPES = ("bridge", "network", "direct", "hostdev", "user")
from pvc.core.vocabulary import DISK_BUSES  # noqa: E402,F401 - one spelling

_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
_PREFIX_BUS = (("xvd", "xen"), ("vd", "virtio"), ("sd", "scsi"), ("hd", "ide"), ("fd", "fdc"))

Attrs = tuple[tuple[str, str], ...]  # attributes PVC does not model, kept in document order
Raw = tuple[str, ...]  # elements PVC does not model, kept verbatim as serialized XML


class InvalidDomainXML(InvalidInput):
    """The XML is not a domain PVC can run; the message names what is wrong."""


class DomainEditError(InvalidInput):
    """An edit cannot be applied (bad argument, device missing or already present)."""


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
