"""Parsing: tree -> `Domain`, validating as it goes and collecting the node-local `warnings`.

`parse` gives the typed `Domain`; `parse_definition` also keeps the tree it was read from, for
an operation that both asks the model questions and edits the text (a VM start on a node).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from pvc.core.domainxml.checks import (
    _check_name,
    _int,
    _mac,
    _opt_int,
    _pci_address,
    _unit_factor,
    _uuid,
)
from pvc.core.domainxml.model import (
    DISK_DEVICES,
    DISK_TYPES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    NIC_TYPES,
    OS,
    QEMU_NS,
    Attrs,
    Chardev,
    Controller,
    Disk,
    DiskAuth,
    DiskDriver,
    DiskSource,
    Domain,
    Graphics,
    InvalidDomainXML,
    Nic,
    Topology,
)
from pvc.core.domainxml.tree import _elements, _load_root, _raw


def parse(xml: str | bytes) -> Domain:
    """Parse and validate domain XML; raise InvalidDomainXML naming the first problem."""
    return _domain_from_root(_load_root(xml))


@dataclass(frozen=True, eq=False)
class Definition:
    """A definition parsed once: its typed `Domain` and the tree it was read from.

    Why both: the model answers the questions (which rbd volumes, which disk bus), while edits
    that must keep every untouched element and attribute as written (the host edits at start,
    `prepare_for_host`) change the tree; `render(domain)` would write the canonical form instead.
    The tree is never changed in place: edits work on a copy, so one Definition serves many.
    """

    domain: Domain
    _root: etree._Element = field(repr=False)


def parse_definition(xml: str | bytes) -> Definition:
    """`parse`, keeping the tree: for an operation that reads the model and edits the text."""
    root = _load_root(xml)
    return Definition(_domain_from_root(root), root)


def _single(children: dict[str, list[etree._Element]], tag: str, where: str) -> etree._Element | None:
    found = children.get(tag, [])
    if len(found) > 1:
        raise InvalidDomainXML(f"{where} has more than one <{tag}>")
    return found[0] if found else None


def _group(elements: Iterable[etree._Element]) -> dict[str, list[etree._Element]]:
    """Child elements by tag; callers that also need document order keep the list they passed."""
    groups: dict[str, list[etree._Element]] = {}
    for child in elements:
        groups.setdefault(child.tag, []).append(child)
    return groups


def _attrs(el: etree._Element, known: Iterable[str]) -> Attrs:
    skip = set(known)
    return tuple((str(k), str(v)) for k, v in el.attrib.items() if k not in skip)


def _text(el: etree._Element, what: str) -> str:
    """Text content; comments inside (e.g. `<name><!-- c -->x</name>`) do not cut it short."""
    if _elements(el):
        raise InvalidDomainXML(f"<{what}> must contain only text")
    return (el.text or "") + "".join(child.tail or "" for child in el)


def _domain_from_root(root: etree._Element) -> Domain:
    warnings: list[str] = []
    if root.tag != "domain":
        raise InvalidDomainXML(f"the root element is <{root.tag}>, not <domain>")
    dtype = root.get("type")
    if dtype is None:
        raise InvalidDomainXML("<domain> has no type attribute (kvm or qemu)")
    if dtype not in ("kvm", "qemu"):
        raise InvalidDomainXML(f"domain type '{dtype}' is not supported (kvm or qemu)")
    elements = _elements(root)
    top = _group(elements)

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
    for child in elements:
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

    target = _first_repeated(d.target for d in disks)
    if target is not None:
        raise InvalidDomainXML(f"disk target {target} is used by more than one disk")
    mac = _first_repeated(n.mac for n in nics if n.mac)
    if mac is not None:
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


def _first_repeated(values: Iterable[str]) -> str | None:
    """The first value, in order, that occurs more than once (one count, not one per value)."""
    ordered = list(values)
    counts = Counter(ordered)
    return next((value for value in ordered if counts[value] > 1), None)


def _disk(el: etree._Element, index: int, warnings: list[str]) -> Disk:
    elements = _elements(el)
    children = _group(elements)
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
        src_elements = _elements(source_el)
        src_children = _group(src_elements)
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
            other=tuple(_raw(c) for c in src_elements if c.tag not in ("host", "auth")),
        )
    if auth_el is not None:
        secret = _single(_group(_elements(auth_el)), "secret", f"{what} <auth>")
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
        other=tuple(_raw(c) for c in elements if c.tag not in modelled),
    )


def _nic(el: etree._Element, index: int, warnings: list[str]) -> Nic:
    elements = _elements(el)
    children = _group(elements)
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
        address = _single(_group(_elements(source_el)), "address", what) if source_el is not None else None
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
        other=tuple(_raw(c) for c in elements if c.tag not in modelled),
    )


def _chardev(el: etree._Element, what: str) -> Chardev:
    elements = _elements(el)
    children = _group(elements)
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
        other=tuple(_raw(c) for c in elements if c.tag not in ("source", "log", "target")),
    )


def _graphics(el: etree._Element, index: int) -> Graphics:
    gtype = el.get("type")
    if not gtype:
        raise InvalidDomainXML(f"graphics #{index} has no type")
    elements = _elements(el)
    listen = el.get("listen")
    if listen is None:
        listen = next((c.get("address") for c in elements if c.tag == "listen" and c.get("address")), None)
    port = el.get("port")
    return Graphics(
        type=gtype,
        listen=listen,
        port=None if port is None else _int(port, f"graphics {gtype} port", minimum=-1, maximum=65535),
        autoport=el.get("autoport"),
        other_attrs=_attrs(el, ["type", "listen", "port", "autoport"]),
        other=tuple(_raw(c) for c in elements),
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
