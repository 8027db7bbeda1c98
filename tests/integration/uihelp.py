"""Helpers for web UI route tests without a browser: a logged-in HTTP client that posts actions the
way the UI's own pages do (the session's CSRF token, same-origin), and a reader of live streams."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.conftest import API_TOKEN, Api

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def page_token(client: httpx.Client, path: str = "/") -> str:
    """The session's CSRF token, as the page at `path` carries it."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = CSRF_META.search(page.text)
    assert found, f"{path} carries no CSRF token"
    return found.group(1)


def login_token(client: httpx.Client) -> str:
    """The login form's CSRF token (and the pre-session cookie that goes with it)."""
    page = client.get("/login")
    assert page.status_code == 200, page.text
    found = CSRF_FIELD.search(page.text)
    assert found, "the login form has no CSRF field"
    return found.group(1)


class UIClient:
    """An HTTP client of one pvcapid's web UI, logged in with the test token."""

    def __init__(self, api: Api, login: bool = True) -> None:
        self.base = api.base
        self.http = httpx.Client(base_url=api.base, timeout=30, follow_redirects=False)
        self.csrf = ""
        if login:
            self.login()

    def login(self, token: str = API_TOKEN) -> httpx.Response:
        answer = self.http.post("/login", data={"token": token, "csrf_token": login_token(self.http),
                                                "next": "/"})
        assert answer.status_code == 303, answer.text
        self.csrf = page_token(self.http)
        return answer

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def action(self, path: str, data: dict[str, str] | None = None, htmx: bool = False,
               token: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST a form as the page would (token in the form; htmx: in the header, as the page script)."""
        body = dict(data or {})
        sent = dict(headers or {})
        chosen = self.csrf if token is None else token
        if htmx:
            sent.update({"HX-Request": "true", "X-CSRF-Token": chosen})
        elif chosen:
            body["csrf_token"] = chosen
        return self.http.post(path, data=body, headers=sent)

    def close(self) -> None:
        self.http.close()

    @contextmanager
    def stream(self, path: str) -> Iterator[EventReader]:
        with httpx.Client(base_url=self.base, cookies=self.http.cookies, timeout=httpx.Timeout(30, read=40)) \
                as client, client.stream("GET", path) as answer:
            assert answer.status_code == 200, answer.read()
            assert answer.headers["content-type"].startswith("text/event-stream")
            yield EventReader(answer)


class EventReader:
    """Server-sent events of one stream, parsed."""

    def __init__(self, answer: httpx.Response) -> None:
        self.lines = answer.iter_lines()

    def next_event(self) -> tuple[str, Any]:
        name, data = "message", []
        for line in self.lines:
            if line == "":
                if data:
                    return name, json.loads("\n".join(data))
                name = "message"
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        raise AssertionError("the stream ended")

    def fragments_until(self, predicate: Any, timeout: float = 20.0) -> dict[str, str]:
        """Read `fragments` events until predicate(all fragments seen so far) holds."""
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name, data = self.next_event()
            if name == "fragments":
                seen.update(data)
                if predicate(seen):
                    return seen
        raise AssertionError(f"no fragments matching within {timeout}s; last seen: {list(seen)}")
