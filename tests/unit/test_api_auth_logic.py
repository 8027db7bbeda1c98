"""Pure pieces of pvcapid's front door: the login limiter, log redaction, body caps, token files."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from pvc.api import auth
from pvc.api.auth import LoginLimiter, TooManyAttempts, read_token_file, redact_url
from pvc.api.limits import BodyLimits, human, too_large_message
from pvc.api.sessions import SESSION_ID_RE, session_key, token_mac
from pvc.core.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_failures_per_address_in_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(auth.time, "monotonic", clock)
    limiter = LoginLimiter(failures=3, window=60)
    for _ in range(3):
        limiter.check("10.0.0.1")
        limiter.failed("10.0.0.1")
    with pytest.raises(TooManyAttempts) as info:
        limiter.check("10.0.0.1")
    assert info.value.retry_after == 61 and info.value.status == 429
    assert "Too many failed logins from 10.0.0.1: at most 3 in 60 s" in info.value.message
    limiter.check("10.0.0.2")                 # another address is not affected
    clock.now += 60                           # the window passes: allowed again
    limiter.check("10.0.0.1")


def test_limiter_remembers_a_bounded_number_of_addresses() -> None:
    limiter = LoginLimiter(failures=1, window=60, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.failed(client)
    limiter.check("a")                        # forgotten, the oldest
    with pytest.raises(TooManyAttempts):
        limiter.check("c")


@pytest.mark.parametrize(("url", "expected"), [
    ("/api/v1/login?token=abc&x=1", "/api/v1/login?token=REDACTED&x=1"),
    ("/a?x=1&Tok%65n=zz", "/a?x=1&Tok%65n=REDACTED"),
    ("/a?api_key=k#frag", "/a?api_key=REDACTED#frag"),
    ("/a?tokens=1&limit=token", "/a?tokens=1&limit=token"),
])
def test_secret_query_parameters_are_redacted(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_body_caps() -> None:
    assert (human(1024 ** 2), human(1024 ** 4), human(4096), human(1000)) == (
        "1 MiB", "1 TiB", "4 KiB", "1000 bytes")
    limits = BodyLimits(1024 ** 2)
    limits.add(re.compile(r"^/up/(?P<x>[^/]+)$"), {"POST"}, 1024 ** 4, "api.max_upload_size")
    assert limits.cap("/up/a", "POST") == (1024 ** 4, "api.max_upload_size")
    assert limits.cap("/up/a", "PUT") == (1024 ** 2, "api.max_body_size")
    assert limits.cap("/other", "POST") == (1024 ** 2, "api.max_body_size")
    assert too_large_message(65536, "api.max_body_size") == (
        "Request body too large: this route accepts at most 64 KiB (65536 bytes, api.max_body_size).")


def test_session_identifiers() -> None:
    sid = "A" * 43
    assert SESSION_ID_RE.match(sid) and not SESSION_ID_RE.match(sid + "=") and not SESSION_ID_RE.match("a.b")
    assert session_key(sid) != sid and len(session_key(sid)) == 64
    # The token's digest depends on the session: the same token gives different records.
    assert token_mac(sid, "t" * 32) != token_mac("B" * 43, "t" * 32)


def test_token_file_is_generated_root_only(tmp_path: Path) -> None:
    path = tmp_path / "pvc" / "api-token"
    tokens = read_token_file(str(path))
    assert len(tokens) == 1 and len(tokens[0].token) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(str(path)) == tokens          # read again, not regenerated


def test_token_file_problems_name_the_file_not_the_token(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text("# comment only\n\n")
    with pytest.raises(ConfigError, match=f"api.token_file {path}: holds no token"):
        read_token_file(str(path))
    path.write_text("x" * 40 + "\nshort-secret\n")
    with pytest.raises(ConfigError) as info:
        read_token_file(str(path))
    assert "token 2 is shorter than 32 characters" in str(info.value)
    assert "short-secret" not in str(info.value)
