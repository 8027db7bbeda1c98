"""Security headers for UI answers, cookies asked for by UI code, and the API's cross-site rule.

An ASGI middleware (pure, so streamed answers such as the live updates pass through untouched):

- UI pages and static files (every path outside /api/) get a strict Content-Security-Policy (no
  inline script or style, nothing from other origins, no framing, no <base>, forms only to
  ourselves), nosniff, no framing, a same-origin referrer and opener policy; pages are not stored
  by caches, static files (their URLs carry a content hash) are.
- Cookies UI code asked for (guard.set_cookie_later) are set HttpOnly, SameSite=Strict, path /,
  Secure when pvcapid speaks TLS.
- The API: a browser request that changes something (not GET/HEAD/OPTIONS), that the browser
  marks as cross-site (Sec-Fetch-Site, Origin) and that carries no X-Api-Key (so it could only be
  authenticated by the session cookie the UI shares with the API) is refused with 403 before any
  route runs. Clients that are not browsers send neither header and are not affected.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pvc.api.auth import API_KEY_HEADER
from pvc.api.web.guard import SAFE_METHODS, cross_site_reason

API_PREFIX = "/api/"
STATIC_PREFIX = "/static/"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
UI_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)
PAGE_CACHE = "no-store"
STATIC_CACHE = "public, max-age=86400"


def is_ui_path(path: str) -> bool:
    return not (path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/"))


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> bytes:
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = "/"
    morsel["max-age"] = max_age
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    if secure:
        morsel["secure"] = True
    return morsel.OutputString().encode()


class UIHeadersMiddleware:
    def __init__(self, app: ASGIApp, secure_cookies: bool) -> None:
        self.app = app
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if not is_ui_path(path):
            refusal = self._api_cross_site(scope)
            if refusal is not None:
                await self._refuse(send, refusal)
                return
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in UI_HEADERS:
                    if name.lower().encode() not in names:
                        headers.append((name.lower().encode(), value.encode()))
                if b"cache-control" not in names:
                    cache = STATIC_CACHE if path.startswith(STATIC_PREFIX) and message["status"] == 200 \
                        else PAGE_CACHE
                    headers.append((b"cache-control", cache.encode()))
                for name, value, max_age in scope.get("state", {}).get("ui_cookies", []):
                    headers.append((b"set-cookie", cookie_header(name, value, max_age, self.secure_cookies)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _api_cross_site(scope: Scope) -> str | None:
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        request = Request(scope)
        if API_KEY_HEADER.lower() in (k.lower() for k in request.headers):
            return None
        reason = cross_site_reason(request)
        if reason is None:
            return None
        return (f"Refused {scope.get('method')} {scope.get('path')}: a cross-site browser request ({reason}) "
                f"without an {API_KEY_HEADER} header; the session cookie is accepted only from this site.")

    @staticmethod
    async def _refuse(send: Send, text: str) -> None:
        body = json.dumps({"message": text.replace('"', "'")}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
