"""ZooKeeper's multiRead (opcode 22, ZooKeeper >= 3.6) for kazoo, which lacks it.

kazoo sends one request per turn of its connection loop, so reading 10,000 znodes one by one
costs seconds of Python time however well pipelined; one multiRead carries hundreds of getData
and getChildren operations and costs about as much as one. Watches asked for in a multiRead are
registered with kazoo's dispatch tables exactly where kazoo registers its own (on the connection
thread, as the response is parsed, before any later event is read), so they fire, survive a
reconnect (kazoo re-sends them with SetWatches) and vanish with the session like any other.

Only core.zk uses this module (it is part of the ZooKeeper seam).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import EXCEPTIONS
from kazoo.protocol.serialization import (
    MultiHeader,
    int_struct,
    multiheader_struct,
    read_buffer,
    read_string,
    stat_struct,
    write_string,
)
from kazoo.protocol.states import ZnodeStat

GET_DATA = 4
GET_CHILDREN = 8
MULTI_READ = 22


@dataclass(frozen=True)
class ReadOp:
    """One read in a multiRead: the data (and stat) of path, or its children."""

    kind: int                 # GET_DATA or GET_CHILDREN
    path: str                 # as given (unchrooted)
    watch: bool = False


class MultiRead:
    """A kazoo request object (serialize/deserialize as kazoo's own request types have)."""

    type = MULTI_READ

    def __init__(self, client: Any, ops: Sequence[ReadOp],
                 watcher: Callable[..., Any] | None) -> None:
        self.client = client
        self.ops = list(ops)
        self.full = [_chrooted(client.chroot, op.path) for op in self.ops]
        self.data_watcher = watcher

    def serialize(self) -> bytes:
        out = bytearray()
        for op, path in zip(self.ops, self.full, strict=True):
            out.extend(MultiHeader(op.kind, False, -1).serialize())
            out.extend(write_string(path))
            out.extend([1 if op.watch and self.data_watcher else 0])
        return bytes(out + multiheader_struct.pack(-1, True, -1))

    def deserialize(self, data: bytes, offset: int) -> list[Any]:
        """Per op: (bytes, ZnodeStat) for getData, list[str] for getChildren, or the exception.

        Runs on kazoo's connection thread: watches are registered here, before any later event.
        """
        results: list[Any] = []
        header, offset = MultiHeader.deserialize(data, offset)
        index = 0
        while not header.done:
            op, path = self.ops[index], self.full[index]
            if header.type == GET_DATA:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                results.append((value or b"", stat))
                self._register(op, path, self.client._data_watchers)
            elif header.type == GET_CHILDREN:
                count = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                children = []
                for _ in range(max(count, 0)):
                    child, offset = read_string(data, offset)
                    children.append(child)
                results.append(children)
                self._register(op, path, self.client._child_watchers)
            else:                                     # -1: this op failed (e.g. NoNode)
                err = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[err]())
            index += 1
            header, offset = MultiHeader.deserialize(data, offset)
        return results

    def _register(self, op: ReadOp, path: str, table: Any) -> None:
        if op.watch and self.data_watcher is not None and not self.client._stopped.is_set():
            table[path].add(self.data_watcher)


def _chrooted(chroot: str, path: str) -> str:
    if not chroot:
        return path
    return chroot if path == "/" else chroot + path


def send(client: Any, ops: Sequence[ReadOp], watcher: Callable[..., Any] | None = None) -> Any:
    """Queue one multiRead on the kazoo client; an async result of its per-op results."""
    result = client.handler.async_result()
    client._call(MultiRead(client, ops, watcher), result)
    return result
