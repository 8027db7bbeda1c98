"""Browser tests of the web UI: Playwright driving Debian's Chromium against a real pvcapid over a
private ZooKeeper (the `api` fixture of tests/conftest.py), no lab needed.

Screenshots of every page go to one directory per run (printed at the end of the run, and kept
with pytest's temporary directories) so a person can look at what the browser drew.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, Api
from tests.ui import waits

CHROMIUM = os.environ.get("PVC_TEST_CHROMIUM", "/usr/bin/chromium")
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
_SHOTS: list[Path] = []


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.lock)"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/install does)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this run's screenshots go."""
    directory = tmp_path_factory.mktemp("ui-screenshots", numbered=False)
    _SHOTS.append(directory)
    return directory


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for directory in _SHOTS:
        count = len(list(directory.glob("*.png")))
        if count:
            terminalreporter.write_line(f"UI screenshots ({count}): {directory}")


@pytest.fixture
def cluster(api: Api, zk: ZK) -> dict[str, Any]:
    """The sample cluster (tests/ui/sample.py) in this test's ZooKeeper root, served by `api`, once
    pvcapid's VM list shows every sample VM (pages read VMs from its watch cache)."""
    return waits.sampled(zk, api.http)


class UI:
    """A browser context on one pvcapid, with helpers that every page test needs."""

    def __init__(self, context: Any, base: str, shots: Path) -> None:
        self.context = context
        self.base = base
        self.shots = shots
        self.page = context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("dialog", lambda dialog: dialog.accept())

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def login(self, token: str = API_TOKEN) -> None:
        self.goto("/login")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(re.compile(r".*/$"))

    def shot(self, name: str, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def shot_parts(self, name: str) -> list[Path]:
        """The whole page in viewport-sized pieces (easier to look at than one tall image)."""
        viewport = self.page.viewport_size
        height = self.page.evaluate("document.documentElement.scrollHeight")
        paths = []
        for number, top in enumerate(range(0, height, viewport["height"]), 1):
            path = self.shots / f"{name}-{number}.png"
            clip = {"x": 0, "y": top, "width": viewport["width"],
                    "height": min(viewport["height"], height - top)}
            self.page.screenshot(path=str(path), full_page=True, clip=clip)
            paths.append(path)
        return paths

    def live(self) -> None:
        """Wait until the page's live stream is connected."""
        self.page.wait_for_selector('#live-status[data-state="live"]', timeout=15000)

    def wait_true(self, expression: str, timeout: float = 15.0) -> None:
        """Poll a JavaScript expression until it is true (Playwright's wait_for_function evaluates
        strings inside the page, which the UI's CSP forbids, as it should)."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout}s: {expression}")
            time.sleep(0.05)

    def csp_violations(self) -> list[str]:
        return [e for e in self.console_errors if "Content Security Policy" in e]


@pytest.fixture
def ui(browser: Any, api: Api, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(15000)
    handle = UI(context, api.base, shots)
    yield handle
    context.close()          # before pvcapid stops: its live streams end with the browser


@pytest.fixture
def phone(browser: Any, api: Api, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    context.set_default_timeout(15000)
    handle = UI(context, api.base, shots)
    yield handle
    context.close()
