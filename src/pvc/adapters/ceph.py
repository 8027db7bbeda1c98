"""Ceph access through Debian's rados bindings (DESIGN D6, D13). The storage issue extends it."""

from __future__ import annotations

import os
from typing import Any


class StorageUnavailable(Exception):
    pass


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
