"""Exception handlers: every failure is a JSON `{"message": ...}` with the right status.

PVC clients read `message` from every error body, so FastAPI's `{"detail": ...}` and
starlette's plain-text answers are replaced. Bad input is never a 500: unknown routes are 404,
wrong methods 405, malformed values 400 (never FastAPI's 422), ZooKeeper outages 503.

The rule for 400s, as upstream: an argument the request parser cannot accept (missing, not one
of its choices, not of its type or range) is answered `{"message": {"<argument>": "<what is
wrong>"}}`, flask-restful's shape (`ArgumentError`); every refusal of the operation itself is
`{"message": "<text>"}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from kazoo.exceptions import NoNodeError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pvc.core.errors import InvalidInput, PVCError

log = logging.getLogger(__name__)

# Flask's wording, which upstream PVC clients have always seen.
HTTP_MESSAGES = {
    400: "The browser (or proxy) sent a request that this server could not understand.",
    404: "The requested URL was not found on the server.",
    405: "The method is not allowed for the requested URL.",
}


class ArgumentError(InvalidInput):
    """Arguments the request parser refused, by argument name: answered 400 with
    `{"message": {"<argument>": "<what is wrong>"}}` as upstream's flask-restful parser does."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {what}" for name, what in problems.items()))
        self.arguments = dict(problems)


def message(text: str, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """A PVC message response; upstream replaces double quotes with single ones in messages."""
    return JSONResponse({"message": str(text).replace('"', "'")}, status_code=status, headers=headers)


def argument_message(problems: dict[str, str], status: int = 400) -> JSONResponse:
    """`{"message": {"<argument>": "<what is wrong>"}}`, quotes replaced as in every message."""
    body = {name: str(what).replace('"', "'") for name, what in problems.items()}
    return JSONResponse({"message": body}, status_code=status)


async def _pvc_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PVCError)
    if exc.status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    if isinstance(exc, ArgumentError):
        return argument_message(exc.arguments, exc.status)
    return message(exc.message, exc.status)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own checks (path parameters, headers) are argument errors too."""
    assert isinstance(exc, RequestValidationError)
    problems: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part not in ("path", "query", "body", "header")]
        name = ".".join(loc) or "request"
        problems[name] = "; ".join(filter(None, (problems.get(name), str(error.get("msg", "invalid")))))
    return argument_message(problems or {"request": "invalid request"})


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this URL: every route of the path template that matches it,
    a literal path before a templated one (starlette names only the first matching route, but
    each method is its own route here; `/tasks/selftest` and `/vm/autobackup` are resources of
    their own even though `/tasks/{task_id}` and `/vm/{vm}` match them too)."""
    path = request.scope.get("path", "")
    matching: list[tuple[str, set[str]]] = []
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is None or not route.methods or not regex.match(path):
            continue
        matching.append((route.path_format, set(route.methods)))
    if not matching:
        return []
    literal = [fmt for fmt, _ in matching if "{" not in fmt]
    template = literal[0] if literal else matching[0][0]
    return sorted(set().union(*(methods for fmt, methods in matching if fmt == template)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) and exc.status_code == 400 else None
    text = detail or HTTP_MESSAGES.get(exc.status_code) or str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
        headers["Allow"] = ", ".join(allowed_methods(request))
    return message(text, exc.status_code, headers=headers)


async def _no_node(_request: Request, exc: Exception) -> JSONResponse:
    # An object vanished between two reads of one request (a concurrent delete).
    return message(f"Not found: {exc}", 404)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return message("Internal server error; see the pvcapid log.", 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(PVCError, _pvc_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(NoNodeError, _no_node)
    app.add_exception_handler(Exception, _unexpected)
