"""Getting at the cluster: the self-test's probe, and the one constructor of the Ceph adapter from
settings, with one shared client per configuration and process."""

from __future__ import annotations

import os
import threading
from typing import Any

from pvc.adapters.ceph.base import StorageUnavailable
from pvc.adapters.ceph.librados import CephStorage


def probe(conffile: str, keyring: str, timeout: float = 5.0) -> dict[str, Any]:
    """Connect to the cluster and read its fsid; raise StorageUnavailable with the reason."""
    if not os.path.exists(conffile):
        raise StorageUnavailable(f"Ceph is not configured on this node ({conffile} does not exist)")
    try:
        import rados
    except ImportError as exc:
        raise StorageUnavailable("python3-rados is not installed") from exc
    conf: dict[str, str] = {"keyring": keyring} if os.path.exists(keyring) else {}
    cluster = rados.Rados(conffile=conffile, conf=conf)
    try:
        cluster.connect(timeout=int(max(1, timeout)))
        return {"fsid": cluster.get_fsid(), "pools": len(cluster.list_pools())}
    except rados.Error as exc:
        raise StorageUnavailable(f"cannot reach the Ceph cluster: {exc}") from None
    finally:
        cluster.shutdown()


_SHARED: dict[tuple[str, str, float, str], CephStorage] = {}
_SHARED_LOCK = threading.Lock()


def storage_from_settings(settings: Any, shared: bool = True) -> CephStorage:
    """The one constructor of the Ceph adapter from a node's settings (`settings.storage`).

    shared: one client per configuration and process (librados connects lazily and is
    thread-safe), so the API, the worker and the node's services do not each open their own;
    shared=False gives a private client (the HA monitor's fence path must not queue behind a
    client stuck on an unreachable cluster).
    """
    cfg = settings.storage
    key = (cfg.ceph_config_file, cfg.ceph_keyring_file, float(cfg.timeout), cfg.client_user)
    if not shared:
        return CephStorage(*key)
    with _SHARED_LOCK:
        storage = _SHARED.get(key)
        if storage is None:
            storage = _SHARED[key] = CephStorage(*key)
        return storage


def close_shared() -> None:
    """Close and forget every shared client (tests that tear their Ceph cluster down)."""
    with _SHARED_LOCK:
        for storage in _SHARED.values():
            storage.close()
        _SHARED.clear()
