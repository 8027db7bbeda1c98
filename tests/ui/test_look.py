"""Screenshots of every page on a laptop and a phone, for a person to look at; no console errors
and no Content-Security-Policy violations on any of them."""

from __future__ import annotations

from typing import Any

from pvc.api.web import nav
from tests.ui.conftest import UI

PAGES = ("/", "/nodes", "/nodes/hv1", "/nodes/hv2", "/tasks", *(i.path for i in nav.NAV if not i.built))


def _name(path: str) -> str:
    return path.strip("/").replace("/", "-") or "dashboard"


def test_every_page_laptop(ui: UI, cluster: dict[str, Any]) -> None:
    ui.goto("/login")
    ui.shot("laptop-login")
    ui.login()
    for path in (*PAGES, f"/tasks/{cluster['tasks'][0]}"):
        answer = ui.goto(path)
        assert answer is not None and answer.status == 200, path
        if path in ("/", "/nodes", "/nodes/hv1", "/tasks"):
            ui.live()
        ui.shot(f"laptop-{_name(path)}")
    assert ui.console_errors == []


def test_every_page_phone(phone: UI, cluster: dict[str, Any]) -> None:
    phone.goto("/login")
    phone.shot("phone-login")
    phone.login()
    for path in ("/", "/nodes", "/nodes/hv1", "/tasks"):
        phone.goto(path)
        phone.live()
        phone.shot(f"phone-{_name(path)}")
        phone.shot_parts(f"phone-{_name(path)}")
    assert phone.console_errors == []
