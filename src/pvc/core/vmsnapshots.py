"""VM snapshots, the pure part: the name rule, the name prefixes, the date string and the item view.

Upstream's name check meant `[a-z0-9._-]` but its character range `.`-`_` also let `/`, `@`, `:`
and upper case through; a name with `@` or `/` then broke every later `pool/volume@snap` parse.
Ours is explicit and names the rule when it refuses.

`xml_diff_lines` keeps upstream's wire shape (a unified diff with one line of context, from the
VM's current XML to the snapshot's), because upstream's receiver rebuilds a snapshot's XML by
applying it to the `xml` of the VM item. Both sides are diffed as the item shows XML (double
quotes swapped for single), so the hunks apply to exactly that text.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pvc.core.errors import InvalidInput

NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RE = re.compile(NAME_RULE)

AUTOBACKUP_PREFIX = "ab"
AUTOMIRROR_PREFIX = "am"
MIRROR_PREFIX = "mr"
LEGACY_BACKUP_PREFIX = "backup_"
# Names the system makes and relies on: a manual rename may neither take nor leave them.
RESERVED_PREFIXES = (AUTOBACKUP_PREFIX, AUTOMIRROR_PREFIX, MIRROR_PREFIX)

DIFF_CONTEXT = 1


def name_problem(name: Any) -> str | None:
    """Why `name` is not a valid VM snapshot name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "a snapshot name is required"
    for char, what in (("@", "'@'"), ("/", "'/'"), (":", "':'")):
        if char in name:
            return f"'{name}' may not contain {what} (names must match {NAME_RULE})"
    if len(name) > 64:
        return f"'{name[:40]}...' is too long ({len(name)} characters, at most 64)"
    if not NAME_RE.match(name):
        return (f"'{name}' is not a valid snapshot name: it must start with a letter or digit and "
                f"contain only letters, digits, '.', '_' and '-' (names must match {NAME_RULE})")
    return None


def check_name(name: Any, field: str = "snapshot_name") -> str:
    """The name, or InvalidInput naming the field and the rule."""
    problem = name_problem(name)
    if problem:
        raise InvalidInput(f"{field}: {problem}")
    return str(name)


def _system_prefix(name: str, prefixes: Sequence[str]) -> str | None:
    """The prefix of `prefixes` that `name` is made of followed only by digits (a datestring)."""
    return next((p for p in prefixes if name.startswith(p) and name[len(p):].isdigit()), None)


def reserved_prefix(name: str) -> str | None:
    """The system prefix (ab, am, mr) of a name the system makes: the prefix followed by a
    datestring (digits only), e.g. `ab20261206120000`. A manual name that merely begins with those
    letters ("about", "mrtg") is not reserved."""
    return _system_prefix(name, RESERVED_PREFIXES)


_ORIGIN_BY_PREFIX = {AUTOBACKUP_PREFIX: "autobackup", AUTOMIRROR_PREFIX: "automirror",
                     MIRROR_PREFIX: "mirror", LEGACY_BACKUP_PREFIX: "backup"}


def origin_of(name: str) -> str:
    """Who makes snapshots named like this: autobackup (`ab<digits>`), automirror (`am<digits>`),
    mirror (`mr<digits>`), backup (`backup_<digits>`), else manual."""
    prefix = _system_prefix(name, tuple(_ORIGIN_BY_PREFIX))
    return _ORIGIN_BY_PREFIX[prefix] if prefix else "manual"


def datestring(now: float | None = None) -> str:
    """Upstream's default snapshot name: the local time as YYYYMMDDHHMMSS."""
    return time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() if now is None else now))


def wire_xml(xml: str) -> str:
    """The XML as the VM item shows it (upstream swaps double quotes for single ones)."""
    return xml.replace('"', "'")


def xml_diff_lines(current_xml: str, snapshot_xml: str) -> list[str]:
    """Upstream's `xml_diff_lines`: unified diff, one line of context, current -> snapshot."""
    return list(difflib.unified_diff(wire_xml(current_xml).split("\n"), wire_xml(snapshot_xml).split("\n"),
                                     fromfile="current", tofile="snapshot", fromfiledate="",
                                     tofiledate="", n=DIFF_CONTEXT, lineterm=""))


def diff_counts(lines: Iterable[str]) -> tuple[int, int]:
    """(added, removed) lines of a unified diff, headers excluded (`pvc vm info`'s XML Changes)."""
    added = removed = 0
    for line in lines:
        if line.startswith(("+++", "---")):
            continue
        if line.startswith("+"):
            added += 1
        elif line.startswith("-"):
            removed += 1
    return added, removed


def snapshot_item(name: str, created: float, rbd_snapshots: Sequence[str], diff: Sequence[str],
                  now: float, consistency: str | None = None) -> dict[str, Any]:
    """One entry of a VM item's `snapshots` (upstream's shape; `timestamp` is text, as upstream),
    plus our `consistency` (fs-frozen, paused or crash) when given: an extra key upstream's clients
    ignore."""
    item: dict[str, Any] = {"name": name, "timestamp": str(int(created)), "age": max(0, int(now - created)),
                            "xml_diff_lines": list(diff), "rbd_snapshots": list(rbd_snapshots)}
    if consistency is not None:
        item["consistency"] = consistency
    return item


def newest_first(items: Iterable[Mapping[str, Any]], key: str = "created") -> list[Mapping[str, Any]]:
    """Newest first, then by name (two snapshots of the same second keep a stable order)."""
    return sorted(items, key=lambda i: (-float(i.get(key) or 0), str(i.get("name", ""))))
