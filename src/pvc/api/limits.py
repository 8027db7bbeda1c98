"""Request body caps for every route (an ASGI middleware): 413 above the route's cap.

A body declared larger than the cap (Content-Length) is refused before the application sees the
request; a streamed or chunked body is counted as it arrives and refused the moment it passes
the cap, before the route has parsed it, so nothing is changed. Most routes take
`api.max_body_size`; the disk image and OVA uploads, which stream to disk, take
`api.max_upload_size`; /login takes a few KiB (it is open to anyone); /restore takes what its
form field may hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pvc.core.errors import PVCError

LOGIN_MAX_BODY = 4096


class BodyTooLarge(PVCError):
    status = 413


def human(size: int) -> str:
    """1048576 -> '1 MiB'; sizes are shown the way the configuration usually gives them."""
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def too_large_message(cap: int, source: str) -> str:
    return f"Request body too large: this route accepts at most {human(cap)} ({cap} bytes, {source})."


@dataclass(frozen=True)
class Rule:
    path: re.Pattern[str]
    methods: frozenset[str]
    cap: int
    source: str          # what sets the cap, named in the refusal (a config key or 'fixed')


@dataclass
class BodyLimits:
    """The default cap and the per-route exceptions (filled in once the routes exist)."""

    default: int
    default_source: str = "api.max_body_size"
    rules: list[Rule] = field(default_factory=list)

    def add(self, path_regex: re.Pattern[str], methods: Iterable[str], cap: int, source: str) -> None:
        self.rules.append(Rule(path_regex, frozenset(methods), cap, source))

    def cap(self, path: str, method: str) -> tuple[int, str]:
        for rule in self.rules:
            if method in rule.methods and rule.path.match(path):
                return rule.cap, rule.source
        return self.default, self.default_source


async def _refuse(send: Send, text: str) -> None:
    body = json.dumps({"message": text}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        # The rest of the body is not read: end the connection instead of draining it.
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Counts request body bytes per request against its route's cap."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, source = self.limits.cap(scope["path"], scope["method"])
        message = too_large_message(cap, source)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0     # uvicorn refuses a malformed length itself
                if declared > cap:
                    await _refuse(send, message)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(message)
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(send, message)
