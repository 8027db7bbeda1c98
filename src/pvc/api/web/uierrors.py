"""Errors on UI paths answer HTML; the API's JSON handlers stay as they are for /api/.

Each of the API's exception handlers is wrapped: on a UI path, a page that needs a session
redirects to /login (htmx gets `HX-Redirect`), an htmx action gets its message as a fragment for
the page's message area, and anything else gets an error page with the status and the message.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from kazoo.exceptions import NoNodeError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pvc.api.web import render
from pvc.api.web.guard import LoginRequired
from pvc.api.web.headers import is_ui_path
from pvc.core.errors import PVCError

log = logging.getLogger(__name__)

Handler = Callable[[Request, Exception], Awaitable[Response]]
TITLES = {400: "Bad request", 401: "Log in required", 403: "Refused", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Too large", 429: "Too many attempts",
          500: "Internal error", 503: "Cluster unavailable"}
NOT_FOUND = "There is no page at this address."


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def status_and_text(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, PVCError):
        return exc.status, exc.message
    if isinstance(exc, StarletteHTTPException):
        text = NOT_FOUND if exc.status_code == 404 else str(exc.detail)
        return exc.status_code, text
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(".".join(str(p) for p in e.get("loc", ())) + ": " + str(e.get("msg"))
                             for e in exc.errors())
        return 400, f"Bad input: {problems}"
    if isinstance(exc, NoNodeError):
        return 404, "Not found: the object went away while the page was being made."
    return 500, "Internal error; see the pvcapid log."


def ui_error(request: Request, exc: Exception) -> Response:
    status, text = status_and_text(exc)
    if status >= 500 and not isinstance(exc, PVCError):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = "/login?" + urllib.parse.urlencode({"next": target})
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": login})
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(login, status_code=303)
    if is_htmx(request):
        return HTMLResponse(render.fragment("_flash.html", {"flash": {"kind": "bad", "text": text}}),
                            status_code=status)
    headers: dict[str, str] = {}
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "allow"}
    return render.page(request, "error.html", {"status": status, "title": TITLES.get(status, "Error"),
                                               "message": text}, status=status, headers=headers)


def _wrap(original: Any) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if is_ui_path(request.url.path):
            return ui_error(request, exc)
        return await original(request, exc)

    return handler


def install(app: FastAPI) -> None:
    """Wrap the handlers errors.install registered (call after it)."""
    for exc_class in (PVCError, RequestValidationError, StarletteHTTPException, NoNodeError, Exception):
        original = app.exception_handlers.get(exc_class)
        if original is not None:
            app.add_exception_handler(exc_class, _wrap(original))
