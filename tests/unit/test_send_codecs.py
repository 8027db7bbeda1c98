"""Send/receive codecs: upstream's multipart framing, our discard records and digest chain, resume
bookkeeping, and the snapshot XML patch in upstream's diff format."""

from __future__ import annotations

import difflib
import struct

import pytest

from pvc.core import blockstream as bs
from pvc.core import xmlpatch


def test_part_is_upstreams_layout() -> None:
    data = b"abc" * 10
    raw = bs.encode_part(4 << 20, data)
    assert raw[:16] == struct.pack(">QQ", 4 << 20, 30)
    record = bs.decode_part("object_3", raw)
    assert (record.offset, record.length, record.data) == (4 << 20, 30, data)
    assert bs.part_index("object_3") == 3


def test_discard_part_and_errors() -> None:
    record = bs.decode_part("discard_0", bs.encode_discard(8192, 4096))
    assert record.is_discard and record.length == 4096
    with pytest.raises(bs.StreamError, match="shorter than its 16-byte header"):
        bs.decode_part("object_0", b"123")
    with pytest.raises(bs.StreamError, match="header says 10 bytes"):
        bs.decode_part("object_0", struct.pack(">QQ", 0, 10) + b"12")
    with pytest.raises(bs.StreamError, match="expected object_<i>"):
        bs.part_index("file_1")


def _body(boundary: str, records: list[bs.Record]) -> bytes:
    return b"".join(bs.encode_batch(boundary, records))


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_multipart_round_trip_any_chunking(step: int) -> None:
    records = [bs.Record(0, 5, b"hello"), bs.Record(4096, 100, None),
               bs.Record(1 << 22, 3, b"\r\n-")]
    body = _body("B0undary", records)
    reader = bs.MultipartReader("B0undary")
    parts = []
    for at in range(0, len(body), step):
        parts += reader.feed(body[at:at + step])
    reader.finish()
    got = [bs.decode_part(name, raw) for name, raw in parts]
    assert got == records
    assert [name for name, _ in parts] == ["object_0", "discard_1", "object_2"]


def test_multipart_like_requests_writes_it() -> None:
    """The body requests' `files=` produces (what an upstream sender PUTs) parses."""
    pytest.importorskip("requests")
    import requests

    files = {f"object_{i}": (f"object_{i}", bs.encode_part(i * 4096, bytes([i]) * 10),
                             "application/octet-stream") for i in range(3)}
    prepared = requests.Request("PUT", "http://x/", files=files).prepare()
    reader = bs.MultipartReader(bs.boundary_of(prepared.headers["Content-Type"]))
    parts = reader.feed(prepared.body)
    reader.finish()
    assert [bs.decode_part(n, b).offset for n, b in parts] == [0, 4096, 8192]


def test_interrupted_body_is_refused() -> None:
    body = _body("b", [bs.Record(0, 5, b"hello")])
    reader = bs.MultipartReader("b")
    reader.feed(body[:-10])
    with pytest.raises(bs.StreamError, match="interrupted"):
        reader.finish()


def test_batches_are_deterministic_and_split_at_objects() -> None:
    extents = [bs.Extent(0, 10 << 20), bs.Extent(12 << 20, 1 << 20, exists=False)]
    pieces = list(bs.split(extents))
    assert [(e.offset, e.length) for e in pieces] == [(0, 4 << 20), (4 << 20, 4 << 20), (8 << 20, 2 << 20),
                                                      (12 << 20, 1 << 20)]
    assert list(bs.batches(extents, parts=2)) == list(bs.batches(extents, parts=2))
    assert sum(len(b) for b in bs.batches(extents, parts=2, discards=False)) == 3


def test_chain_and_resume_point() -> None:
    batches = [[bs.Record(0, 1, b"a")], [bs.Record(1, 1, b"b")], [bs.Record(2, 5, None)]]
    chains = [bs.CHAIN_SEED]
    for batch in batches:
        chains.append(bs.chain(chains[-1], bs.batch_digest(batch)))
    remote = bs.Progress(mode="full", batches=2, chain=chains[2])
    assert bs.resume_point(remote, "full", None, lambda n: chains[n]) == 2
    assert bs.resume_point(remote, "incremental", None, lambda n: chains[n]) == 0     # other kind
    assert bs.resume_point(remote, "full", None, lambda n: chains[1]) == 0            # diverged
    assert bs.resume_point(None, "full", None, lambda n: chains[n]) == 0
    doc = remote.doc()
    assert bs.Progress.from_doc(doc) == remote
    with pytest.raises(bs.StreamError):
        bs.Progress.from_doc({"batches": 1, "chain": "xyz"})


def test_is_zero() -> None:
    assert bs.is_zero(bytes(4 << 20))
    assert not bs.is_zero(bytes(4095) + b"\1")


XML = """<domain type='kvm'>
  <name>web1</name>
  <uuid>1c0c9c2e-1111-2222-3333-444455556666</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <devices>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='vms/web1_sda'/>
      <target dev='sda' bus='scsi'/>
    </disk>
  </devices>
</domain>"""


def _variants() -> list[str]:
    more = XML.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>")
    disk2 = XML.replace("    </disk>\n", "    </disk>\n    <disk type='network' device='disk'>\n"
                        "      <source protocol='rbd' name='vms/web1_sdb'/>\n    </disk>\n")
    fewer = XML.replace("  <memory unit='MiB'>1024</memory>\n", "")
    return [XML, more, disk2, fewer, more.replace("web1", "web2")]


@pytest.mark.parametrize("snapshot", _variants())
@pytest.mark.parametrize("current", _variants())
def test_patch_round_trips_in_upstreams_format(current: str, snapshot: str) -> None:
    lines = xmlpatch.make_diff(current, snapshot)
    # exactly what upstream's listing writes: difflib, n=1, fromfile current, tofile snapshot
    assert lines == list(difflib.unified_diff(current.split("\n"), snapshot.split("\n"), fromfile="current",
                                              tofile="snapshot", fromfiledate="", tofiledate="", n=1,
                                              lineterm=""))
    assert xmlpatch.apply(current, lines) == snapshot


def test_patch_tolerates_drift_and_quote_style() -> None:
    snapshot = XML.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>")
    lines = xmlpatch.make_diff(XML, snapshot)
    drifted = XML.replace("<domain type='kvm'>", "<domain type='kvm'>\n  <!-- x -->\n  <title>t</title>")
    assert "<vcpu>4</vcpu>" in xmlpatch.apply(drifted, lines)
    quoted = XML.replace("'", '"')
    assert "<vcpu>4</vcpu>" in xmlpatch.apply(quoted, lines)


def test_patch_refuses_what_does_not_apply() -> None:
    lines = xmlpatch.make_diff(XML, XML.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>"))
    other = XML.replace("<memory unit='MiB'>1024</memory>", "<memory unit='MiB'>2048</memory>")
    with pytest.raises(xmlpatch.PatchError, match="does not apply"):
        xmlpatch.apply(other, lines)
    with pytest.raises(xmlpatch.PatchError, match="hunk header"):
        xmlpatch.apply(XML, ["garbage"])
    assert xmlpatch.apply(XML, []) == XML
