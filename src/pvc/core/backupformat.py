"""The on-disk format of VM snapshot exports, upstream's and ours in one (pure; no file I/O).

Upstream PVC 1.0.3 writes `<root>/<vm>/<snapshot>/images/<pool>.<volume>.rbdimg` (a full
`rbd export --export-format 2`) or `.rbddiff` (`rbd export-diff --from-snap <parent>`), and
`<root>/<vm>/<snapshot>/snapshot.json`:

    {type: full|incremental, snapshot_name, incremental_parent, vm_detail,
     export_files: [[relpath, size], ...], export_size_bytes}

where each file's `size` is the *volume's* size in bytes (upstream creates the volume with it
on import), not the file's, and export_size_bytes is the total of the files.

We write exactly these keys, so an upstream cluster imports our trees, and add our own keys next
to them (upstream reads only its own): `pvc_format` (this module's FORMAT_VERSION), `pvc_files`
(pool, volume, kind, size and sha256 of each file: names never parsed from file names) and
`pvc_chain` (the snapshots from the full to the parent), `pvc_snapshot` (the captured metadata,
timestamp and consistency of the VM snapshot).

The deprecated per-VM backup wrote `<root>/<vm>/<datestring>/pvcdisks/<pool>.<volume>.rbdimg|rbddiff`
and `pvcbackup.json` (`type, datestring, incremental_parent, retained_snapshot, result, ...,
backup_files, backup_size_bytes`); such a tree is read as the snapshot `backup_<datestring>`.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT_VERSION = 1
SNAPSHOT_JSON = "snapshot.json"
IMAGES_DIR = "images"
LEGACY_JSON = "pvcbackup.json"
LEGACY_DIR = "pvcdisks"
LEGACY_PREFIX = "backup_"
FULL_EXT = "rbdimg"
DIFF_EXT = "rbddiff"
MAX_CHAIN = 1000             # a chain longer than this is a loop or a broken tree, not a backup

Kind = Literal["full", "incremental"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class FormatError(ValueError):
    """A tree or manifest that cannot be read; the message names the file and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ImageFile:
    """One exported volume: where its file is (relative to the snapshot directory) and what it holds."""

    pool: str
    volume: str
    path: str                     # e.g. images/vms.web1_sda.rbdimg
    size: int                     # the file's size in bytes; -1: not recorded (upstream trees)
    incremental: bool
    sha256: str = ""              # empty: not recorded (upstream trees)
    volume_size: int = 0          # the RBD volume's size (upstream's export_files figure)

    @property
    def ref(self) -> str:
        return f"{self.pool}/{self.volume}"


@dataclass(frozen=True)
class Manifest:
    """A parsed snapshot.json (or pvcbackup.json): one snapshot of a VM in an export tree."""

    vm: str
    snapshot: str
    type: Kind
    parent: str | None
    vm_detail: dict[str, Any]
    files: tuple[ImageFile, ...]
    size: int
    legacy: bool = False
    format_version: int | None = None          # None: written by upstream (no checksums)
    chain: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)   # pvc_snapshot: meta, created, consistency

    @property
    def xml(self) -> str:
        return str(self.vm_detail.get("xml") or "")

    @property
    def uuid(self) -> str:
        return str(self.vm_detail.get("uuid") or "")

    @property
    def has_checksums(self) -> bool:
        return bool(self.files) and all(f.sha256 for f in self.files)


# -- names and paths ----------------------------------------------------------------------------------

def check_snapshot_name(name: str, field_name: str = "snapshot_name") -> str:
    """Names that are safe as a directory and in `pool/volume@snap` (no '/', '@', ':' or '..')."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FormatError(f"{field_name}: '{name}' is not a valid snapshot name (letters, digits, '.', "
                          f"'_' and '-', starting with a letter or digit, at most 64 characters)")
    return name


def legacy_snapshot(datestring: str) -> str:
    return f"{LEGACY_PREFIX}{datestring}"


def snapshot_dir(root: str, vm: str, snapshot: str) -> str:
    """`<root>/<vm>/<snapshot>`; the components are checked so nothing escapes the root."""
    for part, what in ((vm, "VM name"), (snapshot, "snapshot name")):
        if not part or "/" in part or part in (".", ".."):
            raise FormatError(f"{what} '{part}' cannot be a directory name")
    return posixpath.join(root, vm, snapshot)


def image_path(pool: str, volume: str, incremental: bool, legacy: bool = False) -> str:
    ext = DIFF_EXT if incremental else FULL_EXT
    return f"{LEGACY_DIR if legacy else IMAGES_DIR}/{pool}.{volume}.{ext}"


def check_relpath(path: str, where: str) -> str:
    """A file named in a manifest must stay inside the snapshot directory."""
    norm = posixpath.normpath(path) if isinstance(path, str) else ""
    if not norm or norm.startswith("/") or norm == "." or norm.split("/")[0] == "..":
        raise FormatError(f"{where}: the file '{path}' is not a path inside the snapshot directory")
    if norm.split("/")[0] not in (IMAGES_DIR, LEGACY_DIR):
        raise FormatError(f"{where}: the file '{path}' is not under {IMAGES_DIR}/ or {LEGACY_DIR}/")
    return norm


# -- writing ------------------------------------------------------------------------------------------

def build_manifest(vm_detail: Mapping[str, Any], snapshot: str, parent: str | None,
                   files: Sequence[ImageFile], chain: Sequence[str] = (),
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """snapshot.json: upstream's keys exactly, then ours (`pvc_*`)."""
    incremental = parent is not None
    doc: dict[str, Any] = {
        "type": "incremental" if incremental else "full",
        "snapshot_name": snapshot,
        "incremental_parent": parent,
        "vm_detail": dict(vm_detail),
        "export_files": [[f.path, f.volume_size] for f in files],
        "export_size_bytes": sum(max(f.size, 0) for f in files),
        "pvc_format": FORMAT_VERSION,
        "pvc_files": _our_files(files),
        "pvc_chain": list(chain),
    }
    if extra:
        doc["pvc_snapshot"] = dict(extra)
    return doc


def build_legacy_manifest(vm_detail: Mapping[str, Any], datestring: str, parent: str | None,
                          files: Sequence[ImageFile], retained: bool, result: bool, message: str,
                          runtime: float) -> dict[str, Any]:
    """pvcbackup.json of the deprecated backup (written even when it failed, as upstream)."""
    return {
        "type": "incremental" if parent else "full",
        "datestring": datestring,
        "incremental_parent": parent,
        "retained_snapshot": retained,
        "result": result,
        "result_message": message,
        "runtime_secs": round(runtime, 2),
        "vm_detail": dict(vm_detail),
        "backup_files": [[f.path, f.volume_size] for f in files],
        "backup_size_bytes": sum(max(f.size, 0) for f in files),
        "pvc_format": FORMAT_VERSION,
        "pvc_files": _our_files(files),
    }


def _our_files(files: Sequence[ImageFile]) -> list[dict[str, Any]]:
    return [{"path": f.path, "pool": f.pool, "volume": f.volume, "size": f.size, "volume_size": f.volume_size,
             "kind": DIFF_EXT if f.incremental else FULL_EXT, "sha256": f.sha256} for f in files]


# -- reading ------------------------------------------------------------------------------------------

def disk_refs(vm_detail: Mapping[str, Any]) -> list[str]:
    """`pool/volume` of each RBD disk in vm_detail (`disks[].name`, else the snapshots' rbd lists)."""
    refs: list[str] = []
    for disk in vm_detail.get("disks") or []:
        if isinstance(disk, dict) and disk.get("type") in (None, "rbd", "network"):
            name = disk.get("name")
            if isinstance(name, str) and name.count("/") == 1 and "@" not in name:
                refs.append(name)
    for snap in vm_detail.get("snapshots") or []:
        for ref in (snap.get("rbd_snapshots") or []) if isinstance(snap, dict) else []:
            if isinstance(ref, str) and "@" in ref and ref.split("@", 1)[0].count("/") == 1:
                refs.append(ref.split("@", 1)[0])
    return list(dict.fromkeys(refs))


def name_from_file(path: str, refs: Iterable[str], where: str) -> tuple[str, str, bool]:
    """(pool, volume, incremental) of an upstream file name `<pool>.<volume>.<ext>`.

    Names may contain dots, so the file is matched against the VM's disks (`refs`); only when no
    disk matches is the name split at its first dot, and an ambiguous match is an error."""
    base = posixpath.basename(path)
    stem, _, ext = base.rpartition(".")
    if ext not in (FULL_EXT, DIFF_EXT) or not stem:
        raise FormatError(f"{where}: '{path}' is not a .{FULL_EXT} or .{DIFF_EXT} file")
    matches = [ref for ref in refs if ref.replace("/", ".", 1) == stem]
    if len(matches) > 1:
        raise FormatError(f"{where}: '{path}' matches several disks ({', '.join(matches)})")
    if matches:
        pool, _, volume = matches[0].partition("/")
    else:
        pool, _, volume = stem.partition(".")
        if not pool or not volume:
            raise FormatError(f"{where}: cannot tell pool and volume from '{path}' (no disk of the VM "
                              f"matches it)")
    return pool, volume, ext == DIFF_EXT


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FormatError(f"{what}: '{value}' is not a size in bytes")
    return int(value)


def _ours(doc: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """path -> our pvc_files entry (pool, volume, sha256), checked."""
    out: dict[str, dict[str, Any]] = {}
    entries = doc.get("pvc_files")
    if entries is None:
        return out
    if not isinstance(entries, list):
        raise FormatError(f"{where}: pvc_files is not a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise FormatError(f"{where}: a pvc_files entry has no path")
        for key in ("pool", "volume"):
            value = entry.get(key)
            if not isinstance(value, str) or not value or "/" in value or "@" in value:
                raise FormatError(f"{where}: pvc_files entry {entry['path']}: bad {key} {entry.get(key)!r}")
        sha = entry.get("sha256") or ""
        if sha and not (isinstance(sha, str) and _SHA_RE.match(sha)):
            raise FormatError(f"{where}: pvc_files entry {entry['path']}: '{sha}' is not a sha256")
        out[posixpath.normpath(entry["path"])] = entry
    return out


def parse_manifest(doc: Any, where: str, legacy: bool = False) -> Manifest:
    """A snapshot.json (legacy: a pvcbackup.json) read into a Manifest; FormatError names the problem."""
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: not a JSON object")
    detail = doc.get("vm_detail")
    if not isinstance(detail, dict) or not isinstance(detail.get("name"), str):
        raise FormatError(f"{where}: vm_detail with the VM's name is missing")
    kind = doc.get("type")
    if kind not in ("full", "incremental"):
        raise FormatError(f"{where}: type '{kind}' is not full or incremental")
    if legacy:
        datestring = doc.get("datestring")
        if not isinstance(datestring, str) or not datestring:
            raise FormatError(f"{where}: datestring is missing")
        snapshot = legacy_snapshot(datestring)
        parent_raw = doc.get("incremental_parent")
        parent = legacy_snapshot(parent_raw) if isinstance(parent_raw, str) and parent_raw else None
        listed, size_key = doc.get("backup_files"), "backup_size_bytes"
        if doc.get("result") is False:
            raise FormatError(f"{where}: this backup failed when it was taken "
                              f"({doc.get('result_message') or 'no message'}); it cannot be restored")
    else:
        snapshot = doc.get("snapshot_name")
        if not isinstance(snapshot, str):
            raise FormatError(f"{where}: snapshot_name is missing")
        parent_raw = doc.get("incremental_parent")
        parent = parent_raw if isinstance(parent_raw, str) and parent_raw else None
        listed, size_key = doc.get("export_files"), "export_size_bytes"
    check_snapshot_name(snapshot, f"{where}: snapshot_name")
    if parent is not None:
        check_snapshot_name(parent, f"{where}: incremental_parent")
    if (kind == "incremental") != (parent is not None):
        raise FormatError(f"{where}: type {kind} does not agree with incremental_parent {parent!r}")
    if not isinstance(listed, list):
        raise FormatError(f"{where}: the list of exported files is missing")
    ours = _ours(doc, where)
    refs = disk_refs(detail)
    files: list[ImageFile] = []
    for item in listed:
        if not isinstance(item, list | tuple) or len(item) < 2 or not isinstance(item[0], str):
            raise FormatError(f"{where}: a file entry is not [path, size]: {item!r}")
        path = check_relpath(item[0], where)
        volume_size = _int(item[1], f"{where}: {path}")
        mine = ours.get(path)
        if mine is not None:
            pool, volume = mine["pool"], mine["volume"]
            incremental = path.endswith("." + DIFF_EXT)
            sha = mine.get("sha256") or ""
            size = _int(mine.get("size"), f"{where}: {path}: pvc_files size")
        else:
            pool, volume, incremental = name_from_file(path, refs, where)
            sha, size = "", -1
        if incremental != (kind == "incremental"):
            raise FormatError(f"{where}: {path} is a {'diff' if incremental else 'full image'} in a "
                              f"{kind} export")
        files.append(ImageFile(pool, volume, path, size, incremental, sha, volume_size))
    seen = [f.ref for f in files]
    if len(set(seen)) != len(seen):
        raise FormatError(f"{where}: a volume is listed twice")
    chain = doc.get("pvc_chain") or []
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        raise FormatError(f"{where}: pvc_chain is not a list of snapshot names")
    version = doc.get("pvc_format")
    extra = doc.get("pvc_snapshot") if isinstance(doc.get("pvc_snapshot"), dict) else {}
    return Manifest(vm=detail["name"], snapshot=snapshot, type=kind, parent=parent, vm_detail=detail,
                    files=tuple(files), size=_int(doc.get(size_key, 0), where),
                    legacy=legacy, format_version=version if isinstance(version, int) else None,
                    chain=tuple(chain), extra=dict(extra))


# -- chains and verification ------------------------------------------------------------------------

def walk_chain(load: Callable[[str], Manifest], snapshot: str) -> list[Manifest]:
    """The manifests from the full export to `snapshot`, following each incremental's parent.

    `load(name)` reads one snapshot's manifest from the same VM directory (FormatError if absent).
    Any depth; a loop, a missing parent, a parent of another VM or a volume the parent lacks is an
    error naming the snapshot."""
    chain: list[Manifest] = []
    seen: set[str] = set()
    name: str | None = snapshot
    while name is not None:
        if name in seen:
            raise FormatError(f"snapshot {name}: the chain of parents loops back to it")
        if len(chain) >= MAX_CHAIN:
            raise FormatError(f"snapshot {snapshot}: the chain of parents is longer than {MAX_CHAIN}")
        seen.add(name)
        try:
            manifest = load(name)
        except FormatError as exc:
            if chain:
                raise FormatError(f"snapshot {chain[-1].snapshot} needs its parent {name}, which cannot be "
                                  f"read: {exc.message}") from None
            raise
        if chain and manifest.uuid and chain[-1].uuid and manifest.uuid != chain[-1].uuid:
            raise FormatError(f"snapshot {name} belongs to VM {manifest.uuid}, not {chain[-1].uuid}")
        chain.append(manifest)
        name = manifest.parent
    chain.reverse()
    for parent, child in itertools.pairwise(chain):
        missing = {f.ref for f in child.files} - {f.ref for f in parent.files}
        if missing:
            raise FormatError(f"snapshot {child.snapshot}: volume(s) {', '.join(sorted(missing))} are not "
                              f"in its parent {parent.snapshot}")
    return chain


@dataclass(frozen=True)
class FileCheck:
    """One file to verify: its snapshot directory's name, its path there, and what it must be."""

    snapshot: str
    path: str
    size: int                    # -1: not recorded (upstream), only presence can be checked
    sha256: str                  # empty: not recorded, only the size (if any) is checked


def verify_plan(chain: Sequence[Manifest]) -> list[FileCheck]:
    return [FileCheck(m.snapshot, f.path, f.size, f.sha256) for m in chain for f in m.files]


def check_file(check: FileCheck, actual_size: int | None, actual_sha256: str | None) -> str | None:
    """None if the file is as recorded; else the problem, naming the file."""
    where = f"{check.snapshot}/{check.path}"
    if actual_size is None:
        return f"{where}: missing"
    if check.size >= 0 and actual_size != check.size:
        return f"{where}: size {actual_size} bytes, recorded {check.size}"
    if check.sha256 and actual_sha256 is not None and actual_sha256 != check.sha256:
        return f"{where}: sha256 {actual_sha256} differs from the recorded {check.sha256}"
    return None


# -- importing under another name ----------------------------------------------------------------------

def renamed_ref(ref: str, old_vm: str, new_vm: str) -> str:
    """The volume a VM rename gives `pool/volume` (upstream's rule: `<old>` or `<old>_*` follow)."""
    pool, _, volume = ref.partition("/")
    if volume == old_vm or volume.startswith(old_vm + "_"):
        return f"{pool}/{new_vm}{volume[len(old_vm):]}"
    return ref


def set_uuid(xml: str, new_uuid: str) -> str:
    """The domain XML with its <uuid> replaced (only that element's text, nothing else)."""
    pattern = re.compile(r"(<uuid>)\s*[0-9a-fA-F-]{32,36}\s*(</uuid>)")
    found = pattern.findall(xml)
    if len(found) != 1:
        raise FormatError(f"the domain XML has {len(found)} <uuid> elements; expected exactly one")
    return pattern.sub(lambda m: f"{m.group(1)}{new_uuid}{m.group(2)}", xml, count=1)


_MAC_ATTR = re.compile(r"""(<mac\s+address\s*=\s*)(['"])([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})\2""")


def replace_macs(xml: str, macs: Mapping[str, str]) -> str:
    """The domain XML with each `<mac address=…>` in `macs` (lower-case keys) replaced, text kept."""
    def swap(m: re.Match[str]) -> str:
        new = macs.get(m.group(3).lower())
        return m.group(0) if new is None else f"{m.group(1)}{m.group(2)}{new}{m.group(2)}"
    return _MAC_ATTR.sub(swap, xml)
