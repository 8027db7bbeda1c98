"""The block stream of a snapshot send: upstream's multipart framing plus our extensions.

Upstream (PVC >= 0.9.101) sends the changed extents of an incremental as a multipart/form-data
body of parts named `object_<i>`, each = 8-byte big-endian offset + 8-byte big-endian length +
the data, in batches of at least 32 parts. We speak exactly that, and add (only towards our own
receivers, which advertise it; an upstream receiver is never sent them):

- `discard_<i>` parts: 16 bytes (offset, length), no data: the extent reads as zeroes (a trimmed
  or zeroed region), so discards reach the mirror;
- a digest chain: each batch's records are hashed, and the chain value after batch n is
  sha256(chain(n-1) || digest(batch n)). Both sides compute it; equal chains at the end mean the
  receiver holds what was sent, and a chain kept per acknowledged batch lets an interrupted send
  resume after the last batch both sides agree on.

Pure code: no I/O, no imports of ours.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct(">QQ")
OBJECT = "object"                  # upstream's part name prefix (data)
DISCARD = "discard"                # our extension (zero/discard extent, no data)
OBJECT_SIZE = 4 << 20              # RBD's default object size; extents are cut at this
BATCH_PARTS = 32                   # upstream: at least 32 x 4 MiB per request
CHAIN_SEED = hashlib.sha256(b"pvc-blockstream-v1").hexdigest()
MAX_PART = 64 << 20                # a part larger than this is refused by the reader

_ZEROES: dict[int, bytes] = {}


class StreamError(ValueError):
    """A malformed part, multipart body or progress document; the message names it."""


@dataclass(frozen=True)
class Extent:
    """A byte range of a volume; `exists` False means it reads as zeroes (unallocated/discarded)."""

    offset: int
    length: int
    exists: bool = True


@dataclass(frozen=True)
class Record:
    """One part of a batch: data at an offset, or (data None) a discard of `length` bytes."""

    offset: int
    length: int
    data: bytes | None = None

    @property
    def is_discard(self) -> bool:
        return self.data is None


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """All bytes zero (a memcmp against a cached zero block)."""
    size = len(data)
    zero = _ZEROES.get(size)
    if zero is None:
        zero = bytes(size)
        if len(_ZEROES) < 16:
            _ZEROES[size] = zero
    return data == zero


# -- one part -----------------------------------------------------------------------------------

def encode_part(offset: int, data: bytes) -> bytes:
    """Upstream's part body: offset, length, data."""
    return HEADER.pack(offset, len(data)) + data


def encode_discard(offset: int, length: int) -> bytes:
    return HEADER.pack(offset, length)


def decode_part(name: str, body: bytes | bytearray | memoryview) -> Record:
    """A part back into a Record; StreamError naming the part if it is short or inconsistent."""
    if len(body) < HEADER.size:
        raise StreamError(f"part {name}: {len(body)} bytes, shorter than its 16-byte header")
    offset, length = HEADER.unpack_from(body, 0)
    if name.startswith(DISCARD + "_"):
        if len(body) != HEADER.size:
            raise StreamError(f"part {name}: a discard carries no data, got {len(body) - 16} bytes")
        return Record(offset, length, None)
    data = bytes(body[HEADER.size:HEADER.size + length])
    if len(data) != length:
        raise StreamError(f"part {name}: header says {length} bytes of data, the part has {len(data)}")
    return Record(offset, length, data)


def part_index(name: str) -> int:
    """The <i> of `object_<i>` / `discard_<i>`; StreamError for any other name."""
    kind, _, index = name.partition("_")
    if kind not in (OBJECT, DISCARD) or not index.isdigit():
        raise StreamError(f"part {name!r}: expected object_<i> or discard_<i>")
    return int(index)


# -- extents into batches ----------------------------------------------------------------------

def split(extents: Iterable[Extent], piece: int = OBJECT_SIZE) -> Iterator[Extent]:
    """Extents cut at `piece`-aligned boundaries (so a record never exceeds one object)."""
    for extent in extents:
        offset, end = extent.offset, extent.offset + extent.length
        while offset < end:
            stop = min(end, (offset // piece + 1) * piece)
            yield Extent(offset, stop - offset, extent.exists)
            offset = stop


def batches(extents: Iterable[Extent], parts: int = BATCH_PARTS,
            discards: bool = True) -> Iterator[list[Extent]]:
    """Deterministic batches of at most `parts` extents (the same extents always give the same
    batches, which is what resuming relies on); non-existing extents only when `discards`."""
    batch: list[Extent] = []
    for extent in split(extents):
        if not extent.exists and not discards:
            continue
        batch.append(extent)
        if len(batch) >= parts:
            yield batch
            batch = []
    if batch:
        yield batch


# -- the digest chain --------------------------------------------------------------------------

def record_digest(hasher: Any, record: Record) -> None:
    """Feed one record into a batch hasher: kind, offset, length, data."""
    hasher.update(b"D" if record.is_discard else b"W")
    hasher.update(HEADER.pack(record.offset, record.length))
    if record.data is not None:
        hasher.update(record.data)


def batch_digest(records: Iterable[Record]) -> str:
    hasher = hashlib.sha256()
    for record in records:
        record_digest(hasher, record)
    return hasher.hexdigest()


def chain(previous: str, digest: str) -> str:
    """The chain value after a batch whose digest is `digest`."""
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(digest)).hexdigest()


# -- multipart/form-data, streamed -------------------------------------------------------------

def new_boundary() -> str:
    return "pvcblock" + os.urandom(12).hex()


def content_type(boundary: str) -> str:
    return f"multipart/form-data; boundary={boundary}"


def part_head(boundary: str, name: str) -> bytes:
    """The delimiter and headers before a part's body (as requests writes file parts)."""
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def encode_batch(boundary: str, records: Iterable[Record]) -> Iterator[bytes]:
    """The multipart body of one batch, piece by piece (no copy of the data)."""
    for index, record in enumerate(records):
        name = f"{DISCARD if record.is_discard else OBJECT}_{index}"
        yield part_head(boundary, name)
        yield HEADER.pack(record.offset, record.length)
        if record.data is not None:
            yield record.data
        yield b"\r\n"
    yield closing(boundary)


def boundary_of(content_type_header: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type_header or "")
    if not match or "multipart/form-data" not in content_type_header.lower():
        raise StreamError(f"expected a multipart/form-data body with a boundary, got Content-Type "
                          f"{content_type_header!r}")
    return match.group(1)


@dataclass
class MultipartReader:
    """An incremental multipart/form-data parser: feed() bytes as they arrive, get whole parts
    (name, body) back; each part is held in memory only until it is complete (≤ max_part)."""

    boundary: str
    max_part: int = MAX_PART
    _buf: bytearray = field(default_factory=bytearray)
    _state: str = "preamble"           # preamble -> headers -> body -> (headers|done)
    _name: str = ""
    _done: bool = False
    _from: int = 0                      # where the delimiter search resumes (no rescans)

    def __post_init__(self) -> None:
        self._first = b"--" + self.boundary.encode()
        self._delim = b"\r\n--" + self.boundary.encode()

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self._buf += chunk
        out: list[tuple[str, bytes]] = []
        while True:
            if self._state == "preamble":
                at = self._buf.find(self._first)
                if at < 0:
                    return out
                del self._buf[:at + len(self._first)]
                self._state = "after_delim"
            if self._state == "after_delim":
                if len(self._buf) < 2:
                    return out
                if self._buf[:2] == b"--":
                    self._done, self._state = True, "done"
                    self._buf.clear()
                    return out
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > 16384:
                        raise StreamError("multipart part headers longer than 16 KiB")
                    return out
                headers = bytes(self._buf[:end]).decode("latin-1")
                del self._buf[:end + 4]
                match = re.search(r'name="([^"]*)"', headers)
                if not match:
                    raise StreamError("multipart part without a name in its Content-Disposition")
                self._name, self._state = match.group(1), "body"
            if self._state == "body":
                at = self._buf.find(self._delim, self._from)
                if at < 0:
                    if len(self._buf) > self.max_part + len(self._delim):
                        raise StreamError(f"part {self._name}: larger than {self.max_part} bytes")
                    self._from = max(0, len(self._buf) - len(self._delim) + 1)
                    return out
                out.append((self._name, bytes(self._buf[:at])))
                del self._buf[:at + len(self._delim)]
                self._from = 0
                self._state = "after_delim"
            if self._state == "done":
                return out

    def finish(self) -> None:
        if not self._done:
            raise StreamError("multipart body ended before its closing boundary (interrupted upload)")


# -- resume bookkeeping ------------------------------------------------------------------------

@dataclass
class Progress:
    """What a receiver has acknowledged of one volume of one snapshot send."""

    mode: str = "incremental"          # "full" or "incremental"
    parent: str | None = None
    batches: int = 0                   # acknowledged batches
    chain: str = CHAIN_SEED            # the digest chain after them
    bytes: int = 0                     # data bytes written so far
    complete: bool = False             # the RBD snapshot exists (PATCH done)

    def doc(self) -> dict[str, Any]:
        return {"mode": self.mode, "parent": self.parent, "batches": self.batches, "chain": self.chain,
                "bytes": self.bytes, "complete": self.complete}

    @classmethod
    def from_doc(cls, doc: Any) -> Progress:
        if not isinstance(doc, dict):
            raise StreamError("progress document: not an object")
        try:
            progress = cls(mode=str(doc.get("mode", "incremental")), parent=doc.get("parent"),
                           batches=int(doc.get("batches", 0)), chain=str(doc.get("chain", CHAIN_SEED)),
                           bytes=int(doc.get("bytes", 0)), complete=bool(doc.get("complete", False)))
        except (TypeError, ValueError) as exc:
            raise StreamError(f"progress document: {exc}") from None
        if progress.batches < 0 or not re.fullmatch(r"[0-9a-f]{64}", progress.chain):
            raise StreamError("progress document: bad batch count or chain")
        return progress

    def acknowledge(self, digest: str, written: int) -> None:
        self.batches += 1
        self.chain = chain(self.chain, digest)
        self.bytes += written


def resume_point(remote: Progress | None, mode: str, parent: str | None, local_chain_at: Any) -> int:
    """How many batches to skip: the receiver's acknowledged count if it is the same kind of send
    (mode and parent) and our own chain over that many batches equals the receiver's; else 0
    (start again). `local_chain_at(n)` computes our chain after n batches (or None if we have
    fewer)."""
    if remote is None or remote.batches <= 0 or remote.complete:
        return 0
    if remote.mode != mode or (remote.parent or None) != (parent or None):
        return 0
    ours = local_chain_at(remote.batches)
    return remote.batches if ours == remote.chain else 0
