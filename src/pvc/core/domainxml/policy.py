"""The domain XML policy (DESIGN D14): what a VM definition may open on the node that runs it.

Why: libvirt runs QEMU as root-equivalent on every node, and domain XML can point it at any host
file (a disk of /etc/shadow), any host device, any program (`<emulator>`, `<script>`) or raw QEMU
arguments. Anyone who can define a VM would own the node. This module refuses, by default,
everything that opens a host resource; a normal VM (RBD disks, bridged NICs, pty consoles, VNC)
passes untouched. An administrator allows named exceptions (`hypervisor.domain_policy.allow`).

Pure: it reads the tree, never the filesystem. Paths are compared lexically after refusing
`..` and relative paths; an allowed directory must not hold symlinks pointing out of it (the
administrator's responsibility). The checks walk the raw tree, not the `Domain` model, so an
element the model keeps verbatim (`devices_other`, `other`) cannot slip past.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from lxml import etree

from pvc.core.domainxml.model import QEMU_NS, InvalidDomainXML
from pvc.core.domainxml.parsing import Definition
from pvc.core.domainxml.tree import _elements, _load_root

ALLOW = "hypervisor.domain_policy.allow"
_RNG_DEVICES = ("/dev/random", "/dev/urandom", "/dev/hwrng")
# Character device types that open nothing on the host (pty as PVC uses, tcp as upstream allows).
_SAFE_CHARDEV_TYPES = ("pty", "null", "vc", "tcp", "udp", "spicevmc", "spiceport", "qemu-vdagent",
                       "dbus")
_PATH_CHARDEV_TYPES = ("file", "dev", "pipe", "unix", "nmdm")
_SAFE_NIC_TYPES = ("bridge", "network")
_SAFE_AUDIO_TYPES = ("none", "spice")
_CHARDEV_TAGS = ("serial", "console", "parallel", "channel")


class DomainPolicyViolation(InvalidDomainXML):
    """The XML asks for a host resource the policy does not allow; the message names it."""


@dataclass(frozen=True)
class DomainPolicy:
    """What domain XML may use; defaults are the secure defaults of `DomainPolicySettings`."""

    emulators: tuple[str, ...] = ("/usr/bin/qemu-system-x86_64", "/usr/bin/kvm")
    kernel_directories: tuple[str, ...] = ("/var/lib/pvc/kernels",)
    firmware_directories: tuple[str, ...] = ("/usr/share/OVMF", "/usr/share/ovmf", "/usr/share/qemu",
                                             "/usr/share/seabios")
    nvram_directories: tuple[str, ...] = ("/var/lib/libvirt/qemu/nvram",)
    log_directories: tuple[str, ...] = ("/var/log/libvirt",)
    host_disks: tuple[str, ...] = ()
    libvirt_volume_pools: tuple[str, ...] = ()
    network_disk_protocols: tuple[str, ...] = ()
    hostdev: bool = False
    hostdev_pci: tuple[str, ...] = ()
    qemu_commandline: bool = False
    filesystem_sources: tuple[str, ...] = ()
    direct_devices: tuple[str, ...] = ()
    chardev_paths: tuple[str, ...] = ()
    user_networking: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> DomainPolicy:
        """The policy of a `Settings` (or of its `hypervisor.domain_policy` section).

        With whole settings, the node's console log directory is a log directory too (PVC's
        own console log, `prepare_for_host`, writes there).
        """
        section = settings
        logs: tuple[str, ...] = ()
        if hasattr(settings, "hypervisor"):
            section = settings.hypervisor.domain_policy
            logs = (settings.path.console_log_directory,)
        allow = section.allow
        return cls(
            emulators=tuple(section.emulators),
            kernel_directories=tuple(section.kernel_directories),
            firmware_directories=tuple(section.firmware_directories),
            nvram_directories=tuple(section.nvram_directories),
            log_directories=tuple(dict.fromkeys([*section.log_directories, *logs])),
            host_disks=tuple(allow.host_disks),
            libvirt_volume_pools=tuple(allow.libvirt_volume_pools),
            network_disk_protocols=tuple(p.lower() for p in allow.network_disk_protocols),
            hostdev=allow.hostdev,
            hostdev_pci=tuple(_pci(a) for a in allow.hostdev_pci),
            qemu_commandline=allow.qemu_commandline,
            filesystem_sources=tuple(allow.filesystem_sources),
            direct_devices=tuple(allow.direct_devices),
            chardev_paths=tuple(allow.chardev_paths),
            user_networking=allow.user_networking,
        )

    def with_managed(self, direct_devices: Iterable[str] = (),
                     hostdev_pci: Iterable[str] = ()) -> DomainPolicy:
        """This policy plus the devices PVC itself assigns (SR-IOV VFs: macvtap devices, PCI
        functions): the hook for a caller that knows them."""
        return replace(self,
                       direct_devices=(*self.direct_devices, *direct_devices),
                       hostdev_pci=(*self.hostdev_pci, *(_pci(a) for a in hostdev_pci)))


DEFAULT_POLICY = DomainPolicy()


# -- entry points -----------------------------------------------------------------------------------

Source = str | bytes | etree._Element | Definition


def check_domain(xml: Source, policy: DomainPolicy = DEFAULT_POLICY) -> None:
    """Raise DomainPolicyViolation naming the first thing in a domain's XML the policy refuses."""
    found = domain_violations(xml, policy)
    if found:
        raise DomainPolicyViolation(found[0])


def check_device(xml: str | bytes | etree._Element, policy: DomainPolicy = DEFAULT_POLICY) -> None:
    """The same for the XML of one device (hot attach)."""
    root = xml if isinstance(xml, etree._Element) else _load_root(xml, "device XML")
    found: list[str] = []
    _walk_qemu(root, policy, found)
    _device(root, policy, found)
    if found:
        raise DomainPolicyViolation(found[0])


def domain_violations(xml: Source, policy: DomainPolicy = DEFAULT_POLICY) -> list[str]:
    """Every refusal for a domain's XML, in document order (empty: allowed); a `Definition`
    is checked on the tree it was parsed from (no second parse)."""
    if isinstance(xml, Definition):
        root = xml._root
    else:
        root = xml if isinstance(xml, etree._Element) else _load_root(xml)
    found: list[str] = []
    _walk_qemu(root, policy, found)
    for child in _elements(root):
        tag = child.tag
        if tag == "os":
            _os(child, policy, found)
        elif tag == "devices":
            for device in _elements(child):
                _device(device, policy, found)
        elif tag == "seclabel":
            _seclabel(child, found)
    return found


# -- helpers -----------------------------------------------------------------------------------------

def _refuse(found: list[str], what: str, why: str, allow: str | None = None) -> None:
    hint = f"; allow with {ALLOW}.{allow}" if allow else ""
    found.append(f"domain XML refused: {what} ({why}{hint})")


def _clean(path: str | None) -> str | None:
    """A normalized absolute path, or None for a relative one or one with '..'."""
    if not path or not path.startswith("/") or "\x00" in path:
        return None
    if ".." in path.split("/"):
        return None
    return posixpath.normpath(path).replace("//", "/")


def _within(path: str | None, allowed: Iterable[str]) -> bool:
    """True when `path` is one of `allowed` or lies under one of them (lexically, see module)."""
    clean = _clean(path)
    if clean is None:
        return False
    for entry in allowed:
        base = _clean(entry)
        if base is None:
            continue
        if clean == base or clean.startswith(base.rstrip("/") + "/"):
            return True
    return False


def _pci(address: str) -> str:
    """A PCI address in canonical dddd:bb:ss.f form (lower-case, domain defaulted)."""
    text = address.strip().lower()
    if text.count(":") == 1:
        text = "0000:" + text
    return text


def _hex(value: str | None) -> int:
    text = (value or "0").strip().lower()
    try:
        return int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        return -1


def _address(el: etree._Element | None) -> str:
    if el is None:
        return "?"
    return (f"{_hex(el.get('domain')):04x}:{_hex(el.get('bus')):02x}:{_hex(el.get('slot')):02x}."
            f"{_hex(el.get('function')):x}")


def _walk_qemu(root: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    if policy.qemu_commandline:
        return
    for el in root.iter(etree.Element):
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{QEMU_NS}}}"):
            local = el.tag.split("}", 1)[1]
            _refuse(found, f"<qemu:{local}>", "raw QEMU arguments and capabilities bypass libvirt and "
                    "PVC", "qemu_commandline")


def _seclabel(el: etree._Element, found: list[str]) -> None:
    if el.get("type", "dynamic") != "dynamic" or el.get("relabel") == "no":
        _refuse(found, f"<seclabel type='{el.get('type', '')}' relabel='{el.get('relabel', '')}'>",
                "QEMU must run confined by a dynamic security label")


# -- <os> ---------------------------------------------------------------------------------------------

def _os(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    for child in el.iter(etree.Element):
        tag = child.tag
        text = (child.text or "").strip()
        if tag in ("kernel", "initrd", "dtb") and not _within(text, policy.kernel_directories):
            _refuse(found, f"<os><{tag}> {text}", f"host files outside {_dirs(policy.kernel_directories)} "
                    "are not allowed; set hypervisor.domain_policy.kernel_directories")
        elif tag == "table" and not _within(text, policy.kernel_directories):
            _refuse(found, f"<os><acpi><table> {text}", f"host files outside "
                    f"{_dirs(policy.kernel_directories)} are not allowed")
        elif tag == "loader" and text and not _within(text, policy.firmware_directories):
            _refuse(found, f"<os><loader> {text}", f"firmware outside {_dirs(policy.firmware_directories)} "
                    "is not allowed; set hypervisor.domain_policy.firmware_directories")
        elif tag == "nvram":
            template = child.get("template")
            if template and not _within(template, policy.firmware_directories):
                _refuse(found, f"<os><nvram template='{template}'>", "firmware outside "
                        f"{_dirs(policy.firmware_directories)} is not allowed")
            if text and not _within(text, policy.nvram_directories):
                _refuse(found, f"<os><nvram> {text}", "NVRAM files outside "
                        f"{_dirs(policy.nvram_directories)} are not allowed; set "
                        "hypervisor.domain_policy.nvram_directories")
            if child.find("source") is not None:
                _refuse(found, "<os><nvram><source>", "NVRAM on a host file, device or network is not "
                        "allowed")
        elif tag == "bootloader":
            _refuse(found, f"<os><bootloader> {text}", "host programs are not allowed")


def _dirs(dirs: Iterable[str]) -> str:
    listed = ", ".join(dirs)
    return listed or "(none configured)"


# -- devices ------------------------------------------------------------------------------------------

def _device(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    tag = el.tag
    if not isinstance(tag, str):
        return
    if tag == "emulator":
        path = (el.text or "").strip()
        if _clean(path) not in {_clean(e) for e in policy.emulators}:
            _refuse(found, f"<emulator> {path}", f"only {_dirs(policy.emulators)} may run; set "
                    "hypervisor.domain_policy.emulators")
    elif tag == "disk":
        _disk(el, policy, found)
    elif tag == "interface":
        _interface(el, policy, found)
    elif tag in _CHARDEV_TAGS:
        _chardev(el, f"<{tag} type='{el.get('type', 'pty')}'>", policy, found)
    elif tag == "hostdev":
        _hostdev(el, policy, found)
    elif tag == "filesystem":
        source = el.find("source")
        path = None if source is None else (source.get("dir") or source.get("file") or source.get("name")
                                             or source.get("socket"))
        if el.get("type", "mount") != "mount" or not _within(path, policy.filesystem_sources):
            _refuse(found, f"<filesystem type='{el.get('type', 'mount')}'> with source {path}",
                    "sharing host directories is not allowed", "filesystem_sources")
        _binary(el, found)
    elif tag == "smartcard":
        _refuse(found, f"<smartcard mode='{el.get('mode', '')}'>", "host smartcards and their "
                "certificates are not allowed")
    elif tag == "redirdev":
        _refuse(found, f"<redirdev type='{el.get('type', '')}'>", "USB redirection is not allowed")
    elif tag == "shmem":
        _refuse(found, f"<shmem name='{el.get('name', '')}'>", "host shared memory is not allowed")
    elif tag == "input":
        if el.get("type") in ("passthrough", "evdev"):
            source = el.find("source")
            _refuse(found, f"<input type='{el.get('type')}'> with source "
                    f"{source.get('evdev') if source is not None else None}", "host input devices are not "
                    "allowed")
    elif tag == "tpm":
        backend = el.find("backend")
        if backend is not None and backend.get("type") not in (None, "emulator"):
            _refuse(found, f"<tpm><backend type='{backend.get('type')}'>", "the host TPM is not allowed "
                    "(use type='emulator')")
    elif tag == "audio":
        if el.get("type") not in _SAFE_AUDIO_TYPES:
            _refuse(found, f"<audio type='{el.get('type', '')}'>", "host audio back-ends and files are "
                    "not allowed (none or spice)")
    elif tag == "rng":
        _rng(el, policy, found)
    elif tag == "memory":
        source = el.find("source")
        path = source.findtext("path") if source is not None else None
        if path:
            _refuse(found, f"<memory model='{el.get('model', '')}'> with source {path.strip()}",
                    "host files as guest memory are not allowed")
    elif tag == "graphics":
        _graphics(el, found)
    elif tag == "video":
        for node in el.iter("driver", "gl"):
            if node.get("rendernode"):
                _refuse(found, f"<video> rendernode {node.get('rendernode')}", "host devices are not allowed")
    elif tag == "lease":
        _refuse(found, "<lease>", "lock files on host paths are not allowed")
    elif tag == "vsock" or tag in ("controller", "memballoon", "watchdog", "panic", "sound", "hub",
                                   "iommu", "nvram", "crypto", "pstore"):
        _binary(el, found)


def _binary(el: etree._Element, found: list[str]) -> None:
    """A vhost-user or external binary back-end (`<driver type='virtiofs'>`, `<binary path>`)."""
    for node in el.iter("binary"):
        if node.get("path"):
            _refuse(found, f"<{el.tag}><binary path='{node.get('path')}'>", "host programs are not allowed")


def _disk(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    dtype = el.get("type", "file")
    source = el.find("source")
    target = el.find("target")
    name = f"<disk type='{dtype}'" + (f" target {target.get('dev')}" if target is not None else "") + ">"
    if dtype in ("file", "block", "dir"):
        if source is not None:
            path = source.get({"file": "file", "block": "dev", "dir": "dir"}[dtype])
            if path is not None and not _within(path, policy.host_disks):
                _refuse(found, f"{name} with source {path}",
                        f"host {dtype} disks are not allowed", f"host_disks: [{path!r}]")
    elif dtype == "volume":
        pool = source.get("pool") if source is not None else None
        volume = source.get("volume") if source is not None else None
        if pool not in policy.libvirt_volume_pools:
            _refuse(found, f"{name} with source {pool}/{volume}", "libvirt storage pool volumes are host "
                    "storage", "libvirt_volume_pools")
    elif dtype == "network":
        protocol = (source.get("protocol") if source is not None else None) or ""
        source_name = source.get("name") if source is not None else None
        if protocol.lower() != "rbd" and protocol.lower() not in policy.network_disk_protocols:
            _refuse(found, f"{name} with protocol {protocol or '(none)'} and source {source_name}",
                    "network disks other than rbd make the node fetch from anywhere",
                    f"network_disk_protocols: [{protocol!r}]")
        if source is not None:
            for host in source.iter("host"):
                if host.get("socket") or host.get("transport") == "unix":
                    _refuse(found, f"{name} <host socket='{host.get('socket', '')}'>",
                            "host UNIX sockets are not allowed")
            for config in source.iter("config"):
                _refuse(found, f"{name} <config file='{config.get('file', '')}'>",
                        "host configuration files are not allowed (PVC fills in the monitors)")
    else:
        _refuse(found, f"{name}", f"disk type '{dtype}' is not allowed (network rbd)")
    if source is not None:
        for child in source.iter("dataStore", "reservations", "slices"):
            if child.tag == "dataStore" or child.find("source") is not None:
                _refuse(found, f"{name} <{child.tag}>", "external data files and host sockets are not "
                        "allowed")
    for store in el.iter("backingStore", "mirror"):
        if store.get("type") or len(store):
            _refuse(found, f"{name} <{store.tag} type='{store.get('type', '')}'>",
                    "backing chains and mirrors on host paths are not allowed")
    _seclabels(el, name, found)


def _seclabels(el: etree._Element, name: str, found: list[str]) -> None:
    for label in el.iter("seclabel"):
        if label.get("relabel") == "no" or label.get("model") == "none":
            _refuse(found, f"{name} <seclabel relabel='{label.get('relabel', '')}'>",
                    "devices must keep their security labels")


def _interface(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    ntype = el.get("type", "")
    source = el.find("source")
    mac = el.find("mac")
    name = f"<interface type='{ntype}'" + (f" mac {mac.get('address')}" if mac is not None else "") + ">"
    if ntype == "direct":
        dev = source.get("dev") if source is not None else None
        if dev not in policy.direct_devices:
            _refuse(found, f"{name} on device {dev}", "direct (macvtap) interfaces on devices PVC does "
                    "not manage are not allowed", f"direct_devices: [{dev!r}]")
    elif ntype == "hostdev":
        address = source.find("address") if source is not None else None
        pci = _address(address)
        if not policy.hostdev and pci not in policy.hostdev_pci:
            _refuse(found, f"{name} with PCI device {pci}", "host PCI devices are not allowed",
                    f"hostdev_pci: [{pci!r}]")
    elif ntype == "user":
        if not policy.user_networking:
            _refuse(found, name, "user-mode networking reaches the node's own services",
                    "user_networking")
    elif ntype not in _SAFE_NIC_TYPES:
        _refuse(found, name, f"interface type '{ntype}' opens host sockets or devices (bridge or network)")
    for tag in ("script", "downscript"):
        for node in el.iter(tag):
            _refuse(found, f"{name} <{tag} path='{node.get('path', '')}'>", "host programs are not allowed")
    for node in el.iter("backend"):
        for attr in ("tap", "vhost"):
            if node.get(attr):
                _refuse(found, f"{name} <backend {attr}='{node.get(attr)}'>", "host devices are not allowed")
    driver = el.find("driver")
    if driver is not None and driver.get("name") == "vhostuser":
        _refuse(found, f"{name} <driver name='vhostuser'>", "host sockets are not allowed")


def _chardev(el: etree._Element, name: str, policy: DomainPolicy, found: list[str]) -> None:
    """serial/console/parallel/channel (and an rng's egd back-end): pty and tcp, no host paths."""
    ctype = el.get("type", "pty")
    sources = el.findall("source")
    if ctype in _PATH_CHARDEV_TYPES:
        for source in sources or [None]:
            path = source.get("path") if source is not None else None
            auto_unix = ctype == "unix" and path is None and (source is None or source.get("mode", "bind")
                                                              == "bind")
            if auto_unix:  # libvirt makes the socket in its own directory (the guest agent's channel)
                continue
            if not _within(path, policy.chardev_paths):
                _refuse(found, f"{name} with source {path}", f"{ctype} character devices on host paths "
                        "are not allowed", f"chardev_paths: [{path!r}]")
    elif ctype not in _SAFE_CHARDEV_TYPES:
        _refuse(found, name, f"character device type '{ctype}' is not allowed (pty or tcp)")
    for log in el.iter("log"):
        path = log.get("file")
        if not _within(path, policy.log_directories):
            _refuse(found, f"<{el.tag}><log file='{path}'>", f"log files outside "
                    f"{_dirs(policy.log_directories)} are not allowed; set "
                    "hypervisor.domain_policy.log_directories")
    _seclabels(el, name, found)


def _hostdev(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    htype = el.get("type", "")
    source = el.find("source")
    if policy.hostdev:
        return
    if el.get("mode", "subsystem") == "subsystem" and htype == "pci":
        pci = _address(source.find("address") if source is not None else None)
        if pci in policy.hostdev_pci:
            return
        _refuse(found, f"<hostdev type='pci'> {pci}", "host PCI devices are not allowed",
                f"hostdev_pci: [{pci!r}]")
        return
    _refuse(found, f"<hostdev mode='{el.get('mode', 'subsystem')}' type='{htype}'>", "host devices are not "
            "allowed", "hostdev")


def _rng(el: etree._Element, policy: DomainPolicy, found: list[str]) -> None:
    backend = el.find("backend")
    if backend is None:
        return
    model = backend.get("model", "random")
    if model == "random":
        path = (backend.text or "").strip() or "/dev/random"
        if path not in _RNG_DEVICES:
            _refuse(found, f"<rng><backend model='random'> {path}", f"only {', '.join(_RNG_DEVICES)} may "
                    "feed a guest's RNG")
    elif model == "egd":
        _chardev(backend, f"<rng><backend model='egd' type='{backend.get('type', '')}'>", policy, found)
    elif model != "builtin":
        _refuse(found, f"<rng><backend model='{model}'>", "unknown RNG back-end")


def _graphics(el: etree._Element, found: list[str]) -> None:
    gtype = el.get("type", "")
    if gtype not in ("vnc", "spice", "rdp", "dbus", "egl-headless", "sdl", "desktop"):
        _refuse(found, f"<graphics type='{gtype}'>", "unknown graphics type")
    if el.get("socket"):
        _refuse(found, f"<graphics type='{gtype}' socket='{el.get('socket')}'>", "host socket paths are not "
                "allowed (PVC's VNC listens on an address)")
    for listen in el.iter("listen"):
        if listen.get("socket") or listen.get("type") == "socket":
            _refuse(found, f"<graphics type='{gtype}'><listen socket='{listen.get('socket', '')}'>",
                    "host socket paths are not allowed")
    for node in el.iter(etree.Element):
        if node.get("rendernode"):
            _refuse(found, f"<graphics type='{gtype}'> rendernode {node.get('rendernode')}",
                    "host devices are not allowed")
