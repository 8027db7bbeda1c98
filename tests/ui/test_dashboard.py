"""The dashboard in Chromium: log in, the figures equal the API's, a fault acknowledged from the
page, live updates without a reload, what users wrote stays inert, keyboard access."""

from __future__ import annotations

import re
from typing import Any

from pvc.api.web.headers import CSP
from pvc.cluster import faults
from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.ui import sample
from tests.ui.conftest import UI

# How the keyboard test names a focusable element (its id, else its text and link).
KEY = "e.id || e.textContent.trim() + ' ' + (e.getAttribute('href') || '')"
FOCUSED = ("() => { const e = document.activeElement; const s = getComputedStyle(e);"
           f" return {{key: {KEY}, tag: e.tagName, ring: s.outlineStyle + ' ' + s.outlineWidth}}; }}")


def tab_walk(page: Any, selector: str, limit: int) -> tuple[list[str], list[dict[str, str]]]:
    """The keys of the visible elements `selector` finds, and what Tab focuses in turn from the
    page's start (key, tag, focus ring) until it comes round again or leaves the page."""
    wanted = page.evaluate(f"""() => Array.from(document.querySelectorAll('{selector}'))
        .filter(e => e.offsetParent !== null).map(e => {KEY})""")
    page.locator("body").focus()
    reached: list[dict[str, str]] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        info = page.evaluate(FOCUSED)
        if info["tag"] == "BODY" or (reached and info["key"] == reached[0]["key"]):
            break
        reached.append(info)
    return wanted, reached


def test_login_page_and_a_wrong_token(ui: UI) -> None:
    answer = ui.goto("/")
    assert answer is not None
    ui.page.wait_for_url(re.compile(r"/login\?next=%2F$"))
    assert ui.page.get_by_role("heading", name="Log in").is_visible()
    ui.page.get_by_label("API token").fill("not-the-token-0000000000000000000000")
    ui.page.get_by_role("button", name="Log in").click()
    error = ui.page.locator("#login-error")
    assert "not valid" in error.inner_text()
    assert ui.page.get_by_label("API token").get_attribute("aria-invalid") == "true"
    ui.shot("login-refused")
    ui.login()
    assert ui.page.get_by_role("heading", name="Dashboard").is_visible()
    assert ui.page.locator('nav[aria-label="Main"] a[aria-current="page"]').inner_text() == "Dashboard"


def test_dashboard_figures_equal_the_api(ui: UI, api: Api, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.live()
    status = api.get("/status").json()
    page = ui.page

    def value(selector: str, attribute: str = "data-value") -> str:
        found = page.locator(selector).get_attribute(attribute)
        assert found is not None, selector
        return found

    assert int(value("#health-value")) == status["cluster_health"]["health"]
    assert page.locator("#health-value").inner_text().endswith(f"{status['cluster_health']['health']}%")
    assert int(value("#nodes-total")) == status["nodes"]["total"] == 4
    assert int(value("#vms-total")) == status["vms"]["total"] == len(sample.VMS)
    for state in ("start", "stop", "disable", "fail", "migrate"):
        assert int(value(f"#vm-state-{state}")) == status["vms"].get(state, 0), state
    resources = status["resources"]
    assert int(value("#memory-usage", "data-total")) == resources["memory"]["total"]
    assert int(value("#memory-usage", "data-used")) == resources["memory"]["used"]
    assert int(value("#memory-usage", "data-allocated")) == resources["memory"]["allocated"]
    assert int(value("#cpu-usage", "data-total")) == resources["cpu"]["total"]
    assert float(value("#cpu-usage", "data-load")) == resources["cpu"]["load"]
    assert int(value("#cpu-usage", "data-allocated")) == resources["cpu"]["allocated"]
    assert int(value("#storage-usage", "data-total")) == resources["disk"]["total"]
    assert page.locator("#primary-node").inner_text() == status["primary_node"]
    rows = page.locator("#faults-table tbody tr")
    assert rows.count() == len(status["detail"]["faults"])
    shown = {rows.nth(i).get_attribute("data-fault") for i in range(rows.count())}
    assert shown == {f["id"] for f in status["detail"]["faults"]}
    ui.shot("dashboard-figures")


def test_acknowledge_a_fault_from_the_page(ui: UI, api: Api, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.live()
    before = api.get("/status").json()["cluster_health"]["health"]
    row = ui.page.locator("#fault-MEMORY_OVERPROVISIONED")
    assert "new" in row.inner_text()
    ui.page.locator("#ack-MEMORY_OVERPROVISIONED").click()
    flash = ui.page.locator("#flash")
    flash.get_by_text("Successfully acknowledged").wait_for()
    # the row and the health follow through the live stream, without a reload
    row.get_by_text("acknowledged").wait_for()
    assert ui.page.locator("#ack-MEMORY_OVERPROVISIONED").count() == 0
    ui.wait_true(f"document.querySelector('#health-value').dataset.value == '{before + 25}'")
    assert faults.get_fault(zk, "MEMORY_OVERPROVISIONED").status == "ack"
    assert api.get("/status").json()["cluster_health"]["health"] == before + 25
    ui.shot("dashboard-fault-acknowledged")
    assert ui.console_errors == []


def test_the_dashboard_follows_the_cluster(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.live()
    faults.raise_fault(zk, "NODE_HV3_UNREACHABLE", 30, "hv3 does not answer")
    ui.page.locator("#fault-NODE_HV3_UNREACHABLE").wait_for()
    zk.update(schema.node("hv3"), lambda d: {**d, "daemon_state": "dead", "domain_state": "fence-flush"})
    ui.page.locator("#dash-nodes").get_by_text("dead").wait_for()
    ui.page.locator("#dash-nodes").get_by_text("fence-flush").wait_for()
    ui.shot("dashboard-live-update")


def test_what_users_wrote_is_inert(ui: UI, cluster: dict[str, Any]) -> None:
    ui.login()
    for path in ("/", "/nodes/hv1", "/nodes/hv2", f"/tasks/{cluster['tasks'][0]}"):
        ui.goto(path)
        ui.live()
        assert ui.page.evaluate("window.__pvc_xss") is None, path
        assert ui.page.locator('img[src="x"]').count() == 0, path
        own = ui.page.evaluate("Array.from(document.scripts).map(s => new URL(s.src).pathname)")
        assert own == ["/static/vendor/htmx/htmx.min.js", "/static/js/pvc.js"], path
    ui.goto("/nodes/hv1")
    ui.page.get_by_text(sample.XSS_TAG).wait_for()                     # shown as text
    ui.page.get_by_text("<script>window.__pvc_xss=1</script><img src=x", exact=False).first.wait_for()
    ui.goto("/")
    ui.page.get_by_text("failed to start <script>", exact=False).wait_for()
    ui.shot("xss-inert-dashboard")
    assert ui.csp_violations() == []


def test_security_headers_reach_the_browser(ui: UI) -> None:
    answer = ui.goto("/login")
    assert answer is not None
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-frame-options"] == "DENY"
    ui.login()
    answer = ui.goto("/")
    assert answer is not None and answer.headers["content-security-policy"] == CSP
    cookies = {c["name"]: c for c in ui.context.cookies()}
    session = cookies["session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert ui.page.evaluate("document.cookie") == ""           # nothing readable by script


def test_keyboard_reaches_every_action(ui: UI, cluster: dict[str, Any]) -> None:
    """Tab from the top of the page reaches every link and button, each with a visible focus ring;
    every control has a label."""
    ui.login()
    ui.live()
    page = ui.page
    wanted, infos = tab_walk(page, "a[href], button", 200)
    reached = [i["key"] for i in infos]
    rings = [i["ring"] for i in infos if i["tag"] in ("A", "BUTTON")]
    missing = [w for w in wanted if w not in reached]
    assert missing == [], missing
    assert reached[0].startswith("Skip to content")
    assert all(r.startswith("solid") and not r.endswith(" 0px") for r in rings), rings
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
            'input, select, textarea, meter, progress'))
        .filter(e => e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.getAttribute('aria-labelledby'))
        .map(e => e.outerHTML)""")
    assert unlabelled == []
    page.keyboard.press("Shift+Tab")
    ui.shot("dashboard-keyboard-focus", full_page=False)


def test_acknowledge_with_the_keyboard(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    """Enter on a focused Acknowledge button; when the live update removes the button, focus stays
    in the faults table (Tab carries on from there), not back at the top of the page."""
    ui.login()
    ui.live()
    button = ui.page.locator("#ack-CEPH_HEALTH_WARN")
    button.focus()
    ui.page.keyboard.press("Enter")
    ui.page.locator("#fault-CEPH_HEALTH_WARN").get_by_text("acknowledged").wait_for()
    ui.wait_true("document.getElementById('dash-faults').contains(document.activeElement)")
    ui.page.keyboard.press("Tab")
    assert ui.page.evaluate("document.getElementById('dash-faults').contains(document.activeElement)")
    assert faults.get_fault(zk, "CEPH_HEALTH_WARN").status == "ack"


def test_pages_and_actions_work_without_javascript(browser: Any, api: Api, zk: ZK, shots: Any,
                                                   cluster: dict[str, Any]) -> None:
    """Scripts off: pages render and an action is a plain form that comes back with its message."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1366, "height": 900})
    try:
        plain = UI(context, api.base, shots)
        plain.login()
        plain.page.locator("#ack-VM_FAILED_WEB3").click()
        plain.page.wait_for_url(f"{api.base}/")
        plain.page.locator("#flash").get_by_text("acknowledged fault(s) VM_FAILED_WEB3").wait_for()
        assert "acknowledged" in plain.page.locator("#fault-VM_FAILED_WEB3").inner_text()
        assert faults.get_fault(zk, "VM_FAILED_WEB3").status == "ack"
        plain.shot("no-javascript-acknowledged")
    finally:
        context.close()
