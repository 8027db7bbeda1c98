"""The API root and session login/logout: open without authentication by design.

/login takes the token from the `X-Api-Key` header or the form field `token` (upstream's form),
never from the URL (URLs end up in logs and browser histories). Its body is capped at a few KiB
before it is parsed (limits.py) and failed logins are rate-limited per client address. A valid
token opens a server-side session (sessions.py); the cookie holds only the session's random id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response

from pvc.api.auth import API_KEY_HEADER, SESSION_COOKIE, Authenticator, TooManyAttempts, Unauthorized
from pvc.api.common import DESCRIPTIONS, PREFIX, responses
from pvc.api.errors import ArgumentError, message
from pvc.api.limits import LOGIN_MAX_BODY
from pvc.api.models import Message
from pvc.core.errors import InvalidInput

router = APIRouter(tags=["root"])

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
TOKEN_IN_URL = ("token: refused in the URL (URLs are logged); send the token in the X-Api-Key header "
                "or the form body, not the URL")
MESSAGE_REF = {"$ref": "#/components/schemas/Message"}
_TOKEN_FORM = {"schema": {"type": "object", "properties": {"token": {
    "type": "string", "description": "An API token (api.token[] or api.token_file); or send it in the "
                                     "X-Api-Key header instead"}}}}
LOGIN_DOC: dict[str, Any] = {
    "requestBody": {"required": False, "content": {t: _TOKEN_FORM for t in FORM_TYPES}},
}
LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **responses(Message, 200, 401),
    400: {"description": f"{DESCRIPTIONS[400]}; also a token given in the query string",
          "model": Message},
    413: {"description": f"The body is larger than {LOGIN_MAX_BODY} bytes; nothing was parsed",
          "model": Message},
    429: {"description": "Too many failed logins from this address; retry after Retry-After seconds",
          "model": Message,
          "headers": {"Retry-After": {"description": "Seconds until a login is accepted again",
                                      "schema": {"type": "integer"}}}},
}


@router.get("/", summary="Return the PVC API version string", responses=responses())
async def api_root() -> JSONResponse:
    return message("PVC API version 1.0")


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


async def _form_token(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in FORM_TYPES:
        return None
    # A malformed body makes starlette raise HTTPException(400), answered as JSON by errors.py.
    async with request.form(max_files=0, max_fields=16, max_part_size=LOGIN_MAX_BODY) as form:
        value = form.get("token")
    if value is not None and not isinstance(value, str):
        raise ArgumentError({"token": "must be text, not a file"})
    return value


@router.post("/login", summary="Log in with an API token; sets a session cookie (a random id)",
             description="The token comes from the X-Api-Key header or the form field `token`; a token in "
                         "the URL is refused. Failed logins are limited per client address.",
             responses=LOGIN_RESPONSES, openapi_extra=LOGIN_DOC)
async def login(request: Request) -> Response:
    auth = _auth(request)
    if not auth.enabled:
        return RedirectResponse(f"{PREFIX}/", status_code=302)
    if "token" in request.query_params:
        raise InvalidInput(TOKEN_IN_URL)
    client = request.client.host if request.client else "unknown"
    try:
        auth.limiter.check(client)
    except TooManyAttempts as exc:
        return message(exc.message, 429, headers={"Retry-After": str(exc.retry_after)})
    token = request.headers.get(API_KEY_HEADER)
    if token is None:
        token = await _form_token(request)
    if token is None:
        raise ArgumentError({"token": "required (give it in the X-Api-Key header or as the form field "
                                      "token)"})
    if not auth.token_valid(token):
        auth.limiter.failed(client)
        raise Unauthorized("Authentication failed: the token is not valid.")
    session_id = await run_in_threadpool(auth.open_session, token)
    # A new login replaces the session this client had (no session id outlives a re-login).
    await run_in_threadpool(auth.close_session, request.cookies.get(SESSION_COOKIE))
    response = message("Authentication successful")
    response.set_cookie(SESSION_COOKIE, session_id, max_age=auth.session_lifetime, path="/",
                        httponly=True, samesite="strict", secure=auth.secure_cookie)
    return response


@router.post("/logout", summary="End the session made by /login (revoked at once)", responses=responses())
async def logout(request: Request) -> Response:
    auth = _auth(request)
    if not auth.enabled:
        return RedirectResponse(f"{PREFIX}/", status_code=302)
    await run_in_threadpool(auth.close_session, request.cookies.get(SESSION_COOKIE))
    response = message("Deauthentication successful")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=auth.secure_cookie)
    return response
