"""Sending VM snapshots to another PVC cluster: send, mirror create, mirror promote (issue #15).

Speaks upstream PVC 1.0.3's receive protocol (pvc.cluster.receive documents it), so a 1.0.3
cluster can receive from us; against our own receivers (they answer `receive/status`) it adds:
discard records, resume after an interruption (from the last batch both sides agree on, checked
by the digest chain of pvc.core.blockstream) and a final per-volume checksum comparison.

To our receivers a full send is sparse: only the allocated extents (`diff_iterate` from nothing),
all-zero objects skipped, as PUT batches after an empty POST that creates the image. To an
upstream receiver a full send is exactly upstream's: one POST streaming the whole image
(application/octet-stream, zeroes included, which the receiver writes at increasing offsets),
read and sent in STREAM_CHUNK pieces; unallocated regions are sent as zeroes without being read.
An incremental sends the extents changed since the parent as PUT batches with source_snapshot,
to either.

The destination key lives only in the Destination given (opened from /transfers by the task);
it is never logged or put into a result or an error message.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvc.adapters.ceph import Storage, StorageError, storage_from_settings
from pvc.adapters.ceph.base import BlockHandle
from pvc.adapters.pvcremote import RemoteAPI, RemoteError
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.cluster.receive import no_sync_tag
from pvc.cluster.transfers import Destination
from pvc.cluster.vms import transitions as tr
from pvc.cluster.vms import writes as vm_writes
from pvc.core import blockstream as bs
from pvc.core import schema
from pvc.core import vmsnapshots as core_snaps
from pvc.core.config import Settings
from pvc.core.errors import PVCError
from pvc.core.records import VMRecord, VMSnapshotRecord
from pvc.core.zk import ZK

__all__ = ["Destination", "RemoteCluster", "SendFailed", "create_mirror", "newest_common_snapshot",
           "promote_mirror", "send_snapshot"]

MIN_VERSION = (0, 9, 101)
BATCH_PARTS_UPSTREAM = bs.BATCH_PARTS     # upstream receivers: its own batch size (32 x 4 MiB)
BATCH_PARTS_OURS = 8                      # ours: 32 MiB batches, finer resume points
STREAM_CHUNK = 8 << 20                    # a full stream to upstream is read and sent this much at a time
SHUTDOWN_TIMEOUT = 300.0
T = TypeVar("T")

Log = Callable[[str], Any]
Progress = Callable[[int, int, str], Any]
Hook = Callable[[str, int], Any]


class SendFailed(PVCError):
    """A send, mirror or promote that could not be done; the message says what and where."""


def storage_for(settings: Settings) -> Storage:
    """This worker's storage (patchable in tests)."""
    return storage_from_settings(settings)


def api_for(dest: Destination) -> RemoteAPI:
    """The HTTP client of a destination (patchable in tests); its certificate is checked against
    the destination's CA when one was given."""
    try:
        return RemoteAPI(dest.uri, dest.key, dest.verify_ssl, ca=dest.ca)
    except RemoteError as exc:
        raise SendFailed(f"destination {dest.uri}: {exc.message}") from None


def parse_version(text: str) -> tuple[int, ...]:
    """'1.0.3~git-abc' -> (1, 0, 3)."""
    core = re.split(r"[~+-]", str(text).strip(), maxsplit=1)[0]
    parts = []
    for piece in core.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


# -- the remote cluster -------------------------------------------------------------------------------

class RemoteCluster:
    """The destination cluster, through its API."""

    def __init__(self, dest: Destination, api: RemoteAPI | None = None) -> None:
        self.dest = dest
        self.api = api or api_for(dest)
        self.version = ""
        self.extensions: tuple[str, ...] | None = None    # None: not asked yet

    def __repr__(self) -> str:
        return f"RemoteCluster({self.dest.uri!r})"

    def close(self) -> None:
        self.api.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        try:
            return self.api.call(method, path, ok=ok, **kwargs)
        except RemoteError as exc:
            raise SendFailed(f"destination {self.dest.uri}: {exc.message}") from None

    def check(self) -> str:
        """Refuse anything but a PVC API of version >= 0.9.101 (as upstream); its version."""
        root = self._call("GET", "/")
        if "PVC API" not in json.dumps(root):
            raise SendFailed(f"destination {self.dest.uri}: not a PVC API "
                             f"(GET / answered {str(root)[:80]!r})")
        status = self._call("GET", "/status")
        version = str(status.get("pvc_version", "")) if isinstance(status, dict) else ""
        if parse_version(version) < MIN_VERSION:
            raise SendFailed(f"destination {self.dest.uri}: PVC version {version or 'unknown'} is older than "
                             f"0.9.101, which cannot receive snapshots")
        self.version = version
        return version

    def vm(self, name: str) -> dict[str, Any] | None:
        status, data = self._request("GET", f"/vm/{name}")
        if status == 404:
            return None
        if status != 200:
            raise SendFailed(f"destination {self.dest.uri}: GET /vm/{name}: {status} {_msg(data)}")
        item = data[0] if isinstance(data, list) and data else data
        return item if isinstance(item, dict) else None

    def volume(self, pool: str, volume: str) -> dict[str, Any] | None:
        status, data = self._request("GET", f"/storage/ceph/volume/{pool}/{volume}")
        if status == 404:
            return None
        if status != 200:
            raise SendFailed(f"destination {self.dest.uri}: volume {pool}/{volume}: {status} {_msg(data)}")
        item = data[0] if isinstance(data, list) and data else data
        return item if isinstance(item, dict) else None

    def pools(self) -> list[dict[str, Any]]:
        data = self._call("GET", "/storage/ceph/pool")
        return [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []

    def resize_volume(self, pool: str, volume: str, size: int) -> None:
        self._call("PUT", f"/storage/ceph/volume/{pool}/{volume}",
                   params={"new_size": f"{size}B", "force": "true"})

    def remove_snapshot(self, vm: str, snap: str) -> None:
        self._call("DELETE", f"/vm/{vm}/snapshot", ok=(200, 202), params={"snapshot_name": snap})

    def set_state(self, vm: str, state: str) -> str:
        data = self._call("POST", f"/vm/{vm}/state", params={"state": state, "wait": "true", "force": "true"})
        return _msg(data)

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            return self.api.request(method, path, **kwargs)
        except RemoteError as exc:
            raise SendFailed(f"destination {self.dest.uri}: {exc.message}") from None

    # -- the receive protocol --

    def receive_status(self, vm: str, snapshot: str) -> dict[str, Any] | None:
        """Our extension; None from an upstream receiver (which has no such route)."""
        status, data = self._request("GET", f"/vm/{vm}/snapshot/receive/status",
                                     params={"snapshot": snapshot})
        if status == 200 and isinstance(data, dict) and "extensions" in data:
            self.extensions = tuple(data.get("extensions") or ())
            return data
        self.extensions = ()
        return None

    def send_config(self, vm: str, snapshot: str, parent: str | None, detail: dict[str, Any]) -> None:
        self._call("POST", f"/vm/{vm}/snapshot/receive/config", params={"snapshot": snapshot,
                                                                        "source_snapshot": parent},
                   json=detail)

    def stream_image(self, vm: str, pool: str, volume: str, snapshot: str, size: int,
                     chunks: Iterable[bytes]) -> None:
        """A full send as upstream's sender makes it: the whole image as one streamed
        application/octet-stream POST (chunked, as `requests` sends a generator), which the
        receiver writes at increasing offsets."""
        self._call("POST", f"/vm/{vm}/snapshot/receive/block",
                   params={"pool": pool, "volume": volume, "snapshot": snapshot, "size": size},
                   content=chunks, headers={"Content-Type": "application/octet-stream"})

    def create_image(self, vm: str, pool: str, volume: str, snapshot: str, size: int) -> None:
        """Ours only: a full send's POST with no data: the receiver creates the image, then PUT
        batches of the allocated extents fill it."""
        self._call("POST", f"/vm/{vm}/snapshot/receive/block",
                   params={"pool": pool, "volume": volume, "snapshot": snapshot, "size": size},
                   content=b"", headers={"Content-Type": "application/octet-stream"})

    def send_batch(self, vm: str, pool: str, volume: str, snapshot: str, parent: str | None,
                   records: list[bs.Record], size: int | None = None, batch: int | None = None) -> None:
        boundary = bs.new_boundary()
        pieces = list(bs.encode_batch(boundary, records))
        length = sum(len(p) for p in pieces)
        self._call("PUT", f"/vm/{vm}/snapshot/receive/block",
                   params={"pool": pool, "volume": volume, "snapshot": snapshot, "source_snapshot": parent,
                           "size": size, "batch": batch},
                   content=iter(pieces), headers={"Content-Type": bs.content_type(boundary),
                                                  "Content-Length": str(length)})

    def finish_volume(self, vm: str, pool: str, volume: str, snapshot: str) -> None:
        self._call("PATCH", f"/vm/{vm}/snapshot/receive/block",
                   params={"pool": pool, "volume": volume, "snapshot": snapshot})


def _msg(data: Any) -> str:
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return str(data)[:200]


# -- what is sent -----------------------------------------------------------------------------------

def _rewrite_pool(xml: str, volumes: list[tuple[str, str]], pool: str | None) -> str:
    """The XML with each of the VM's rbd sources `old_pool/volume` renamed into `pool`."""
    if not pool:
        return xml
    for old, volume in volumes:
        for quote in ("'", '"'):
            xml = xml.replace(f"name={quote}{old}/{volume}{quote}", f"name={quote}{pool}/{volume}{quote}")
    return xml


def vm_detail(zk: ZK, record: VMRecord, snapshots: list[VMSnapshotRecord],
              pool: str | None, stays: Callable[[str], bool]) -> dict[str, Any]:
    """The VM item the receiver gets: our GET /vm item, its XML and each snapshot's diff computed
    here (with the destination pool, if any, in both), without the tags that `stays` keeps here
    (autobackup/automirror ones, and those this cluster's backup_tags and mirror_tags select by:
    carried over, they would make the destination mirror or back the VM up again)."""
    entry = vms_mod.get_entry(zk, record.uuid)
    detail = json.loads(vms_mod.item_json(zk, entry))
    volumes = [snaps.split_ref(ref) for ref in record.rbd_volumes]
    for snap in snapshots:
        volumes += [(v.pool, v.volume) for v in snap.volumes]
    current = _rewrite_pool(record.xml, volumes, pool)
    detail["xml"] = core_snaps.wire_xml(current)
    detail["tags"] = [t for t in detail.get("tags") or []
                      if not stays(str(t.get("name", "")))]
    detail["snapshots"] = [
        core_snaps.snapshot_item(s.name, s.created,
                                 [f"{pool or v.pool}/{v.volume}@{v.snap}" for v in s.volumes],
                                 core_snaps.xml_diff_lines(current, _rewrite_pool(s.xml, volumes, pool)),
                                 time.time())
        for s in snapshots]
    return detail


def newest_common_snapshot(local: list[VMSnapshotRecord], remote: dict[str, Any] | None,
                           exclude: str | None = None) -> str | None:
    """The newest snapshot both sides have (upstream picks an arbitrary one: 1.4.9)."""
    if not remote:
        return None
    there = {s.get("name") for s in remote.get("snapshots") or [] if isinstance(s, dict)}
    for snap in sorted(local, key=lambda s: s.created, reverse=True):
        if snap.name != exclude and snap.name in there and snap.state == "ready":
            return snap.name
    return None


@dataclass
class VolumeResult:
    pool: str
    volume: str
    mode: str
    size: int
    extents: int = 0
    data_bytes: int = 0
    batches: int = 0
    resumed_from: int = 0
    chain: str = bs.CHAIN_SEED
    verified: bool | None = None

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Batch:
    records: list[bs.Record] = field(default_factory=list)
    digest: str = ""
    data: int = 0


def _read_batches(handle: BlockHandle, extents: list[bs.Extent], parts: int, full: bool,
                  discards: bool) -> Iterator[_Batch]:
    """The non-empty batches to send, read from the snapshot (deterministic for a snapshot, which
    is what resume relies on): in a full send all-zero objects are skipped; in an incremental an
    extent that now reads as zeroes is a discard record (ours) or zero data (upstream's receiver
    cannot discard)."""
    for group in bs.batches(extents, parts=parts):
        batch = _Batch()
        for extent in group:
            if not extent.exists:     # discarded since the parent: upstream gets the zeroes as data
                zeroes = None if discards else bytes(extent.length)
                batch.records.append(bs.Record(extent.offset, extent.length, zeroes))
                batch.data += 0 if zeroes is None else extent.length
                continue
            data = handle.read(extent.offset, extent.length)
            if bs.is_zero(data):
                if full:
                    continue
                if discards:
                    batch.records.append(bs.Record(extent.offset, extent.length, None))
                    continue
            batch.records.append(bs.Record(extent.offset, extent.length, data))
            batch.data += len(data)
        if batch.records:
            batch.digest = bs.batch_digest(batch.records)
            yield batch


def _image_chunks(handle: BlockHandle, extents: list[bs.Extent], chunk: int = STREAM_CHUNK,
                  counted: list[int] | None = None) -> Iterator[bytes]:
    """The whole image in order, `chunk` bytes at a time (upstream's full stream); a piece no
    allocated extent touches is zeroes without a read. `counted[0]` adds up the bytes read."""
    spans = sorted((e.offset, e.offset + e.length) for e in extents if e.exists)
    zero = bytes(min(chunk, handle.size))
    at = 0
    for offset in range(0, handle.size, chunk):
        end = min(offset + chunk, handle.size)
        while at < len(spans) and spans[at][1] <= offset:
            at += 1
        if at < len(spans) and spans[at][0] < end:
            if counted is not None:
                counted[0] += end - offset
            yield handle.read(offset, end - offset)
        else:
            yield zero if end - offset == len(zero) else bytes(end - offset)


def _prefetch(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Read the next batches (or chunks) in a thread while the current one is on the wire."""
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        box.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(done)
        except BaseException as exc:  # handed to the consumer
            box.put(exc)

    thread = threading.Thread(target=run, name="send-read", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not box.empty():
            box.get_nowait()
        thread.join(timeout=5)


# -- send ----------------------------------------------------------------------------------------------

@contextmanager
def send_lock(zk: ZK, uuid: str, name: str, holder: str) -> Iterator[None]:
    """One send, mirror or promote of a VM at a time (across the cluster)."""
    lock = zk.lock(schema.transfer("lk" + uuid.replace("-", "")), holder)
    if not lock.acquire(blocking=False):
        raise SendFailed(f'Another send, mirror or promote of VM "{name}" is running; try again when it '
                         f"ends.")
    try:
        yield
    finally:
        lock.release()


def send_snapshot(zk: ZK, settings: Settings, uuid: str, snapshot: str, dest: Destination,
                  parent: str | None, log: Log, progress: Progress | None = None,
                  remote: RemoteCluster | None = None, storage: Storage | None = None,
                  after_batch: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    """Send `snapshot` of VM `uuid` to `dest` (incremental from `parent` if given); the result.

    `after_batch(volume_ref, n)` is called after each acknowledged batch (progress, cancel)."""
    record = _vm(zk, uuid)
    try:
        snap = snaps.get_snapshot(zk, uuid, snapshot)
        local = snaps.list_snapshots(zk, uuid)
        if parent:
            snaps.get_snapshot(zk, uuid, parent)
    except PVCError as exc:
        raise SendFailed(exc.message) from None
    own = remote is None
    remote = remote or RemoteCluster(dest)
    storage = storage or storage_for(settings)
    started = time.monotonic()
    try:
        remote.check()
        there = remote.vm(record.name)
        status = remote.receive_status(record.name, snapshot)
        ours = bool(remote.extensions)
        resuming = bool(status and status.get("state") == "pending")
        if there is not None:
            if there.get("state") != "mirror":
                raise SendFailed(f'VM "{record.name}" exists on the destination and is not a mirror (state '
                                 f"{there.get('state')}); refusing to send over it.")
            names = {s.get("name"): s for s in there.get("snapshots") or [] if isinstance(s, dict)}
            if snapshot in names:
                raise SendFailed(f'Snapshot "{snapshot}" of VM "{record.name}" is already on the '
                                 f"destination.")
            stamps = [float(s.get("timestamp") or 0) for s in names.values()]
            if stamps and max(stamps) > snap.created:
                raise SendFailed(f'Snapshot "{snapshot}" of VM "{record.name}" is older than the '
                                 f"destination's newest snapshot of it.")
            if parent and parent not in names:
                raise SendFailed(f'The incremental parent "{parent}" of VM "{record.name}" is not on the '
                                 f"destination.")
        elif parent:
            raise SendFailed(f'VM "{record.name}" is not on the destination, so neither is incremental '
                             f'parent "{parent}"; send a full snapshot first.')
        detail = vm_detail(zk, record, local, dest.pool, no_sync_tag(settings))
        log(f'Sending snapshot "{snapshot}" of VM "{record.name}" to {dest.uri} '
            f"({'incremental from ' + parent if parent else 'full'}; destination PVC {remote.version}"
            f"{', resuming' if resuming else ''})")
        remote.send_config(record.name, snapshot, parent, detail)
        results = []
        total = len(snap.volumes)
        for index, vol in enumerate(snap.volumes, start=1):
            if progress:
                progress(index, total + 1, f"Sending volume {vol.pool}/{vol.volume} ({index} of {total})")
            progress_doc = (status or {}).get("volumes", {}).get(f"{dest.pool or vol.pool}/{vol.volume}")
            results.append(_send_volume(storage, remote, record, snap.name, vol.pool, vol.volume, dest.pool,
                                        parent, there is not None or resuming, ours, progress_doc, log,
                                        after_batch))
        if ours:
            _verify(remote, record.name, snapshot, dest.pool, results)
        for result, vol in zip(results, snap.volumes, strict=True):
            if not (status or {}).get("volumes", {}).get(f"{result.pool}/{vol.volume}", {}).get("complete"):
                remote.finish_volume(record.name, result.pool, vol.volume, snapshot)
    except StorageError as exc:
        raise SendFailed(f'VM "{record.name}": {exc.message}') from None
    finally:
        if own:
            remote.close()
    seconds = time.monotonic() - started
    sent = remote.api.bytes_sent
    data = sum(r.data_bytes for r in results)
    rate = data / seconds / (1 << 20) if seconds > 0 else 0.0
    log(f'Sent snapshot "{snapshot}" of VM "{record.name}": {data} bytes of data, {sent} bytes on the wire, '
        f"{seconds:.1f} s ({rate:.1f} MiB/s)")
    return {"vm": record.name, "snapshot": snapshot, "parent": parent, "destination": dest.uri,
            "bytes_sent": sent, "data_bytes": data, "seconds": round(seconds, 3),
            "volumes": [r.view() for r in results]}


def _send_volume(storage: Storage, remote: RemoteCluster, record: VMRecord, snapshot: str, pool: str,
                 volume: str, dest_pool: str | None, parent: str | None, exists_there: bool, ours: bool,
                 progress_doc: Any, log: Log, after_batch: Callable[[str, int], Any] | None) -> VolumeResult:
    target = dest_pool or pool
    ref = f"{target}/{volume}"
    remote_progress = bs.Progress.from_doc(progress_doc) if progress_doc else None
    with storage.open_block(pool, volume, snapshot=snapshot) as handle:
        result = VolumeResult(pool=target, volume=volume, mode="incremental" if parent else "full",
                              size=handle.size)
        if remote_progress is not None and remote_progress.complete:
            log(f"volume {ref}: already complete on the destination")
            result.chain = remote_progress.chain
            result.verified = None
            return result
        there = remote.volume(target, volume)
        if parent:
            if there is None:
                raise SendFailed(f"volume {ref} is not on the destination; an incremental needs it")
            size = _size_of(there)
            if size is not None and size != handle.size:
                log(f"volume {ref}: resizing on the destination from {size} to {handle.size} bytes")
                remote.resize_volume(target, volume, handle.size)
        elif there is not None and not exists_there:
            raise SendFailed(f"volume {ref} already exists on the destination (and is not a mirror's)")
        full = parent is None
        extents = [bs.Extent(o, n, e) for o, n, e in handle.extents(parent)]
        result.extents = len(extents)
        if full and not ours:       # an upstream receiver: the whole image, as upstream sends it
            _stream_full(remote, record.name, target, volume, snapshot, handle, extents, result, after_batch)
            return result
        if full:        # ours: the receiver creates the image (an empty POST); the batches fill it
            remote.create_image(record.name, target, volume, snapshot, handle.size)
        parts = BATCH_PARTS_OURS if ours else BATCH_PARTS_UPSTREAM
        skip = remote_progress.batches if (ours and remote_progress is not None) else 0
        chain, sent = _send_batches(remote, record.name, target, volume, snapshot, parent, handle, extents,
                                    parts, ours, skip, remote_progress, log, after_batch, result)
        if sent is None:            # the destination's batches are not ours: all again
            result.resumed_from = 0
            chain, sent = _send_batches(remote, record.name, target, volume, snapshot, parent, handle,
                                        extents, parts, ours, 0, None, log, after_batch, result)
        assert sent is not None
        result.batches = result.resumed_from + sent
        result.chain = chain
        return result


def _stream_full(remote: RemoteCluster, vm: str, pool: str, volume: str, snapshot: str, handle: BlockHandle,
                 extents: list[bs.Extent], result: VolumeResult, after_batch: Hook | None) -> None:
    """One streamed POST of the whole image (read ahead in a thread, STREAM_CHUNK at a time, so
    at most a few chunks are in memory); `after_batch` after each chunk (a cancel stops it)."""
    ref = f"{pool}/{volume}"
    read = [0]
    source = _prefetch(_image_chunks(handle, extents, counted=read))

    def chunks() -> Iterator[bytes]:
        for number, piece in enumerate(source, start=1):
            yield piece
            if after_batch:
                after_batch(ref, number)

    try:
        remote.stream_image(vm, pool, volume, snapshot, handle.size, chunks())
    finally:
        source.close()  # type: ignore[attr-defined]
    result.data_bytes = read[0]
    result.batches = 1


def _send_batches(remote: RemoteCluster, vm: str, pool: str, volume: str, snapshot: str, parent: str | None,
                  handle: BlockHandle, extents: list[bs.Extent], parts: int, ours: bool, skip: int,
                  remote_progress: bs.Progress | None, log: Log, after_batch: Hook | None,
                  result: VolumeResult) -> tuple[str, int | None]:
    """Send the batches after the first `skip` (whose chain must equal the receiver's); the chain
    and the number sent, or (chain, None) when the skipped prefix does not match."""
    ref = f"{pool}/{volume}"
    full = parent is None
    chain = bs.CHAIN_SEED
    sent = 0
    source = _prefetch(_read_batches(handle, extents, parts, full, ours))
    try:
        number = -1
        for number, batch in enumerate(source):
            if number < skip:
                chain = bs.chain(chain, batch.digest)
                if number + 1 == skip:
                    agreed = bs.resume_point(remote_progress, result.mode, parent, lambda _n, c=chain: c)
                    if agreed != skip:
                        log(f"volume {ref}: the destination's {skip} batches do not match ours; sending "
                            f"it all again")
                        return chain, None
                    log(f"volume {ref}: resuming after batch {skip} (acknowledged by the destination)")
                    result.resumed_from = skip
                continue
            remote.send_batch(vm, pool, volume, snapshot, parent, batch.records,
                              size=handle.size if (full and ours) else None, batch=number if ours else None)
            chain = bs.chain(chain, batch.digest)
            sent += 1
            result.data_bytes += batch.data
            if after_batch:
                after_batch(ref, number + 1)
        if skip and number + 1 < skip:
            log(f"volume {ref}: the destination claims {skip} batches, there are {number + 1}; sending "
                f"it all again")
            return chain, None
    finally:
        source.close()  # type: ignore[attr-defined]
    return chain, sent


def _size_of(item: dict[str, Any]) -> int | None:
    stats = item.get("stats") or {}
    size = stats.get("size")
    if isinstance(size, int):
        return size
    try:
        from pvc.core.units import parse_size
        return int(parse_size(str(size)))
    except Exception:
        return None


def _verify(remote: RemoteCluster, vm: str, snapshot: str, dest_pool: str | None,
            results: list[VolumeResult]) -> None:
    """Compare each volume's digest chain with the receiver's (our extension)."""
    status = remote.receive_status(vm, snapshot) or {}
    volumes = status.get("volumes") or {}
    for result in results:
        there = volumes.get(f"{result.pool}/{result.volume}")
        if result.batches == 0:           # nothing needed sending (an unchanged or empty volume)
            result.verified = True
            continue
        if there is None:
            raise SendFailed(f"volume {result.pool}/{result.volume}: the destination reports nothing "
                             f"received")
        if there.get("complete"):
            result.verified = None
            continue
        if there.get("chain") != result.chain:
            held = str(there.get("chain"))[:16]
            raise SendFailed(f"volume {result.pool}/{result.volume}: checksum mismatch (sent "
                             f"{result.chain[:16]}..., the destination holds {held}...); the snapshot was "
                             f"not recorded there")
        result.verified = True


def _vm(zk: ZK, uuid: str) -> VMRecord:
    data = zk.get(schema.vm(uuid), None)
    if not isinstance(data, dict):
        raise SendFailed(f"VM {uuid} is not defined")
    return VMRecord.model_validate(data)


# -- mirror create and promote ---------------------------------------------------------------------------

def create_mirror(zk: ZK, settings: Settings, this_node: str, uuid: str, dest: Destination, log: Log,
                  progress: Progress | None = None, **send_kwargs: Any) -> dict[str, Any]:
    """Take an `mr<date>` snapshot and send it, incremental from the newest common snapshot."""
    from pvc.worker.snapshots import create_snapshot

    record = _vm(zk, uuid)
    given = send_kwargs.pop("remote", None)
    remote = given or RemoteCluster(dest)
    try:
        remote.check()
        there = remote.vm(record.name)
        if there is not None and there.get("state") != "mirror":
            raise SendFailed(f'VM "{record.name}" exists on the destination and is not a mirror (state '
                             f"{there.get('state')}); refusing to mirror over it.")
        name = _mirror_name(zk, uuid)
        if progress:
            progress(0, 3, f'Taking snapshot "{name}" of VM "{record.name}"')
        try:
            create_snapshot(zk, settings, this_node, uuid, name, "mirror", log)
        except PVCError as exc:
            raise SendFailed(f'VM "{record.name}": snapshot "{name}" failed: {exc.message}') from None
        local = snaps.list_snapshots(zk, uuid)
        parent = newest_common_snapshot(local, there, exclude=name)
        result = send_snapshot(zk, settings, uuid, name, dest, parent, log, progress, remote=remote,
                               **send_kwargs)
    finally:
        if given is None:
            remote.close()
    return result


def _mirror_name(zk: ZK, uuid: str) -> str:
    name = core_snaps.MIRROR_PREFIX + core_snaps.datestring()
    while zk.exists(schema.vm_snapshot(uuid, name)):     # two in one second
        time.sleep(1.0)
        name = core_snaps.MIRROR_PREFIX + core_snaps.datestring()
    return name


def _wait_stopped(zk: ZK, uuid: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        record = _vm(zk, uuid)
        stopped = record.state in ("stop", "disable", "fail")
        if stopped and not vms_mod.is_running(vms_mod.get_status(zk, uuid)):
            return True
        time.sleep(0.5)
    return False


def dry_run(zk: ZK, uuid: str, dest: Destination, remote: RemoteCluster, storage: Storage) -> dict[str, Any]:
    """What a promote would need: a PVC >= 0.9.101, no non-mirror VM of that name, the pools and
    the space; nothing is changed here or there."""
    record = _vm(zk, uuid)
    version = remote.check()
    there = remote.vm(record.name)
    problems: list[str] = []
    if there is not None and there.get("state") != "mirror":
        problems.append(f'VM "{record.name}" exists on the destination and is not a mirror')
    pools = {p.get("name"): p for p in remote.pools()}
    need: dict[str, int] = {}
    for ref in record.rbd_volumes:
        pool, volume = snaps.split_ref(ref)
        target = dest.pool or pool
        if target not in pools:
            problems.append(f'pool "{target}" does not exist on the destination')
            continue
        size = int(storage.volume_info(pool, volume).get("size", 0))
        if there is None or remote.volume(target, volume) is None:
            need[target] = need.get(target, 0) + size
    for target, size in need.items():
        free = (pools[target].get("stats") or {}).get("free_bytes")
        if isinstance(free, int | float) and free < size:
            problems.append(f'pool "{target}" on the destination has {int(free)} bytes free, {size} needed')
    local = snaps.list_snapshots(zk, uuid)
    parent = newest_common_snapshot(local, there)
    return {"vm": record.name, "destination": dest.uri, "destination_version": version,
            "mode": "incremental from " + parent if parent else "full", "problems": problems,
            "ok": not problems, "dry_run": True}


def promote_mirror(zk: ZK, settings: Settings, this_node: str, uuid: str, dest: Destination,
                   remove_on_source: bool, log: Log, progress: Progress | None = None,
                   is_dry_run: bool = False, shutdown_timeout: float = SHUTDOWN_TIMEOUT,
                   **send_kwargs: Any) -> dict[str, Any]:
    """Shut the VM down, take and send a final `mr` snapshot, start it on the destination, then
    remove it here or make it the mirror. Anything failing before the remote start restarts the
    VM here (if it was running)."""
    record = _vm(zk, uuid)
    given = send_kwargs.pop("remote", None)
    remote = given or RemoteCluster(dest)
    storage = send_kwargs.pop("storage", None) or storage_for(settings)
    try:
        report = dry_run(zk, uuid, dest, remote, storage)
        if is_dry_run:
            return report
        if not report["ok"]:
            problems = "; ".join(report["problems"])
            raise SendFailed(f'Cannot promote VM "{record.name}" to {dest.uri}: {problems}')
        previous = record.state
        was_running = previous in ("start", "restart", "migrate", "migrate-live")
        remote_started = False
        try:
            if was_running:
                if progress:
                    progress(0, 4, f'Shutting down VM "{record.name}"')
                vm_writes.set_state(zk, uuid, "shutdown")
                if not _wait_stopped(zk, uuid, shutdown_timeout):
                    raise SendFailed(f'VM "{record.name}" did not shut down within {int(shutdown_timeout)} s')
            result = create_mirror(zk, settings, this_node, uuid, dest, log, progress, remote=remote,
                                   storage=storage, **send_kwargs)
            state = previous if previous in ("start", "stop", "disable") else "start"
            if was_running:
                state = "start"
            if progress:
                progress(3, 4, f'Setting VM "{record.name}" to {state} on the destination')
            remote.set_state(record.name, state)
            remote_started = True
        except BaseException as exc:
            if was_running and not remote_started:
                why = getattr(exc, "message", exc)
                log(f'promote failed ({why}); starting VM "{record.name}" here again')
                try:
                    vm_writes.set_state(zk, uuid, "start", force=True)
                except PVCError as again:
                    log(f'could not restart VM "{record.name}": {again.message}')
            raise
        if remove_on_source:
            from pvc.cluster import vm_storage
            vm_storage.remove_with_disks(zk, storage, uuid)
            result["source"] = "removed"
        else:
            vm_writes.apply(zk, uuid, lambda r: tr.set_fields(r, {"state": "mirror"}))
            result["source"] = "mirror"
        result["destination_state"] = state
        return result
    finally:
        if given is None:
            remote.close()
