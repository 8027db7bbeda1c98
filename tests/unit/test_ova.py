"""OVA parsing (pvc.cluster.ova): the OVF descriptor and the archive, every malformed case a clear error."""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import pytest

from pvc.cluster import ova
from pvc.core.errors import InvalidInput
from tests.ovahelp import make_test_ova, ovf_descriptor, write_tar

GIB = 1 << 30


def vmdk_header(capacity: int) -> bytes:
    header = bytearray(512)
    header[:4] = b"KDMV"
    struct.pack_into("<IIQ", header, 4, 3, 0, capacity // 512)
    return bytes(header)


def refused(match: str, data: bytes) -> str:
    with pytest.raises(InvalidInput, match=match) as info:
        ova.parse_ovf(data)
    return info.value.message


def good(**kwargs: object) -> bytes:
    disks = kwargs.pop("disks", [("a.vmdk", 1024, 10 * GIB)])
    return ovf_descriptor("web", disks, **kwargs).encode()  # type: ignore[arg-type]


def test_parse_good_descriptor() -> None:
    info = ova.parse_ovf(good(vcpus=2, memory_mb=2048, nics=2, graphics=True,
                              disks=[("a.vmdk", 1024, 10 * GIB), ("b.vmdk", 2048, 3 * GIB + 1)]))
    assert (info.name, info.vcpus, info.memory_mb, info.nics, info.graphics) == ("web", 2, 2048, 2, True)
    assert [(d.href, d.capacity) for d in info.disks] == [("a.vmdk", 10 * GIB), ("b.vmdk", 3 * GIB + 1)]
    assert info.disks[0].disk_ref == "vmdisk1" and "vmdk" in (info.disks[0].format or "")
    plain = ova.parse_ovf(good())
    assert (plain.vcpus, plain.memory_mb, plain.nics, plain.graphics) == (1, 256, 1, False)


def test_memory_units() -> None:
    assert ova.parse_ovf(good(memory_mb=512, memory_units="byte")).memory_mb == 512
    assert ova.parse_units("byte * 2^20", 1, "x") == 1 << 20
    assert ova.parse_units("byte*2^30", 1, "x") == GIB
    assert ova.parse_units("byte * 1024", 1, "x") == 1024
    assert ova.parse_units("MegaBytes", 1, "x") == 1 << 20
    assert ova.parse_units(None, 7, "x") == 7
    with pytest.raises(InvalidInput, match="unknown unit 'furlongs'"):
        ova.parse_units("furlongs", 1, "the memory size")
    text = good().decode().replace("byte * 2^20", "byte * 2^30").replace(
        "<rasd:VirtualQuantity>256</rasd:VirtualQuantity>", "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>")
    assert ova.parse_ovf(text.encode()).memory_mb == 2048


def test_malformed_descriptors() -> None:
    refused("not well-formed XML", b"<Envelope><References>")
    refused("not an OVF Envelope", b"<html/>")
    refused("DOCTYPE", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Envelope>&a;</Envelope>')
    refused("DOCTYPE", b'<!DOCTYPE Envelope SYSTEM "http://example.invalid/x.dtd"><Envelope/>')
    text = good().decode()
    refused("no VirtualSystem", text.replace("VirtualSystem ", "Other ").replace("VirtualSystem>", "Other>")
            .encode())
    refused("no vCPU count", text.replace("<rasd:ResourceType>3<", "<rasd:ResourceType>99<").encode())
    refused("vCPU count.*not a whole number", text.replace(
        "<rasd:VirtualQuantity>1</rasd:VirtualQuantity>", "<rasd:VirtualQuantity>two</rasd:VirtualQuantity>")
        .encode())
    refused("no memory size", text.replace("<rasd:ResourceType>4<", "<rasd:ResourceType>99<").encode())
    refused("no disk", text.replace("<rasd:ResourceType>17<", "<rasd:ResourceType>99<").encode())
    refused("references the disk 'vmdisk9'", text.replace("ovf:/disk/vmdisk1", "ovf:/disk/vmdisk9").encode())
    refused("references the file 'file9'",
            text.replace('ovf:fileRef="file1"', 'ovf:fileRef="file9"').encode())
    refused("blank disks", text.replace(' ovf:fileRef="file1"', "").encode())
    refused("only VMDK", text.replace("vmdk.html#streamOptimized", "qcow2").encode())
    refused("absurd capacity", text.replace(f'ovf:capacity="{10 * GIB}"', 'ovf:capacity="9" '
                                            'ovf:capacityAllocationUnits="byte * 2^60"')
            .replace(' ovf:capacityAllocationUnits="byte"', "").encode())
    refused("4096 vCPUs", good(vcpus=4096))
    refused("MB of memory", good(memory_mb=1))
    refused("several VMs", b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">'
                           b"<VirtualSystemCollection/></Envelope>")
    refused("two disks", good(disks=[("a.vmdk", 1, GIB), ("a.vmdk", 1, GIB)]))
    refused("too large", b"<Envelope>" + b" " * ova.OVF_MAX + b"</Envelope>")


def tar_bytes(members: list[tuple[str, bytes]]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def read(stream: io.BytesIO) -> ova.OvaContents:
    with ova.open_ova(stream) as tar:
        return ova.read_ova(tar)


def test_archive_good_and_bad() -> None:
    disk = vmdk_header(20 * GIB) + b"\0" * 1024
    ovf = good(disks=[("a.vmdk", len(disk), 10 * GIB)])
    contents = read(tar_bytes([("web.ovf", ovf), ("a.vmdk", disk), ("web.mf", b"SHA1(a.vmdk)= 00\n")]))
    assert contents.ovf_name == "web.ovf" and contents.ovf_text == ovf.decode()
    [only] = contents.disks
    assert (only.disk_id, only.file_size, only.capacity, only.disk_size_gb) == ("sda", 1536, 20 * GIB, 20)
    with pytest.raises(InvalidInput, match="not an OVA"):
        read(io.BytesIO(b"this is not a tar archive at all" * 100))
    with pytest.raises(InvalidInput, match="not an OVA"):
        read(io.BytesIO(b""))
    with pytest.raises(InvalidInput, match=r"no .ovf descriptor"):
        read(tar_bytes([("a.vmdk", disk)]))
    with pytest.raises(InvalidInput, match=r"2 .ovf descriptors"):
        read(tar_bytes([("web.ovf", ovf), ("other.ovf", ovf), ("a.vmdk", disk)]))
    with pytest.raises(InvalidInput, match=r"'a.vmdk' named in the OVF is not in the archive"):
        read(tar_bytes([("web.ovf", ovf)]))
    with pytest.raises(InvalidInput, match=r"'a.vmdk' is not a VMDK image"):
        read(tar_bytes([("web.ovf", ovf), ("a.vmdk", b"QFI\xfb" + b"\0" * 1020)]))
    with pytest.raises(InvalidInput, match="descriptor-only VMDK"):
        read(tar_bytes([("web.ovf", ovf), ("a.vmdk", b"# Disk DescriptorFile\n" + b" " * 1000)]))
    with pytest.raises(InvalidInput, match="empty or truncated"):
        read(tar_bytes([("web.ovf", ovf), ("a.vmdk", b"KDMV")]))
    with pytest.raises(InvalidInput, match="absurd size"):
        read(tar_bytes([("web.ovf", ovf), ("a.vmdk", vmdk_header(1 << 62) + b"\0" * 512)]))
    with pytest.raises(InvalidInput, match="not well-formed"):
        read(tar_bytes([("web.ovf", b"<Envelope>"), ("a.vmdk", disk)]))
    # a truncated archive: the disk member is cut short
    whole = tar_bytes([("web.ovf", ovf), ("a.vmdk", disk)]).getvalue()
    with pytest.raises(InvalidInput):
        read(io.BytesIO(whole[:1024 + 512 + 200]))


def test_seekable_spools_streams() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            data = self.inner.read(len(buffer))
            buffer[:len(data)] = data
            return len(data)

    with ova.seekable(Pipe(b"abc" * 10)) as stream:  # type: ignore[arg-type]
        assert stream.seekable() and stream.read() == b"abc" * 10


def test_make_test_ova(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x55" * (4 << 20))
    path = make_test_ova(tmp_path / "guest.ova", raw, "guest", vcpus=2, memory_mb=128)
    with path.open("rb") as handle:
        contents = read(io.BytesIO(handle.read()))
    with tarfile.open(path) as tar:
        assert tar.getnames() == ["guest.ovf", "guest-disk1.vmdk"]
    assert (contents.info.vcpus, contents.info.memory_mb) == (2, 128)
    assert contents.disks[0].capacity == 4 << 20 and contents.disks[0].disk_size_gb == 1
    write_tar(tmp_path / "x.tar", [("a", b"1")])
