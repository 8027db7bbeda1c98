"""Rendering: `Domain` -> tree -> canonical text; what is rendered must parse back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lxml import etree

from pvc.core.domainxml.checks import _PCI_RE
from pvc.core.domainxml.model import Chardev, Disk, Domain, InvalidDomainXML, Nic
from pvc.core.domainxml.parsing import _domain_from_root
from pvc.core.domainxml.tree import _from_raw, _serialize


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
