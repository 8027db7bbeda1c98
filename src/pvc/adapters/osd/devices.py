"""Naming and sizing OSD devices: pure functions, unit-tested in tests/unit/test_osd_adapter.py.

Sizes (`10G`), `detect:<name>:<size>:<index>` strings matched against lsscsi and `nvme list`,
partition tables, DB volume sizes, `ceph-volume lvm list` output and direct-mode file devices.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pvc.adapters.osd.base import OsdError

MIB = 1 << 20

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(i?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str, binary: bool = True) -> int:
    """'10G' -> bytes; binary (K=1024) as PVC sizes are given, or decimal as lsscsi/nvme print."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise OsdError(f"'{text}' is not a size (e.g. 10G, 512M)")
    base = 1024 if binary else 1000
    power = " KMGTPE".index(match.group(2).upper() or " ")
    size = int(float(match.group(1)) * base ** power)
    if size <= 0:
        raise OsdError(f"'{text}' must be greater than zero")
    return size


@dataclass(frozen=True)
class DetectSpec:
    """`detect:<name>:<size>:<index>`: the index-th disk whose model contains name, size ±3 %."""

    name: str
    size: int
    index: int


def parse_detect(device: str) -> DetectSpec | None:
    """The detect spec of a `detect:` device string, None for anything else."""
    if not device.startswith("detect:"):
        return None
    parts = device.split(":")
    if len(parts) != 4 or not all(parts[1:]):
        raise OsdError(f"'{device}' is not a detect string (detect:NAME:SIZE:INDEX)")
    _, name, size, index = parts
    if not index.isdigit():
        raise OsdError(f"'{device}': the index '{index}' is not a whole number")
    # lsscsi and nvme print decimal sizes (480GB, 1.92TB): a detect size is read the same way
    return DetectSpec(name, parse_bytes(size, binary=False), int(index))


@dataclass(frozen=True)
class DiskCandidate:
    description: str     # what the name is matched against (the lsscsi line, the NVMe model)
    device: str
    size: int


def parse_lsscsi(text: str) -> list[DiskCandidate]:
    """`lsscsi -s` lines of type disk: '[0:0:0:0] disk ATA INTEL SSD 0100 /dev/sda 480GB'."""
    found = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 4 or tokens[1] != "disk":
            continue
        try:
            size = parse_bytes(tokens[-1], binary=False)
        except OsdError:
            continue
        found.append(DiskCandidate(line, tokens[-2], size))
    return found


def parse_nvme_list(text: str) -> list[DiskCandidate]:
    """`nvme list --output-format json`: Devices[] with ModelNumber, DevicePath, PhysicalSize."""
    try:
        devices = json.loads(text or "{}").get("Devices", [])
    except (json.JSONDecodeError, AttributeError):
        return []
    return [DiskCandidate(str(d.get("ModelNumber", "")), str(d.get("DevicePath", "")),
                          int(d.get("PhysicalSize", 0)))
            for d in devices if isinstance(d, dict)]


def pick_detect_device(spec: DetectSpec, candidates: list[DiskCandidate]) -> str | None:
    """The spec.index-th candidate (in listing order) whose description contains the name and whose
    size is within 3 % of the spec's; None if there is no such disk."""
    matches = [c.device for c in candidates
               if spec.name.lower() in c.description.lower() and c.device.startswith("/dev/")
               and abs(c.size - spec.size) <= 0.03 * spec.size]
    return matches[spec.index] if spec.index < len(matches) else None


def partition_table(returncode: int, dump: str) -> str | None:
    """The label ('gpt', 'dos', ...) if `sfdisk --dump` found a partition table, else None."""
    if returncode != 0:
        return None
    for line in dump.splitlines():
        if line.startswith("label:"):
            return line.split(":", 1)[1].strip() or "unknown"
    return "unknown"


def device_class(device: str) -> str:
    """The CRUSH device class upstream PVC gives an OSD: nvme for NVMe devices, else ssd."""
    return "nvme" if "nvme" in device else "ssd"


def db_size_bytes(osd_bytes: int, ext_db_ratio: float | None, ext_db_size: int | None) -> int | None:
    """The bluestore DB volume size: a ratio of the OSD's size, or an explicit size, or None."""
    if ext_db_ratio is not None and ext_db_size is not None:
        raise OsdError("give either ext_db_ratio or ext_db_size, not both")
    if ext_db_ratio is not None:
        if not 0 < ext_db_ratio < 1:
            raise OsdError(f"ext_db_ratio {ext_db_ratio} must be between 0 and 1")
        size = int(osd_bytes * ext_db_ratio)
    elif ext_db_size is not None:
        size = int(ext_db_size)
    else:
        return None
    if size < MIB:
        raise OsdError(f"the OSD DB volume would be {size} bytes; it needs at least 1 MiB")
    return size


@dataclass(frozen=True)
class PreparedOsd:
    """An OSD as ceph-volume (or the direct mode) made it: enough to activate and record it."""

    id: int
    fsid: str                   # the OSD's own uuid
    cluster_fsid: str = ""
    lv_path: str = ""
    vg: str = ""
    lv: str = ""
    db_device: str = ""


def parse_lvm_list(text: str) -> list[PreparedOsd]:
    """`ceph-volume lvm list --format json` ({"<id>": [{type, tags, lv_path, ...}]}) by id."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise OsdError(f"unreadable ceph-volume lvm list output: {exc}") from None
    found = []
    for key, entries in (data.items() if isinstance(data, dict) else []):
        block = next((e for e in entries if e.get("type") == "block"), entries[0] if entries else None)
        if not block:
            continue
        tags = block.get("tags", {})
        found.append(PreparedOsd(id=int(tags.get("ceph.osd_id", key)), fsid=tags.get("ceph.osd_fsid", ""),
                                 cluster_fsid=tags.get("ceph.cluster_fsid", ""),
                                 lv_path=block.get("lv_path", ""), vg=block.get("vg_name", ""),
                                 lv=block.get("lv_name", ""), db_device=tags.get("ceph.db_device", "")))
    return sorted(found, key=lambda o: o.id)


@dataclass(frozen=True)
class FileDevice:
    path: Path
    size: int | None      # create a sparse file of this size; None: use what exists


def parse_file_device(device: str, base_dir: str | Path) -> FileDevice:
    """`file:<path>:<size>`, `file:<path>` or a plain path; a relative path is under base_dir."""
    text = device.strip()
    size: int | None = None
    if text.startswith("file:"):
        body = text[len("file:"):]
        path_part, sep, size_part = body.rpartition(":")
        if sep and _SIZE_RE.match(size_part):
            body, size = path_part, parse_bytes(size_part)
        text = body
    if text.startswith("detect:"):
        raise OsdError(f"'{device}': detect strings name LVM block devices; a direct-mode OSD needs a file "
                       f"(file:<path>:<size>) or a block device path")
    if not text or "\0" in text or any(part == ".." for part in Path(text).parts):
        raise OsdError(f"'{device}' is not a file path (file:<path>:<size>)")
    path = Path(text) if text.startswith("/") else Path(base_dir) / text
    return FileDevice(path, size)
