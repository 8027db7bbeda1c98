"""Our own helper API for provisioner scripts (alongside the upstream-compatible pvcapid/daemon_lib).

    from pvc.worker.provisioner.helpers import domain_xml, volume_name, mac_for

- volume_name(builder, volume) -> "<vm>_<disk_id>", the name every provisioned volume gets.
- mac_for(template, vm_id, index) -> the interface's MAC (template, else random 52:54:00:...).
- domain_xml(builder, kernel=None, initrd=None, cmdline=None) -> a libvirt domain for the VM:
  memory/vCPUs from the system template, one RBD disk per volume (pool/volume only: each node
  adds its monitors and Ceph secret when it starts the VM), virtio disks for vdX ids and
  virtio-scsi for sdX, one virtio NIC per network (bridge from vm_data), a pty serial console
  (PVC's console log reads it), VNC if the template asks. With `kernel` the VM boots that kernel
  directly (like the lab's tiny guest), else from its first disk.
- import_volume(pool, name, path) has the worker copy a raw image the script built into one of
  the VM's volumes (scripts hold no Ceph key; see pvc.worker.provisioner.scriptapi).
- lab_guest_root(root) writes the root filesystem of the lab's tiny guest (busybox and the /init
  its initramfs switches to) under `root` (examples/3-install.py; needs the lab's busybox-static).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pvc.worker.provisioner.macs import mac_for
from pvc.worker.provisioner.scriptapi import import_volume

__all__ = ["domain_xml", "import_volume", "lab_guest_root", "mac_for", "volume_name"]


def volume_name(builder: Any, volume: dict[str, Any]) -> str:
    return f"{builder.vm_name}_{volume['disk_id']}"


def _disk(builder: Any, volume: dict[str, Any]) -> tuple[str, bool]:
    dev = str(volume["disk_id"])
    virtio = dev.startswith("vd")
    driver = "<driver name='qemu' type='raw' cache='none' discard='unmap'" + (" event_idx='off'/>" if virtio
                                                                             else "/>")
    source = quoteattr(f"{volume['pool']}/{volume_name(builder, volume)}")
    return (f"    <disk type='network' device='disk'>{driver}<source protocol='rbd' name={source}/>"
            f"<target dev={quoteattr(dev)} bus='{'virtio' if virtio else 'scsi'}'/></disk>\n", not virtio)


def domain_xml(builder: Any, kernel: str | None = None, initrd: str | None = None,
               cmdline: str | None = None, description: str | None = None) -> str:
    data = builder.vm_data
    system = data["system_details"]
    desc = description or f"PVC provisioner, profile '{builder.vm_profile}'"
    if kernel:
        boot = f"    <kernel>{escape(kernel)}</kernel>\n"
        if initrd:
            boot += f"    <initrd>{escape(initrd)}</initrd>\n"
        boot += f"    <cmdline>{escape(cmdline or f'console=ttyS0 vmname={builder.vm_name}')}</cmdline>\n"
    else:
        boot = "    <boot dev='hd'/>\n"
    devices = ""
    scsi = False
    for volume in data.get("volumes") or []:
        text, needs_scsi = _disk(builder, volume)
        devices += text
        scsi = scsi or needs_scsi
    if scsi:
        devices += "    <controller type='scsi' index='0' model='virtio-scsi'/>\n"
    for index, network in enumerate(data.get("networks") or []):
        mac = mac_for(data.get("mac_template"), builder.vm_id, index)
        bridge = quoteattr(network["eth_bridge"])
        devices += (f"    <interface type='bridge'><mac address='{mac}'/><source bridge={bridge}/>"
                    f"<model type='virtio'/></interface>\n")
    devices += ("    <serial type='pty'><target port='0'/></serial>\n"
                "    <console type='pty'><target type='serial' port='0'/></console>\n")
    if system.get("vnc"):
        listen = quoteattr(system.get("vnc_bind") or "127.0.0.1")
        devices += f"    <graphics type='vnc' port='-1' autoport='yes' listen={listen}/>\n"
    arch = data.get("system_architecture") or "x86_64"
    return f"""<domain type='kvm'>
  <name>{escape(builder.vm_name)}</name>
  <uuid>{builder.vm_uuid}</uuid>
  <description>{escape(desc)}</description>
  <memory unit='MiB'>{int(system['vram_mb'])}</memory>
  <vcpu>{int(system['vcpu_count'])}</vcpu>
  <cpu><topology sockets='1' cores='{int(system['vcpu_count'])}' threads='1'/></cpu>
  <os>
    <type arch='{escape(arch)}' machine='pc'>hvm</type>
{boot}  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
{devices}    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


def lab_guest_root(root: str | Path) -> None:
    """The lab guest's root disk tree under `root` (pvc.lab.guest's own recipe: the same files its
    disk image holds, so a VM installed with it boots like the lab's guest)."""
    from pvc.lab import guest  # the lab's recipe: only where the lab is installed

    guest.write_tree(Path(root), None)
