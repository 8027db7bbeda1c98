"""This node's own document in ZooKeeper (`/nodes/<name>`), written only through `write`.

Every write is a compare-and-set on the version this daemon last wrote, so requests the API
records in the same document (flush, ready) are never overwritten; it re-reads only when
someone else wrote in between.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from pvc.core import schema
from pvc.core.errors import ClusterUnavailable
from pvc.core.records import NodeRecord
from pvc.core.zk import ZK

DocChange = Callable[[dict[str, Any]], dict[str, Any]]


class NodeDocument:
    def __init__(self, zk: ZK, name: str) -> None:
        self.zk, self.name = zk, name
        self._lock = threading.Lock()
        self._version: int | None = None
        self.current: dict[str, Any] = {}        # what this daemon last read or wrote

    def forget(self) -> None:
        """Read the document again before the next write (it was rewritten elsewhere)."""
        self._version = None

    def write(self, change: DocChange) -> dict[str, Any]:
        """CAS on the last version we saw; re-read only when someone else wrote in between."""
        path = schema.node(self.name)
        with self._lock:
            for _ in range(20):
                if self._version is None:
                    raw = self.zk.get_raw(path)
                    if raw is None:
                        raise NoNodeError(path)
                    # Keep keys NodeRecord does not model (migration URI, API extras).
                    extra = json.loads(raw[0]) if raw[0] else {}
                    self.current = {**(extra if isinstance(extra, dict) else {}),
                                    **NodeRecord.model_validate_json(raw[0]).doc()}
                    self._version = raw[1].version
                new = change(dict(self.current))
                try:
                    version = self.zk.set_doc(path, new, self._version)
                except BadVersionError:
                    self._version = None
                    continue
                self.current, self._version = new, version
                return new
        raise ClusterUnavailable(f"{path}: could not write after repeated conflicts")
