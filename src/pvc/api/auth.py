"""Authentication (pvc-facts §8.2): an `X-Api-Key` header or a signed session cookie.

When `api.authentication.enabled` is false everything is open. Otherwise a request passes with a
session made by `POST /login`, or with an `X-Api-Key` equal to one of `api.token[].token`.
The session stores a digest of the token that logged in, not the token itself, and is checked
against the configured tokens on every request, so removing a token from the configuration also
ends the sessions it opened (upstream accepted any session forever).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from fastapi import Request

from pvc.core.config import ApiSettings
from pvc.core.errors import PVCError

log = logging.getLogger(__name__)

SESSION_KEY = "token"
SESSION_COOKIE = "session"
API_KEY_HEADER = "X-Api-Key"
REQUIRED = "X-Api-Key Authentication required."
FAILED = "X-Api-Key Authentication failed."


class Unauthorized(PVCError):
    status = 401


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """The configured tokens and the checks against them."""

    def __init__(self, api: ApiSettings) -> None:
        self.enabled = api.authentication.enabled
        self._tokens = [t.token.encode() for t in api.token]
        self._digests = [_digest(t.token).encode() for t in api.token]
        self.secret_key = api.authentication.secret_key
        if self.enabled and not self.secret_key:
            # Sessions then last only as long as this process; tokens keep working.
            log.warning("api.authentication.secret_key is empty; using a random one for sessions")
            self.secret_key = secrets.token_hex(32)

    @staticmethod
    def _any(candidate: bytes, known: list[bytes]) -> bool:
        # Compare against every entry so the time taken does not tell which one matched.
        found = False
        for entry in known:
            found |= hmac.compare_digest(candidate, entry)
        return found

    def token_valid(self, token: str) -> bool:
        return self._any(token.encode(errors="surrogateescape"), self._tokens)

    def session_valid(self, value: object) -> bool:
        return isinstance(value, str) and self._any(value.encode(errors="surrogateescape"), self._digests)

    def open_session(self, request: Request, token: str) -> None:
        request.session[SESSION_KEY] = _digest(token)

    @staticmethod
    def close_session(request: Request) -> None:
        if "session" in request.scope:
            request.session.clear()

    def check(self, request: Request) -> None:
        if not self.enabled:
            return
        session = request.scope.get("session")
        if session and self.session_valid(session.get(SESSION_KEY)):
            return
        key = request.headers.get(API_KEY_HEADER)
        if key is None:
            raise Unauthorized(REQUIRED)
        if not self.token_valid(key):
            raise Unauthorized(FAILED)


async def require_auth(request: Request) -> None:
    """Router dependency for every route that is not open by design."""
    authenticator: Authenticator = request.app.state.auth
    authenticator.check(request)
