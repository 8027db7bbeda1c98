"""Build test OVAs: an OVF 1.0 descriptor and streamOptimized VMDK disks in a tar (the .ovf first).

    make_test_ova(path, disk_raw, name)   # an OVA at `path` from the raw disk image `disk_raw`

Used by the OVA unit and API tests and by the lab system test (from the lab's tiny guest disk).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def _item(instance: int, resource: int, name: str, extra: str = "") -> str:
    return (f"      <Item>\n        <rasd:ElementName>{name}</rasd:ElementName>\n"
            f"        <rasd:InstanceID>{instance}</rasd:InstanceID>\n"
            f"        <rasd:ResourceType>{resource}</rasd:ResourceType>\n{extra}      </Item>\n")


def ovf_descriptor(name: str, disks: Sequence[tuple[str, int, int]], vcpus: int = 1, memory_mb: int = 256,
                   nics: int = 1, graphics: bool = False, memory_units: str = "byte * 2^20") -> str:
    """An OVF 1.0 descriptor; `disks` are (file name, file size in bytes, capacity in bytes)."""
    files = "".join(f'    <File ovf:href="{href}" ovf:id="file{i}" ovf:size="{size}"/>\n'
                    for i, (href, size, _cap) in enumerate(disks, 1))
    disk_section = "".join(
        f'    <Disk ovf:capacity="{cap}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk{i}" '
        f'ovf:fileRef="file{i}" ovf:format="{VMDK_FORMAT}"/>\n' for i, (_h, _s, cap) in enumerate(disks, 1))
    memory = memory_mb if memory_units == "byte * 2^20" else memory_mb * (1 << 20)
    items = _item(1, 3, f"{vcpus} virtual CPU(s)",
                  f"        <rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity>\n")
    items += _item(2, 4, f"{memory_mb}MB of memory",
                   f"        <rasd:AllocationUnits>{memory_units}</rasd:AllocationUnits>\n"
                   f"        <rasd:VirtualQuantity>{memory}</rasd:VirtualQuantity>\n")
    items += _item(3, 6, "SCSI Controller 0",
                   "        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n")
    instance = 4
    for i in range(1, len(disks) + 1):
        items += _item(instance, 17, f"Hard Disk {i}",
                       f"        <rasd:AddressOnParent>{i - 1}</rasd:AddressOnParent>\n"
                       f"        <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>\n"
                       f"        <rasd:Parent>3</rasd:Parent>\n")
        instance += 1
    for i in range(nics):
        items += _item(instance, 10, f"Network adapter {i + 1}",
                       "        <rasd:Connection>VM Network</rasd:Connection>\n"
                       "        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>\n")
        instance += 1
    if graphics:
        items += _item(instance, 24, "Video card")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="{OVF_NS}" xmlns:ovf="{OVF_NS}" xmlns:rasd="{RASD_NS}" xmlns:vssd="{VSSD_NS}">
  <References>
{files}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disk_section}  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="96"><Info>The kind of installed guest OS</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-07</vssd:VirtualSystemType>
      </System>
{items}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def to_vmdk(raw: str | os.PathLike[str], vmdk: str | os.PathLike[str]) -> None:
    """A streamOptimized VMDK of a raw image (as OVAs carry them)."""
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(vmdk)], check=True, capture_output=True)


def write_tar(path: str | os.PathLike[str], members: Sequence[tuple[str, bytes | Path]]) -> None:
    """A tar of (name, bytes or a file path), in order (the .ovf first, as OVAs have it)."""
    with tarfile.open(str(path), "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            if isinstance(content, Path):
                tar.add(str(content), arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(content))


def make_test_ova(path: str | os.PathLike[str], disk_raw: str | os.PathLike[str], name: str, vcpus: int = 1,
                  memory_mb: int = 256, nics: int = 1, graphics: bool = False) -> Path:
    """An OVA at `path` for the VM `name` with one disk: the raw image `disk_raw` as a streamOptimized
    VMDK (the disk's capacity is the raw image's size). Returns the path."""
    out = Path(path)
    vmdk = out.with_name(f"{out.stem}-disk1.vmdk")
    to_vmdk(disk_raw, vmdk)
    try:
        href = f"{name}-disk1.vmdk"
        ovf = ovf_descriptor(name, [(href, vmdk.stat().st_size, os.path.getsize(disk_raw))], vcpus=vcpus,
                             memory_mb=memory_mb, nics=nics, graphics=graphics)
        write_tar(out, [(f"{name}.ovf", ovf.encode()), (href, vmdk)])
    finally:
        vmdk.unlink(missing_ok=True)
    return out
