"""One-shot messages after an action that redirects (a form sent without JavaScript).

The message travels in a short-lived cookie signed with the session (HMAC keyed with the CSRF
subject), so another site, even a sibling subdomain that can plant cookies, cannot make the UI
show words of its choosing; it is shown once, escaped, and removed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from pvc.api.web.guard import CSRF_COOKIE, set_cookie_later

FLASH_COOKIE = "pvc_flash"
FLASH_AGE = 60
MAX_TEXT = 1000
KINDS = ("ok", "bad")


@dataclass(frozen=True)
class Flash:
    kind: str        # ok or bad
    text: str


def _key(request: Request, user: Any) -> bytes:
    subject = getattr(user, "session_id", None) or request.cookies.get(CSRF_COOKIE) or ""
    return hashlib.sha256(b"pvc-web-ui-flash-v1" + subject.encode()).digest()


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:32]


def put(request: Request, user: Any, kind: str, text: str) -> None:
    """Show `text` on the next page this browser loads."""
    payload = base64.urlsafe_b64encode(json.dumps(
        {"kind": kind if kind in KINDS else "bad", "text": text[:MAX_TEXT]}).encode()).decode()
    set_cookie_later(request, FLASH_COOKIE, f"{payload}.{_sign(_key(request, user), payload)}", FLASH_AGE)


def take(request: Request, user: Any) -> Flash | None:
    """The pending message (removed from the browser with this answer), if it is ours."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    set_cookie_later(request, FLASH_COOKIE, "", 0)
    payload, _, mac = raw.rpartition(".")
    if not payload or not hmac.compare_digest(mac, _sign(_key(request, user), payload)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        return Flash(str(data["kind"]) if data["kind"] in KINDS else "bad", str(data["text"])[:MAX_TEXT])
    except (ValueError, KeyError, TypeError):
        return None
