"""Writing the volume and snapshot documents in ZooKeeper (/ceph/volumes, /ceph/snapshots) after
Ceph has made a change; a rename moves a volume's documents in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kazoo.exceptions import NodeExistsError

from pvc.adapters.ceph import Storage, StorageError
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.zk import ZK, encode


def volume_doc(pool: str, name: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "pool": pool, "stats": stats}


def snapshot_doc(pool: str, volume: str, name: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {"pool": pool, "volume": volume, "snapshot": name, "stats": stats}


def volume_info(storage: Storage, pool: str, name: str, size: int | None = None) -> dict[str, Any]:
    """`rbd info` of the volume; a minimal stand-in if Ceph answered the change but not the read
    (the primary's next statistics pass, or a scan, fills in the rest)."""
    try:
        return storage.volume_info(pool, name)
    except StorageError:
        return {"name": name, "size": size or 0, "snapshot_count": 0}


def write_volume(zk: ZK, pool: str, name: str, stats: dict[str, Any]) -> None:
    zk.put(schema.volume(pool, name), volume_doc(pool, name, stats))
    zk.ensure(schema.volume_snapshots(pool, name))


def delete_volume_docs(zk: ZK, pool: str, name: str) -> None:
    zk.delete(schema.volume_snapshots(pool, name))
    zk.delete(schema.volume(pool, name))


def move(zk: ZK, creates: list[tuple[str, Any]], deletes: list[str]) -> None:
    """One transaction: write each (path, doc) in order, then delete the old paths (children first),
    so a rename is never half done in ZooKeeper. A new path that exists already (the primary's
    storage monitor may have registered the renamed volume meanwhile) is overwritten."""
    def once() -> list[Any]:
        tx = zk.transaction()
        for path, doc in creates:
            data = b"" if doc is None else encode(doc)
            if zk.stat(path, retry=False) is None:      # inside the retried once
                tx.create(path, data)
            elif doc is not None:
                tx.set_data(path, data)
        for path in deletes:
            tx.delete(path)
        return list(tx.commit())

    results = zk.retry(once)
    failed = next((r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"),
                  None)
    if isinstance(failed, NodeExistsError):
        raise Conflict("The new name appeared in ZooKeeper meanwhile; scan the volume to repair "
                       "its documents.")
    if failed is not None:
        raise Conflict(f"ZooKeeper refused the rename ({type(failed).__name__}); scan the volume to "
                       f"repair its documents.")


def snapshot_stats(volume_stats: Mapping[str, Any]) -> dict[str, Any]:
    """`rbd info` of a snapshot is its image's info at that moment, plus `protected`."""
    return {**volume_stats, "protected": "false"}
