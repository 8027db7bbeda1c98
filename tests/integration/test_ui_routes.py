"""The web UI's routes over HTTP against a real pvcapid and ZooKeeper, without a browser: login and
logout, session expiry, CSRF and same-origin checks, security headers, escaping, HTML errors,
actions and live streams. Browser tests are in tests/ui/."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from pvc.api.app import create_app
from pvc.api.sessions import session_key
from pvc.api.web import headers as web_headers
from pvc.api.web import live
from pvc.api.web.guard import CSRF_COOKIE
from pvc.cluster import faults, tasks
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.taskkinds import CLUSTER_SELFTEST
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import API_TOKEN, Api, start_daemon, wait_for
from tests.integration.uihelp import UIClient, login_token, page_token
from tests.ui import sample
from tests.ui.waits import sampled

EVIL = "https://evil.example"


@pytest.fixture
def ui(api: Api) -> Any:
    client = UIClient(api)
    yield client
    client.close()


def cookie_attributes(answer: httpx.Response, name: str) -> str:
    return next(v for v in answer.headers.get_list("set-cookie") if v.startswith(f"{name}="))


# -- login, logout, sessions ------------------------------------------------------------------------

def test_pages_send_strangers_to_login(api: Api) -> None:
    with httpx.Client(base_url=api.base) as client:
        for path in ("/", "/nodes", "/nodes/hv1", "/tasks", "/vms", "/events/dashboard"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login?next=")
        refused = client.post("/faults/ack")
        assert refused.status_code == 401
        assert "Log in" in refused.text
        htmx = client.post("/faults/ack", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")


def test_login_and_logout(api: Api, zk: ZK) -> None:
    with httpx.Client(base_url=api.base) as client:
        page = client.get("/login")
        assert page.status_code == 200 and 'for="token"' in page.text
        assert "HttpOnly" in cookie_attributes(page, CSRF_COOKIE)
        token = login_token(client)
        wrong = client.post("/login", data={"token": "x" * 40, "csrf_token": token})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "session" not in client.cookies
        good = client.post("/login", data={"token": API_TOKEN, "csrf_token": token, "next": "/nodes"})
        assert good.status_code == 303 and good.headers["location"] == "/nodes"
        flags = cookie_attributes(good, "session").lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert "secure" not in flags            # plain HTTP here; tests/security covers TLS
        assert len(zk.children(schema.SESSIONS)) == 1
        assert client.get("/").status_code == 200
        # the UI's session is the API's: the same cookie reads the API
        assert client.get("/api/v1/status").status_code == 200
        csrf = page_token(client)
        out = client.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/login?out=1"
        assert zk.children(schema.SESSIONS) == []
        assert client.get("/").status_code == 303
        assert client.get("/api/v1/status").status_code == 401
        assert "You are logged out" in client.get("/login?out=1").text


def test_login_next_stays_on_this_site(api: Api) -> None:
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example", "/"), ("/tasks", "/tasks"),
                             ("/\\evil.example", "/"), ("/api/v1/status", "/")):
        with httpx.Client(base_url=api.base) as client:
            answer = client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client),
                                                 "next": target})
            assert answer.status_code == 303 and answer.headers["location"] == expected, target


def test_login_form_is_protected_too(api: Api) -> None:
    with httpx.Client(base_url=api.base) as client:
        token = login_token(client)
        no_token = client.post("/login", data={"token": API_TOKEN})
        assert no_token.status_code == 403 and "CSRF token is missing" in no_token.text
        forged = client.post("/login", data={"token": API_TOKEN, "csrf_token": token},
                             headers={"Origin": EVIL})
        assert forged.status_code == 403 and "evil.example" in forged.text
        big = client.post("/login", content=b"token=" + b"a" * 10000,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert big.status_code == 413


def test_failed_logins_are_limited(api: Api) -> None:
    with httpx.Client(base_url=api.base) as client:
        token = login_token(client)
        answers = [client.post("/login", data={"token": "y" * 40, "csrf_token": token}).status_code
                   for _ in range(11)]
        assert answers[:10] == [401] * 10 and answers[10] == 429


def _expire(zk: ZK, session_id: str) -> None:
    path = schema.session(session_key(session_id))
    zk.update(path, lambda d: {**d, "last_used": time.time() - 10 * 86400})


def test_an_expired_session_goes_back_to_login(ui: UIClient, zk: ZK) -> None:
    assert ui.get("/nodes").status_code == 200
    _expire(zk, ui.http.cookies["session"])
    answer = ui.get("/nodes")
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fnodes"
    assert ui.action("/faults/ack").status_code == 401
    assert zk.children(schema.SESSIONS) == []        # an expired session is removed when seen


def test_a_live_stream_ends_when_its_session_does(config_factory: Any, zk: ZK,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, with the stream's session re-check every 0.2 s (30 s in pvcapid)."""
    monkeypatch.setattr(live, "AUTH_RECHECK", 0.2)
    monkeypatch.setattr(live, "HEARTBEAT", 0.2)
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, base_url="http://testserver") as client:
        client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client)})   # type: ignore[arg-type]
        session_id = client.cookies["session"]
        with client.stream("GET", "/events/dashboard") as answer:
            events = []
            for line in answer.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    if events == ["fragments"]:
                        _expire(zk, session_id)
            assert events == ["fragments", "expired"]


# -- CSRF and same-origin --------------------------------------------------------------------------

def test_actions_need_this_sessions_token(ui: UIClient, zk: ZK, api: Api) -> None:
    fault = faults.raise_fault(zk, "TEST_FAULT", 10, "a test fault")
    assert fault is not None
    missing = ui.action(f"/faults/{fault.id}/ack", token="")
    assert missing.status_code == 403 and "CSRF token is missing" in missing.text
    wrong = ui.action(f"/faults/{fault.id}/ack", token="A" * 43)
    assert wrong.status_code == 403 and "not this session" in wrong.text
    other = UIClient(api)          # another browser's valid token is not this session's
    try:
        assert ui.action(f"/faults/{fault.id}/ack", token=other.csrf).status_code == 403
    finally:
        other.close()
    assert faults.get_fault(zk, fault.id).status == "new"
    done = ui.action(f"/faults/{fault.id}/ack", {"next": "/"})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert faults.get_fault(zk, fault.id).status == "ack"
    # the message is shown once on the next page
    assert "Successfully acknowledged" in ui.get("/").text
    assert "Successfully acknowledged" not in ui.get("/").text


def test_cross_site_posts_are_refused(ui: UIClient, zk: ZK) -> None:
    """A forged cross-site POST is refused even with the right token (which a forger cannot
    read, but the browser's own word is checked first)."""
    fault = faults.raise_fault(zk, "TEST_FAULT", 10, "a test fault")
    assert fault is not None
    for headers, words in (({"Origin": EVIL}, "evil.example"), ({"Origin": "null"}, "origin null"),
                           ({"Sec-Fetch-Site": "cross-site"}, "cross-site"),
                           ({"Sec-Fetch-Site": "same-site"}, "same-site")):
        answer = ui.action(f"/faults/{fault.id}/ack", headers=headers)
        assert answer.status_code == 403, headers
        assert "cross-site request" in answer.text and words in answer.text
        assert answer.headers["content-type"].startswith("text/html")
    assert faults.get_fault(zk, fault.id).status == "new"
    # without a session (SameSite=Strict keeps the cookie from cross-site requests) it is still a 403
    with httpx.Client(base_url=ui.base) as stranger:
        answer = stranger.post(f"/faults/{fault.id}/ack", headers={"Sec-Fetch-Site": "cross-site"})
        assert answer.status_code == 403 and "cross-site request" in answer.text
    same = ui.action(f"/faults/{fault.id}/ack", headers={"Origin": ui.base, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 303
    assert faults.get_fault(zk, fault.id).status == "ack"


def test_every_ui_action_is_guarded(config_factory: Any, zk: ZK) -> None:
    """Every non-GET UI route, present and future, refuses a logged-in request without the token."""
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, base_url="http://testserver") as client:
        client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client)})   # type: ignore[arg-type]
        checked = []
        for route in iter_route_contexts(app.routes):
            path_format = route.path_format
            if not isinstance(route.original_route, APIRoute) or not web_headers.is_ui_path(path_format):
                continue
            for method in sorted(route.methods - {"GET", "HEAD"}):
                path = route.path_format.replace("{", "").replace("}", "")
                answer = client.request(method, path, data={"state": "flush"})
                assert answer.status_code == 403, (method, route.path_format, answer.text)
                checked.append(f"{method} {route.path_format}")
        assert len(checked) >= 6, checked


def test_api_refuses_cross_site_writes_with_the_session_cookie(ui: UIClient, zk: ZK) -> None:
    faults.raise_fault(zk, "TEST_FAULT", 10, "a test fault")
    for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
        answer = ui.http.put("/api/v1/faults", headers=headers)
        assert answer.status_code == 403
        assert "cross-site" in answer.json()["message"]
    assert faults.get_fault(zk, "TEST_FAULT").status == "new"
    # reads, clients that are not browsers, and token holders are not affected
    assert ui.http.get("/api/v1/faults", headers={"Origin": EVIL}).status_code == 200
    assert ui.http.put("/api/v1/faults", headers={"Origin": EVIL, "X-Api-Key": API_TOKEN}).status_code == 200
    assert ui.http.put("/api/v1/faults").status_code == 200


# -- headers, escaping, errors ---------------------------------------------------------------------

def test_security_headers(ui: UIClient) -> None:
    for path in ("/", "/nodes", "/login", "/vms", "/nodes/nope"):
        answer = ui.get(path)
        assert answer.headers["content-security-policy"] == web_headers.CSP, path
        policy = answer.headers["content-security-policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'",
                          "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"):
            assert directive in policy
        assert "unsafe" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
    css = ui.get("/static/css/pvc.css")
    assert css.status_code == 200 and css.headers["cache-control"].startswith("public")
    assert "content-security-policy" in css.headers
    assert "content-security-policy" not in ui.get("/api/v1/status").headers   # the API is untouched
    assert ui.get("/static/nope.js").status_code == 404


def test_no_inline_script_or_style_in_pages(ui: UIClient, api: Api, zk: ZK) -> None:
    sampled(zk, api.http)
    for path in ("/", "/nodes", "/nodes/hv1", "/tasks", "/login"):
        page = ui.get(path).text
        assert "<style" not in page and " style=" not in page, path
        for tag in page.split("<script")[1:]:
            assert tag.split(">", 1)[0].strip().startswith("src="), path       # external files only
        assert re.findall(r"<[^>]*\son[a-z]+\s*=", page) == [], path          # no event handler attributes


def test_what_users_wrote_is_escaped(ui: UIClient, api: Api, zk: ZK) -> None:
    sampled(zk, api.http)
    pages = {path: ui.get(path).text for path in ("/", "/nodes/hv1", "/nodes/hv2")}
    for text in pages.values():
        assert "<script>window.__pvc_xss" not in text and "<img src=x" not in text
    assert html.escape(sample.XSS_FAULT, quote=False) in pages["/"]
    assert "&lt;img src=x onerror=window.__pvc_xss=3&gt;" in pages["/nodes/hv1"]         # the tag
    assert "Web tier &lt;script&gt;window.__pvc_xss=1&lt;/script&gt;" in pages["/nodes/hv1"]  # description
    assert "\\x1b[31mred\\x1b[0m" in pages["/nodes/hv1"]                                # log escapes shown
    assert "disk check: &lt;script&gt;" in pages["/nodes/hv2"]                           # health message
    # the same in the live fragments
    with ui.stream("/events/nodes/hv1") as events:
        seen = events.fragments_until(lambda f: "node-vms" in f and "node-log" in f)
    joined = "".join(seen.values())
    assert "<script>window.__pvc_xss" not in joined and "<img src=x" not in joined
    assert "&lt;img src=x onerror=window.__pvc_xss=3&gt;" in seen["node-vms"]


def test_errors_are_pages_on_ui_paths_and_json_on_the_api(ui: UIClient) -> None:
    missing = ui.get("/nodes/<b>nope<i>")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "Node not found: &lt;b&gt;nope&lt;i&gt;" in missing.text
    assert ui.get("/no-such-page").status_code == 404
    assert ui.get("/tasks/nope").status_code == 404
    api_missing = ui.get("/api/v1/node/nope")
    assert api_missing.status_code == 404 and api_missing.json() == {"message": "Node not found: nope"}


def test_an_unbuilt_page_says_not_yet(config_factory: Any, zk: ZK, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every area is built now; an area listed in the navigation before its page exists
    (`built=False`, pvc.api.web.nav) is served a "not yet" page, so its link is never broken."""
    from pvc.api.web import nav, render

    assert all(item.built for item in nav.NAV)
    soon = nav.NavItem("backups", "Backups", "/backups", False, "Backups & mirrors <of VMs>.")
    # The template environment is made once and took the navigation then: made now (with the
    # real one, restored after this test), then given the longer one.
    env = render.environment()
    monkeypatch.setattr(nav, "NAV", (*nav.NAV, soon))
    monkeypatch.setitem(env.globals, "nav_items", nav.NAV)
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, base_url="http://testserver") as client:
        client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client)})   # type: ignore[arg-type]
        answer = client.get("/backups")
        assert answer.status_code == 200 and "Not yet" in answer.text
        assert 'href="/backups" aria-current="page"' in answer.text
        assert "Backups &amp; mirrors &lt;of VMs&gt;." in answer.text
        assert "Not yet" not in client.get("/storage").text


# -- actions and live streams ----------------------------------------------------------------------

def test_node_actions(ui: UIClient, api: Api, zk: ZK) -> None:
    sample.nodes(zk)
    flush = ui.action("/nodes/hv2/domain-state", {"state": "flush", "next": "/nodes/hv2"})
    assert flush.status_code == 303 and flush.headers["location"] == "/nodes/hv2"
    assert zk.get(schema.node("hv2"))["domain_state"] == "flush"
    bad = ui.action("/nodes/hv2/domain-state", {"state": "explode"})
    assert bad.status_code == 400 and "state: &#39;explode&#39; is not one of flush, ready" in bad.text
    refused = ui.action("/nodes/hv4/coordinator-state", {"state": "primary"}, htmx=True)
    assert refused.status_code == 400          # a refusal, as the API answers it
    assert "hv4 is not a coordinator" in refused.text and 'class="flash flash-bad"' in refused.text
    primary = ui.action("/nodes/hv2/coordinator-state", {"state": "primary"}, htmx=True)
    assert primary.status_code == 200 and "Setting node hv2 in primary coordinator state" in primary.text
    assert zk.get(schema.PRIMARY_REQUEST)["node"] == "hv2"


def test_task_cancel(ui: UIClient, zk: ZK) -> None:
    task = tasks.submit(zk, CLUSTER_SELFTEST)
    assert task.id in ui.get("/tasks").text
    done = ui.action(f"/tasks/{task.id}/cancel", {"next": "/tasks"})
    assert done.status_code == 303 and done.headers["location"] == "/tasks"
    assert tasks.get_task(zk, task.id).state == "CANCELLED"
    again = ui.action(f"/tasks/{task.id}/cancel", htmx=True)
    assert again.status_code == 400 and "already finished" in again.text


def test_dashboard_stream_follows_zookeeper(ui: UIClient, zk: ZK, api: Api) -> None:
    sample.nodes(zk)
    with ui.stream("/events/dashboard") as events:
        first = events.fragments_until(lambda f: "dash-faults" in f)
        assert set(first) >= {"dash-summary", "dash-faults", "dash-nodes", "dash-vms", "dash-tasks"}
        assert "No faults." in first["dash-faults"]
        faults.raise_fault(zk, "LIVE_FAULT", 20, "raised while watching")
        seen = events.fragments_until(lambda f: "LIVE_FAULT" in f.get("dash-faults", ""))
        assert "raised while watching" in seen["dash-faults"]
        zk.update(schema.node("hv3"), lambda d: {**d, "daemon_state": "dead"})
        events.fragments_until(lambda f: 'href="/nodes/hv3"' in f.get("dash-nodes", "")
                               and "dead" in f.get("dash-nodes", ""))


def test_task_log_is_followed(ui: UIClient, zk: ZK) -> None:
    task = tasks.submit(zk, CLUSTER_SELFTEST)
    with ui.stream(f"/events/tasks/{task.id}") as events:
        events.fragments_until(lambda f: "task-log" in f)
        zk.put(schema.task_log(task.id), ["first line", "second <line>"])
        seen = events.fragments_until(lambda f: "second &lt;line&gt;" in f.get("task-log", ""))
        assert "first line" in seen["task-log"]


def test_ui_works_with_authentication_off(daemons: Any, config_factory: Any, zk: ZK) -> None:
    """With api.authentication off (loopback only), pages need no login; actions still need the
    token, bound to the pre-session cookie."""
    config = config_factory("hv1", api={"authentication": {"enabled": False},
                                       "listen": {"address": "127.0.0.1", "port": free_port()},
                                       "ssl": {"enabled": False}})
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), 30, message="pvcapid")
    faults.raise_fault(zk, "OPEN_FAULT", 10, "a fault")
    with httpx.Client(base_url=base) as client:
        page = client.get("/")
        assert page.status_code == 200 and "Log out" not in page.text
        token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        assert client.post("/faults/ack").status_code == 403
        assert client.post("/faults/ack", data={"csrf_token": token}).status_code == 303
    daemon.stop()


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/api/v1/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_cookies_are_secure_under_tls(config_factory: Any, zk: ZK, tmp_path: Any) -> None:
    """With api.ssl on, every cookie the UI sets is Secure (in-process: the flags, not the TLS)."""
    config = config_factory("hv1", api={"ssl": {"enabled": True, "certificate": str(tmp_path / "c.crt"),
                                                "private_key": str(tmp_path / "c.key")},
                                        "token": [{"description": "tests", "token": API_TOKEN}],
                                        "authentication": {"enabled": True}})
    app = create_app(load_config(str(config)), zk)
    with TestClient(app, base_url="https://testserver") as client:
        form = client.get("/login")
        assert "secure" in cookie_attributes(form, CSRF_COOKIE).lower()   # type: ignore[arg-type]
        answer = client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client)},   # type: ignore[arg-type]
                             follow_redirects=False)
        assert answer.status_code == 303
        assert "secure" in cookie_attributes(answer, "session").lower()   # type: ignore[arg-type]
