"""Output helpers shared by every command module: JSON, rich tables rendered to text, colours, units.

Formatters are pure: they take API data and return a string or a rich renderable; `render`
turns a renderable into text (with or without colour) so tests can compare plain strings.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.color import ColorSystem
from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from pvc.core.units import format_bytes

Formatter = Callable[[Any], RenderableType]

LABEL_STYLE = "bold magenta"
HEADER_STYLE = "bold"
WIDE = 1000  # when not writing to a terminal, never wrap table rows


# C0 controls but tab and newline, DEL and C1 controls: what a terminal acts on (ESC starts title,
# OSC 52 clipboard and cursor sequences; 0x9b is a one-byte CSI). Guest output (consoles, logs) and
# user-written text (names, descriptions, tags) reach the administrator's terminal only escaped (D14).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_LINES = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def escape_controls(text: str, newlines: bool = True) -> str:
    """text with each terminal control character shown as `\\xNN` (tab kept; newlines kept unless
    newlines=False, for one-line messages)."""
    pattern = _CONTROLS if newlines else _CONTROLS_AND_LINES
    return pattern.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def render(renderable: RenderableType, colour: bool = False, width: int | None = None) -> str:
    """Render to text; without colour the result is plain, so it is stable for scripts and tests.

    Every piece of data is escaped (`escape_controls`): only the colours rich adds reach the
    terminal as escape sequences, and no data is read as rich markup.
    """
    if isinstance(renderable, str):
        return escape_controls(renderable)
    console = Console(file=io.StringIO(), force_terminal=colour, no_color=not colour, color_system="standard"
                      if colour else None, width=width or WIDE, highlight=False, emoji=False,
                      markup=False, legacy_windows=False, soft_wrap=False)
    segments = console.render(renderable, console.options)
    lines = []
    for line in Segment.split_and_crop_lines(segments, console.width, pad=False):
        parts = []
        for text, style, control in line:
            if control:
                continue
            safe = escape_controls(text)
            parts.append(style.render(safe, color_system=ColorSystem.STANDARD) if colour and style else safe)
        lines.append("".join(parts).rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def to_json(data: Any, pretty: bool = False) -> str:
    return json.dumps(data, indent=2 if pretty else None, sort_keys=False, default=str)


def json_formatters() -> dict[str, Formatter]:
    return {"json": lambda d: to_json(d), "json-pretty": lambda d: to_json(d, pretty=True)}


def cell(value: Any, style: str = "") -> Text:
    """A table cell that never interprets markup in data (names may contain brackets), its control
    characters escaped before the table measures it."""
    return Text("" if value is None else escape_controls(str(value)), style=style)


def table(columns: Sequence[str | tuple[str, str]], rows: Iterable[Sequence[Any]],
          title: str | None = None) -> Table:
    """A borderless table in the style of the PVC CLI: bold header, columns two spaces apart.

    A column given as (name, "right") is right-aligned (numbers).
    """
    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style=HEADER_STYLE,
                 title=title, title_justify="left", title_style="bold")
    for column in columns:
        name, justify = column if isinstance(column, tuple) else (column, "left")
        grid.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        grid.add_row(*[value if isinstance(value, Text) else cell(value) for value in row])
    return grid


def key_values(items: Iterable[tuple[str, Any]]) -> Table:
    """`Label: value` lines with aligned values, for info views."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for label, value in items:
        if label == "" and value == "":
            grid.add_row("", "")
            continue
        grid.add_row(Text(f"{label}:", style=LABEL_STYLE),
                     value if isinstance(value, Text) else cell(value))
    return grid


def human_mib(mib: Any) -> str:
    """Memory from the API (MiB) in human units: 15.5G, 512M."""
    try:
        return format_bytes(int(mib) * 1024 * 1024)
    except (TypeError, ValueError):
        return str(mib)


# -- colours -----------------------------------------------------------------------------------------

def health_style(health: Any) -> str:
    if isinstance(health, bool) or not isinstance(health, int | float):
        return "blue"
    if health <= 50:
        return "red"
    if health <= 90:
        return "yellow"
    if health <= 100:
        return "green"
    return "blue"


def health_text(health: Any) -> str:
    return f"{health}%" if isinstance(health, int | float) and not isinstance(health, bool) else str(
        health if health is not None else "N/A")


DAEMON_STYLES = {"run": "green", "stop": "red", "shutdown": "yellow", "init": "yellow",
                 "dead": "bold red", "fenced": "red"}
COORDINATOR_STYLES = {"primary": "green", "secondary": "blue"}
DOMAIN_STYLES = {"ready": "green"}
TASK_STYLES = {"SUCCESS": "green", "FAILURE": "red", "CANCELLED": "yellow", "RUNNING": "cyan",
               "PENDING": "blue"}


def daemon_style(state: str) -> str:
    return DAEMON_STYLES.get(state, "blue")


def coordinator_style(state: str) -> str:
    return COORDINATOR_STYLES.get(state, "cyan")


def domain_style(state: str) -> str:
    return DOMAIN_STYLES.get(state, "blue")


def fence_summary(fencing: dict[str, Any]) -> Text:
    """One line: where the chain is and how it went."""
    phase = str(fencing.get("phase") or "")
    style = "green" if phase == "done" and fencing.get("fence") == "success" else \
        "yellow" if phase == "done" else "bold red"
    parts = [phase]
    if fencing.get("fence"):
        parts.append(f"fence {fencing['fence']}")
    if fencing.get("action"):
        parts.append(f"action {fencing['action']}")
    if fencing.get("recovered") is not None and phase == "done":
        parts.append(f"{fencing.get('recovered')} VM(s) recovered, {fencing.get('stranded') or 0} not")
    started = fencing.get("started")
    if started:
        parts.append(f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(started)))}")
    return Text(", ".join(parts), style=style)


def fence_events(events: list[dict[str, Any]], last: int | None = None) -> str:
    """Timestamped event lines, millisecond resolution (the chain takes seconds)."""
    shown = events[-last:] if last else events
    lines = []
    for event in shown:
        stamp = float(event.get("time") or 0)
        clock = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
        phase = f"{event['phase']}: " if event.get("phase") else ""
        lines.append(f"{clock} {phase}{event.get('message', '')}")
    return "\n".join(lines)
