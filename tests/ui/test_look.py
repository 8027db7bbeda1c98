"""Screenshots of every page on a laptop and a phone, for a person to look at: every area of the
navigation and the pages under it, over one sample cluster (nodes, VMs, faults and tasks; Ceph's
documents, networks and the provisioner's; tests/ui/sample.py). Every page answers 200, its live
stream connects, no page logs a console error or a Content-Security-Policy violation, and on a
phone no page is wider than the screen."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from pvc.api.app import create_app
from pvc.api.web import nav
from pvc.api.web.headers import is_ui_path
from pvc.cluster import tasks as tasks_mod
from pvc.core.config import load_config
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.ui import sample, waits
from tests.ui.conftest import UI

PAGES = (
    "/", "/nodes", "/nodes/hv1", "/nodes/hv2", "/vms", "/vms/web1", "/vms/define",
    "/storage", "/storage/pools/vms", "/storage/volumes", "/storage/volumes/vms/app1_sda",
    "/networks", "/networks/add", "/networks/100", "/networks/100/edit", "/networks/200",
    "/provisioner", "/provisioner/system", "/provisioner/system/web", "/provisioner/network",
    "/provisioner/network/std", "/provisioner/storage", "/provisioner/storage/std",
    "/provisioner/userdata", "/provisioner/userdata/basic", "/provisioner/scripts",
    "/provisioner/scripts/debootstrap", "/provisioner/profiles", "/provisioner/profiles/web",
    "/provisioner/ovas", "/provisioner/create",
    "/tasks",
)
# Pages with an id in their path; the tour adds them with the sample's ids.
WITH_IDS = ("/tasks/{task_id}", "/provisioner/jobs/{task_id}")
# Pages the tour leaves to their own tests: the console needs a VM running on a node
# (tests/ui/test_console*.py); an OVA needs Ceph to upload it (tests/ui/test_provisioner.py).
ELSEWHERE = ("/login", "/vms/{vm}/console", "/provisioner/ovas/{name}")
# Shown in pieces on a phone too (easier to look at than one tall image).
IN_PARTS = ("/", "/nodes", "/nodes/hv1", "/tasks", "/storage", "/networks/100", "/provisioner")


def _name(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.strip("/")).strip("-") or "dashboard"


def test_the_tour_has_every_page(config_factory: Callable[..., Path], zk: ZK) -> None:
    """Every page route of the UI (present and future) is in the tour or named as left to others."""
    app = create_app(load_config(str(config_factory())), zk)
    pages = {route.path for route in app.routes
             if isinstance(route, APIRoute) and "GET" in route.methods and is_ui_path(route.path)
             and not route.path.startswith(("/events/", "/static/"))}
    covered = [*PAGES, *WITH_IDS, *ELSEWHERE]
    missing = [path for path in sorted(pages)
               if not any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), c) for c in covered)]
    assert missing == [], f"pages missing from the tour (PAGES): {missing}"
    assert {item.path for item in nav.NAV} <= set(PAGES)


@pytest.fixture
def tour(api: Api, zk: ZK, cluster: dict[str, Any]) -> dict[str, str]:
    """The sample cluster with every area's sample data; the tour: path -> screenshot name."""
    sample.storage(zk, api.http)
    sample.networks(zk, api.http)
    sample.provisioner(zk)
    job = tasks_mod.submit(zk, PROVISIONER_CREATE, {"vm_name": "tourvm", "vm_profile": "web"},
                           total=PROVISION_STAGES)
    # Pages read VMs from pvcapid's watch caches, which follow the defines a moment later.
    assert waits.vms_listed(zk, api.http) == len(sample.VMS) + 1          # and app1
    return {**{path: _name(path) for path in PAGES}, f"/tasks/{cluster['tasks'][0]}": "tasks-task",
            f"/provisioner/jobs/{job.id}": "provisioner-jobs-job"}


def _visit(ui: UI, path: str) -> None:
    answer = ui.goto(path)
    assert answer is not None and answer.status == 200, path
    ui.page.locator("h1").first.wait_for()
    if ui.page.locator("body[data-live]").count():
        ui.live()


def test_every_page_laptop(ui: UI, tour: dict[str, str]) -> None:
    ui.goto("/login")
    ui.shot("laptop-login")
    ui.login()
    for path, name in tour.items():
        _visit(ui, path)
        ui.shot(f"laptop-{name}")
    assert ui.console_errors == []


def test_every_page_phone(phone: UI, tour: dict[str, str]) -> None:
    phone.goto("/login")
    phone.shot("phone-login")
    phone.login()
    for path, name in tour.items():
        _visit(phone, path)
        overflow = phone.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} is {overflow} px wider than the phone's screen"
        phone.shot(f"phone-{name}")
        if path in IN_PARTS:
            phone.shot_parts(f"phone-{name}")
    assert phone.console_errors == []
