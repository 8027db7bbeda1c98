"""What a node applies to a stored definition when it starts the VM (never written back).

Ceph monitors and cephx auth for rbd disks, a host without KVM, the console log serial port,
PVC's ownership mark (`ownership`): `prepare_for_host` applies them all to the definition's one
parse (`parse_definition`).
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Protocol

from lxml import etree

from pvc.core.domainxml.checks import _uuid
from pvc.core.domainxml.edits import _TOKEN_RE, _devices_el, _insert_device, _monitor
from pvc.core.domainxml.model import Domain, DomainEditError, InvalidDomainXML
from pvc.core.domainxml.ownership import OwnerMark, _mark
from pvc.core.domainxml.parsing import Definition
from pvc.core.domainxml.rendering import _sub
from pvc.core.domainxml.tree import _load_root, _serialize, _strip_blanks


class CephAccess(Protocol):
    """What rbd disks need to reach Ceph: monitors, the cephx user, the libvirt secret's UUID."""

    @property
    def hosts(self) -> Sequence[str | tuple[str, int | str | None]]: ...

    @property
    def username(self) -> str | None: ...

    @property
    def secret_uuid(self) -> str | None: ...


def prepare_for_host(
    definition: Definition,
    kvm_available: bool,
    *,
    ceph: CephAccess | None = None,
    console_log: str | None = None,
    emulator: str | None = None,
    owner: OwnerMark | None = None,
) -> str:
    """The stored definition as this host starts it, from its one parse (never written back).

    The edits, in this order, on one copy of the definition's tree, rendered once: the host's
    virtualization (`kvm_available`, `emulator`: see `_adapt`); with `ceph`, monitors and auth for
    the rbd disks (see `_fill_rbd_disk`); with `console_log`, serial port 0 logging there (see
    `_serial_log`); with `owner`, PVC's ownership mark in `<metadata>` (see `ownership`), which
    must name the definition's own UUID. Every argument is checked before anything changes. The
    result is not parsed again: the edits only add or drop what the parser accepts, made from
    checked arguments, in a tree that parsed.
    """
    access = _access(ceph.hosts, ceph.username, ceph.secret_uuid) if ceph is not None else None
    if console_log is not None:
        _check_path(console_log, "console log path")
    if emulator is not None:
        _check_path(emulator, "emulator")
    if owner is not None and owner.vm != definition.domain.uuid:
        raise DomainEditError(f"ownership mark names VM {owner.vm}, the definition is "
                              f"{definition.domain.uuid}")
    root = deepcopy(definition._root)
    _adapt(root, definition.domain, kvm_available, emulator)
    # Each edit sees the tree as loaded (indentation stripped), as when each one parsed text:
    # whitespace left in an element that just got children goes, and the output stays the same.
    if access is not None:
        _strip_blanks(root)
        for disk in root.iterfind("devices/disk"):
            _fill_rbd_disk(disk, *access)
    if console_log is not None:
        _strip_blanks(root)
        _serial_log(root, definition.domain, console_log)
    if owner is not None:
        _strip_blanks(root)
        _mark(root, owner)
    return _serialize(root)


def fill_rbd_device(
    device: str | bytes,
    hosts: Sequence[str | tuple[str, int | str | None]],
    username: str | None,
    secret_uuid: str | None,
) -> str:
    """The rbd part of `prepare_for_host` for one device's XML (a live attach); anything but an
    rbd disk is returned as is."""
    access = _access(hosts, username, secret_uuid)
    el = _load_root(device, "device XML")
    if el.tag == "disk":
        _fill_rbd_disk(el, *access)
    return etree.tostring(el, encoding="unicode")


_Access = tuple[list[tuple[str, str | None]], str | None, str | None]


def _access(hosts: Sequence[str | tuple[str, int | str | None]], username: str | None,
            secret_uuid: str | None) -> _Access:
    """Checked Ceph access: the monitors as (host, port), the user, the secret's UUID."""
    monitors = [_monitor(h) for h in hosts]
    if username is not None and (not isinstance(username, str) or not _TOKEN_RE.match(username)):
        raise DomainEditError(f"Ceph user '{username}' is not valid")
    try:
        secret = _uuid(secret_uuid, "secret uuid") if secret_uuid is not None else None
    except InvalidDomainXML as exc:
        raise DomainEditError(exc.message) from None
    return monitors, username, secret


def _check_path(path: object, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or any(ord(c) < 32 for c in path):
        raise DomainEditError(f"{what} '{path}' is not an absolute path")


def _adapt(root: etree._Element, domain: Domain, kvm_available: bool, emulator: str | None) -> None:
    """Make a stored definition runnable on this host.

    Without usable KVM: domain type `qemu` (TCG); `event_idx='off'` on every virtio-blk disk
    (otherwise a guest writing to its disk dies after live migration under QEMU 7.2/TCG); no
    `host-passthrough` CPU (TCG cannot pass the host CPU through; topology and NUMA are kept).
    With KVM: domain type `kvm`. `emulator` replaces the emulator path when given.
    """
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
        devices = _devices_el(root)
        em = devices.find("emulator")
        if em is None:
            em = etree.Element("emulator")
            devices.insert(0, em)
        em.text = emulator


def _fill_rbd_disk(disk: etree._Element, monitors: list[tuple[str, str | None]], username: str | None,
                   secret: str | None) -> None:
    """Give an rbd disk what QEMU needs to reach Ceph: monitors (`<host>`) and cephx `<auth>`.

    Stored definitions may name only `pool/volume` (the API and the provisioner add volumes that
    way); the node fills the rest in at start. Disks that already have hosts or auth keep theirs.
    Every node has the same monitor list and the same secret UUID, so the result is the same on
    every node and a live migration can carry it unchanged. No username or secret: no auth added.
    """
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


def _serial_log(root: etree._Element, domain: Domain, path: str) -> None:
    """Ensure serial port 0 exists and logs to `path` (what `pvc vm log` tails), with a console.

    A serial of type file already writing to `path` is left as it is (a log would write twice).
    """
    devices = _devices_el(root)
    serials = devices.findall("serial")
    serial = next((s for s in serials if _serial_port(s) in (None, "0")), serials[0] if serials else None)
    if serial is None:
        serial = etree.Element("serial", type="pty")
        _sub(serial, "target", [("port", 0)])
        _insert_device(devices, serial)
    source = serial.find("source")
    if serial.get("type") == "file" and source is not None and source.get("path") == path:
        return
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


def _serial_port(serial: etree._Element) -> str | None:
    target = serial.find("target")
    return target.get("port") if target is not None else None
