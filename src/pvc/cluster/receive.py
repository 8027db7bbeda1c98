"""The receiving side of a snapshot send (upstream PVC 1.0.3's receive protocol, issue #15).

A sender (ours or upstream's) calls, in order:

1. `receive/config` with its VM item: we rebuild the snapshot's XML from the item's XML and the
   snapshot's `xml_diff_lines`, point its Ceph disks at our monitors and secret, and define the VM
   in state `mirror` (new: refused when any of its volumes exists here already, as an image or a
   volume document) or update the mirror (XML, metadata, tags). The snapshot itself is only
   *pending* until every volume has its RBD snapshot (step 3), so an interrupted send never leaves
   a snapshot record that claims data it does not have.
2. per volume, `receive/block`: POST a full image as a raw stream (written at increasing offsets;
   all-zero chunks are not written, so thin provisioning is kept), or PUT multipart batches of
   extents (upstream's `object_<i>` parts, plus our `discard_<i>` extension).
3. per volume, PATCH `receive/block`: the RBD snapshot is made; after the last volume the VM
   snapshot is recorded with the sender's timestamp.

Our extension (`receive_status`): what is pending, each volume's acknowledged batch count and
digest chain (pvc.core.blockstream), so our sender resumes an interrupted send and verifies the
received data. Upstream senders never call it and lose nothing.

The pending state lives in `/transfers/rx<hash of vm uuid and snapshot>` (daemons only).

Tags that make autobackup or automirror select a VM never cross a send (a mirror would be mirrored
back, or backed up twice): the sender strips the ones its own configuration selects by, and the
receiver ignores incoming ones its own configuration selects by and keeps its own such tags on
the mirror (`no_sync_tag`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from lxml import etree

from pvc.adapters.ceph import Storage, StorageError, secret_uuid
from pvc.adapters.ceph.base import BlockHandle
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.cluster.storage.docs import volume_info, write_volume
from pvc.cluster.storage.users import volumes_in_use
from pvc.cluster.vms import transitions as tr
from pvc.cluster.vms import writes as vm_writes
from pvc.core import blockstream as bs
from pvc.core import domainxml, schema, xmlpatch
from pvc.core.config import Settings
from pvc.core.errors import Conflict, InvalidInput, NotFound, PVCError
from pvc.core.records import SnapshotVolume, Tag, VMRecord, VMSnapshotRecord
from pvc.core.zk import ZK

EXTENSIONS = ("discard", "resume", "checksum")
NO_SYNC_TAG_PREFIXES = ("autobackup", "automirror")


def no_sync_tag(settings: Settings) -> Callable[[str], bool]:
    """Whether a tag name stays on its own cluster: `autobackup`/`automirror` (and `...:<x>`),
    one of this cluster's `autobackup.backup_tags` (matched whole, as autobackup selects) or one
    whose part before ':' is one of its `automirror.mirror_tags` (as automirror selects)."""
    backup = set(settings.autobackup.backup_tags) if settings.autobackup else set()
    mirror = set(settings.automirror.mirror_tags) if settings.automirror else set()

    def stays(name: str) -> bool:
        base = name.partition(":")[0]
        return base in NO_SYNC_TAG_PREFIXES or name in backup or base in mirror

    return stays


def _pending_path(uuid: str, snapshot: str) -> str:
    return schema.transfer("rx" + hashlib.sha256(f"{uuid}/{snapshot}".encode()).hexdigest()[:32])


# -- the XML ----------------------------------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def localize_xml(xml: str, monitors: list[tuple[str, int]], secret: str | None) -> str:
    """The XML with every Ceph disk pointed at our cluster: each rbd `<source>`'s `<host>` list
    replaced by our monitors, each ceph `<secret uuid>` replaced by ours."""
    try:
        root = etree.fromstring(xml.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"the snapshot's XML does not parse: {exc}") from None
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        if source is None or source.get("protocol") != "rbd":
            continue
        old = source.findall("host")
        if old and monitors:
            at = list(source).index(old[0])
            tail = old[-1].tail
            for el in old:
                source.remove(el)
            for index, (host, port) in enumerate(monitors):
                el = etree.Element("host", name=host, port=str(port))
                el.tail = tail
                source.insert(at + index, el)
        for el in disk.iter("secret"):
            if secret and el.get("type") == "ceph":
                el.set("uuid", secret)
    return etree.tostring(root, encoding="unicode")


def _list(value: Any, what: str) -> list[Any]:
    """A JSON list from the sent details (missing: empty); InvalidInput naming it otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(f"the sent VM details: {what} is not a list")
    return value


def snapshot_item(vm_detail: Mapping[str, Any], snapshot: str) -> Mapping[str, Any]:
    for item in _list(vm_detail.get("snapshots"), '"snapshots"'):
        if isinstance(item, Mapping) and item.get("name") == snapshot:
            return item
    raise InvalidInput(f'snapshot "{snapshot}": not in the sent VM details (their "snapshots" list)')


def snapshot_xml(vm_detail: Mapping[str, Any], snapshot: str) -> str:
    """The snapshot's XML: its `xml_diff_lines` applied to the item's current XML."""
    xml = vm_detail.get("xml")
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidInput("the sent VM details have no xml")
    item = snapshot_item(vm_detail, snapshot)
    lines = _list(item.get("xml_diff_lines"), f'"xml_diff_lines" of "{snapshot}"')
    if not all(isinstance(line, str) for line in lines):
        raise InvalidInput(f'snapshot "{snapshot}": its xml_diff_lines are not all strings')
    try:
        return xmlpatch.apply(xml, list(lines))
    except xmlpatch.PatchError as exc:
        raise InvalidInput(f'snapshot "{snapshot}": its XML cannot be rebuilt: {exc}') from None


# -- step 1: config ----------------------------------------------------------------------------------

def _tags(vm_detail: Mapping[str, Any], stays: Callable[[str], bool]) -> list[Tag]:
    """The sender's tags, less those that stay on a cluster (`no_sync_tag` of ours)."""
    out: dict[str, Tag] = {}
    for item in _list(vm_detail.get("tags"), '"tags"'):
        if not isinstance(item, Mapping) or not item.get("name"):
            continue
        name = str(item["name"])
        if stays(name):
            continue
        protected = item.get("protected") in (True, "True", "true", 1)
        out[name] = Tag(name=name, type=str(item.get("type") or "user"), protected=protected)
    return list(out.values())


def _meta(vm_detail: Mapping[str, Any]) -> dict[str, Any]:
    """The sender's metadata we take over (never its node limit: our nodes are not its nodes)."""
    meta: dict[str, Any] = {}
    selector = vm_detail.get("node_selector")
    if selector not in (None, "", "None"):
        meta["selector"] = str(selector)
    autostart = vm_detail.get("node_autostart")
    if autostart is not None:
        meta["autostart"] = autostart in (True, "True", "true", 1)
    method = vm_detail.get("migration_method")
    if method not in (None, "", "None"):
        meta["migration_method"] = str(method)
    downtime = vm_detail.get("migration_max_downtime")
    if downtime not in (None, "", "None"):
        try:
            meta["migration_max_downtime"] = int(downtime)
        except (TypeError, ValueError):
            pass
    if isinstance(vm_detail.get("profile"), str) and vm_detail.get("profile") not in ("None",):
        meta["profile"] = vm_detail["profile"]
    return meta


def _volumes(rbd_snapshots: Any, snapshot: str) -> list[SnapshotVolume]:
    out = []
    for ref in _list(rbd_snapshots, '"rbd_snapshots"'):
        if not isinstance(ref, str) or "@" not in ref or "/" not in ref.split("@")[0]:
            raise InvalidInput(f"rbd_snapshots: {ref!r} is not pool/volume@snapshot")
        image, _, snap = ref.partition("@")
        pool, _, volume = image.partition("/")
        if snap != snapshot:
            raise InvalidInput(f"rbd_snapshots: {ref!r} does not belong to snapshot {snapshot}")
        out.append(SnapshotVolume(pool=pool, volume=volume, snap=snap))
    return out


def _timestamp(item: Mapping[str, Any]) -> float:
    try:
        return float(item.get("timestamp") or time.time())
    except (TypeError, ValueError):
        raise InvalidInput(f"snapshot timestamp {item.get('timestamp')!r} is not a number") from None


def receive_config(zk: ZK, storage: Storage, settings: Settings, vm: str, snapshot: str,
                   source_snapshot: str | None, vm_detail: Any) -> str:
    """Step 1: define or update the mirror VM and keep the snapshot pending (see module doc)."""
    if not isinstance(vm_detail, Mapping):
        raise InvalidInput("the request body must be the sending VM's details (a JSON object)")
    item = snapshot_item(vm_detail, snapshot)
    xml = snapshot_xml(vm_detail, snapshot)
    fsid = storage.fsid()
    xml = localize_xml(xml, storage.mon_addresses(), secret_uuid(fsid, settings.storage.secret_uuid))
    policy = domainxml.DomainPolicy.from_settings(settings)
    domain = vms_mod.parse_xml(xml, policy=policy)
    if domain.name != vm:
        raise InvalidInput(f'the snapshot\'s XML names VM "{domain.name}", not "{vm}"')
    volumes = _volumes(item.get("rbd_snapshots"), snapshot)
    created = _timestamp(item)

    existing = _find(zk, vm, domain.uuid)
    if existing is not None:
        if existing.state != "mirror":
            raise Conflict(f'VM "{vm}" exists on this cluster and is not a mirror (state '
                           f"{existing.state}); refusing to receive over it.")
        present = snaps.list_snapshots(zk, existing.uuid)
        if any(s.name == snapshot for s in present):
            raise Conflict(f'Snapshot "{snapshot}" of VM "{vm}" is already present on this cluster.')
        if present and present[0].created > created:
            raise Conflict(f'Snapshot "{snapshot}" of VM "{vm}" is older than this cluster\'s newest '
                           f'snapshot of it ("{present[0].name}").')
        if source_snapshot and not any(s.name == source_snapshot for s in present):
            raise Conflict(f'The incremental parent "{source_snapshot}" of VM "{vm}" is not present on '
                           f"this cluster.")
        record = _update_mirror(zk, existing, domain, xml, vm_detail, policy, no_sync_tag(settings))
        message = f'Updated mirror VM "{vm}" for snapshot "{snapshot}".'
    else:
        if source_snapshot:
            raise Conflict(f'VM "{vm}" is not on this cluster, so incremental parent "{source_snapshot}" '
                           f"is not either; send a full snapshot first.")
        _refuse_existing_volumes(zk, storage, vm, [*domain.rbd_volumes,
                                                   *(f"{v.pool}/{v.volume}" for v in volumes)])
        record = _define_mirror(zk, domain, xml, vm_detail, policy, no_sync_tag(settings))
        message = f'Defined mirror VM "{vm}" for snapshot "{snapshot}".'

    pending = VMSnapshotRecord(name=snapshot, created=created, xml=xml, meta=snaps.capture_meta(record),
                               volumes=volumes, origin="received", parent=source_snapshot or None,
                               state="creating")
    if not volumes:         # nothing to wait for (a VM without Ceph disks)
        snaps.write_snapshot(zk, record.uuid, pending.model_copy(update={"state": "ready"}), None)
        return message
    path = _pending_path(record.uuid, snapshot)
    before = zk.get(path, None)
    kept = {}          # a resumed send (same snapshot, same parent) keeps what was acknowledged
    if isinstance(before, dict) and (before.get("record") or {}).get("parent") == pending.parent:
        kept = before.get("volumes") or {}
    zk.put(path, {"vm": record.uuid, "name": vm, "snapshot": snapshot, "record": pending.doc(),
                  "volumes": kept, "created": time.time()})
    return message


def _refuse_existing_volumes(zk: ZK, storage: Storage, vm: str, refs: list[str]) -> None:
    """A new mirror never takes over volumes this cluster already has (an image or a volume
    document): they belong to another VM or to nobody we know, and the blocks would overwrite them."""
    wanted = list(dict.fromkeys(refs))
    pools = set(storage.list_pools())
    images = {pool: set(storage.list_volumes(pool)) for pool in {r.partition("/")[0] for r in wanted}
              if pool in pools}
    found = [ref for ref in wanted
             if ref.partition("/")[2] in images.get(ref.partition("/")[0], ())
             or zk.exists(schema.volume(*ref.split("/", 1)))]
    if not found:
        return
    users = volumes_in_use(zk)
    named = "; ".join(f"{ref} (used by VM {users[ref]})" if ref in users else f"{ref} (used by no VM)"
                      for ref in found)
    raise Conflict(f'VM "{vm}" is not on this cluster, but volume{"s" if len(found) > 1 else ""} {named} '
                   f"already exist{'' if len(found) > 1 else 's'} here; refusing to define the new mirror "
                   f"over {'them' if len(found) > 1 else 'it'} (remove or rename "
                   f"{'them' if len(found) > 1 else 'it'}, or send with a destination pool).")


def _find(zk: ZK, name: str, uuid: str) -> VMRecord | None:
    by_uuid = zk.get(schema.vm(uuid), None)
    by_name = zk.get(schema.vm_name(name), None)
    if by_name is not None and by_name != uuid:
        raise Conflict(f'A different VM named "{name}" (UUID {by_name}) exists on this cluster; refusing '
                       f"to receive over it.")
    if isinstance(by_uuid, dict):
        return VMRecord.model_validate(by_uuid)
    return None


def _define_mirror(zk: ZK, domain: domainxml.Domain, xml: str, vm_detail: Mapping[str, Any],
                   policy: domainxml.DomainPolicy, stays: Callable[[str], bool]) -> VMRecord:
    meta = _meta(vm_detail)
    tags = _tags(vm_detail, stays)
    record = vm_writes.define(zk, xml, node=None, limit=None, selector=meta.get("selector"),
                              autostart=meta.get("autostart", False),
                              migration_method=meta.get("migration_method", "live"),
                              migration_max_downtime=meta.get("migration_max_downtime", 300),
                              user_tags=[t.name for t in tags if not t.protected],
                              protected_tags=[t.name for t in tags if t.protected],
                              profile=meta.get("profile", ""), initial_state="stop", domain=domain,
                              policy=policy)
    # defined stopped (nothing runs), then marked a mirror at once
    return vm_writes.apply(zk, record.uuid, lambda r: tr.set_fields(r, {"state": "mirror"}))


def _update_mirror(zk: ZK, existing: VMRecord, domain: domainxml.Domain, xml: str,
                   vm_detail: Mapping[str, Any], policy: domainxml.DomainPolicy,
                   stays: Callable[[str], bool]) -> VMRecord:
    meta = _meta(vm_detail)
    fields = vm_writes.meta_fields(selector=meta.get("selector"), autostart=meta.get("autostart"),
                                   profile=meta.get("profile"), migration_method=meta.get("migration_method"),
                                   migration_max_downtime=meta.get("migration_max_downtime"))
    sent = _tags(vm_detail, stays)

    def change(current: VMRecord) -> VMRecord:
        if current.state != "mirror":
            raise Conflict(f'VM "{current.name}" stopped being a mirror meanwhile; refusing to receive.')
        # the sender's tags, exactly, plus this cluster's own autobackup/automirror tags (node limit kept)
        own = [t for t in current.tags if stays(t.name) and t.name not in {s.name for s in sent}]
        return tr.set_fields(tr.replace_definition(current, domain, xml), {**fields, "tags": sent + own})

    return vm_writes.apply(zk, existing.uuid, change)


# -- step 2: blocks ------------------------------------------------------------------------------------

def _mirror_volume(zk: ZK, vm: str, pool: str, volume: str, snapshot: str) -> tuple[VMRecord, dict[str, Any]]:
    """The mirror VM receiving `snapshot` and its pending document; the volume must be one of the
    pending snapshot's (no other volume can be written through these routes)."""
    uuid = zk.get(schema.vm_name(vm), None)
    data = zk.get(schema.vm(uuid), None) if isinstance(uuid, str) else None
    if not isinstance(data, dict):
        raise NotFound(f'VM "{vm}" is not on this cluster; send its configuration (receive/config) first.')
    record = VMRecord.model_validate(data)
    if record.state != "mirror":
        raise Conflict(f'VM "{vm}" is not a mirror (state {record.state}); refusing to write its volumes.')
    pending = zk.get(_pending_path(record.uuid, snapshot), None)
    if not isinstance(pending, dict):
        raise Conflict(f'No receive of snapshot "{snapshot}" of VM "{vm}" is in progress; send its '
                       f"configuration (receive/config) first.")
    refs = {(v["pool"], v["volume"]) for v in pending["record"].get("volumes", [])}
    if (pool, volume) not in refs:
        raise InvalidInput(f'volume {pool}/{volume} is not a disk of snapshot "{snapshot}" of VM "{vm}"')
    return record, pending


def _progress_update(zk: ZK, uuid: str, snapshot: str, ref: str, fn: Any) -> bs.Progress:
    holder: dict[str, bs.Progress] = {}

    def change(doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise Conflict(f'the receive of snapshot "{snapshot}" was abandoned meanwhile')
        current = doc.get("volumes", {}).get(ref)
        progress = bs.Progress.from_doc(current) if current else None
        progress = fn(progress)
        holder["p"] = progress
        return {**doc, "volumes": {**doc.get("volumes", {}), ref: progress.doc()}}

    zk.update(_pending_path(uuid, snapshot), change, create=True)
    return holder["p"]


def _register_volume(zk: ZK, storage: Storage, pool: str, volume: str, size: int) -> bool:
    """Create the image if missing and its PVC volume document; True if the image is new."""
    if pool not in storage.list_pools():
        raise NotFound(f'pool "{pool}" does not exist on this cluster (send with a destination pool)')
    created = storage.ensure_volume(pool, volume, size)
    if not created:
        info = storage.volume_info(pool, volume)
        if int(info.get("size", 0)) < size:
            storage.resize_volume(pool, volume, size)
    write_volume(zk, pool, volume, volume_info(storage, pool, volume, size))
    return created


class FullReceiver:
    """POST receive/block: a raw image stream written at increasing offsets.

    Chunks are regrouped into whole objects; an all-zero object is not written into a new image
    (it reads as zeroes anyway: thin provisioning is kept) and discarded in an existing one."""

    def __init__(self, zk: ZK, storage: Storage, vm: str, pool: str, volume: str, snapshot: str,
                 size: int) -> None:
        if size <= 0:
            raise InvalidInput(f"size: {size} is not a positive byte count")
        self.record, _ = _mirror_volume(zk, vm, pool, volume, snapshot)
        self.zk, self.storage, self.pool, self.volume, self.snapshot = zk, storage, pool, volume, snapshot
        self.size = size
        self.fresh = _register_volume(zk, storage, pool, volume, size)
        self._cm = storage.open_block(pool, volume, write=True)
        self._handle: BlockHandle = self._cm.__enter__()
        self._buf = bytearray()
        self.offset = 0
        self.written = 0
        self._hasher = hashlib.sha256()

    def _put(self, data: bytes) -> None:
        if self.offset + len(data) > self.size:
            raise InvalidInput(f"the stream is longer than the volume size {self.size}")
        if bs.is_zero(data):
            if not self.fresh:
                self._handle.discard(self.offset, len(data))
            bs.record_digest(self._hasher, bs.Record(self.offset, len(data), None))
        else:
            self._handle.write(self.offset, data)
            self.written += len(data)
            bs.record_digest(self._hasher, bs.Record(self.offset, len(data), data))
        self.offset += len(data)

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        while len(self._buf) >= bs.OBJECT_SIZE:
            block = bytes(self._buf[:bs.OBJECT_SIZE])
            del self._buf[:bs.OBJECT_SIZE]
            self._put(block)

    def finish(self) -> str:
        try:
            if self._buf:
                self._put(bytes(self._buf))
                self._buf.clear()
            self._handle.flush()
        finally:
            self.close()
        if self.offset == 0:        # an empty body only creates the image (our sender's first step)
            pending = self.zk.get(_pending_path(self.record.uuid, self.snapshot), None) or {}
            if not self.fresh and not (pending.get("volumes") or {}).get(f"{self.pool}/{self.volume}"):
                # a full send into an existing image, not a resume: what the batches do not
                # overwrite must read as zeroes, as in the source
                with self.storage.open_block(self.pool, self.volume, write=True) as handle:
                    handle.discard(0, handle.size)
            return f"Created RBD block device {self.pool}/{self.volume} ({self.size} bytes)."
        value = bs.chain(bs.CHAIN_SEED, self._hasher.hexdigest())
        _progress_update(self.zk, self.record.uuid, self.snapshot, f"{self.pool}/{self.volume}",
                         lambda p: bs.Progress(mode="stream", batches=1, chain=value, bytes=self.written))
        return (f"Successfully received RBD block device {self.pool}/{self.volume} ({self.offset} bytes, "
                f"{self.written} written).")

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


class BatchReceiver:
    """PUT receive/block: one multipart batch of extents (upstream's `object_<i>`, our
    `discard_<i>`), acknowledged in the progress document when all of it is written."""

    def __init__(self, zk: ZK, storage: Storage, vm: str, pool: str, volume: str, snapshot: str,
                 source_snapshot: str | None, size: int | None = None, batch: int | None = None) -> None:
        self.record, pending = _mirror_volume(zk, vm, pool, volume, snapshot)
        self.zk, self.storage, self.pool, self.volume, self.snapshot = zk, storage, pool, volume, snapshot
        self.parent = source_snapshot or None
        self.ref = f"{pool}/{volume}"
        if size:            # ours: a full send as batches of allocated extents (creates the image)
            _register_volume(zk, storage, pool, volume, size)
        elif volume not in storage.list_volumes(pool):
            raise NotFound(f"volume {self.ref} does not exist on this cluster; an incremental needs it")
        current = pending.get("volumes", {}).get(self.ref)
        progress = bs.Progress.from_doc(current) if current else None
        if batch is not None and batch != (progress.batches if progress else 0):
            raise Conflict(f"batch {batch} of {self.ref} is out of order: this cluster has acknowledged "
                           f"{progress.batches if progress else 0} batches")
        self.mode = "full" if size else "incremental"
        self._cm = storage.open_block(pool, volume, write=True)
        self._handle: BlockHandle = self._cm.__enter__()
        self._hasher = hashlib.sha256()
        self._indexes: list[int] = []
        self.written = 0
        self.parts = 0

    def part(self, name: str, body: bytes) -> None:
        index = bs.part_index(name)
        record = bs.decode_part(name, body)
        if record.offset + record.length > self._handle.size:
            raise InvalidInput(f"part {name}: extent {record.offset}+{record.length} passes the end of "
                               f"volume {self.ref} ({self._handle.size} bytes)")
        if record.is_discard:
            self._handle.discard(record.offset, record.length)
        else:
            assert record.data is not None
            self._handle.write(record.offset, record.data)
            self.written += record.length
        self._indexes.append(index)
        bs.record_digest(self._hasher, record)
        self.parts += 1

    def finish(self) -> str:
        try:
            self._handle.flush()
        finally:
            self.close()
        if not self.parts:
            raise InvalidInput("No data received: the body held no object_<i> parts")
        indexes = self._indexes
        if indexes != list(range(len(indexes))):
            raise InvalidInput(f"parts out of sequence: got indexes {indexes[:8]}...")
        digest = self._hasher.hexdigest()

        def ack(progress: bs.Progress | None) -> bs.Progress:
            if progress is None or (progress.mode, progress.parent) != (self.mode, self.parent):
                progress = bs.Progress(mode=self.mode, parent=self.parent)
            progress.acknowledge(digest, self.written)
            return progress

        done = _progress_update(self.zk, self.record.uuid, self.snapshot, self.ref, ack)
        return (f"Successfully received {self.parts} extents of RBD block device {self.ref} "
                f"(batch {done.batches}).")

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)


# -- step 3: the snapshot --------------------------------------------------------------------------------

def receive_snapshot(zk: ZK, storage: Storage, vm: str, pool: str, volume: str, snapshot: str) -> str:
    """PATCH receive/block: make the RBD snapshot; after the last volume, record the VM snapshot."""
    record, pending = _mirror_volume(zk, vm, pool, volume, snapshot)
    ref = f"{pool}/{volume}"
    try:
        storage.ensure_snapshot(pool, volume, snapshot)
    except StorageError as exc:
        raise PVCError(f"RBD snapshot {ref}@{snapshot}: {exc.message}") from None

    def complete(progress: bs.Progress | None) -> bs.Progress:
        progress = progress or bs.Progress(mode="unknown")
        progress.complete = True
        return progress

    _progress_update(zk, record.uuid, snapshot, ref, complete)
    pending = zk.get(_pending_path(record.uuid, snapshot), None) or pending
    snap = VMSnapshotRecord.model_validate(pending["record"])
    done = pending.get("volumes", {})
    if all(done.get(f"{v.pool}/{v.volume}", {}).get("complete") for v in snap.volumes):
        stats = {}
        volumes = []
        for v in snap.volumes:
            info = volume_info(storage, v.pool, v.volume)
            stats[f"{v.pool}/{v.volume}"] = info
            volumes.append(v.model_copy(update={"size": int(info.get("size", 0))}))
        final = snap.model_copy(update={"state": "ready", "volumes": volumes})
        try:
            snaps.write_snapshot(zk, record.uuid, final, None, stats)
        except Conflict:
            if not zk.exists(schema.vm_snapshot(record.uuid, snapshot)):
                raise
        zk.delete(_pending_path(record.uuid, snapshot))
        return f'Successfully received snapshot "{snapshot}" of VM "{vm}".'
    return f"Successfully created RBD snapshot {ref}@{snapshot}."


# -- our extension: status ---------------------------------------------------------------------------------

def receive_status(zk: ZK, vm: str, snapshot: str) -> dict[str, Any]:
    """What this cluster holds of `snapshot` of `vm`: pending or present, per-volume progress."""
    answer: dict[str, Any] = {"extensions": list(EXTENSIONS), "vm": vm, "snapshot": snapshot,
                              "state": "absent", "volumes": {}}
    uuid = zk.get(schema.vm_name(vm), None) if vm else None
    if not isinstance(uuid, str):
        return answer
    if zk.exists(schema.vm_snapshot(uuid, snapshot)):
        answer["state"] = "present"
    pending = zk.get(_pending_path(uuid, snapshot), None)
    if isinstance(pending, dict):
        answer["state"] = "pending"
        answer["volumes"] = pending.get("volumes", {})
    return answer
