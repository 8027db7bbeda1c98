"""Server-side login sessions, kept in ZooKeeper so any pvcapid (the primary moves) knows them.

The cookie holds only a random id (`secrets.token_urlsafe(32)`). ZooKeeper holds, under the hex
SHA-256 of that id, when the session was made, when it ends and when it was last used, and an
HMAC of the token that opened it keyed with the session id. Someone who can read ZooKeeper (or a
backup) therefore learns neither a usable cookie nor anything to test token guesses against.
A session is valid while it is neither past its lifetime nor idle too long, and while the token
that opened it is still configured; logout deletes it, so it is revoked at once everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from pvc.core import schema
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

SESSION_ID_BYTES = 32
# token_urlsafe(32) is 43 characters of the URL-safe alphabet; anything else is not ours.
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# last_used is written at most this often per session: a write per request would load ZooKeeper.
TOUCH_INTERVAL = 60.0


def session_key(session_id: str) -> str:
    """The znode name of a session: what ZooKeeper knows instead of the id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def token_mac(session_id: str, token: str) -> str:
    """Which token opened the session, keyed with the session id (never the token itself)."""
    return hmac.new(session_id.encode(), token.encode(errors="surrogateescape"), hashlib.sha256).hexdigest()


class SessionStore:
    """Create, check and end sessions; `clock` is replaceable for tests of pure logic."""

    def __init__(self, zk: ZK, lifetime: int, idle_timeout: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.zk = zk
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.clock = clock

    def create(self, token: str, description: str = "") -> str:
        """A new session for a token already checked; returns the id for the cookie."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        now = self.clock()
        record = {
            "created": now,
            "expires": now + self.lifetime,
            "last_used": now,
            "idle_timeout": self.idle_timeout,
            "token": token_mac(session_id, token),
            "description": description,   # the token's description from the configuration
        }
        self.zk.create_doc(schema.session(session_key(session_id)), record, makepath=True)
        return session_id

    def _alive(self, record: Any, now: float) -> bool:
        if not isinstance(record, dict):
            return False
        try:
            created = float(record["created"])
            expires = float(record["expires"])
            last_used = float(record["last_used"])
            idle = float(record.get("idle_timeout", self.idle_timeout))
        except (KeyError, TypeError, ValueError):
            return False
        # A configuration that shortens the lifetime or idle timeout applies to existing sessions.
        return (now < min(expires, created + self.lifetime)
                and now - last_used < min(idle, self.idle_timeout))

    def check(self, session_id: str, tokens: Sequence[str], touch: bool = True) -> bool:
        """True when the session exists, is alive and its token is still configured.

        touch=False leaves last_used alone: the web UI's live streams re-check their session
        without counting as use, so an open browser tab does not keep a session from idling out."""
        if not SESSION_ID_RE.match(session_id):
            return False
        path = schema.session(session_key(session_id))
        doc = self.zk.get_doc(path)
        if doc is None:
            return False
        now = self.clock()
        if not self._alive(doc.data, now):
            self.zk.delete(path)
            return False
        mac = str(doc.data.get("token", ""))
        found = False
        for token in tokens:   # every entry, so the time taken does not tell which one matched
            found |= hmac.compare_digest(mac, token_mac(session_id, token))
        if not found:
            # The token that opened it was removed from the configuration: the session ends.
            self.zk.delete(path)
            return False
        if touch and now - float(doc.data["last_used"]) >= TOUCH_INTERVAL:
            try:
                self.zk.set_doc(path, {**doc.data, "last_used": now}, doc.version)
            except (BadVersionError, NoNodeError):
                pass   # a concurrent request touched it, or a logout removed it: either is fine
        return True

    def delete(self, session_id: str) -> bool:
        """End a session (logout); False when there was none."""
        if not SESSION_ID_RE.match(session_id):
            return False
        return self.zk.delete(schema.session(session_key(session_id)))

    def prune(self) -> int:
        """Delete every expired or idle session; returns how many."""
        now = self.clock()
        removed = 0
        paths = [schema.session(key) for key in self.zk.children(schema.SESSIONS)]
        for path, record in self.zk.get_many(paths).items():
            if record is not None and not self._alive(record, now) and self.zk.delete(path):
                removed += 1
        if removed:
            log.info("pruned %d expired API sessions", removed)
        return removed
