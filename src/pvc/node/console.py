"""Serial console tails: the last lines of each running VM's console log, kept in ZooKeeper.

QEMU writes the guest's serial port to `<console_log_directory>/<vm name>.log` (the reconciler
adds that log to the XML at start, with append='on'). Each keepalive reads what was appended since
the last one and writes the last `console_log_lines` lines to the VM's console znode, only when they
changed, so `pvc vm log` works from any node without reaching the VM's host.

A guest controls every byte of that file (D14: guests are untrusted), so everything kept is bounded:
a line is cut at MAX_LINE characters (with a marker), the lines held in memory (and published) at
MAX_BUFFER bytes as well as `console_log_lines` lines, one read at MAX_READ bytes, and the file
itself is rotated once it passes `console_log_max_bytes`: its last max_bytes are copied to `.1`
(older copies shift up to `.N`, N = `console_log_backups`) and it is truncated, QEMU appending from
the new end. Between two keepalives a flooding guest can still add what it writes in that time; lines
written between the copy and the truncation are lost, as with logrotate's copytruncate.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("pvcnoded.console")

MAX_READ = 4 * 1024 * 1024          # per VM per keepalive: a flooding guest cannot stall us
MAX_LINE = 4096                     # characters of one console line kept; the rest is cut, with a marker
MAX_BUFFER = 512 * 1024             # UTF-8 bytes of lines kept per VM: well under ZooKeeper's 1 MiB znodes
DEFAULT_MAX_BYTES = 1024 * 1024     # logging.console_log_max_bytes
DEFAULT_BACKUPS = 2                 # logging.console_log_backups
_COPY_CHUNK = 1024 * 1024


def cut_line(line: str) -> str:
    """The line, cut at MAX_LINE characters with a marker naming how much was dropped."""
    if len(line) <= MAX_LINE:
        return line
    return f"{line[:MAX_LINE]} [... {len(line) - MAX_LINE} more characters cut by pvcnoded]"


@dataclass
class _Tail:
    path: str
    offset: int = 0
    inode: int = 0
    partial: str = ""
    lines: collections.deque[str] = field(default_factory=collections.deque)
    sizes: collections.deque[int] = field(default_factory=collections.deque)  # UTF-8 bytes + 1 of each line
    size: int = 0
    dirty: bool = False

    def add(self, line: str, max_lines: int) -> None:
        line = cut_line(line)
        cost = len(line.encode(errors="replace")) + 1
        self.lines.append(line)
        self.sizes.append(cost)
        self.size += cost
        while self.lines and (len(self.lines) > max_lines or self.size > MAX_BUFFER):
            self.lines.popleft()
            self.size -= self.sizes.popleft()


class ConsoleTail:
    """Follows console log files by byte offset (handles rotation and truncation); rotates them."""

    def __init__(self, directory: str, lines: int, publish: Callable[[str, str], None],
                 max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.directory, self.max_lines, self.publish = directory, lines, publish
        self.max_bytes, self.backups = max_bytes, backups
        self._tails: dict[str, _Tail] = {}

    def tick(self, paths: dict[str, str]) -> None:
        """paths: {uuid: log file} of the VMs running here now; others are forgotten."""
        for gone in [u for u in self._tails if u not in paths]:
            del self._tails[gone]
        for uuid, path in paths.items():
            tail = self._tails.get(uuid)
            if tail is None or tail.path != path:
                tail = self._tails[uuid] = _Tail(path)
            try:
                self._read(tail)
                self._rotate(tail)
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
        if len(tail.partial) > MAX_LINE:   # a line without end: show it anyway (cut)
            parts.append(tail.partial)
            tail.partial = ""
        for part in parts[-self.max_lines:]:
            tail.add(part, self.max_lines)
        if parts:
            tail.dirty = True

    def _rotate(self, tail: _Tail) -> None:
        """Copy-truncate the file once it passes max_bytes (QEMU keeps it open, appending)."""
        path = tail.path
        with open(path, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size <= self.max_bytes:
                return
            if self.backups > 0:
                for number in range(self.backups - 1, 0, -1):
                    if os.path.exists(f"{path}.{number}"):
                        os.replace(f"{path}.{number}", f"{path}.{number + 1}")
                handle.seek(max(0, size - self.max_bytes))
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                descriptor = os.open(f"{path}.1", flags, 0o600)
                with os.fdopen(descriptor, "wb") as copy:
                    left = min(size, self.max_bytes)
                    while left > 0 and (chunk := handle.read(min(_COPY_CHUNK, left))):
                        copy.write(chunk)
                        left -= len(chunk)
            handle.truncate(0)
        tail.offset = 0
        log.info("console log %s rotated at %d bytes (limit %d)", path, size, self.max_bytes)
