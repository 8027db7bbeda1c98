"""Whole-cluster backup and restore: every persistent znode as {path: text}.

Ephemeral znodes (session markers, locks, task owners) belong to live sessions and are left out;
restoring them would fake sessions that do not exist.

No secret is backed up (DESIGN D14): each node's fence info (`/fenceinfo/<node>`, its sealed BMC
password) is left out, and a restore never writes it (a backup made before secrets were sealed
may hold the password in plaintext): the cluster keeps its current fence info and every node
republishes its own, sealed, whenever its pvcnoded starts. API login sessions (`/sessions`) are
left out and never restored either: a restore must not bring back a session that logged out. The
generated API token (`/config/api_token`, sealed) is left out as well: coordinators keep it in
their token files and seal it again. The ACL marker is left out too: it describes this
ZooKeeper's znodes, not the cluster's data.
"""

from __future__ import annotations

import json
from typing import Any

from pvc.core import schema
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK


def _not_backed_up(path: str) -> bool:
    """Paths a backup leaves out and a restore never writes."""
    return path.startswith((schema.FENCE_INFO + "/", schema.SESSIONS + "/", schema.LOCKS + "/")) \
        or path in (schema.ACL_MARKER, schema.API_TOKEN)


def backup(zk: ZK) -> dict[str, str]:
    tree = zk.walk("/")
    return {
        path: raw.decode(errors="replace")
        for path, (raw, ephemeral) in sorted(tree.items())
        if not ephemeral and path != "/" and not path.startswith("/zookeeper") and not _not_backed_up(path)
    }


def restore(zk: ZK, data: Any) -> str:
    """Write a backup back; refuse one from another schema version, changing nothing."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
            if isinstance(data, str):  # PVC's CLI sends the double-encoded body back as is
                data = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"cluster_data: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise InvalidInput("cluster_data: must be a JSON object of path: value strings")
    bad = [p for p in data if not p.startswith("/") or p.startswith("/zookeeper") or "//" in p]
    if bad:
        raise InvalidInput(f"cluster_data: invalid path {bad[0]!r}")
    theirs = data.get(schema.SCHEMA_VERSION_PATH)
    ours = zk.get(schema.SCHEMA_VERSION_PATH, None)
    if theirs is None:
        raise InvalidInput("cluster_data: backup has no schema version")
    if ours is not None and str(ours) != theirs.strip('"'):
        raise InvalidInput(
            f"cluster_data: backup schema version {theirs} does not match the cluster's ({ours})"
        )
    paths = sorted((p for p in data if not _not_backed_up(p)), key=lambda p: (p.count("/"), p))
    for start in range(0, len(paths), 200):
        for path in paths[start:start + 200]:
            zk.put_raw(path, data[path].encode())
    return "Restore completed successfully"
