"""Who may use a UI page, and the checks every UI action passes (docs/webui.md, "Security").

- **Sessions**: the UI uses the API's server-side sessions (pvc.api.sessions): the same cookie
  `POST /api/v1/login` sets, HttpOnly, SameSite=Strict, Secure under TLS. A page without a valid
  session sends the browser to /login; an action answers 401.
- **CSRF**: every UI request that is not GET/HEAD carries a token bound to the session:
  HMAC-SHA256 keyed with the session id (which never leaves the HttpOnly cookie), so it needs no
  storage, holds on every pvcapid (the primary moves) and dies with the session. It comes in the
  form field `csrf_token` or the header `X-CSRF-Token` (htmx and the page script send it).
  Before the token, the browser's own word is checked: `Sec-Fetch-Site` other than same-origin
  (or none) and an `Origin` other than this site are refused. Refusals are 403 naming the reason.
- **Before a session** (the login form) and **with authentication off**, the token is bound to a
  random `pvc_csrf` cookie instead (HttpOnly, SameSite=Strict): a double-submit token.

Every UI route is made with `ui_router()` (or `public_router()` for the login pages), whose
dependency runs these checks, so a new page cannot forget them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from pvc.api.auth import SESSION_COOKIE, Authenticator
from pvc.core.errors import PVCError

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_COOKIE = "pvc_csrf"            # pre-session subject of the CSRF token (login form, auth off)
CSRF_COOKIE_AGE = 12 * 3600
_CSRF_LABEL = b"pvc-web-ui-csrf-v1"
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")   # secrets.token_urlsafe(32), as session ids
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})   # "none": the user typed it or a bookmark
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class LoginRequired(PVCError):
    """No valid session: pages redirect to /login, actions answer 401."""

    status = 401


class Refused(PVCError):
    """A UI action refused by the CSRF or same-origin checks (403)."""

    status = 403


@dataclass(frozen=True)
class UIUser:
    """The browser behind a request: its session (None with authentication off) and CSRF token."""

    session_id: str | None
    csrf: str


def csrf_token(subject: str) -> str:
    """The CSRF token of a session id (or pre-session cookie): HMAC keyed with the subject."""
    digest = hmac.new(subject.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def own_origin(request: Request) -> str | None:
    """scheme://host[:port] of this site as the browser addressed it (None without a Host)."""
    host = request.headers.get("host")
    return f"{request.url.scheme}://{host}".lower() if host else None


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def cross_site_reason(request: Request) -> str | None:
    """Why the browser says this request comes from another site, or None when it does not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
        return f"the browser marked it as {_short(site)} (Sec-Fetch-Site), not same-origin"
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() != own_origin(request):
        return f"it comes from the origin {_short(origin)}, not {own_origin(request)}"
    return None


async def given_token(request: Request) -> str | None:
    """The CSRF token of a request: its header, else its form field."""
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in FORM_TYPES:
        return None
    form = await request.form()          # starlette keeps it: the route reads the same form
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


def check_same_site(request: Request) -> None:
    """Raise Refused when the browser says this request comes from another site."""
    reason = cross_site_reason(request)
    if reason is not None:
        raise Refused(f"Refused {request.method} {request.url.path}: a cross-site request ({reason}). "
                      "Actions are accepted only from this site's own pages.")


async def check_action(request: Request, expected: str) -> None:
    """Raise Refused unless this state-changing request comes from our own page."""
    check_same_site(request)
    given = await given_token(request)
    if not given or not hmac.compare_digest(given.encode(errors="surrogateescape"), expected.encode()):
        what = "missing" if not given else "not this session's"
        raise Refused(f"Refused {request.method} {request.url.path}: the form's CSRF token is {what}. "
                      "Reload the page and try again.")


def pre_session_subject(request: Request) -> str:
    """The `pvc_csrf` cookie's value, made (and set on the answer) when the browser has none."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if _SUBJECT_RE.match(value):
        return value
    cached = getattr(request.state, "csrf_subject", None)
    if cached:
        return str(cached)
    value = secrets.token_urlsafe(32)
    request.state.csrf_subject = value
    set_cookie_later(request, CSRF_COOKIE, value, CSRF_COOKIE_AGE)
    return value


def set_cookie_later(request: Request, name: str, value: str, max_age: int) -> None:
    """Ask the UI's header middleware to set a cookie on whatever answer this request gets
    (HttpOnly, SameSite=Strict, path /, Secure under TLS)."""
    cookies = getattr(request.state, "ui_cookies", None)
    if cookies is None:
        cookies = request.state.ui_cookies = []
    cookies.append((name, value, max_age))


async def ui_user(request: Request) -> UIUser:
    """Dependency: the logged-in browser of this request (LoginRequired when there is none).
    Checked once per request (the guard and the route share the answer)."""
    known = getattr(request.state, "ui_user", None)
    if isinstance(known, UIUser):
        return known
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        user = UIUser(None, csrf_token(pre_session_subject(request)))
    else:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id or not await run_in_threadpool(auth.session_valid, session_id):
            raise LoginRequired("Log in to use the PVC web UI: no valid session (it ended, expired or was "
                                "never opened).")
        user = UIUser(session_id, csrf_token(session_id))
    request.state.ui_user = user
    return user


async def _guard(request: Request) -> None:
    # A cross-site request is refused as such before anything else (it may well carry no session:
    # SameSite=Strict keeps the cookie home), then the session, then the token.
    if request.method not in SAFE_METHODS:
        check_same_site(request)
    user = await ui_user(request)
    if request.method not in SAFE_METHODS:
        await check_action(request, user.csrf)


async def _public_guard(request: Request) -> None:
    if request.method not in SAFE_METHODS:
        await check_action(request, csrf_token(pre_session_subject(request)))


def ui_router() -> APIRouter:
    """A router for UI pages and actions: a session is required, and every non-GET request
    passes the same-origin and CSRF checks. Every page of the UI is made with this."""
    return APIRouter(dependencies=[Depends(_guard)], include_in_schema=False,
                     default_response_class=HTMLResponse)


def public_router() -> APIRouter:
    """A router for the pages one sees before logging in (login): the same checks, with the
    token bound to the pre-session cookie."""
    return APIRouter(dependencies=[Depends(_public_guard)], include_in_schema=False,
                     default_response_class=HTMLResponse)


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target that stays on this site: a path like /nodes/hv1, never //host or a URL."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 or ord(c) == 127 for c in target) or target.startswith("/api/"):
        return default
    return target
