"""The cluster document (`/cluster`): name, maintenance, default migration selector.

Its own module because VMs, nodes and the status summary all read it; keeping it here keeps the
import graph of the cluster layer acyclic.
"""

from __future__ import annotations

import uuid
from typing import Any

from pvc.core import schema
from pvc.core.records import ClusterRecord
from pvc.core.zk import ZK


def get_cluster(zk: ZK) -> ClusterRecord:
    data = zk.get(schema.CLUSTER, None)
    return ClusterRecord.model_validate(data) if isinstance(data, dict) else ClusterRecord()


def ensure_cluster(zk: ZK, name: str) -> ClusterRecord:
    """Create the cluster record on first start, or keep its name in sync with the config
    (and give it an id if it has none)."""
    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        record = ClusterRecord.model_validate(doc) if doc else ClusterRecord(name=name)
        return record.model_copy(update={"name": name, "id": record.id or _new_id()}).doc()

    return ClusterRecord.model_validate(zk.update(schema.CLUSTER, change, create=True))


def cluster_id(zk: ZK) -> str:
    """This cluster's id (made once, compare-and-set, if the cluster document has none yet).

    Nodes mark the domains they start with it (pvc.core.domainxml.ownership), so a node can tell
    this cluster's orphans from domains anyone else runs on the host."""
    current = get_cluster(zk)
    if current.id:
        return current.id

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        base = doc if isinstance(doc, dict) else ClusterRecord().doc()
        return base if base.get("id") else {**base, "id": _new_id()}

    return str(zk.update(schema.CLUSTER, change, create=True)["id"])


def _new_id() -> str:
    return str(uuid.uuid4())
