"""Prometheus text exposition (format 0.0.4), the pieces PVC's renderers share.

Label values are escaped and numbers formatted exactly as prometheus_client's own writer does
(its `floatToGoString`), so what we write parses with `prometheus_client.parser` and Prometheus.
The per-VM families are written with these helpers rather than through prometheus_client's
Metric objects: at 1,000 VMs that is ~50,000 samples, which its generic writer renders in
~150 ms, and the cache (cache.py) re-renders only the VMs that changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Family:
    """One metric family: the sample name the dashboards query, its TYPE and HELP."""

    name: str
    help: str
    type: str = "gauge"

    def header(self) -> str:
        return f"# HELP {self.name} {escape_help(self.help)}\n# TYPE {self.name} {self.type}\n"


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def escape(value: Any) -> str:
    """A label value, escaped: backslash, double quote and newline (the format's three)."""
    text = "" if value is None else str(value)
    if "\\" in text or '"' in text or "\n" in text:
        text = text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return text


def number(value: Any) -> float:
    """A sample value from whatever a document holds: numbers, numeric text, bools; else 0.

    Never raises: one odd field must not take down a scrape."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value) if not (isinstance(value, float) and math.isnan(value)) else 0.0
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return 0.0


def fmt(value: Any) -> str:
    """The sample value as prometheus_client writes it (ints without '.0', +Inf, NaN)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return floatToGoString(number(value))


def labels(**pairs: Any) -> str:
    """`{a="x",b="y"}` with escaped values (empty string for no labels)."""
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}"


def sample(name: str, value: Any, **pairs: Any) -> str:
    return f"{name}{labels(**pairs)} {fmt(value)}\n"


def ratio(part: float, whole: float) -> float:
    """part / whole * 100, or 0 when whole is 0 or less (one node, no OSDs, unknown speeds)."""
    return part / whole * 100.0 if whole > 0 else 0.0


def block(family: Family, lines: Iterable[str]) -> str:
    """HELP, TYPE and the samples of one family (a family with no samples keeps its header)."""
    return family.header() + "".join(lines)
