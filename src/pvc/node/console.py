"""Serial console tails: the last lines of each running VM's console log, kept in ZooKeeper.

QEMU writes the guest's serial port to `<console_log_directory>/<vm name>.log` (the reconciler
adds that log to the XML at start). Each keepalive reads what was appended since the last one and
writes the last `console_log_lines` lines to the VM's console znode, only when they changed, so
`pvc vm log` works from any node without reaching the VM's host.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("pvcnoded.console")

MAX_READ = 4 * 1024 * 1024          # per VM per keepalive: a flooding guest cannot stall us


@dataclass
class _Tail:
    path: str
    offset: int = 0
    inode: int = 0
    partial: str = ""
    lines: collections.deque[str] = field(default_factory=collections.deque)
    dirty: bool = False


class ConsoleTail:
    """Follows console log files by byte offset (handles rotation and truncation)."""

    def __init__(self, directory: str, lines: int, publish: Callable[[str, str], None]) -> None:
        self.directory, self.max_lines, self.publish = directory, lines, publish
        self._tails: dict[str, _Tail] = {}

    def tick(self, paths: dict[str, str]) -> None:
        """paths: {uuid: log file} of the VMs running here now; others are forgotten."""
        for gone in [u for u in self._tails if u not in paths]:
            del self._tails[gone]
        for uuid, path in paths.items():
            tail = self._tails.get(uuid)
            if tail is None or tail.path != path:
                tail = self._tails[uuid] = _Tail(path, lines=collections.deque(maxlen=self.max_lines))
            try:
                self._read(tail)
            except OSError as exc:
                log.debug("console log %s: %s", path, exc)
                continue
            if tail.dirty:
                try:
                    self.publish(uuid, "\n".join(tail.lines) + ("\n" if tail.lines else ""))
                    tail.dirty = False
                except Exception as exc:
                    log.warning("console of %s not published: %s", uuid, exc)

    def _read(self, tail: _Tail) -> None:
        with open(tail.path, "rb") as handle:
            st = os.fstat(handle.fileno())
            if st.st_ino != tail.inode or st.st_size < tail.offset:
                # a new file (VM restarted, log rotated) or a truncated one: read from the start
                tail.inode, tail.offset, tail.partial = st.st_ino, max(0, st.st_size - MAX_READ), ""
            if st.st_size == tail.offset:
                return
            handle.seek(tail.offset)
            data = handle.read(min(MAX_READ, st.st_size - tail.offset))
        tail.offset += len(data)
        text = tail.partial + data.decode(errors="replace").replace("\r", "")
        parts = text.split("\n")
        tail.partial = parts.pop()
        if tail.partial and len(tail.partial) > 4096:   # a line without end: show it anyway
            parts.append(tail.partial)
            tail.partial = ""
        if parts:
            tail.lines.extend(parts)
            tail.dirty = True
