"""Rendering UI templates: one Jinja2 environment with autoescape always on.

Everything a user or a guest wrote (names, descriptions, tags, fault messages, log lines) reaches
the page through `{{ }}` and is escaped; no template may mark text safe (tests/ui checks the
templates for `|safe` and `autoescape false`). Fragments (templates named `_*.html`) are rendered
the same way for a page and for its live updates (pvc.api.web.live), so both show the same markup.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pvc.api.web import flashes, nav
from pvc.web import STATIC, TEMPLATES

STATIC_PREFIX = "/static"

# State words and how they look: ok, warn, bad, busy (something is changing) or idle. The word
# itself is always shown; the class only adds colour and a glyph (never the only signal).
STATE_KINDS: dict[str, str] = {
    # daemon states
    "run": "ok", "init": "busy", "shutdown": "busy", "stop": "idle", "dead": "bad", "fenced": "bad",
    # domain states
    "ready": "ok", "flush": "busy", "unflush": "busy", "flushed": "idle", "fence-flush": "bad",
    # coordinator states
    "primary": "ok", "secondary": "idle", "client": "idle", "takeover": "busy", "relinquish": "busy",
    # VM states
    "start": "ok", "restart": "busy", "disable": "idle", "fail": "bad",
    "migrate": "busy", "migrate-live": "busy", "unmigrate": "busy", "provision": "busy", "mirror": "idle",
    # task states
    "PENDING": "idle", "RUNNING": "busy", "SUCCESS": "ok", "FAILURE": "bad", "CANCELLED": "warn",
    # fault status
    "new": "bad", "ack": "idle", "resolved": "ok",
    # OSDs
    "up": "ok", "down": "bad", "in": "ok", "out": "warn",
}
DASH = "\N{EN DASH}"                 # what an unknown figure shows
GLYPHS = {"ok": "\N{CHECK MARK}", "warn": "!", "bad": "\N{MULTIPLICATION X}",
          "busy": "\N{CLOCKWISE OPEN CIRCLE ARROW}", "idle": DASH}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def state_kind(state: Any) -> str:
    return STATE_KINDS.get(str(state), "idle")


def health_kind(health: Any) -> str:
    if not isinstance(health, int | float):
        return "idle"
    return "ok" if health >= 90 else "warn" if health >= 50 else "bad"


def visible(text: Any) -> str:
    """Control characters (terminal escapes in logs, guest output) shown as \\xNN, never acted on."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def mib(value: Any) -> str:
    """Memory in MiB (PVC's unit) as text: 512 MiB, 7.8 GiB, 1.5 TiB."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return DASH
    for unit, factor in (("TiB", 1024 * 1024), ("GiB", 1024)):
        if abs(size) >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size:.0f} MiB"


def kib(value: Any) -> str:
    """Disk sizes in KiB (Ceph's figures in /status) as text."""
    try:
        return mib(float(value) / 1024)
    except (TypeError, ValueError):
        return DASH


def bps(value: Any) -> str:
    """Bits per second as text: 800 b/s, 1.2 Mb/s, 9.4 Gb/s."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return DASH
    for unit, factor in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if rate >= factor:
            return f"{rate / factor:.1f} {unit}"
    return f"{rate:.0f} b/s"


def mbps(value: Any) -> str:
    """A link speed in Mb/s (what nodes report) as text: 1 Gb/s, 25 Gb/s; a dash when unknown."""
    try:
        speed = float(value)
    except (TypeError, ValueError):
        return DASH
    return DASH if speed <= 0 else bps(speed * 1e6).replace(".0 ", " ")


def pct(value: Any, digits: int = 1) -> str:
    try:
        return f"{float(value):.{digits}f}%"
    except (TypeError, ValueError):
        return DASH


def when(value: Any) -> str:
    """A UNIX time as local date and time; a dash for none."""
    try:
        stamp = float(value)
    except (TypeError, ValueError):
        return str(value) if value else DASH
    if stamp <= 0:
        return DASH
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def ratio(used: Any, total: Any) -> float:
    """used/total in percent (0 when total is 0), for <meter> elements."""
    try:
        return round(100 * float(used) / float(total), 1) if float(total) else 0.0
    except (TypeError, ValueError):
        return 0.0


@cache
def _static_versions() -> dict[str, str]:
    """Content hashes of the static files, appended to their URLs so browsers never run a stale one."""
    out = {}
    for path in STATIC.rglob("*"):
        if path.is_file():
            out[path.relative_to(STATIC).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return out


def static_url(name: str) -> str:
    version = _static_versions().get(name)
    if version is None:
        raise ValueError(f"static file not found: {name}")
    return f"{STATIC_PREFIX}/{name}?v={version}"


def htmx_config() -> str:
    """htmx's settings (a meta tag): no eval, no inline styles or scripts, same-origin requests only,
    no page copies in localStorage, and error answers swapped in (they carry the message)."""
    return json.dumps({
        "allowEval": False, "allowScriptTags": False, "includeIndicatorStyles": False,
        "selfRequestsOnly": True, "historyCacheSize": 0, "refreshOnHistoryMiss": True,
        "responseHandling": [{"code": "204", "swap": False}, {"code": "...", "swap": True}],
    }, separators=(",", ":"))


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.filters.update(mib=mib, kib=kib, bps=bps, mbps=mbps, pct=pct, when=when, visible=visible,
                       state_kind=state_kind, health_kind=health_kind)
    env.globals.update(static_url=static_url, glyphs=GLYPHS, ratio=ratio, htmx_config=htmx_config(),
                       nav_items=nav.NAV)
    return env


def fragment(name: str, context: Mapping[str, Any]) -> str:
    """A fragment template rendered alone (for live updates and htmx answers). Fragments render
    their forms without a CSRF field when `csrf` is None; the page script and htmx add the token."""
    return environment().get_template(name).render({"csrf": None, **context})


def page(request: Request, name: str, context: Mapping[str, Any], status: int = 200,
         user: Any = None, active: str = "", live: str | None = None,
         headers: dict[str, str] | None = None) -> HTMLResponse:
    """A whole page: `active` is the navigation key to highlight, `live` the SSE URL whose
    fragments update it (pvc.api.web.live)."""
    csrf = getattr(user, "csrf", None)
    flash = flashes.take(request, user)
    body = environment().get_template(name).render({
        "csrf": csrf, "logged_in": user is not None and getattr(user, "session_id", None) is not None,
        "show_nav": user is not None, "cluster_name": request.app.state.settings.cluster.name,
        "active": active, "live": live, "flash": flash, "path": request.url.path, **context,
    })
    return HTMLResponse(body, status_code=status, headers=headers)
