"""Snapshot XML as upstream ships it: a unified diff (1 line of context) from the VM's current XML
to the snapshot's XML, as a list of lines (`xml_diff_lines` in a VM item's `snapshots`).

A receiving cluster rebuilds the snapshot's XML by applying that diff to the sender's current XML.
Upstream applies hunks by line number, which breaks as soon as the two serializations differ by a
line (issue #15, 1.4.20). Here each hunk is looked up by its context and removed lines, first at
the stated line, then nearby, then anywhere, with a tolerant comparison (surrounding whitespace
and quote style); a hunk that matches nowhere, or matches in two places equally well, is refused
with a PatchError naming the hunk. Nothing is guessed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ValueError):
    """The diff is malformed or does not apply to the given XML; the message says which hunk."""


@dataclass
class Hunk:
    header: str
    old_start: int                     # 1-based, as in the header
    old: list[str] = field(default_factory=list)    # context and removed lines, in order
    new: list[str] = field(default_factory=list)    # context and added lines, in order


def make_diff(current_xml: str, snapshot_xml: str) -> list[str]:
    """Upstream's `xml_diff_lines`: current -> snapshot, 1 line of context, no line terminators."""
    return list(difflib.unified_diff(current_xml.split("\n"), snapshot_xml.split("\n"),
                                     fromfile="current", tofile="snapshot", fromfiledate="",
                                     tofiledate="", n=1, lineterm=""))


def parse(diff_lines: Sequence[str] | str) -> list[Hunk]:
    """The hunks of a unified diff (a list of lines or one text); PatchError if malformed."""
    lines = diff_lines.split("\n") if isinstance(diff_lines, str) else list(diff_lines)
    hunks: list[Hunk] = []
    current: Hunk | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if current is None and (line.startswith("--- ") or line.startswith("+++ ") or not line.strip()):
            continue
        match = _HUNK.match(line)
        if match:
            current = Hunk(header=line, old_start=int(match.group(1)))
            hunks.append(current)
            continue
        if current is None:
            raise PatchError(f"xml diff line {number}: expected a hunk header (@@ -a,b +c,d @@), "
                             f"found {line[:60]!r}")
        if line.startswith("\\"):          # "\ No newline at end of file"
            continue
        tag, text = (line[:1], line[1:]) if line else (" ", "")
        if tag == " ":
            current.old.append(text)
            current.new.append(text)
        elif tag == "-":
            current.old.append(text)
        elif tag == "+":
            current.new.append(text)
        elif line.startswith("--- ") or line.startswith("+++ "):
            continue                      # a second file header: upstream never writes one
        else:
            raise PatchError(f"xml diff line {number}: unknown line kind {tag!r} in hunk "
                             f"{current.header!r}")
    return hunks


def _norm(line: str) -> str:
    """The tolerant form of a line: surrounding whitespace dropped, one quote style."""
    return line.strip().replace("'", '"')


def _matches(lines: list[str], at: int, want: list[str], exact: bool) -> bool:
    if at < 0 or at + len(want) > len(lines):
        return False
    if exact:
        return lines[at:at + len(want)] == want
    return all(_norm(a) == _norm(b) for a, b in zip(lines[at:at + len(want)], want, strict=True))


def _locate(lines: list[str], hunk: Hunk, expected: int, floor: int) -> int:
    """Where the hunk's old lines start (0-based), at or after `floor`."""
    if not hunk.old:                       # a pure insertion: trust the line number
        return max(floor, min(expected + 1 if hunk.old_start else 0, len(lines)))
    for exact in (True, False):
        if expected >= floor and _matches(lines, expected, hunk.old, exact):
            return expected
        for distance in range(1, 51):      # nearby first: serializations drift by a few lines
            for at in (expected - distance, expected + distance):
                if at >= floor and _matches(lines, at, hunk.old, exact):
                    return at
        found = [at for at in range(floor, len(lines) - len(hunk.old) + 1)
                 if _matches(lines, at, hunk.old, exact)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise PatchError(f"xml diff hunk {hunk.header!r} matches the XML in {len(found)} places "
                             f"(lines {', '.join(str(f + 1) for f in found[:5])}); refusing to guess")
    raise PatchError(f"xml diff hunk {hunk.header!r} does not apply: its lines "
                     f"{hunk.old[0].strip()[:60]!r}... are not in the VM's current XML")


def apply(current_xml: str, diff_lines: Sequence[str] | str) -> str:
    """The snapshot XML: `diff_lines` (current -> snapshot) applied to `current_xml`.

    An empty diff means the snapshot's XML is the current XML."""
    hunks = parse(diff_lines)
    lines = current_xml.split("\n")
    out: list[str] = []
    position = 0                           # next line of `lines` not yet copied
    shift = 0                              # how far the found hunks sit from their stated lines
    for hunk in hunks:
        expected = hunk.old_start - 1 + shift if hunk.old else hunk.old_start + shift - 1
        at = _locate(lines, hunk, expected, position)
        shift = at - (hunk.old_start - 1)
        out.extend(lines[position:at])
        out.extend(hunk.new)
        position = at + len(hunk.old)
    out.extend(lines[position:])
    return "\n".join(out)
