"""Attacks on pvcapid's front door: each runs against a real pvcapid and a real ZooKeeper.

No key, short keys, forged, replayed and expired session cookies, tokens in URLs, oversized and
chunked bodies, login guessing and an unauthenticated listener on the network: every one is
refused with a clear message, and the cluster (maintenance flag, session store) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pvc.core import schema
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import API_TOKEN, Api, Daemon, start_daemon, wait_for

OTHER_TOKEN = "another-token-for-a-second-admin-0123456789"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")


def start_api(daemons: list[Daemon], config: Path) -> tuple[Daemon, str]:
    """pvcapid on the config's port; returns it and its /api/v1 base URL once it answers."""
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{port}/api/v1"

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        try:
            return httpx.get(base + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid to answer")
    return daemon, base


def run_daemon(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_CONFIG_FILE": str(config)}
    return subprocess.run([sys.executable, "-m", "pvc.api.daemon"], env=env, capture_output=True,
                          text=True, timeout=60)


def maintenance(zk: ZK) -> bool:
    return bool((zk.get(schema.CLUSTER, None) or {}).get("maintenance", False))


def sessions(zk: ZK) -> dict[str, Any]:
    return {key: zk.get(schema.session(key)) for key in zk.children(schema.SESSIONS)}


def login(base: str, token: str) -> str:
    """A session id from POST /login with the token as upstream's form field."""
    response = httpx.post(base + "/login", data={"token": token})
    assert response.status_code == 200, response.text
    return response.cookies["session"]


def with_cookie(base: str, session_id: str, path: str = "/status") -> int:
    return httpx.get(base + path, headers={"Cookie": f"session={session_id}"}).status_code


@pytest.fixture
def two_tokens(daemons: list[Daemon], config_factory) -> Iterator[tuple[Daemon, str]]:
    config = config_factory("hv1", api={
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "token": [{"description": "tests", "token": API_TOKEN},
                  {"description": "other", "token": OTHER_TOKEN}],
        "ssl": {"enabled": False},
    })
    yield start_api(daemons, config)


# -- keys ----------------------------------------------------------------------------------------

def test_no_key_or_a_wrong_key_is_401_and_nothing_changes(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    for headers in ({}, {"X-Api-Key": "x"}, {"X-Api-Key": API_TOKEN[:-1]}, {"X-Api-Key": API_TOKEN + "x"}):
        response = httpx.post(base + "/status", params={"state": "true"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["message"].startswith("X-Api-Key Authentication")
    assert maintenance(zk) is False
    assert api.post("/status", params={"state": "true"}).status_code == 200   # the real key works
    assert maintenance(zk) is True


def test_a_short_token_in_the_config_is_refused(config_factory) -> None:
    config = config_factory("hv1", api={"token": [{"token": "only-20-characters.."}]})
    result = run_daemon(config)
    assert result.returncode == 1
    assert "key 'api.token.0.token': a token must be at least 32 characters long" in result.stderr
    assert "only-20-characters" not in result.stderr


def test_without_tokens_pvcapid_generates_a_root_only_token_file(daemons, config_factory, zk: ZK,
                                                                  tmp_path: Path) -> None:
    token_file = tmp_path / "etc" / "api-token"
    config = config_factory("hv1", api={"listen": {"address": "127.0.0.1", "port": free_port()},
                                        "token": [], "token_file": str(token_file),
                                        "ssl": {"enabled": False}})
    daemon, base = start_api(daemons, config)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 43
    assert str(token_file) in daemon.output() and token not in daemon.output()
    assert httpx.get(base + "/status").status_code == 401
    assert httpx.get(base + "/status", headers={"X-Api-Key": token}).status_code == 200
    # A restart keeps the file (and so the token) as it is.
    daemon.stop()
    start_api(daemons, config)
    assert token_file.read_text().strip() == token


def test_every_coordinator_gets_the_one_generated_token(daemons, config_factory, zk: ZK,
                                                         tmp_path: Path) -> None:
    """The generated token is the cluster's: sealed in ZooKeeper with the cluster key, written
    into each coordinator's token file, so it still works after the primary moves; it is never
    in ZooKeeper in clear, nor in a backup."""
    from pvc.cluster.backup import backup
    from pvc.core.secrets import write_key_file

    key_file = tmp_path / "cluster.key"
    write_key_file(key_file)
    files = [tmp_path / "hv1" / "etc" / "api-token", tmp_path / "hv2" / "etc" / "api-token"]
    tokens = []
    for node, token_file in zip(("hv1", "hv2"), files, strict=True):
        config = config_factory(node, cluster={"name": "test", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                               "key_file": str(key_file)},
                                api={"listen": {"address": "127.0.0.1", "port": free_port()},
                                     "token": [], "token_file": str(token_file), "ssl": {"enabled": False}})
        daemon, base = start_api(daemons, config)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        tokens.append(token_file.read_text().strip())
        assert httpx.get(base + "/status", headers={"X-Api-Key": tokens[0]}).status_code == 200
        assert tokens[0] not in daemon.output()
        daemon.stop()
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 43
    stored = json.dumps(zk.get(schema.API_TOKEN))
    assert tokens[0] not in stored and "fernet" in stored
    assert schema.API_TOKEN not in backup(zk) and tokens[0] not in json.dumps(backup(zk))


# -- sessions ------------------------------------------------------------------------------------

def test_the_cookie_is_a_random_id_and_zookeeper_holds_no_usable_secret(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    response = httpx.post(base + "/login", data={"token": API_TOKEN})
    assert response.status_code == 200
    cookie = response.cookies["session"]
    assert SESSION_ID.match(cookie), cookie            # an opaque id, not a signed payload
    assert API_TOKEN not in cookie and hashlib.sha256(API_TOKEN.encode()).hexdigest() not in cookie
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header and "path=/" in header
    stored = sessions(zk)
    assert list(stored) == [hashlib.sha256(cookie.encode()).hexdigest()]
    text = json.dumps(stored)
    assert cookie not in text and API_TOKEN not in text
    assert hashlib.sha256(API_TOKEN.encode()).hexdigest() not in text     # upstream's digest
    record = next(iter(stored.values()))
    assert record["expires"] - record["created"] == 43200
    assert with_cookie(base, cookie) == 200
    # A well-formed id nobody issued, and the ZooKeeper key itself, are not sessions.
    assert with_cookie(base, "A" * 43) == 401
    assert with_cookie(base, next(iter(stored))) == 401


def test_logout_revokes_the_session_at_once(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    cookie = login(base, API_TOKEN)
    assert with_cookie(base, cookie) == 200
    out = httpx.post(base + "/logout", headers={"Cookie": f"session={cookie}"})
    assert out.status_code == 200
    assert with_cookie(base, cookie) == 401          # the copied cookie is dead, not just forgotten
    assert sessions(zk) == {}


def test_a_new_login_replaces_the_clients_old_session(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    old = login(base, API_TOKEN)
    response = httpx.post(base + "/login", data={"token": API_TOKEN}, headers={"Cookie": f"session={old}"})
    assert response.status_code == 200
    new = response.cookies["session"]
    assert new != old
    assert with_cookie(base, old) == 401 and with_cookie(base, new) == 200
    assert list(sessions(zk)) == [hashlib.sha256(new.encode()).hexdigest()]


@pytest.mark.parametrize("field", ["expires", "last_used", "created"])
def test_expired_and_idle_sessions_end(api: Api, zk: ZK, field: str) -> None:
    """Time passing is simulated by moving the session's own timestamps into the past (a session
    made longer ago than the configured lifetime ends even if its record says otherwise)."""
    base = api.base + "/api/v1"
    cookie = login(base, API_TOKEN)
    key = hashlib.sha256(cookie.encode()).hexdigest()
    record = zk.get(schema.session(key))
    past = time.time() - {"expires": 1, "last_used": 3601, "created": 43201}[field]
    zk.put(schema.session(key), {**record, field: past})
    assert with_cookie(base, cookie) == 401
    assert key not in sessions(zk)


def test_expired_sessions_are_pruned_at_the_next_login(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    old = hashlib.sha256(login(base, API_TOKEN).encode()).hexdigest()
    zk.put(schema.session(old), {**zk.get(schema.session(old)), "expires": time.time() - 1})
    fresh = login(base, API_TOKEN)
    assert list(sessions(zk)) == [hashlib.sha256(fresh.encode()).hexdigest()]


def test_removing_a_token_from_the_config_ends_its_sessions(two_tokens, daemons, config_factory,
                                                           zk: ZK) -> None:
    daemon, base = two_tokens
    mine, theirs = login(base, API_TOKEN), login(base, OTHER_TOKEN)
    assert with_cookie(base, mine) == 200 and with_cookie(base, theirs) == 200
    daemon.stop()
    config = config_factory("hv1", api={"listen": {"address": "127.0.0.1", "port": free_port()},
                                        "token": [{"description": "other", "token": OTHER_TOKEN}],
                                        "ssl": {"enabled": False}})
    _, base = start_api(daemons, config)
    assert with_cookie(base, mine) == 401
    assert with_cookie(base, theirs) == 200
    assert len(sessions(zk)) == 1


# -- tokens never in URLs or logs ----------------------------------------------------------------

def test_a_token_in_the_login_url_is_refused(daemons, config_factory, zk: ZK) -> None:
    config = config_factory("hv1", logging={"level": "debug", "stdout": True},
                            api={"listen": {"address": "127.0.0.1", "port": free_port()},
                                 "token": [{"token": API_TOKEN}], "ssl": {"enabled": False}})
    daemon, base = start_api(daemons, config)
    response = httpx.post(base + "/login", params={"token": API_TOKEN})
    assert response.status_code == 400
    assert ("send the token in the X-Api-Key header or the form body, not the URL"
            in response.json()["message"])
    assert "set-cookie" not in response.headers
    assert sessions(zk) == {}
    # The accepted ways, with debug logging and the access log on: the token is in no log line.
    assert httpx.post(base + "/login", data={"token": API_TOKEN}).status_code == 200
    assert httpx.post(base + "/login", headers={"X-Api-Key": API_TOKEN}).status_code == 200
    assert httpx.post(base + "/login", files={"token": (None, API_TOKEN)}).status_code == 200
    assert httpx.post(base + "/login", data={"token": API_TOKEN + "-wrong"}).status_code == 401
    daemon.stop()
    assert "POST /api/v1/login" in daemon.output()        # the access log was on
    assert API_TOKEN not in daemon.output()


# -- body sizes ----------------------------------------------------------------------------------

@pytest.fixture
def small_bodies(daemons: list[Daemon], config_factory) -> str:
    config = config_factory("hv1", api={"listen": {"address": "127.0.0.1", "port": free_port()},
                                        "token": [{"token": API_TOKEN}], "ssl": {"enabled": False},
                                        "max_body_size": 65536})
    return start_api(daemons, config)[1]


def test_an_oversized_body_is_413_and_nothing_changes(small_bodies: str, zk: ZK) -> None:
    base, key = small_bodies, {"X-Api-Key": API_TOKEN}
    body = "state=true&padding=" + "x" * 70000
    form = {**key, "Content-Type": "application/x-www-form-urlencoded"}
    response = httpx.post(base + "/status", content=body, headers=form)
    assert response.status_code == 413
    assert response.json()["message"] == ("Request body too large: this route accepts at most 64 KiB "
                                          "(65536 bytes, api.max_body_size).")
    assert maintenance(zk) is False

    def chunks() -> Iterator[bytes]:       # no Content-Length: counted as it arrives
        yield b"state=true&padding="
        for _ in range(20):
            yield b"y" * 8192

    response = httpx.post(base + "/status", content=chunks(), headers=form)
    assert response.status_code == 413
    assert "64 KiB" in response.json()["message"]
    assert maintenance(zk) is False
    # Just under the cap passes (the padding is an unknown input, ignored as upstream does).
    ok = httpx.post(base + "/status", content="state=true&padding=" + "z" * 60000, headers=form)
    assert ok.status_code == 200
    assert maintenance(zk) is True


def test_uploads_take_their_own_cap(small_bodies: str) -> None:
    """The disk image route accepts a body over api.max_body_size (it then fails for want of
    Ceph here, which is not the point)."""
    response = httpx.post(small_bodies + "/storage/ceph/volume/pool/vol/upload",
                          params={"image_format": "raw"}, headers={"X-Api-Key": API_TOKEN},
                          files={"file": ("disk.img", b"\0" * 200000)})
    assert response.status_code != 413, response.text


def test_login_refuses_a_large_body_before_parsing_it(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    response = httpx.post(base + "/login", files={"token": (None, API_TOKEN),
                                                  "junk": ("junk.bin", b"j" * 8192)})
    assert response.status_code == 413
    assert "at most 4 KiB (4096 bytes" in response.json()["message"]

    def chunks() -> Iterator[bytes]:
        yield f"token={API_TOKEN}&junk=".encode()
        for _ in range(4):
            yield b"j" * 2048

    response = httpx.post(base + "/login", content=chunks(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert "set-cookie" not in response.headers
    assert sessions(zk) == {}


# -- login guessing ------------------------------------------------------------------------------

def test_failed_logins_are_rate_limited(api: Api, zk: ZK) -> None:
    base = api.base + "/api/v1"
    for attempt in range(10):
        response = httpx.post(base + "/login", data={"token": f"guess-{attempt:02d}" + "x" * 40})
        assert response.status_code == 401
    limited = httpx.post(base + "/login", data={"token": "guess-10" + "x" * 40})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["message"].startswith("Too many failed logins from 127.0.0.1: at most 10 in 60 s")
    # While limited, even the right token opens no session (guesses cannot be confirmed)...
    assert httpx.post(base + "/login", data={"token": API_TOKEN}).status_code == 429
    assert sessions(zk) == {}
    # ...and clients using their key are not locked out.
    assert api.get("/status").status_code == 200


# -- listening without authentication ------------------------------------------------------------

def test_no_authentication_on_a_network_address_is_refused(config_factory, daemons) -> None:
    open_api = {"listen": {"address": "0.0.0.0", "port": free_port()},
                "authentication": {"enabled": False}, "ssl": {"enabled": False}}
    result = run_daemon(config_factory("hv1", api=open_api))
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "api.authentication.allow_insecure_listen" in result.stderr
    # Said explicitly, it starts.
    allowed = {**open_api, "authentication": {"enabled": False, "allow_insecure_listen": True}}
    _, base = start_api(daemons, config_factory("hv1", api=allowed))
    assert httpx.get(base + "/status").status_code == 200
