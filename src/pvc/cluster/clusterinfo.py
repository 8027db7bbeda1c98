"""The cluster document (`/cluster`): name, maintenance, default migration selector.

Its own module because VMs, nodes and the status summary all read it; keeping it here keeps the
import graph of the cluster layer acyclic.
"""

from __future__ import annotations

from typing import Any

from pvc.core import schema
from pvc.core.records import ClusterRecord
from pvc.core.zk import ZK


def get_cluster(zk: ZK) -> ClusterRecord:
    data = zk.get(schema.CLUSTER, None)
    return ClusterRecord.model_validate(data) if isinstance(data, dict) else ClusterRecord()


def ensure_cluster(zk: ZK, name: str) -> ClusterRecord:
    """Create the cluster record on first start, or keep its name in sync with the config."""
    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        record = ClusterRecord.model_validate(doc) if doc else ClusterRecord(name=name)
        return record.model_copy(update={"name": name}).doc()

    return ClusterRecord.model_validate(zk.update(schema.CLUSTER, change, create=True))
