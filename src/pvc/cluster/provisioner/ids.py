"""Integer ids of provisioner objects (upstream's API shows them).

One sequence znode per kind under schema.PROVISIONER_IDS: ZooKeeper hands out each number once,
so concurrent writers never share an id and no counter needs a transaction.
"""

from __future__ import annotations

from pvc.core import schema
from pvc.core.zk import ZK

ID_KINDS = ("system_template", "network_template", "network", "storage_template", "storage", "userdata",
            "script", "profile", "ova", "ova_volume")


def next_id(zk: ZK, kind: str) -> int:
    """A new integer id for an object of `kind` (ID_KINDS): one sequence znode per id."""
    if kind not in ID_KINDS:
        raise ValueError(f"unknown provisioner id kind {kind}")
    path = zk.create(f"{schema.PROVISIONER_IDS}/{kind}/id-", None, sequence=True, makepath=True)
    return int(path.rsplit("-", 1)[1]) + 1
