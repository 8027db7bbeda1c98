"""VM snapshot export and import in upstream's on-disk format (pvc.core.backupformat), with a
sha256 per file, free-space checks, cleanup on failure and a catalogue entry per export.

Both run on the node whose filesystem holds the tree (the primary unless a node is named); the
path is checked there (pvc.cluster.backups.resolve_path). Fixed upstream defects (spec 1.4):
names come from snapshot.json, not file names (14); chains of any depth; a failed import leaves
nothing behind (14); a missing RBD snapshot fails the export instead of being skipped (12).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pvc.adapters.ceph import Storage, StorageError
from pvc.adapters.ceph.rbdcli import RbdCli
from pvc.cluster import backups as catalogue
from pvc.cluster import storage as storage_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots
from pvc.cluster.vms import transitions as tr
from pvc.core import backupformat as fmt
from pvc.core import domainxml, schema
from pvc.core.config import Settings
from pvc.core.errors import PVCError
from pvc.core.records import BackupFile, BackupRecord, SnapshotVolume, VMRecord, VMSnapshotRecord
from pvc.core.revert import Reverter
from pvc.core.zk import ZK
from pvc.worker.kinds.storage import common as storage_common

Log = Callable[[str], Any]
Progress = Callable[[int, int, str], Any]
SPACE_MARGIN = 64 << 20          # headroom on top of the estimate (manifests, filesystem overhead)
HASH_CHUNK = 4 << 20


class ExportFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImportFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- adapters (patchable in tests) --------------------------------------------------------------------

def rbd_for(settings: Settings) -> RbdCli:
    return RbdCli.from_settings(settings)


def storage_for(settings: Settings) -> Storage:
    return storage_common.storage_for(settings)


def _text(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


def _no_progress(current: int, total: int, status: str) -> None:
    return None


# -- reading the cluster ------------------------------------------------------------------------------

def read_snapshot(zk: ZK, uuid: str, name: str) -> VMSnapshotRecord | None:
    try:
        return vmsnapshots.get_snapshot(zk, uuid, name)
    except PVCError:
        return None


def vm_detail(zk: ZK, record: VMRecord, xml: str) -> dict[str, Any]:
    """The VM item (as `GET /vm/<vm>` shows it) with the snapshot's XML, upstream's vm_detail."""
    try:
        detail = json.loads(vms_mod.item_json(zk, vms_mod.get_entry(zk, record.uuid)))
    except (PVCError, ValueError):
        detail = {"name": record.name, "uuid": record.uuid}
    detail["xml"] = xml
    return detail


def file_sha256(path: str, root: str | None = None) -> str:
    """The file's sha256; with `root`, read as `open_in_tree` opens it (no symlink followed)."""
    digest = hashlib.sha256()
    with (os.fdopen(open_in_tree(root, path), "rb") if root else open(path, "rb")) as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _symlink_refusal(root: str, path: str) -> fmt.FormatError:
    """The refusal naming the first symbolic link (or non-directory) on the way from root to path."""
    current = root
    for part in os.path.relpath(path, root).split(os.sep):
        current = os.path.join(current, part)
        with contextlib.suppress(OSError):
            mode = os.lstat(current).st_mode
            if stat.S_ISLNK(mode):
                return fmt.FormatError(f"{current}: is a symbolic link; an export tree is read without "
                                       f"following symbolic links, so {path} is refused")
            if current != path and not stat.S_ISDIR(mode):
                return fmt.FormatError(f"{current}: is not a directory, so {path} is refused")
    return fmt.FormatError(f"{path}: is not a regular file reached without a symbolic link; refused")


def open_in_tree(root: str, path: str) -> int:
    """A read-only descriptor of the regular file `path` below the export root `root` (a realpath),
    each component below the root opened with O_NOFOLLOW from its parent's descriptor: a symbolic
    link anywhere in an export tree (planted to read a file outside the export roots) is refused,
    naming the path, and so is anything that is not a regular file. FileNotFoundError when it is
    not there."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if rel in ("", ".") or ".." in parts or os.path.isabs(rel):
        raise fmt.FormatError(f"{path}: is not below the export root {root}; refused")
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            except FileNotFoundError:
                raise
            except OSError:             # ELOOP (a symlink) or ENOTDIR
                raise _symlink_refusal(root, path) from None
            os.close(directory)
            directory = inner
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
        except FileNotFoundError:
            raise
        except OSError:
            raise _symlink_refusal(root, path) from None
    finally:
        os.close(directory)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise fmt.FormatError(f"{path}: is not a regular file; refused")
    os.set_blocking(fd, True)
    return fd


def check_in_tree(root: str, path: str) -> int:
    """The size of the regular file `path`, reached below `root` without following a symlink."""
    fd = open_in_tree(root, path)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write_json(path: str, doc: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a manifest."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(doc, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- export --------------------------------------------------------------------------------------------

def _chain_of(root: str, vm: str, parent: str | None) -> list[str]:
    """The snapshots from the full to `parent`, as the parent's manifest in this tree says."""
    if parent is None:
        return []
    path = os.path.join(fmt.snapshot_dir(root, vm, parent), fmt.SNAPSHOT_JSON)
    try:
        with open(path) as handle:
            doc = json.load(handle)
        chain = doc.get("pvc_chain") if isinstance(doc, dict) else None
        return [*(chain if isinstance(chain, list) else []), parent]
    except (OSError, ValueError):
        return [parent]


def export_snapshot(zk: ZK, settings: Settings, this_node: str, uuid: str, snapshot: str, root: str,
                    parent: str | None, origin: str, log: Log, progress: Progress | None = None,
                    force: bool = False, legacy: bool = False) -> BackupRecord:
    """Write `<root>/<vm>/<snapshot>/` (legacy: `<root>/<vm>/<datestring>/pvcdisks`), record the
    catalogue entry; on failure remove the partial files, record a failed entry, raise ExportFailed."""
    progress = progress or _no_progress
    data = zk.get(schema.vm(uuid), None)
    if not isinstance(data, dict):
        raise ExportFailed(f"VM {uuid} is not defined")
    record = VMRecord.model_validate(data)
    entry = BackupRecord(vm=record.name, snapshot=snapshot, type="incremental" if parent else "full",
                         parent=parent,
                         origin=origin if origin in ("autobackup", "export", "backup") else "export",
                         node=this_node, target=root)
    created_dir: str | None = None
    try:
        snap = read_snapshot(zk, uuid, snapshot)
        if snap is None:
            raise ExportFailed(f'VM "{record.name}" has no snapshot "{snapshot}"')
        if snap.state != "ready":
            raise ExportFailed(f'snapshot "{snapshot}" of VM "{record.name}" is {snap.state}, not ready')
        if not snap.volumes:
            log(f'snapshot "{snapshot}" has no RBD volumes; only the configuration is exported')
        parent_snap = read_snapshot(zk, uuid, parent) if parent else None
        if parent and parent_snap is None:
            raise ExportFailed(f'the incremental parent "{parent}" is not a snapshot of VM "{record.name}"')
        if parent_snap is not None:
            have = {(v.pool, v.volume) for v in parent_snap.volumes}
            lacking = [f"{v.pool}/{v.volume}" for v in snap.volumes if (v.pool, v.volume) not in have]
            if lacking:
                raise ExportFailed(f'the parent "{parent}" has no snapshot of {", ".join(lacking)}; '
                                   f"export a full")
            if parent_snap.created > snap.created:
                raise ExportFailed(f'the parent "{parent}" is newer than "{snapshot}"')
        try:
            real_root = catalogue.resolve_path(root, settings)
        except PVCError as exc:
            raise ExportFailed(exc.message) from None
        entry = entry.model_copy(update={"target": real_root})
        if legacy:
            if not snapshot.startswith(fmt.LEGACY_PREFIX):
                raise ExportFailed(f'the legacy layout needs a "{fmt.LEGACY_PREFIX}<datestring>" snapshot, '
                                   f'not "{snapshot}"')
            datestring = snapshot[len(fmt.LEGACY_PREFIX):]
            target = fmt.snapshot_dir(real_root, record.name, datestring)
        else:
            target = fmt.snapshot_dir(real_root, record.name, snapshot)
        if os.path.exists(target):
            raise ExportFailed(f"{target} already exists; remove it or export another snapshot")
        rbd = rbd_for(settings)
        total = len(snap.volumes) + 2
        progress(0, total, f"Estimating the size of snapshot {snapshot} of VM {record.name}")
        estimate = 0
        for vol in snap.volumes:
            try:
                estimate += rbd.diff_bytes(vol.pool, vol.volume, snapshot, parent)
            except StorageError as exc:
                raise ExportFailed(exc.message) from None
        free = shutil.disk_usage(real_root).free
        if estimate + SPACE_MARGIN > free:
            text = (f"{real_root} has {free} bytes free; the export needs about {estimate + SPACE_MARGIN} "
                    f"({estimate} of data)")
            if not force:
                raise ExportFailed(text + "; free space or force the export")
            log(text + "; exporting anyway (force)")
        if parent and not os.path.isdir(fmt.snapshot_dir(real_root, record.name, parent)) and not legacy:
            log(f'warning: the parent "{parent}" was not exported to {real_root}; an import from here needs '
                f"its export in the same directory")
        os.makedirs(os.path.join(real_root, record.name), exist_ok=True)
        os.mkdir(target)
        created_dir = target
        files = _export_volumes(rbd, snap, target, parent, legacy, log,
                                lambda i, text: progress(i, total, text))
        detail = vm_detail(zk, record, snap.xml)
        image_files = [f for f, _ in files]
        if legacy:
            manifest = fmt.build_legacy_manifest(detail, snapshot[len(fmt.LEGACY_PREFIX):],
                                                 parent[len(fmt.LEGACY_PREFIX):] if parent else None,
                                                 image_files, retained=True, result=True, message="",
                                                 runtime=time.time() - entry.started)
            _write_json(os.path.join(target, fmt.LEGACY_JSON), manifest)
        else:
            extra = {"created": snap.created, "consistency": snap.consistency, "meta": snap.meta,
                     "origin": snap.origin}
            manifest = fmt.build_manifest(detail, snapshot, parent, image_files,
                                          _chain_of(real_root, record.name, parent), extra)
            _write_json(os.path.join(target, fmt.SNAPSHOT_JSON), manifest)
        with contextlib.suppress(OSError):
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        progress(total, total, f"Exported snapshot {snapshot} of VM {record.name} to {target}")
        done = entry.model_copy(update={
            "result": True, "finished": time.time(), "bytes": sum(max(f.size, 0) for f in image_files),
            "files": [BackupFile(path=f.path, size=f.size, sha256=f.sha256) for f in image_files],
            "message": f"exported to {target}"})
        catalogue.record_backup(zk, uuid, done)
        return done
    except Exception as exc:
        message = _text(exc)
        if created_dir is not None:
            shutil.rmtree(created_dir, ignore_errors=True)
            log(f"removed the partial export {created_dir}")
        failed = entry.model_copy(update={"result": False, "finished": time.time(), "message": message})
        try:
            catalogue.record_backup(zk, uuid, failed)
        except Exception as err:          # the export's own failure is what matters
            log(f"could not record the failed export in the catalogue: {_text(err)}")
        if isinstance(exc, ExportFailed) or not isinstance(exc, PVCError | StorageError | OSError
                                                            | fmt.FormatError):
            raise                  # ours, or a cancel: the task reports it as it is
        raise ExportFailed(f"Export of snapshot {snapshot} failed: {message}") from exc


def _export_volumes(rbd: RbdCli, snap: VMSnapshotRecord, target: str, parent: str | None, legacy: bool,
                    log: Log, step: Callable[[int, str], Any]) -> list[tuple[fmt.ImageFile, str]]:
    """One file per volume, hashed while it is written."""
    os.mkdir(os.path.join(target, fmt.LEGACY_DIR if legacy else fmt.IMAGES_DIR))
    out: list[tuple[fmt.ImageFile, str]] = []
    for index, vol in enumerate(snap.volumes, start=1):
        rel = fmt.image_path(vol.pool, vol.volume, parent is not None, legacy)
        what = "export-diff" if parent else "export"
        step(index, f"rbd {what} of {vol.pool}/{vol.volume}@{snap.name}")
        digest = hashlib.sha256()
        path = os.path.join(target, rel)
        started = time.monotonic()
        with open(path, "wb") as handle:
            size = rbd.export_to(vol.pool, vol.volume, snap.name, handle, parent, digest.update)
            handle.flush()
            os.fsync(handle.fileno())
        seconds = time.monotonic() - started
        log(f"wrote {rel}: {size} bytes in {seconds:.1f}s, sha256 {digest.hexdigest()}")
        out.append((fmt.ImageFile(vol.pool, vol.volume, rel, size, parent is not None, digest.hexdigest(),
                                  vol.size), path))
    return out


# -- reading a tree --------------------------------------------------------------------------------------

@dataclass
class Tree:
    """The manifests of one VM directory, read on demand, and where each snapshot's files are."""

    vm_dir: str
    root: str = ""          # the export root (a realpath): nothing below it is read through a symlink
    dirs: dict[str, str] = field(default_factory=dict)

    def load(self, name: str) -> fmt.Manifest:
        fmt.check_snapshot_name(name, "snapshot")
        candidates = [(os.path.join(self.vm_dir, name), fmt.SNAPSHOT_JSON, False)]
        if name.startswith(fmt.LEGACY_PREFIX):
            legacy_dir = os.path.join(self.vm_dir, name[len(fmt.LEGACY_PREFIX):])
            candidates.append((legacy_dir, fmt.LEGACY_JSON, True))
        for directory, manifest, legacy in candidates:
            path = os.path.join(directory, manifest)
            try:
                fd = open_in_tree(self.root or self.vm_dir, path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise fmt.FormatError(f"{path}: cannot be read ({exc})") from None
            try:
                with os.fdopen(fd) as handle:
                    doc = json.load(handle)
            except (OSError, ValueError) as exc:
                raise fmt.FormatError(f"{path}: cannot be read as JSON ({exc})") from None
            parsed = fmt.parse_manifest(doc, path, legacy)
            if parsed.snapshot != name:
                raise fmt.FormatError(f"{path}: names snapshot {parsed.snapshot}, not {name}")
            self.dirs[name] = directory
            return parsed
        raise fmt.FormatError(f"no {fmt.SNAPSHOT_JSON} for snapshot {name} in {self.vm_dir}")


def verify_chain(tree: Tree, chain: list[fmt.Manifest], log: Log, step: Callable[[str], Any] | None = None) \
        -> list[str]:
    """Sizes and (where recorded) sha256 of every file of the chain; the problems found."""
    problems: list[str] = []
    for manifest in chain:
        if not manifest.has_checksums and manifest.files:
            log(f"snapshot {manifest.snapshot}: no checksums recorded (written by upstream PVC or an older "
                f"version); checking file sizes only")
    for check in fmt.verify_plan(chain):
        path = os.path.join(tree.dirs[check.snapshot], check.path)
        if step is not None:
            step(f"verifying {check.snapshot}/{check.path}")
        try:
            size: int | None = check_in_tree(tree.root or tree.vm_dir, path)
        except fmt.FormatError as exc:
            problems.append(exc.message)
            log(f"verify: {exc.message}")
            continue
        except OSError:
            size = None
        digest = (file_sha256(path, tree.root or tree.vm_dir)
                  if size is not None and check.sha256 and check.size in (-1, size) else None)
        problem = fmt.check_file(check, size, digest)
        if problem:
            problems.append(problem)
            log(f"verify: {problem}")
    return problems


# -- import ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportPlan:
    """What an import creates: the VM's name, UUID and XML, and where each exported volume goes."""

    name: str
    uuid: str
    xml: str
    volumes: dict[str, str]          # exported pool/volume -> target pool/volume
    macs: dict[str, str] = field(default_factory=dict)   # exported NIC MAC -> the copy's MAC


def copy_macs(xmls: list[str], uuid: str) -> dict[str, str]:
    """New MACs for a copy of a VM (import under another name), so it never shares one with the original.

    Each MAC any of the chain's XMLs uses (the tip's first) gets one derived from the new UUID, the
    NIC's source and its index, as `domainxml.add_interface` picks one for a new NIC; the same map
    is applied to every XML, so a retained snapshot's NICs keep matching the VM's.
    """
    nics: dict[str, str] = {}         # old MAC -> the NIC's source, in order of first use
    for position, xml in enumerate(xmls):
        try:
            found = domainxml.parse(xml).interfaces
        except domainxml.InvalidDomainXML:
            if position == 0:
                raise
            continue                  # an older snapshot's XML: its known MACs are still replaced
        for nic in found:
            if nic.mac:
                nics.setdefault(nic.mac.lower(), nic.source or nic.type)
    macs: dict[str, str] = {}
    for index, (old, source) in enumerate(nics.items()):
        n = index
        new = domainxml.mac_address(f"{uuid}/{source}/{n}")
        while new in nics or new in macs.values():
            n += len(nics)
            new = domainxml.mac_address(f"{uuid}/{source}/{n}")
        macs[old] = new
    return macs


def plan_import(zk: ZK, chain: list[fmt.Manifest], new_name: str | None) -> ImportPlan:
    """Refuse an existing VM name or UUID, an existing target volume or a missing pool."""
    tip = chain[-1]
    old = tip.vm
    name = new_name or old
    uuid = str(uuidlib.uuid4()) if new_name else tip.uuid
    if not uuid:
        raise ImportFailed(f"snapshot {tip.snapshot}: vm_detail has no UUID")
    xml = tip.xml
    if not xml:
        raise ImportFailed(f"snapshot {tip.snapshot}: vm_detail has no XML")
    volumes = {f.ref: f.ref for f in chain[0].files}
    macs: dict[str, str] = {}
    if new_name:
        try:
            macs = copy_macs([xml] + [m.xml for m in reversed(chain[:-1]) if m.xml], uuid)
            xml = fmt.replace_macs(fmt.set_uuid(domainxml.rename(xml, new_name), uuid), macs)
        except (PVCError, fmt.FormatError) as exc:
            raise ImportFailed(f"cannot rename the VM to {new_name}: {_text(exc)}") from None
        volumes = {ref: fmt.renamed_ref(ref, old, new_name) for ref in volumes}
    taken = zk.get_many([schema.vm_name(name), schema.vm(uuid)])
    if taken.get(schema.vm_name(name)) is not None:
        raise ImportFailed(f'A VM named "{name}" already exists in the cluster; remove or rename it, or '
                           f"import under another name")
    if taken.get(schema.vm(uuid)) is not None:
        raise ImportFailed(f'A VM with UUID "{uuid}" already exists in the cluster; remove it, or import '
                           f"under another name (a new UUID)")
    for target in volumes.values():
        pool, _, volume = target.partition("/")
        if not zk.exists(schema.pool(pool)):
            raise ImportFailed(f'pool "{pool}" (for volume {target}) does not exist in this cluster')
        if zk.exists(schema.volume(pool, volume)):
            raise ImportFailed(f'volume "{volume}" already exists in pool "{pool}"; nothing was imported')
    return ImportPlan(name, uuid, xml, volumes, macs)


def _meta(manifest: fmt.Manifest, zk: ZK) -> dict[str, Any]:
    """define()'s metadata arguments: our captured meta if recorded, else upstream's vm_detail."""
    detail, meta = manifest.vm_detail, manifest.extra.get("meta") or {}

    def pick(key: str, default: Any) -> Any:
        value = meta.get(key, detail.get(key, default))
        return default if value in (None, "") else value

    limit = pick("node_limit", [])
    limit = [n for n in limit if isinstance(n, str)] if isinstance(limit, list) else []
    if limit and not all(zk.exists(schema.node(n)) for n in limit):
        limit = []                    # nodes of another cluster: let the selector choose
    selector = pick("node_selector", "none")
    tags = pick("tags", [])
    users = [t for t in tags if isinstance(t, dict) and t.get("type") == "user"
             and isinstance(t.get("name"), str)]
    user = [t["name"] for t in users if not t.get("protected")]
    protected = [t["name"] for t in users if t.get("protected")]
    method = pick("migration_method", "live")
    selectors = ("mem", "memprov", "load", "vcpus", "vms")
    return {"limit": limit or None, "selector": selector if selector in selectors else None,
            "autostart": bool(pick("node_autostart", False)),
            "migration_method": method if method in ("live", "shutdown", "none") else "live",
            "migration_max_downtime": int(pick("migration_max_downtime", 300) or 300),
            "user_tags": user, "protected_tags": protected, "profile": str(pick("profile", "") or "")}


def _created(manifest: fmt.Manifest) -> float:
    """The snapshot's own time (ours recorded; upstream's vm_detail lists it), not the import's."""
    created = manifest.extra.get("created")
    if isinstance(created, int | float):
        return float(created)
    for item in manifest.vm_detail.get("snapshots") or []:
        if isinstance(item, dict) and item.get("name") == manifest.snapshot:
            with contextlib.suppress(TypeError, ValueError):
                return float(item.get("timestamp"))
    return time.time()


def import_snapshot(zk: ZK, settings: Settings, this_node: str, vm_name: str, snapshot: str, root: str,
                    retain: bool, new_name: str | None, start: bool, verify_only: bool, log: Log,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Import `<root>/<vm_name>/<snapshot>` and its chain of parents as a new VM (or only verify)."""
    progress = progress or _no_progress
    try:
        real_root = catalogue.resolve_path(root, settings, "import_path")
        vm_dir = os.path.join(real_root, vm_name)
        if "/" in vm_name or vm_name in ("", ".", ".."):
            raise ImportFailed(f"{vm_dir} is not a directory of exports")
        try:
            vm_mode = os.lstat(vm_dir).st_mode
        except OSError:
            vm_mode = 0
        if stat.S_ISLNK(vm_mode):
            raise ImportFailed(f"{vm_dir}: is a symbolic link; an export tree is read without following "
                               f"symbolic links")
        if not stat.S_ISDIR(vm_mode):
            raise ImportFailed(f"{vm_dir} is not a directory of exports")
        tree = Tree(vm_dir, real_root)
        chain = fmt.walk_chain(tree.load, snapshot)
    except fmt.FormatError as exc:
        raise ImportFailed(exc.message) from None
    except PVCError as exc:
        raise ImportFailed(exc.message) from None
    log(f"chain: {' -> '.join(m.snapshot + ('' if m.type == 'full' else ' (incremental)') for m in chain)}")
    if chain[0].type != "full":
        raise ImportFailed(f"snapshot {chain[0].snapshot} is incremental but names no parent")
    files = sum(len(m.files) for m in chain)
    total = files * 2 + 3
    done = [0]

    def step(text: str) -> None:
        done[0] = min(done[0] + 1, total)
        progress(done[0], total, text)

    progress(0, total, f"Verifying {files} file(s) of snapshot {snapshot}")
    problems = verify_chain(tree, chain, log, step)
    if problems:
        raise ImportFailed(f"the export tree fails verification, nothing was imported: {'; '.join(problems)}")
    summary = {"vm": vm_name, "snapshot": snapshot, "chain": [m.snapshot for m in chain], "files": files,
               "checksums": all(m.has_checksums or not m.files for m in chain)}
    if verify_only:
        progress(total, total, f"Verified {files} file(s) of {len(chain)} snapshot(s); nothing was imported")
        return {**summary, "verified": True}
    plan = plan_import(zk, chain, new_name)
    policy = domainxml.DomainPolicy.from_settings(settings)
    try:
        vms_mod.parse_xml(plan.xml, policy=policy)      # the domain XML policy, before anything changes
    except PVCError as exc:
        raise ImportFailed(f"the snapshot's XML is refused: {exc.message}") from None
    storage, rbd = storage_for(settings), rbd_for(settings)
    with Reverter(log, lambda exc: f"import failed: {_text(exc)}") as revert:
        try:
            record = _import(zk, storage, rbd, tree, chain, plan, policy, retain, log, step, revert)
            state = "start" if start else "stop"
            vms_mod.apply(zk, plan.uuid, partial(tr.set_fields, fields={"state": state}))
        except (PVCError, StorageError, fmt.FormatError) as exc:
            raise ImportFailed(_text(exc)) from None
        except OSError as exc:
            raise ImportFailed(f"{getattr(exc, 'filename', None) or 'the export tree'}: "
                               f"{exc.strerror or exc}") from None
        revert.commit()
    how = "started" if start else "stopped"
    progress(total, total, f'Imported VM "{plan.name}" from snapshot {snapshot} ({how})')
    return {**summary, "name": plan.name, "uuid": plan.uuid, "volumes": list(plan.volumes.values()),
            "retained": retain, "state": "start" if start else "stop", "node": record.node}


def _import(zk: ZK, storage: Storage, rbd: RbdCli, tree: Tree, chain: list[fmt.Manifest], plan: ImportPlan,
            policy: domainxml.DomainPolicy, retain: bool, log: Log, step: Callable[[str], Any],
            revert: Reverter) -> VMRecord:
    meta = _meta(chain[-1], zk)
    node = chain[-1].vm_detail.get("node")
    record = None
    if isinstance(node, str) and node and zk.exists(schema.node(node)):
        try:                                    # the node it ran on, if this cluster has it (as upstream)
            record = vms_mod.define(zk, plan.xml, node=node, initial_state="stop", policy=policy, **meta)
        except PVCError as exc:
            log(f"node {node} cannot take the VM ({exc.message}); choosing another")
    if record is None:
        record = vms_mod.define(zk, plan.xml, initial_state="stop", policy=policy, **meta)
    revert.add(f'VM "{plan.name}" defined', partial(vms_mod.undefine, zk, plan.uuid, 10.0))
    vms_mod.apply(zk, plan.uuid, partial(tr.set_fields, fields={"state": "import"}))
    log(f'defined VM "{plan.name}" ({plan.uuid}) on node {record.node} in state import')
    for manifest in chain:
        directory = tree.dirs[manifest.snapshot]
        for image in manifest.files:
            target = plan.volumes.get(image.ref)
            if target is None:
                raise ImportFailed(f"snapshot {manifest.snapshot}: {image.ref} is not in the full export")
            pool, _, volume = target.partition("/")
            path = os.path.join(directory, image.path)
            check_in_tree(tree.root or tree.vm_dir, path)     # still a regular file, no symlink on the way
            verb = "import-diff" if image.incremental else "import"
            step(f"rbd {verb} of {manifest.snapshot}/{image.path} into {target}")
            if image.incremental:
                rbd.import_diff(path, pool, volume)
            else:
                rbd.import_full(path, pool, volume)
                revert.add(f"volume {target} imported", partial(_remove_volume, zk, storage, pool, volume))
            if manifest.snapshot not in storage.list_snapshots(pool, volume):
                storage.create_snapshot(pool, volume, manifest.snapshot)   # the image's head is that snapshot
    names = {m.snapshot for m in chain}
    for target in plan.volumes.values():
        pool, _, volume = target.partition("/")
        if not retain:
            for snap in storage.list_snapshots(pool, volume):
                if snap in names:
                    storage.remove_snapshot(pool, volume, snap)
        storage_mod.scan_volume(zk, storage, pool, volume)          # the volume and snapshot documents
    if retain:
        sizes = {t: int(storage.volume_info(*t.split("/", 1)).get("size", 0)) for t in plan.volumes.values()}
        for manifest in chain:
            xml = fmt.replace_macs(manifest.xml, plan.macs)
            if plan.name != manifest.vm or plan.uuid != manifest.uuid:
                with contextlib.suppress(PVCError, fmt.FormatError):
                    renames = {a: b for a, b in plan.volumes.items() if a != b}
                    xml = fmt.set_uuid(vmsnapshots.rename_xml(xml, plan.name, renames), plan.uuid)
            vols = [SnapshotVolume(pool=t.split("/", 1)[0], volume=t.split("/", 1)[1], snap=manifest.snapshot,
                                   size=sizes.get(t, 0))
                    for f in manifest.files if (t := plan.volumes.get(f.ref))]
            meta = manifest.extra.get("meta") if isinstance(manifest.extra.get("meta"), dict) else {}
            snap_record = VMSnapshotRecord(name=manifest.snapshot, created=_created(manifest), xml=xml,
                                           meta=meta or {}, volumes=vols, origin="imported",
                                           parent=manifest.parent)
            vmsnapshots.write_snapshot(zk, plan.uuid, snap_record, None)
        log(f"retained {len(chain)} snapshot(s): {', '.join(m.snapshot for m in chain)}")
    return record


def _remove_volume(zk: ZK, storage: Storage, pool: str, volume: str) -> None:
    with contextlib.suppress(StorageError):
        storage.remove_volume(pool, volume)
    zk.delete(schema.volume_snapshots(pool, volume))       # recursive: its snapshot documents too
    zk.delete(schema.volume(pool, volume))
