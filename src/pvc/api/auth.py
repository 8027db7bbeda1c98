"""Authentication (pvc-facts §8.2): an `X-Api-Key` header or a server-side session cookie.

Authentication is on by default. When it is off everything is open (pvcapid then refuses to
listen beyond loopback unless `api.authentication.allow_insecure_listen` says so). Otherwise a
request passes with a session made by `POST /login` (see sessions.py: the cookie is a random
id, ZooKeeper holds the session) or with an `X-Api-Key` equal to one of the configured tokens.
The tokens are `api.token[].token`, or, when none is configured, the lines of `api.token_file`,
which pvcapid creates (mode 0600, a random token) when it does not exist.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import re
import secrets
import threading
import time
import urllib.parse
from pathlib import Path

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from pvc.api.sessions import SessionStore
from pvc.core.config import API_TOKEN_MIN_LENGTH, ApiSettings, ApiToken
from pvc.core.errors import ConfigError, PVCError
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

SESSION_COOKIE = "session"
API_KEY_HEADER = "X-Api-Key"
REQUIRED = "X-Api-Key Authentication required."
FAILED = "X-Api-Key Authentication failed."
GENERATED_TOKEN_BYTES = 32          # secrets.token_urlsafe(32): 43 characters, 256 bits
LOGIN_FAILURES = 10                 # failed logins per client address...
LOGIN_WINDOW = 60.0                 # ...within this many seconds, then 429 until the window passes
LIMITER_MAX_CLIENTS = 10000         # addresses remembered at once (the oldest are forgotten)


# Query-string parameters whose values never reach a log line, even when a client sends them.
SECRET_NAMES = frozenset({"token", "api_key", "apikey", "x-api-key", "password", "secret",
                          "destination_api_key"})
_QUERY_PAIR = re.compile(r"([?&])([^=&#\s]*)=([^&#\s]*)")


def redact_url(text: str) -> str:
    """`/login?token=abc&x=1` -> `/login?token=REDACTED&x=1` (names compared decoded)."""
    def one(match: re.Match[str]) -> str:
        name = urllib.parse.unquote_plus(match.group(2)).lower()
        return f"{match.group(1)}{match.group(2)}=REDACTED" if name in SECRET_NAMES else match.group(0)

    return _QUERY_PAIR.sub(one, text)


class _RedactAccessLog(logging.Filter):
    """uvicorn's access log line carries the path with its query string (args[2])."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_url(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install the filter once on uvicorn's access logger."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactAccessLog) for f in access.filters):
        access.addFilter(_RedactAccessLog())


class Unauthorized(PVCError):
    status = 401


class TooManyAttempts(PVCError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def read_token_file(path: str, generate: bool = True) -> list[ApiToken]:
    """The tokens of a token file (one a line, '#' comments); generated when missing.

    Raises ConfigError naming the file (never a token) when it cannot be read, is empty or holds
    a token shorter than the minimum."""
    file = Path(path)
    if generate and not file.exists():
        _generate_token_file(file)
    try:
        text = file.read_text()
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"api.token_file {path}: cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        log.warning("api.token_file %s is readable by others than its owner (mode %o); "
                    "make it 0600", path, mode & 0o777)
    tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not tokens:
        raise ConfigError(f"api.token_file {path}: holds no token")
    for number, token in enumerate(tokens, 1):
        if len(token) < API_TOKEN_MIN_LENGTH:
            raise ConfigError(f"api.token_file {path}: token {number} is shorter than "
                              f"{API_TOKEN_MIN_LENGTH} characters")
    return [ApiToken(description=f"{file.name} #{n}", token=t) for n, t in enumerate(tokens, 1)]


def _generate_token_file(file: Path) -> None:
    """Create the file with one random token, root-only; log only its path."""
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return   # another process made it first: read theirs
    except OSError as exc:
        raise ConfigError(f"api.token_file {file}: cannot create it: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secrets.token_urlsafe(GENERATED_TOKEN_BYTES) + "\n")
    log.warning("generated a new API token in %s (mode 0600); copy this file to every coordinator "
                "so the token stays the same when the primary moves", file)


def configured_tokens(api: ApiSettings) -> list[ApiToken]:
    """The tokens pvcapid accepts: `api.token`, else the token file (created when missing)."""
    if api.token:
        return list(api.token)
    return read_token_file(api.token_file)


class LoginLimiter:
    """Failed logins per client address in a sliding window, in this process's memory."""

    def __init__(self, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW,
                 max_clients: int = LIMITER_MAX_CLIENTS) -> None:
        self.failures, self.window, self.max_clients = failures, window, max_clients
        self._seen: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> collections.deque[float] | None:
        times = self._seen.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[client]
            return None
        return times

    def check(self, client: str) -> None:
        """Raise TooManyAttempts while `client` is over its limit."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if times is not None and len(times) >= self.failures:
                retry = max(1, int(times[0] + self.window - now) + 1)
                raise TooManyAttempts(f"Too many failed logins from {client}: at most {self.failures} "
                                      f"in {int(self.window)} s; try again in {retry} s.", retry)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if times is None:
                times = self._seen[client] = collections.deque(maxlen=self.failures)
            times.append(now)
            self._seen.move_to_end(client)
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)


class Authenticator:
    """The accepted tokens, the session store and the checks against them."""

    def __init__(self, api: ApiSettings, zk: ZK) -> None:
        self.enabled = api.authentication.enabled
        self.secure_cookie = api.ssl.enabled
        self.session_lifetime = api.authentication.session_lifetime
        self._tokens = configured_tokens(api) if self.enabled else []
        self._encoded = [t.token.encode() for t in self._tokens]
        self.sessions = SessionStore(zk, api.authentication.session_lifetime,
                                     api.authentication.session_idle_timeout)
        self.limiter = LoginLimiter()

    def token_valid(self, token: str) -> bool:
        # Compare against every entry so the time taken does not tell which one matched.
        candidate = token.encode(errors="surrogateescape")
        found = False
        for entry in self._encoded:
            found |= hmac.compare_digest(candidate, entry)
        return found

    def token_description(self, token: str) -> str:
        candidate = token.encode(errors="surrogateescape")
        return next((t.description for t, e in zip(self._tokens, self._encoded, strict=True)
                     if hmac.compare_digest(candidate, e)), "")

    def open_session(self, token: str) -> str:
        """A new session id for a valid token; expired sessions are pruned first."""
        self.sessions.prune()
        return self.sessions.create(token, self.token_description(token))

    def close_session(self, session_id: str | None) -> None:
        if session_id:
            self.sessions.delete(session_id)

    def session_valid(self, session_id: str, touch: bool = True) -> bool:
        return self.sessions.check(session_id, [t.token for t in self._tokens], touch=touch)

    async def check(self, request: Request) -> None:
        if not self.enabled:
            return
        key = request.headers.get(API_KEY_HEADER)
        if key is not None and self.token_valid(key):
            return
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id and await run_in_threadpool(self.session_valid, session_id):
            return
        raise Unauthorized(REQUIRED if key is None else FAILED)


async def require_auth(request: Request) -> None:
    """Router dependency for every route that is not open by design."""
    authenticator: Authenticator = request.app.state.auth
    await authenticator.check(request)
