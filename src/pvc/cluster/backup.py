"""Whole-cluster backup and restore: every persistent znode as {path: text}, plus a manifest.

Ephemeral znodes (session markers, locks, task owners) belong to live sessions and are left out;
restoring them would fake sessions that do not exist.

No secret is backed up (DESIGN D14): each node's fence info (`/fenceinfo/<node>`, its sealed BMC
password) is left out, and a restore never writes it (a backup made before secrets were sealed
may hold the password in plaintext): the cluster keeps its current fence info and every node
republishes its own, sealed, whenever its pvcnoded starts. API login sessions (`/sessions`) are
left out and never restored either: a restore must not bring back a session that logged out. The
generated API token (`/config/api_token`, sealed) is left out as well: coordinators keep it in
their token files and seal it again. Send destinations (`/transfers/<id>`: a sealed destination
key for one send task, consumed once) are left out and never written by a restore: a key must not
outlive its task in a file, nor come back to life after it was used. The ACL marker is left out
too: it describes this ZooKeeper's znodes, not the cluster's data. Lock znodes (`/locks/...`) are
never carried.

The manifest (key "manifest", asked for with GET /backup?manifest=true; our CLI always asks)
names the format, schema version, cluster name, time of the content's last change and a SHA-256
of the content, and is checked
before anything is written. A plain GET /backup stays upstream's shape exactly (a flat path ->
string map; upstream's CLI writes it to a file as is), and a backup without a manifest (older
ones, or one taken by upstream's client) is still restored, unverified.

Restore modes: `replace` (the default) makes the cluster equal the backup: what the backup covers
and the backup lacks is deleted; what backups never carry (secrets, sessions, locks, the ACL
marker, ephemeral znodes) is kept. `merge` only writes the backup's znodes (the old behaviour).
A restore is refused while a node daemon runs (its ephemeral /nodes/<n>/alive exists) unless
forced: the daemons would act on, and write over, the state being replaced.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput
from pvc.core.zk import ZK

MANIFEST_KEY = "manifest"
FORMAT = "pvc-backup"
FORMAT_VERSION = 1
MODES = ("replace", "merge")
# Marker of a restore too large for one transaction, written first and removed last: if it is
# still there, a restore stopped half way and must be run again.
RESTORE_MARKER = "/schema/restore_in_progress"
TX_BYTES = 512 * 1024      # request bytes per transaction, well below ZooKeeper's 1 MiB jute.maxbuffer
TX_OVERHEAD = 64           # per operation, on top of its path and data


def _not_backed_up(path: str) -> bool:
    """Paths a backup leaves out and a restore never writes nor deletes."""
    return path.startswith((schema.FENCE_INFO + "/", schema.SESSIONS + "/", schema.LOCKS + "/",
                            schema.TRANSFERS + "/")) \
        or path in (schema.ACL_MARKER, schema.API_TOKEN, RESTORE_MARKER)


def _outside(path: str) -> bool:
    return path == "/" or path == "/zookeeper" or path.startswith("/zookeeper/")


def content(zk: ZK) -> dict[str, str]:
    """Every persistent znode a backup carries, {path: text}, sorted by path."""
    tree = zk.walk("/")
    return {
        path: raw.decode(errors="replace")
        for path, (raw, ephemeral) in sorted(tree.items())
        if not ephemeral and not _outside(path) and not _not_backed_up(path)
    }


def checksum(data: Mapping[str, str]) -> str:
    """SHA-256 of the content, canonically serialised (key order and JSON spacing do not matter)."""
    text = json.dumps(dict(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _cluster_name(data: Mapping[str, str]) -> str:
    try:
        doc = json.loads(data.get(schema.CLUSTER) or "")
    except ValueError:
        return ""
    return str(doc.get("name") or "") if isinstance(doc, dict) else ""


def _schema_text(value: Any) -> str:
    return str(value).strip().strip('"')


def make_manifest(data: Mapping[str, str], cluster: str = "", changed: float | None = None) -> dict[str, Any]:
    """`time` is when the content last changed (its newest znode modification, UTC), not when the
    backup ran: two backups of the same state are byte for byte the same file."""
    moment = datetime.fromtimestamp(time.time() if changed is None else changed, UTC)
    version = data.get(schema.SCHEMA_VERSION_PATH)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "schema_version": int(_schema_text(version)) if version is not None else None,
        "cluster": _cluster_name(data) or cluster, "time": moment.isoformat(timespec="milliseconds"),
        "znodes": len(data), "checksum": checksum(data),
    }


def _latest_change(zk: ZK, paths: list[str], chunk: int = 500) -> float | None:
    """The newest modification time (epoch seconds) of `paths`, their stats fetched pipelined."""
    newest = 0
    for start in range(0, len(paths), chunk):
        pending = [zk.exists_async(p) for p in paths[start:start + chunk]]
        for result in pending:
            stat = result.get(timeout=30)
            if stat is not None:
                newest = max(newest, stat.mtime)
    return newest / 1000 if newest else None


def backup(zk: ZK, manifest: bool = False, cluster: str = "") -> dict[str, Any]:
    """The backup; with `manifest`, the manifest first, under MANIFEST_KEY (not a path)."""
    data = content(zk)
    if not manifest:
        return data
    return {MANIFEST_KEY: make_manifest(data, cluster, _latest_change(zk, list(data))), **data}


# -- restore: checks first ---------------------------------------------------------------------------------

def decode(data: Any) -> dict[str, Any]:
    """The backup object from JSON text, the double-encoded API body, or the object itself."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
            if isinstance(data, str):  # PVC's CLI sends the double-encoded body back as is
                data = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"cluster_data: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("cluster_data: must be a JSON object of path: value strings")
    return data


def split_manifest(data: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    manifest = data.get(MANIFEST_KEY)
    rest = {k: v for k, v in data.items() if k != MANIFEST_KEY}
    if manifest is None:
        return None, rest
    if isinstance(manifest, str):
        try:
            manifest = json.loads(manifest)
        except ValueError:
            manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"cluster_data: the manifest is not a {FORMAT} manifest")
    return manifest, rest


def check_manifest(manifest: Mapping[str, Any], data: Mapping[str, str], current_cluster: str,
                   allow_other_cluster: bool = False) -> None:
    """Refuse a backup whose content is not what its manifest describes, or of another cluster."""
    if int(manifest.get("format_version") or 0) > FORMAT_VERSION:
        raise InvalidInput(f"cluster_data: manifest format version {manifest.get('format_version')} is newer "
                           f"than this PVC reads ({FORMAT_VERSION})")
    actual = checksum(data)
    if manifest.get("checksum") != actual:
        raise InvalidInput(f"cluster_data: checksum mismatch: the manifest says {manifest.get('checksum')}, "
                           f"the content is {actual}; the backup was changed or truncated, nothing was "
                           f"restored")
    version = data.get(schema.SCHEMA_VERSION_PATH)
    if version is not None and str(manifest.get("schema_version")) != _schema_text(version):
        raise InvalidInput(f"cluster_data: the manifest's schema version {manifest.get('schema_version')} "
                           f"differs from the content's ({_schema_text(version)})")
    theirs = str(manifest.get("cluster") or "")
    if theirs and current_cluster and theirs != current_cluster and not allow_other_cluster:
        raise InvalidInput(f'cluster_data: this is a backup of cluster "{theirs}", not of this cluster '
                           f'("{current_cluster}"); restore it here only with allow_other_cluster '
                           f"(--allow-other-cluster)")


def running_daemons(zk: ZK) -> list[str]:
    """Nodes whose pvcnoded session is alive (their ephemeral alive znode exists)."""
    names = zk.children(schema.NODES) if zk.exists(schema.NODES) else []
    return sorted(n for n in names if zk.exists(schema.node_alive(n)))


def refuse_running(zk: ZK, force: bool, what: str = "restore") -> None:
    alive = running_daemons(zk)
    if alive and not force:
        raise Conflict(f"Refusing to {what}: node daemons are running on {', '.join(alive)} (their "
                       f"{schema.NODES}/<node>/alive znodes exist) and would act on the state while it is "
                       f"replaced; stop pvcnoded on every node first, or force it")


def _validate(data: Mapping[str, Any]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InvalidInput("cluster_data: must be a JSON object of path: value strings")
    bad = [p for p in data if not p.startswith("/") or p.startswith("/zookeeper") or "//" in p
           or (p != "/" and p.endswith("/"))]
    if bad:
        raise InvalidInput(f"cluster_data: invalid path {bad[0]!r}")
    return dict(data)


def restore(zk: ZK, data: Any, mode: str = "replace", force: bool = False, cluster: str = "",
            allow_other_cluster: bool = False) -> str:
    """Write a backup back, after every check passed (nothing is written on a refusal)."""
    if mode not in MODES:
        raise InvalidInput(f"mode: '{mode}' is not one of {', '.join(MODES)}")
    manifest, rest = split_manifest(decode(data))
    backup_data = _validate(rest)
    theirs = backup_data.get(schema.SCHEMA_VERSION_PATH)
    ours = zk.get(schema.SCHEMA_VERSION_PATH, None)
    if theirs is None:
        raise InvalidInput("cluster_data: backup has no schema version")
    if ours is not None and str(ours) != _schema_text(theirs):
        raise InvalidInput(
            f"cluster_data: backup schema version {theirs} does not match the cluster's ({ours})"
        )
    if manifest is not None:
        current = zk.get(schema.CLUSTER, None)
        name = str(current.get("name") or "") if isinstance(current, dict) else ""
        check_manifest(manifest, backup_data, name or cluster, allow_other_cluster)
    refuse_running(zk, force)
    wanted = {p: v for p, v in backup_data.items() if not _not_backed_up(p) and not _outside(p)}
    if mode == "merge":
        _merge(zk, wanted)
    else:
        _replace(zk, wanted)
    return "Restore completed successfully"


# -- restore: writing ----------------------------------------------------------------------------------------

def _depth_order(paths: list[str]) -> list[str]:
    return sorted(paths, key=lambda p: (p.count("/"), p))


def _merge(zk: ZK, wanted: Mapping[str, str]) -> None:
    for path in _depth_order(list(wanted)):
        zk.put_raw(path, wanted[path].encode())


Op = tuple[str, str, bytes]          # (create | set | delete, path, data)


def replace_ops(current: Mapping[str, tuple[bytes, bool]], wanted: Mapping[str, str]) -> list[Op]:
    """The operations that turn `current` (ZK.walk) into `wanted`, keeping what backups never
    carry and the ancestors of what is kept: deletes deepest first, then writes parents first."""
    kept = {p for p, (_raw, ephemeral) in current.items() if ephemeral or _not_backed_up(p) or _outside(p)}
    for path in list(kept):
        kept.update(_ancestors(path))
    wanted = dict(wanted)
    for path in list(wanted):              # a hand-made backup may leave out a parent: keep or make it
        for parent in _ancestors(path):
            if parent not in wanted and not _outside(parent):
                if parent in current:
                    kept.add(parent)
                else:
                    wanted[parent] = ""
    deletes = sorted((p for p in current if p not in wanted and p not in kept),
                     key=lambda p: (-p.count("/"), p))
    ops: list[Op] = [("delete", p, b"") for p in deletes]
    for path in _depth_order(list(wanted)):
        data = wanted[path].encode()
        found = current.get(path)
        if found is None:
            ops.append(("create", path, data))
        elif found[0] != data and not found[1]:
            ops.append(("set", path, data))
    return ops


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]


def _batches(ops: list[Op]) -> list[list[Op]]:
    batches: list[list[Op]] = [[]]
    size = 0
    for op in ops:
        cost = len(op[1]) + len(op[2]) + TX_OVERHEAD
        if batches[-1] and size + cost > TX_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(op)
        size += cost
    return batches


def _commit(zk: ZK, batch: list[Op]) -> bool:
    def once() -> list[Any]:
        tx = zk.transaction()
        for kind, path, data in batch:
            if kind == "create":
                tx.create(path, data)
            elif kind == "set":
                tx.set_data(path, data)
            else:
                tx.delete(path)
        return list(tx.commit())

    results = zk.retry(once)
    failed = next((r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"),
                  None)
    if failed is None:
        return True
    if isinstance(failed, BadVersionError | NodeExistsError | NoNodeError | NotEmptyError):
        return False
    raise failed


def _replace(zk: ZK, wanted: Mapping[str, str], attempts: int = 5) -> None:
    """One transaction when it fits (all or nothing); else staged batches under RESTORE_MARKER.
    A batch that lost a race (a znode appeared or went meanwhile) is planned again from the tree."""
    def walk() -> dict[str, tuple[bytes, bool]]:
        return zk.walk("/")

    for _attempt in range(attempts):
        ops = replace_ops(walk(), wanted)
        if not ops:
            _clear_marker(zk)
            return
        batches = _batches(ops)
        if len(batches) == 1:
            if _commit(zk, batches[0]):
                _clear_marker(zk)
                return
            continue
        zk.put(RESTORE_MARKER, {"started": time.time(), "checksum": checksum(wanted)})
        if all(_commit(zk, batch) for batch in batches) and not replace_ops(walk(), wanted):
            _clear_marker(zk)
            return
    raise Conflict(f"Restore did not settle after {attempts} attempts (something keeps writing to ZooKeeper: "
                   f"are node daemons running?); {RESTORE_MARKER} marks the cluster as half restored, run "
                   f"the restore again")


def _clear_marker(zk: ZK) -> None:
    if zk.exists(RESTORE_MARKER):
        zk.delete(RESTORE_MARKER)
