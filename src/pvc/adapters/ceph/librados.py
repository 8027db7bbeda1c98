"""`CephStorage`: Storage on a real Ceph cluster, over Debian's rados/rbd bindings.

`ceph`/`rbd`/`qemu-img` run (arguments as lists, keyring from a file, never a secret on a command
line) only where the bindings lack an operation.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, BinaryIO

from pvc.adapters import images
from pvc.adapters.ceph.base import (
    IMAGE_FORMATS,
    OSD_FLAGS,
    BlockHandle,
    Locker,
    SnapshotTaker,
    Storage,
    StorageError,
    StorageExists,
    StorageInUse,
    StorageNotFound,
    failure_of,
    image_guarded,
)
from pvc.adapters.ceph.connection import CephConnection

# Bit -> name, in bit order, as `rbd info` prints them.
_FEATURES = ((1, "layering"), (2, "striping"), (4, "exclusive-lock"), (8, "object-map"), (16, "fast-diff"),
             (32, "deep-flatten"), (64, "journaling"), (128, "data-pool"), (256, "operations"),
             (512, "migrating"), (1024, "non-primary"))
_OP_FEATURES = ((1, "clone-parent"), (2, "clone-child"), (4, "group"), (8, "snap-trash"))
_IMAGE_FLAGS = ((1, "object map invalid"), (2, "fast diff invalid"))


def _names(bits: int, table: tuple[tuple[int, str], ...]) -> list[str]:
    return [name for bit, name in table if bits & bit]


def _ctime(stamp: datetime.datetime | None) -> str:
    """librbd hands out naive UTC datetimes; `rbd info` prints ctime() in local time."""
    if stamp is None:
        return ""
    return time.ctime(calendar.timegm(stamp.timetuple()))


def _refs(volumes: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{pool}/{volume}" for pool, volume in volumes)


def _qemu_rbd_escape(value: str) -> str:
    """qemu's legacy rbd: filename syntax separates options with ':'; escape them in values."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class CephStorage(CephConnection, Storage):
    """Storage on a real Ceph cluster through one shared, lazily connected librados client
    (see CephConnection for threads, reconnection and timeouts)."""

    def __repr__(self) -> str:
        return f"CephStorage({self.conffile!r}, client.{self.client_user})"

    # ---- cluster -----------------------------------------------------------------------------

    def fsid(self) -> str:
        with self._call("ceph fsid") as cluster:
            return str(cluster.get_fsid())

    def mon_command(self, prefix: str, **args: Any) -> Any:
        out = self._mon(prefix, args, "json")
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as exc:
            raise StorageError(f"ceph {prefix}: unreadable answer ({exc})") from None

    def mon_command_text(self, prefix: str, **args: Any) -> str:
        return self._mon(prefix, args, None)

    def mon_addresses(self) -> list[tuple[str, int]]:
        result = []
        for mon in self.mon_command("mon dump").get("mons", []):
            vec = mon.get("public_addrs", {}).get("addrvec", [])
            addr = next((a["addr"] for a in vec if a.get("type") == "v1"), None)
            addr = addr or mon.get("addr", "").split("/")[0]
            host, _, port = addr.rpartition(":")
            if host:
                result.append((host.strip("[]"), int(port)))
        return result

    # ---- OSDs --------------------------------------------------------------------------------

    def set_flag(self, flag: str, enabled: bool) -> None:
        if flag not in OSD_FLAGS:
            raise StorageError(f"osd flag {flag}: unknown (one of {', '.join(OSD_FLAGS)})")
        self._mon("osd set" if enabled else "osd unset", {"key": flag}, "json", f"osd flag {flag}")

    def set_osd_in(self, osd_id: int, is_in: bool) -> None:
        # `osd in/out` of an unknown id answers 0 ("osd.7 does not exist"), so look first
        if osd_id not in (self.mon_command("osd ls") or []):
            raise StorageNotFound(f"osd.{osd_id}: not found")
        self._mon("osd in" if is_in else "osd out", {"ids": [str(osd_id)]}, "json", f"osd.{osd_id}")

    def blocklist(self, address: str, seconds: int = 3600) -> None:
        self._mon("osd blocklist", {"blocklistop": "add", "addr": address, "expire": float(seconds)}, "json",
                  f"blocklist {address}")

    def unblocklist(self, address: str) -> None:
        self._mon("osd blocklist", {"blocklistop": "rm", "addr": address}, "json", f"blocklist {address}")

    def mark_osds_down(self, osd_ids: list[int]) -> None:
        if osd_ids:
            self._mon("osd down", {"ids": [str(i) for i in osd_ids]}, "json",
                      f"osd down {' '.join(map(str, osd_ids))}")

    # ---- pools -------------------------------------------------------------------------------

    def list_pools(self) -> list[str]:
        with self._call("list pools") as cluster:
            return [str(p) for p in cluster.list_pools()]

    def refresh_maps(self) -> None:
        self._latest_osdmap("refresh the OSD map")

    def _latest_osdmap(self, what: str) -> None:
        """After a pool change: our client's osdmap must show it before the next call looks."""
        with self._call(what) as cluster:
            cluster.wait_for_latest_osdmap()

    def _pool_exists(self, name: str) -> bool:
        with self._call(f"pool {name}") as cluster:
            return bool(cluster.pool_exists(name))

    def create_pool(self, name: str, pgs: int, size: int, min_size: int,
                    rule: str = "replicated_rule") -> None:
        what = f"pool {name}"
        if pgs < 1 or size < 1 or not 1 <= min_size <= size:
            raise StorageError(f"{what}: invalid pgs/size/min_size {pgs}/{size}/{min_size}")
        if self._pool_exists(name):
            raise StorageExists(f"{what}: already exists")
        if rule not in (self.mon_command("osd crush rule ls") or []):
            raise StorageNotFound(f"{what}: crush rule {rule}: not found")
        self._mon("osd pool create", {"pool": name, "pg_num": pgs, "pgp_num": pgs, "pool_type": "replicated",
                                      "rule": rule}, "json", what)
        try:
            self._latest_osdmap(what)
            for var, val in (("size", size), ("min_size", min_size)):
                self._mon("osd pool set", {"pool": name, "var": var, "val": str(val)}, "json", what)
            self._mon("osd pool application enable", {"pool": name, "app": "rbd"}, "json", what)
            import rbd

            if hasattr(rbd.RBD, "pool_init"):   # `rbd pool init` (since Luminous)
                with self._ioctx(name) as ioctx, self._call(what):
                    rbd.RBD().pool_init(ioctx, True)
        except StorageError:
            # changes nothing: a half-made pool would block a retry with "already exists"
            try:
                self.remove_pool(name)
            except StorageError:
                pass
            raise

    def ensure_tier_rule(self, tier: str) -> str:
        if tier == "default":
            return "replicated_rule"
        name = f"{tier}_tier"
        if name in (self.mon_command("osd crush rule ls") or []):
            return name
        if tier not in (self.mon_command("osd crush class ls") or []):
            raise StorageNotFound(f"crush rule {name}: device class {tier}: not found")
        self._mon("osd crush rule create-replicated",
                  {"name": name, "root": "default", "type": "host", "class": tier}, "json",
                  f"crush rule {name}")
        return name

    def set_pool_pgs(self, name: str, pgs: int) -> None:
        what = f"pool {name}"
        if pgs < 1:
            raise StorageError(f"{what}: invalid pg count {pgs}")
        if not self._pool_exists(name):
            raise StorageNotFound(f"{what}: not found")
        for var in ("pg_num", "pgp_num"):
            self._mon("osd pool set", {"pool": name, "var": var, "val": str(pgs)}, "json", what)

    def remove_pool(self, name: str) -> None:
        what = f"pool {name}"
        # `osd pool rm` of a missing pool answers 0 ("does not exist"), so look first
        if not self._pool_exists(name):
            raise StorageNotFound(f"{what}: not found")
        self._mon("osd pool rm", {"pool": name, "pool2": name, "yes_i_really_really_mean_it": True}, "json",
                  what)
        self._latest_osdmap(what)

    # ---- volumes -----------------------------------------------------------------------------

    def list_volumes(self, pool: str) -> list[str]:
        import rbd

        with self._ioctx(pool) as ioctx, self._call(f"pool {pool}"):
            return [str(n) for n in rbd.RBD().list(ioctx)]

    def volume_info(self, pool: str, name: str) -> dict[str, Any]:
        what = f"volume {pool}/{name}"
        with self._image(pool, name, read_only=True) as image, self._call(what):
            stat = image.stat()
            return {
                "name": name, "id": str(image.id()), "size": int(stat["size"]),
                "objects": int(stat["num_objs"]),
                "order": int(stat["order"]), "object_size": int(stat["obj_size"]),
                "snapshot_count": sum(1 for s in image.list_snaps() if is_user_snapshot(s)),
                "block_name_prefix": str(stat["block_name_prefix"]), "format": 1 if image.old_format() else 2,
                "features": _names(image.features(), _FEATURES),
                "op_features": _names(image.op_features(), _OP_FEATURES),
                "flags": _names(image.flags(), _IMAGE_FLAGS),
                "create_timestamp": _ctime(image.create_timestamp()),
                "access_timestamp": _ctime(image.access_timestamp()),
                "modify_timestamp": _ctime(image.modify_timestamp()),
            }

    @staticmethod
    def _check_size(what: str, size: int) -> None:
        if size < 1:
            raise StorageError(f"{what}: invalid size {size} (must be at least 1 byte)")

    def create_volume(self, pool: str, name: str, size: int) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        self._check_size(what, size)
        with self._ioctx(pool) as ioctx, self._call(what):
            rbd.RBD().create(ioctx, name, size, old_format=False)

    def resize_volume(self, pool: str, name: str, size: int) -> None:
        what = f"volume {pool}/{name}"
        self._check_size(what, size)
        with self._maintain(pool, name, "resize", what) as image:
            image.resize(size)

    def rename_volume(self, pool: str, name: str, new_name: str) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        with self._ioctx(pool) as ioctx, self._call(what, exists=f"volume {pool}/{new_name}: already exists"):
            rbd.RBD().rename(ioctx, name, new_name)

    def copy_volume(self, pool: str, name: str, new_name: str) -> None:
        what = f"volume {pool}/{name}"
        with self._image(pool, name, read_only=True, with_ioctx=True) as (ioctx, image), \
                self._call(what, exists=f"volume {pool}/{new_name}: already exists"):
            image.copy(ioctx, new_name)

    def remove_volume(self, pool: str, name: str) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        # refuse before purging anything: a watcher (a running VM) makes the final remove fail.
        # One read-only open answers both questions (each open is a few round trips).
        with self._image(pool, name, read_only=True) as image, self._call(what):
            watchers = [str(w["addr"]) for w in image.watchers_list()]
            has_snaps = any(True for _ in image.list_snaps())
        if watchers:
            raise StorageInUse(f"{what}: in use (watched by {', '.join(watchers)})")
        if has_snaps:
            # by id: a snapshot librbd left in its trash namespace (a removal cut short) has no
            # name a remove by name finds, and would keep the image from being purged
            with self._image(pool, name, with_ioctx=True) as (ioctx, image), self._call(what):
                for snap in list(image.list_snaps()):
                    if is_user_snapshot(snap) and image.is_protected_snap(snap["name"]):
                        image.unprotect_snap(snap["name"])
                    image.remove_snap_by_id(snap["id"])
        # Into the RBD trash (a third of the time of a remove, which trims the image's objects
        # and metadata one by one); the primary's stats pass empties the trash every keepalive,
        # and the trash survives any crash in between, as Ceph's rbd_move_to_trash_on_remove.
        with self._ioctx(pool) as ioctx, self._call(what, busy=f"{what}: in use (it has watchers)"):
            rbd.RBD().trash_move(ioctx, name, 0)

    def purge_trash(self, pool: str) -> int:
        import rbd

        removed = 0
        with self._ioctx(pool) as ioctx, self._call(f"trash of pool {pool}"):
            for entry in list(rbd.RBD().trash_list(ioctx)):
                if entry.get("source") not in ("USER", "REMOVING"):
                    continue          # migration/mirroring entries belong to their own workflows
                try:
                    rbd.RBD().trash_remove(ioctx, entry["id"], force=True)
                    removed += 1
                except (rbd.ImageNotFound, rbd.ImageBusy):
                    continue
        return removed

    def write_volume(self, pool: str, name: str, source: BinaryIO, chunk: int = 4 << 20) -> int:
        what = f"volume {pool}/{name}"
        with self._image(pool, name) as image, self._call(what):
            size = image.size()
            offset = 0
            while block := source.read(chunk):
                if offset + len(block) > size:
                    raise StorageError(f"{what}: the data is larger than the volume ({size} bytes)")
                image.write(block, offset)
                offset += len(block)
            image.flush()
            return offset

    def convert_into_volume(self, pool: str, name: str, path: str, image_format: str) -> None:
        what = f"volume {pool}/{name}"
        if image_format not in IMAGE_FORMATS:
            raise StorageError(f"{what}: unknown image format {image_format!r} "
                               f"(one of {', '.join(IMAGE_FORMATS)})")
        if not os.path.isfile(path):
            raise StorageError(f"{what}: cannot convert {path}: no such file")
        size = self.volume_info(pool, name)["size"]
        try:   # inspected here too (defense in depth): no backing file, data file or foreign extent
            virtual = images.inspect(path, image_format).virtual_size
        except images.ImageRefused as exc:
            raise StorageError(f"{what}: {exc.message}") from None
        if virtual > size:
            raise StorageError(f"{what}: the image {path} is larger than the volume "
                               f"({virtual} > {size} bytes)")
        # the keyring is a file path: no secret ever appears on a command line
        parts = ["rbd", f"{_qemu_rbd_escape(pool)}/{_qemu_rbd_escape(name)}",
                 f"id={_qemu_rbd_escape(self.client_user)}", f"conf={_qemu_rbd_escape(self.conffile)}"]
        if os.path.exists(self.keyring):
            parts.append(f"keyring={_qemu_rbd_escape(self.keyring)}")
        target = ":".join(parts)
        # the source is a json: specification with "backing": null, so no backing chain is opened
        # even if the file changed after the inspection
        source = images.source_spec(path, image_format)
        cmd = ["qemu-img", "convert", "-f", image_format, "-O", "raw", "-n", source, target]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=None, check=False)
        except OSError as exc:
            raise StorageError(f"{what}: cannot run qemu-img: {exc}") from None
        if done.returncode != 0:
            raise StorageError(f"{what}: qemu-img convert of {path} failed: "
                               f"{(done.stderr or done.stdout).strip() or f'exit code {done.returncode}'}")

    def watchers(self, pool: str, name: str) -> list[str]:
        with self._image(pool, name, read_only=True) as image, self._call(f"volume {pool}/{name}"):
            return [str(w["addr"]) for w in image.watchers_list()]

    def lockers(self, pool: str, name: str) -> list[Locker]:
        with self._image(pool, name, read_only=True) as image, self._call(f"volume {pool}/{name}"):
            found = image.list_lockers()
            if not found:
                return []
            return [Locker(str(client), str(cookie), str(address))
                    for client, cookie, address in found["lockers"]]

    def break_lock(self, pool: str, name: str, locker: Locker) -> None:
        """Remove a lock; librbd also blocklists its holder (rbd_blocklist_on_break_lock)."""
        what = f"volume {pool}/{name}"
        with self._image(pool, name) as image, self._call(
                what, missing=f"{what}: lock {locker.client} {locker.cookie!r}: not found"):
            image.break_lock(locker.client, locker.cookie)

    # ---- block I/O (snapshot send and receive) -------------------------------------------------

    @contextmanager
    def open_block(self, pool: str, volume: str, snapshot: str | None = None,
                   write: bool = False) -> Iterator[BlockHandle]:
        import rbd

        what = f"volume {pool}/{volume}" + (f"@{snapshot}" if snapshot else "")
        if write and snapshot:
            raise StorageError(f"{what}: a snapshot is read-only")
        with self._ioctx(pool) as ioctx, self._call(what), \
                rbd.Image(ioctx, volume, snapshot=snapshot, read_only=not write) as image:
            handle = _RbdBlock(self, image, what)
            try:
                yield handle
                handle.flush()
            finally:
                handle.drain()

    # ---- snapshots ---------------------------------------------------------------------------

    def list_snapshots(self, pool: str, volume: str) -> list[str]:
        with self._image(pool, volume, read_only=True) as image, self._call(f"volume {pool}/{volume}"):
            snaps = sorted(image.list_snaps(), key=lambda s: s["id"])
            return [str(s["name"]) for s in snaps if is_user_snapshot(s)]

    @contextmanager
    def _maintain(self, pool: str, volume: str, doing: str, what: str,
                  **messages: str | None) -> Iterator[Any]:
        """The image opened for a maintenance operation, under the process's image guard
        (base.set_image_guard: no two of PVC's operations on one image overlap)."""
        with image_guarded([(pool, volume)], f"{doing} {what}"), self._image(pool, volume) as image, \
                self._call(what, **messages):
            yield image

    def create_snapshot(self, pool: str, volume: str, name: str) -> None:
        with self._maintain(pool, volume, "create", f"snapshot {pool}/{volume}@{name}") as image:
            image.create_snap(name)

    def rename_snapshot(self, pool: str, volume: str, name: str, new_name: str) -> None:
        with self._maintain(pool, volume, "rename", f"snapshot {pool}/{volume}@{name}",
                            exists=f"snapshot {pool}/{volume}@{new_name}: already exists") as image:
            image.rename_snap(name, new_name)

    def rollback_snapshot(self, pool: str, volume: str, name: str) -> None:
        with self._maintain(pool, volume, "roll back to", f"snapshot {pool}/{volume}@{name}") as image:
            image.rollback_to_snap(name)

    def remove_snapshot(self, pool: str, volume: str, name: str) -> None:
        """librbd removes a snapshot in steps, the first moving it into its trash namespace under a
        random UUID. A removal cut short there (its client died, or the VM whose QEMU held the
        image's lock and ran the removal for us stopped) leaves that UUID snapshot, which no remove
        by name finds and which holds its data for ever; a repeat of the removal finishes it."""
        import rbd

        what = f"snapshot {pool}/{volume}@{name}"
        with self._maintain(pool, volume, "remove", what) as image:
            found = any(is_user_snapshot(s) and s["name"] == name for s in image.list_snaps())
            if found:
                try:
                    if image.is_protected_snap(name):
                        image.unprotect_snap(name)
                    image.remove_snap(name)
                except rbd.ImageNotFound:
                    pass        # librbd's own retry after such a cut: it is in the trash now
            trashed = [s["id"] for s in image.list_snaps() if trashed_from(s) == name]
            for snap_id in trashed:
                try:
                    image.remove_snap_by_id(snap_id)
                except rbd.ImageBusy:
                    pass        # clones still use it: librbd removes it with the last of them
            if not (found or trashed):
                raise StorageNotFound(f"{what}: not found")

    @contextmanager
    def prepared_snapshots(self, volumes: Sequence[tuple[str, str]]) -> Iterator[SnapshotTaker]:
        """The images opened beforehand and closed afterwards (opening and closing three images
        costs about as much as snapshotting them), each snapshot made on its own thread."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(image_guarded(volumes, f"snapshot {_refs(volumes)}"))
            images = {(p, v): stack.enter_context(self._image(p, v)) for p, v in volumes}
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, len(volumes)),
                                                          thread_name_prefix="rbdsnap"))

            def snap(ref: tuple[str, str], name: str) -> None:
                with self._call(f"snapshot {ref[0]}/{ref[1]}@{name}"):
                    images[ref].create_snap(name)

            def take(name: str) -> dict[tuple[str, str], StorageError | None]:
                futures = {ref: pool.submit(snap, ref, name) for ref in images}
                return {ref: failure_of(future) for ref, future in futures.items()}

            yield take


class _RbdBlock(BlockHandle):
    """An open librbd image: reads are synchronous, writes asynchronous with a bounded window
    (WINDOW writes in flight), so a receiver keeps the OSDs busy while the next batch arrives."""

    WINDOW = 8

    def __init__(self, owner: CephStorage, image: Any, what: str) -> None:
        self._owner, self._image, self._what = owner, image, what
        self.size = int(image.size())
        self._pending: list[Any] = []
        self.failure_of: str | None = None

    def extents(self, since: str | None = None) -> list[tuple[int, int, bool]]:
        found: list[tuple[int, int, bool]] = []
        with self._owner._call(f"{self._what}: changed extents" + (f" since {since}" if since else "")):
            self._image.diff_iterate(0, self.size, since, lambda o, n, e: found.append((o, n, bool(e))),
                                     include_parent=True, whole_object=True)
        return found

    def read(self, offset: int, length: int) -> bytes:
        with self._owner._call(f"{self._what}: read at {offset}"):
            return bytes(self._image.read(offset, length))

    def _done(self, completion: Any) -> None:
        code = completion.get_return_value()
        if code < 0 and self.failure_of is None:
            self.failure_of = f"{self._what}: write failed ({os.strerror(-code)})"

    def _window(self, limit: int) -> None:
        while len(self._pending) > limit:
            self._pending.pop(0).wait_for_complete_and_cb()
        if self.failure_of:
            raise StorageError(self.failure_of)

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.size:
            raise StorageError(f"{self._what}: a write at {offset} of {len(data)} bytes passes the end "
                               f"of the volume ({self.size} bytes)")
        with self._owner._call(f"{self._what}: write at {offset}"):
            self._pending.append(self._image.aio_write(data, offset, self._done))
            self._window(self.WINDOW)

    def discard(self, offset: int, length: int) -> None:
        if offset + length > self.size:
            raise StorageError(f"{self._what}: a discard at {offset} of {length} bytes passes the end "
                               f"of the volume ({self.size} bytes)")
        self._window(0)
        with self._owner._call(f"{self._what}: discard at {offset}"):
            self._image.discard(offset, length)

    def flush(self) -> None:
        with self._owner._call(f"{self._what}: flush"):
            self._window(0)
            self._image.flush()

    def drain(self) -> None:
        """Wait for writes in flight without raising (the image is about to close)."""
        for completion in self._pending:
            try:
                completion.wait_for_complete_and_cb()
            except Exception:
                pass
        self._pending.clear()


def is_user_snapshot(snap: dict[str, Any]) -> bool:
    """A snapshot someone made by name (not a group's, a mirror's or one in librbd's trash)."""
    import rbd

    return snap.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER


def trashed_from(snap: dict[str, Any]) -> str | None:
    """The name a snapshot in librbd's trash namespace had before its removal began (its UUID
    name where librbd did not say); None for any other snapshot."""
    import rbd

    if snap.get("namespace") != rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH:
        return None
    return str((snap.get("trash") or {}).get("original_name") or snap["name"])
