"""Disk images from outside (volume uploads, OVA disks): inspected before qemu-img converts them.

Why: an image format can name other files. A qcow2's backing file, a qcow2's external data file or
a VMDK's extents are opened by `qemu-img convert` on the node that converts, so an upload of a
few hundred bytes could copy the Ceph admin keyring or `pvc.conf` into a volume its uploader then
reads. Every image is therefore checked in three steps, each refusing with a message naming the
reference it found:

1. `check_header`: the first bytes are read in Python, before any qemu-img runs (qemu-img info
   itself opens data files and extents): the format's magic must match the declared format; a
   qcow2/qed backing file, a qcow2 external data file, a VMDK descriptor (which lists extent
   files) or a sparse VMDK whose embedded descriptor names a parent is refused;
2. `inspect`: `qemu-img info -f FORMAT --output json` must agree: no backing file, no data file,
   no extent other than the image itself, no protocol or `json:` name, the declared format;
3. `source_spec`: the conversion opens the image through a `json:` specification with
   `"backing": null`, so even a file changed after the inspection cannot open a backing chain.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INFO_TIMEOUT = 120
HEADER_BYTES = 64 * 1024
VMDK_SPARSE_MAGIC = b"KDMV"


class ImageRefused(Exception):
    """The image names another file or is not what it claims; the message says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int


def _refuse(path: str, why: str, reference: bool = True) -> ImageRefused:
    """`path` is the local copy's name: never in the message (the uploader did not choose it)."""
    hint = " (an uploaded image may not refer to other files)" if reference else ""
    return ImageRefused(f"image refused: {why}{hint}")


# -- 1. the header, read in Python -------------------------------------------------------------------

def _detect(head: bytes) -> str:
    """The format qemu would probe from the first bytes (of the ones PVC converts), else raw."""
    if head[:4] == b"QFI\xfb":
        return "qcow2" if len(head) >= 8 and struct.unpack_from(">I", head, 4)[0] >= 2 else "qcow"
    if head[:4] == b"QED\x00":
        return "qed"
    if head[:4] == VMDK_SPARSE_MAGIC or head.lstrip().startswith(b"# Disk DescriptorFile") \
            or head[:4] == b"COWD":
        return "vmdk"
    if len(head) >= 68 and head[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head[:8] == b"conectix":
        return "vpc"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:6] == b"LUKS\xba\xbe":
        return "luks"
    return "raw"


def check_header(path: str, image_format: str) -> None:
    """Step 1 (module docstring): refuse from the first bytes, without qemu-img."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except OSError as exc:
        raise ImageRefused(f"image refused: cannot read it: {exc.strerror}") from None
    found = _detect(head)
    if image_format == "vpc" and found == "raw":   # a fixed VHD has its footer only at the end
        found = _vpc_footer(path)
    if found != image_format:
        raise _refuse(path, f"the file is {found}, not {image_format} as declared", reference=False)
    if found == "qcow2":
        _qcow2_header(path, head)
    elif found == "qed":
        if len(head) < 64:
            raise _refuse(path, "the qed header is truncated")
        (offset, size) = struct.unpack_from("<II", head, 56)
        if offset or size:
            raise _refuse(path, "the qed image has a backing file")
    elif found == "vmdk":
        _vmdk_header(path, head)


def _vpc_footer(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 512))
            return "vpc" if handle.read(8) == b"conectix" else "raw"
    except OSError:
        return "raw"


def _qcow2_header(path: str, head: bytes) -> None:
    if len(head) < 72:
        raise _refuse(path, "the qcow2 header is truncated")
    (backing_offset, backing_size) = struct.unpack_from(">QI", head, 8)
    if backing_offset or backing_size:
        raise _refuse(path, "the qcow2 image has a backing file (backing-filename)")
    version = struct.unpack_from(">I", head, 4)[0]
    if version >= 3 and len(head) >= 80:
        (incompatible,) = struct.unpack_from(">Q", head, 72)
        if incompatible & 0x4:
            raise _refuse(path, "the qcow2 image has an external data file (data-file)")
        if incompatible & ~0x1F:
            raise _refuse(path, f"the qcow2 image has unknown incompatible features {incompatible:#x}")


def _vmdk_header(path: str, head: bytes) -> None:
    def read(offset: int, length: int) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except OSError as exc:
            raise ImageRefused(f"image refused: cannot read its VMDK descriptor: {exc.strerror}") from None

    check_vmdk_sparse(head, read, path)


def check_vmdk_sparse(head: bytes, read: Callable[[int, int], bytes], what: str = "") -> None:
    """A VMDK must be one sparse extent (monolithicSparse, streamOptimized) whose embedded
    descriptor names no parent and no other extent; `read(offset, length)` reads the file (an
    OVA's disk is checked inside the archive)."""
    if head[:4] != VMDK_SPARSE_MAGIC:
        raise _refuse(what, "a VMDK descriptor file refers to extent files; upload a monolithic sparse or "
                      "streamOptimized VMDK")
    if len(head) < 512:
        raise _refuse(what, "the VMDK header is truncated")
    (capacity, _grain, desc_offset, desc_size) = struct.unpack_from("<QQQQ", head, 12)
    if capacity == 0:
        raise _refuse(what, "the VMDK header has no capacity (its descriptor names the extents)")
    if desc_offset and desc_size:
        start, length = desc_offset * 512, min(desc_size * 512, 1 << 20)
        descriptor = head[start:start + length] if start + length <= len(head) else read(start, length)
        check_vmdk_descriptor(what, descriptor)


_PARENT_RE = re.compile(rb'^\s*parentFileNameHint\s*=\s*"?([^"\r\n]*)', re.M)
_EXTENT_RE = re.compile(rb'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\w+)(?:\s+"([^"]*)")?', re.M)


def check_vmdk_descriptor(path: str, descriptor: bytes) -> None:
    """A sparse VMDK's embedded descriptor: no parent, and extents only in this file."""
    parent = _PARENT_RE.search(descriptor)
    if parent and parent.group(1).strip():
        name = parent.group(1).decode(errors="replace")
        raise _refuse(path, f"the VMDK has a parent (backing) file {name!r}")
    extents = _EXTENT_RE.findall(descriptor)
    kinds = {kind.upper() for _, kind, _ in extents}
    if len(extents) > 1 or kinds - {b"SPARSE", b"VMFSSPARSE", b"SESPARSE"}:
        names = ", ".join(repr(name.decode(errors="replace")) for _, _, name in extents)
        raise _refuse(path, f"the VMDK lists extents {names}; only one sparse extent, in the file itself, "
                      "is allowed")


# -- 2. qemu-img info ---------------------------------------------------------------------------------

def verdict(info: dict[str, Any], path: str, image_format: str) -> ImageInfo:
    """Step 2's decision on `qemu-img info --output json` (pure: tests feed it answers)."""
    for key in ("backing-filename", "full-backing-filename", "backing-filename-format"):
        if info.get(key):
            raise _refuse(path, f"it has a backing file ({key} {info.get(key)!r})")
    if info.get("format") != image_format:
        raise _refuse(path, f"qemu-img reads it as {info.get('format')!r}, not {image_format} as declared",
                      reference=False)
    filename = str(info.get("filename", ""))
    if filename.startswith("json:") or re.match(r"^[a-z][a-z0-9+.-]*:", filename):
        raise _refuse(path, f"it is opened through a protocol name {filename!r}")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise _refuse(path, f"it has an external data file (data-file {specific['data-file']!r})")
    for extent in specific.get("extents") or []:
        name = str(extent.get("filename", ""))
        if name != filename:
            raise _refuse(path, f"it has an extent in another file ({name!r})")
    for child in info.get("children") or []:   # qemu-img 8 and later list the nodes it opened
        name = str(child.get("name", ""))
        if name.startswith(("backing", "data-file")):
            raise _refuse(path, f"it opens another file as {name!r}")
    try:
        size = int(info["virtual-size"])
    except (KeyError, TypeError, ValueError):
        raise _refuse(path, "qemu-img reports no virtual size") from None
    return ImageInfo(format=image_format, virtual_size=size)


def inspect(path: str, image_format: str) -> ImageInfo:
    """Steps 1 and 2 (module docstring); the image's virtual size when it may be converted."""
    check_header(path, image_format)
    if image_format == "raw":
        return ImageInfo(format="raw", virtual_size=os.path.getsize(path))
    # info never opens the backing chain, but must see it: no "backing": null here
    cmd = ["qemu-img", "info", "-f", image_format, "--output", "json",
           source_spec(path, image_format, backing=True)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INFO_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageRefused(f"image refused: cannot run qemu-img info: {exc}") from None
    if done.returncode != 0:
        raise ImageRefused(f"image refused: qemu-img cannot read it as {image_format}: "
                           f"{(done.stderr or '').strip()[:400]}")
    try:
        info = json.loads(done.stdout)
    except ValueError as exc:
        raise ImageRefused(f"image refused: unreadable qemu-img info answer ({exc})") from None
    info["filename"] = path if str(info.get("filename", "")).startswith("json:") else info.get("filename")
    return verdict(info, path, image_format)


# -- 3. the conversion's source -------------------------------------------------------------------------

def source_spec(path: str, image_format: str, backing: bool = False) -> str:
    """A qemu `json:` source for `path` read as `image_format` with the backing chain disabled
    (`"backing": null`): what convert and info open instead of the bare path."""
    spec: dict[str, Any] = {"driver": image_format,
                            "file": {"driver": "file", "filename": os.path.abspath(path)}}
    if image_format != "raw" and not backing:
        spec["backing"] = None
    return "json:" + json.dumps(spec, separators=(",", ":"))
