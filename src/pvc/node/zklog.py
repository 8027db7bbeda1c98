"""Node log lines kept in ZooKeeper (`pvc node log`), the last N lines, flushed in batches.

Lines are buffered and written at most once per keepalive (and at shutdown), so logging never
adds a ZooKeeper round trip to the code that logs.
"""

from __future__ import annotations

import logging
import threading

from pvc.core import schema
from pvc.core.zk import ZK


class ZooKeeperLogHandler(logging.Handler):
    def __init__(self, node: str, max_lines: int) -> None:
        super().__init__()
        self.node = node
        self.max_lines = max_lines
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("kazoo"):
            return
        try:
            line = self.format(record)
        except Exception:
            return
        with self._lock:
            self._pending.append(line)
            if len(self._pending) > self.max_lines:
                del self._pending[: len(self._pending) - self.max_lines]

    def flush_to(self, zk: ZK) -> int:
        """Append buffered lines to the node's log znode; return the number of writes (0 or 1)."""
        with self._lock:
            lines, self._pending = self._pending, []
        if not lines:
            return 0
        try:
            zk.update(schema.node_log(self.node),
                      lambda old: ((old if isinstance(old, list) else []) + lines)[-self.max_lines:],
                      create=True)
        except Exception:
            with self._lock:  # keep them for the next attempt rather than lose them
                self._pending = (lines + self._pending)[-self.max_lines:]
            return 0
        return 1
