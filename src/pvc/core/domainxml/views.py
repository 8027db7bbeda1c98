"""Views: the XML-derived fields of PVC's VM item (the API's view) and what a node reads from a
running domain's live XML (its VNC address and console log file)."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from lxml import etree

from pvc.core.domainxml.model import Disk, DiskSource, Domain, Nic
from pvc.core.domainxml.tree import _load_root

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


class LiveFacts(NamedTuple):
    """What a node's keepalive reads from a running domain's live XML (one parse for both)."""

    vnc: str                    # 'listen:port' of the VNC display, or ''
    console_log: str | None     # the file serial port 0 logs to, if any


def live_facts(live_xml: str | bytes) -> LiveFacts:
    """The VNC address and console log file of a running VM, from libvirt's live XML.

    The log file comes from the running domain, not from the node's settings: after a live
    migration QEMU keeps writing where the sender's XML said.
    """
    root = _load_root(live_xml, "live XML")
    return LiveFacts(_vnc_address(root), _console_log(root))


def _vnc_address(root: etree._Element) -> str:
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


def _console_log(root: etree._Element) -> str | None:
    """The file serial port 0 logs to (a <log file=...> or a type='file' source), if any."""
    for serial in root.iterfind("devices/serial"):
        target = serial.find("target")
        if target is not None and target.get("port") not in (None, "0"):
            continue
        logged = serial.find("log")
        if logged is not None and logged.get("file"):
            return logged.get("file")
        source = serial.find("source")
        if serial.get("type") == "file" and source is not None and source.get("path"):
            return source.get("path")
    return None
