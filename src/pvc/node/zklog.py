"""Node log lines kept in ZooKeeper (`pvc node log`), the last N lines, flushed in batches.

Lines are buffered and written at most once per keepalive (and at shutdown), so logging never
adds a ZooKeeper round trip to the code that logs.
"""

from __future__ import annotations

import logging
import threading

from pvc.core import schema
from pvc.core.zk import ZK

MAX_LINE = 4096             # characters of one log line kept (log lines can carry guest or user text)
MAX_BYTES = 512 * 1024      # of the whole list: well under ZooKeeper's 1 MiB znodes, or no write succeeds


def _bounded(lines: list[str], max_lines: int) -> list[str]:
    """The last lines that fit both max_lines and MAX_BYTES (of UTF-8)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-max_lines:]):
        size += len(str(line).encode(errors="replace")) + 1
        if size > MAX_BYTES:
            break
        kept.append(line)
    kept.reverse()
    return kept


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
        if len(line) > MAX_LINE:
            line = f"{line[:MAX_LINE]} [... {len(line) - MAX_LINE} more characters cut]"
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
                      lambda old: _bounded((old if isinstance(old, list) else []) + lines, self.max_lines),
                      create=True)
        except Exception:
            with self._lock:  # keep them for the next attempt rather than lose them
                self._pending = (lines + self._pending)[-self.max_lines:]
            return 0
        return 1
