"""`pvc vm network` and `pvc vm volume`: a VM's interfaces and disks, hot-plugged when it runs.

Each change is an edit of the VM's XML (see common); for a running VM the one added or removed
device is also attached or detached live unless --no-live or --restart is given.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click
from lxml import etree

from pvc.cli.client import decode, error_message
from pvc.cli.commands.vm.common import (
    apply_xml,
    bridge_of,
    check_xml,
    decide_restart,
    edit_xml,
    fetch_vm,
    is_running,
    live_option,
    live_restart,
    read_for_edit,
    restart_option,
    yes_option,
)
from pvc.cli.commands.vm.formats import NETWORK_FORMATS, VOLUME_FORMATS, network_data, volume_data
from pvc.cli.errors import ApiError, CLIError
from pvc.cli.state import format_option, get_state
from pvc.core import domainxml
from pvc.core.vocabulary import DISK_BUSES

Hotplug = Callable[[str, str], tuple[str, str] | None]


def _change_devices(domain: str, change: Callable[[str], str], hotplug: Hotplug, live: bool,
                    restart: bool | None, confirmed: bool) -> None:
    """Write back the VM's XML as change(xml) makes it; for a running VM that is not restarted (and
    with --live), also hot-(un)plug hotplug(old_xml, new_xml) = (method, device XML) if not None."""
    vm, etag = read_for_edit(domain)
    old_xml = str(vm.get("xml", ""))
    new_xml = change(old_xml)
    do_restart = decide_restart(get_state(), vm, live_restart(live, restart), confirmed)
    device = hotplug(old_xml, new_xml) if live and is_running(vm) and not do_restart else None
    apply_xml(domain, vm, etag, new_xml, do_restart, device=device)


# -- network -----------------------------------------------------------------------------------------

@click.group(name="network", short_help="Manage the network interfaces of a VM.")
def network_group() -> None:
    """View and change the network interfaces of VMs (by editing their XML)."""


@network_group.command(name="get", short_help="Show the network interfaces of a VM.")
@click.argument("domain")
@format_option(NETWORK_FORMATS)
def network_get(domain: str, formatter: Any) -> None:
    """Show the network interfaces of the VM DOMAIN."""
    get_state().emit(network_data(fetch_vm(domain)), formatter)


def _sriov_vf(vm: dict[str, Any], vf: str) -> dict[str, Any]:
    """The SR-IOV VF `vf` of the node the VM is on (GET /sriov/vf/<node>/<vf>, as upstream)."""
    node = str(vm.get("node") or "")
    try:
        return get_state().api().get_one(f"/sriov/vf/{quote(node, safe='')}/{quote(vf, safe='')}",
                                         what="SR-IOV VF")
    except ApiError as exc:
        raise CLIError(f'SR-IOV VF "{vf}" does not exist on VM node "{node}": {exc.message}') from None


def sriov_interface(vf: str, mode: str, mac: str, model: str, info: dict[str, Any]) -> str:
    """Upstream's XML for a NIC on an SR-IOV VF: `direct` (macvtap, passthrough) or `hostdev`
    (the VF's PCI address, its name kept in <sriov_device>)."""
    if mode == "macvtap":
        nic = etree.Element("interface", type="direct")
        etree.SubElement(nic, "mac", address=mac)
        etree.SubElement(nic, "source", dev=vf, mode="passthrough")
        etree.SubElement(nic, "model", type=model)
    else:
        pci = info.get("pci") if isinstance(info.get("pci"), dict) else {}
        fields = {key: str(pci.get(key, "")) for key in ("domain", "bus", "slot", "function")}
        if not all(re.fullmatch(r"(0x)?[0-9a-fA-F]{1,4}", value) for value in fields.values()):
            raise CLIError(f'SR-IOV VF "{vf}" has no valid PCI address for hostdev mode: {pci!r}')
        nic = etree.Element("interface", type="hostdev", managed="yes")
        etree.SubElement(nic, "mac", address=mac)
        source = etree.SubElement(nic, "source")
        etree.SubElement(source, "address", type="pci", **{
            key: value if value.startswith("0x") else f"0x{value}" for key, value in fields.items()})
        etree.SubElement(nic, "sriov_device").text = vf
    return etree.tostring(nic, encoding="unicode")


def _sriov_target(nic: etree._Element) -> str | None:
    """The VF an SR-IOV NIC uses (hostdev: <sriov_device>, macvtap: the source dev), else None."""
    if nic.get("type") == "hostdev":
        return (nic.findtext("sriov_device") or "").strip() or None
    if nic.get("type") == "direct":
        source = nic.find("source")
        return source.get("dev") if source is not None else None
    return None


def add_sriov_interface(xml: str, device: str, vf: str) -> str:
    """The XML with the SR-IOV NIC `device` after the last interface (a VF is refused twice)."""
    root = etree.fromstring(xml.strip().encode("utf-8"), _SAFE_PARSER)
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    nics = devices.findall("interface")
    if any(_sriov_target(nic) == vf for nic in nics):
        raise CLIError(f'SR-IOV device "{vf}" is already configured for VM "{root.findtext("name")}".')
    element = etree.fromstring(device.encode("utf-8"), _SAFE_PARSER)
    if nics:
        nics[-1].addnext(element)
    else:
        devices.append(element)
    new_xml = etree.tostring(root, encoding="unicode")
    check_xml(new_xml)
    return new_xml


def remove_sriov_interface(xml: str, vf: str | None, mac: str | None) -> tuple[str, str]:
    """(new XML, the removed NIC's XML): the SR-IOV NIC on `vf`, or with MAC `mac`."""
    root = etree.fromstring(xml.strip().encode("utf-8"), _SAFE_PARSER)
    found = []
    for nic in root.iterfind("devices/interface"):
        mac_el = nic.find("mac")
        if _sriov_target(nic) is None:
            continue
        if (mac is not None and mac_el is not None and mac_el.get("address", "").lower() == mac.lower()) or \
                (mac is None and _sriov_target(nic) == vf):
            found.append(nic)
    if not found:
        what = f'with MAC "{mac}"' if mac is not None else f'on SR-IOV device "{vf}"'
        raise CLIError(f"The VM has no SR-IOV interface {what}.")
    removed = etree.tostring(found[-1], encoding="unicode")
    for nic in found:
        nic.getparent().remove(nic)
    new_xml = etree.tostring(root, encoding="unicode")
    check_xml(new_xml)
    return new_xml, removed


def _random_mac() -> str:
    """A locally administered MAC in KVM's 52:54:00 range, as upstream picks one for a VF NIC."""
    return "52:54:00:" + ":".join(f"{secrets.randbelow(223) + 16:02x}" for _ in range(3))


@network_group.command(name="add", short_help="Add a network interface to a VM.")
@click.argument("domain")
@click.argument("net")
@click.option("-a", "--macaddr", default=None,
              help="MAC address [default: derived from the VM UUID; random for an SR-IOV VF].")
@click.option("-m", "--model", default="virtio", show_default=True, help="libvirt NIC model.")
@click.option("-s", "--sriov", is_flag=True, default=False,
              help="NET is an SR-IOV VF of the VM's node, not a VNI.")
@click.option("-d", "--sriov-mode", type=click.Choice(("hostdev", "macvtap")), default="macvtap",
              show_default=True, help="How an SR-IOV VF is given to the VM.")
@live_option
@restart_option
@yes_option
def network_add(domain: str, net: str, macaddr: str | None, model: str, sriov: bool, sriov_mode: str,
                live: bool, restart: bool | None, confirmed: bool) -> None:
    """Add an interface on network NET to the VM DOMAIN.

    NET is a PVC network VNI (bridge vmbr<VNI>) or a bridge name; with --sriov, an SR-IOV VF of
    the node the VM is on, given as a macvtap (default) or hostdev device. A hostdev VM cannot
    live-migrate, and its VF must exist on the node it moves to. A running VM gets the new
    interface at once (hot-plug) unless --no-live or --restart is given.
    """
    if sriov:
        vm = fetch_vm(domain)
        info = _sriov_vf(vm, net)
        device = sriov_interface(net, sriov_mode, macaddr or _random_mac(), model, info)
        _change_devices(domain, lambda xml: add_sriov_interface(xml, device, net),
                        lambda _old, _new: ("POST", device), live, restart, confirmed)
        return
    if net.isdigit():  # a PVC network must exist, or the VM would get a bridge no node creates
        response = get_state().api().request("GET", f"/network/{net}")
        if response.status_code == 404 and "message" in (decode(response) or {}):
            raise CLIError(f'Network {net} does not exist; add it first ("pvc network add {net} ...").')
        if response.status_code not in (200, 404):  # 404 without a message: an API without networks
            raise ApiError(error_message(response), response.status_code)
    def change(xml: str) -> str:
        return edit_xml(domainxml.add_interface, xml, bridge_of(net), mac=macaddr, model=model)

    def hotplug(old_xml: str, new_xml: str) -> tuple[str, str] | None:
        added = [m for m in domainxml.parse(new_xml).macs if m not in set(domainxml.parse(old_xml).macs)]
        return ("POST", edit_xml(domainxml.device_xml, new_xml, mac=added[0])) if len(added) == 1 else None

    _change_devices(domain, change, hotplug, live, restart, confirmed)


@network_group.command(name="remove", short_help="Remove a network interface from a VM.")
@click.argument("domain")
@click.argument("net", required=False, default=None)
@click.option("-m", "--mac-address", "macaddr", default=None, help="MAC address of the interface to remove.")
@click.option("-s", "--sriov", is_flag=True, default=False,
              help="NET is an SR-IOV VF (hostdev or macvtap interface), not a VNI.")
@live_option
@restart_option
@yes_option
def network_remove(domain: str, net: str | None, macaddr: str | None, sriov: bool, live: bool,
                   restart: bool | None, confirmed: bool) -> None:
    """Remove the interface on network NET (or with --mac-address) from the VM DOMAIN.

    Several interfaces on NET are ambiguous: give the MAC address. With --sriov, NET is the VF
    of an SR-IOV interface.
    """
    if net is None and macaddr is None:
        raise CLIError("Give the network NET or the --mac-address of the interface to remove.")
    if sriov:
        removed: dict[str, str] = {}

        def change_sriov(xml: str) -> str:
            new_xml, removed["device"] = remove_sriov_interface(xml, net, macaddr)
            return new_xml

        _change_devices(domain, change_sriov, lambda _old, _new: ("DELETE", removed["device"]), live,
                        restart, confirmed)
        return
    def change(xml: str) -> str:
        return edit_xml(domainxml.remove_interface, xml, mac=macaddr,
                        bridge=bridge_of(net) if net is not None else None)

    def hotplug(old_xml: str, new_xml: str) -> tuple[str, str] | None:
        removed = [m for m in domainxml.parse(old_xml).macs if m not in set(domainxml.parse(new_xml).macs)]
        return ("DELETE", edit_xml(domainxml.device_xml, old_xml, mac=removed[0])) if len(removed) == 1 \
            else None

    _change_devices(domain, change, hotplug, live, restart, confirmed)


# -- volume ------------------------------------------------------------------------------------------

@click.group(name="volume", short_help="Manage the disk volumes of a VM.")
def volume_group() -> None:
    """View and change the disk volumes of VMs (by editing their XML)."""


@volume_group.command(name="get", short_help="Show the volumes of a VM.")
@click.argument("domain")
@format_option(VOLUME_FORMATS)
def volume_get(domain: str, formatter: Any) -> None:
    """Show the disk volumes of the VM DOMAIN."""
    get_state().emit(volume_data(fetch_vm(domain)), formatter)


_RBD_VOLUME_RE = re.compile(r"^[^/\s]+/[^/\s]+$")
_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd"}
_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def add_file_disk(xml: str, path: str, target: str | None, bus: str) -> str:
    """The XML with a raw file-backed disk added, as upstream's `vm volume add -t file`.

    The next free target of the bus is taken when none is given; a scsi disk gets a virtio-scsi
    controller if the VM has none. Whether the cluster accepts a host file is the API's domain
    XML policy to decide (refused by default, allowed through `host_disks`).
    """
    if not path.startswith("/") or any(c in path for c in "\0\n\r"):
        raise CLIError(f"The file volume '{path}' is not an absolute path.")
    if bus not in _BUS_PREFIX:
        raise CLIError(f"The bus '{bus}' is not supported for file volumes ({', '.join(_BUS_PREFIX)}).")
    domain = check_xml(xml)
    targets = {d.target for d in domain.disks}
    if any(d.source.file == path for d in domain.disks if d.source is not None):
        raise CLIError(f"The file {path} is already attached to {domain.name}.")
    if target is None:
        prefix = _BUS_PREFIX[bus]
        target = next((prefix + c for c in "abcdefghijklmnopqrstuvwxyz" if prefix + c not in targets), None)
        if target is None:
            raise CLIError(f"No free {prefix}* disk target left on {domain.name}.")
    elif target in targets:
        raise CLIError(f"The disk target {target} is already used by {domain.name}.")
    root = etree.fromstring(xml.strip().encode("utf-8"), _SAFE_PARSER)
    devices = root.find("devices")
    if devices is None:
        devices = etree.SubElement(root, "devices")
    disk = etree.Element("disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type="raw")
    etree.SubElement(disk, "source", file=path)
    etree.SubElement(disk, "target", dev=target, bus=bus)
    disks = devices.findall("disk")
    if disks:
        disks[-1].addnext(disk)
    else:
        devices.insert(0, disk)
    if bus == "scsi" and not any(c.type == "scsi" for c in domain.controllers):
        disk.addnext(etree.Element("controller", type="scsi", index="0", model="virtio-scsi"))
    new_xml = etree.tostring(root, encoding="unicode")
    check_xml(new_xml)
    return new_xml


@volume_group.command(name="add", short_help="Add a volume to a VM.")
@click.argument("domain")
@click.argument("volume")
@click.option("-d", "--disk-id", "disk_id", default=None, help="Target (sdX/vdX/hdX) [default: next free].")
@click.option("-b", "--bus", type=click.Choice(DISK_BUSES), default="scsi", show_default=True,
              help="Bus of the disk (scsi adds a virtio-scsi controller if the VM has none).")
@click.option("-t", "--type", "disk_type", type=click.Choice(("rbd", "file")), default="rbd",
              show_default=True,
              help="The type of volume: an RBD volume (pool/volume) or a file on the nodes (absolute path).")
@click.option("--monitor", "monitors", multiple=True, metavar="HOST[:PORT]",
              help="Ceph monitor of the disk source; repeatable.")
@click.option("--secret-uuid", default=None, help="UUID of the libvirt secret holding the Ceph key.")
@click.option("--ceph-user", default=None, help="Ceph client user of the disk [default: the cluster's].")
@live_option
@restart_option
@yes_option
def volume_add(domain: str, volume: str, disk_id: str | None, bus: str, disk_type: str,
               monitors: tuple[str, ...], secret_uuid: str | None, ceph_user: str, live: bool,
               restart: bool | None, confirmed: bool) -> None:
    """Attach the volume VOLUME to the VM DOMAIN: a Ceph RBD volume ("pool/volume", the default)
    or, with --type file, a file by its absolute path on the nodes.

    An RBD volume must exist in the cluster. The node running the VM fills in the Ceph monitors and
    its libvirt secret when it starts or hot-plugs the disk; --monitor and --secret-uuid are only
    needed to point a disk at another Ceph cluster. File volumes are refused by the cluster's
    domain XML policy unless its administrator allowed the path (hypervisor.domain_policy).
    """
    if disk_type == "file":
        if monitors or secret_uuid or ceph_user:
            raise CLIError("--monitor, --secret-uuid and --ceph-user are for RBD volumes, not --type file.")
        def attach(_old_xml: str, new_xml: str) -> tuple[str, str]:
            return "POST", edit_xml(domainxml.device_xml, new_xml, source=volume)

        _change_devices(domain, lambda xml: add_file_disk(xml, volume, disk_id, bus), attach, live, restart,
                        confirmed)
        return
    if not _RBD_VOLUME_RE.match(volume):
        raise CLIError(f"The volume '{volume}' is not in the form pool/volume.")
    pool, name = volume.split("/", 1)
    get_state().api().get_one(f"/storage/ceph/volume/{pool}/{name}", what="Volume")  # must exist
    def change(xml: str) -> str:
        return edit_xml(domainxml.add_rbd_disk, xml, pool, name, list(monitors), secret_uuid,
                        user=ceph_user or "admin", target=disk_id, bus=bus)

    def hotplug(_old_xml: str, new_xml: str) -> tuple[str, str]:
        return "POST", edit_xml(domainxml.device_xml, new_xml, source=volume)

    _change_devices(domain, change, hotplug, live, restart, confirmed)


@volume_group.command(name="remove", short_help="Remove a volume from a VM.")
@click.argument("domain")
@click.argument("volume")
@live_option
@restart_option
@yes_option
def volume_remove(domain: str, volume: str, live: bool, restart: bool | None, confirmed: bool) -> None:
    """Detach VOLUME ("pool/volume", a file path or a target such as sdb) from the VM DOMAIN."""
    def hotplug(old_xml: str, _new_xml: str) -> tuple[str, str]:
        key = {"target": volume} if re.fullmatch(r"[a-z]+", volume) else {"source": volume}
        return "DELETE", edit_xml(domainxml.device_xml, old_xml, **key)

    _change_devices(domain, lambda xml: edit_xml(domainxml.remove_disk, xml, volume), hotplug, live, restart,
                    confirmed)


COMMANDS: tuple[click.Command, ...] = (network_group, volume_group)
