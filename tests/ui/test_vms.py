"""The VM pages in Chromium: the list filtered and paged, actions changing a VM's state on its page
and in the list without a reload, define with a bad XML showing the refusal in place, the
configuration forms answering beside themselves, remove, what users wrote staying inert, the
keyboard reaching every control, and screenshots of each page on a laptop and a phone."""

from __future__ import annotations

import time
from typing import Any

from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.ui import sample
from tests.ui.conftest import UI
from tests.ui.test_dashboard import tab_walk
from tests.ui.test_vms_routes import bulk_vms, snapshot

ROWS = "#vms-list tbody tr"


def listed(ui: UI) -> list[str]:
    rows = ui.page.locator(ROWS)
    return [rows.nth(i).get_attribute("data-vm") or "" for i in range(rows.count())]


def errors(ui: UI) -> list[str]:
    """Console errors, less the browser's note on each refusal these tests provoke (a 400 or 404 answer
    carries the refusal's message, swapped in place)."""
    return [e for e in ui.console_errors if "status of 400" not in e and "status of 404" not in e]


def mark_page(ui: UI) -> None:
    """Set a marker a reload would lose (no_reload checks it is still there)."""
    ui.page.evaluate("window.__pvc_same_page = 1")


def no_reload(ui: UI) -> None:
    assert ui.page.evaluate("window.__pvc_same_page") == 1, "the page was reloaded"


def test_list_search_filters_and_pages(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    bulk_vms(zk, 120)
    ui.login()
    ui.goto("/vms")
    total = 120 + len(sample.VMS)
    ui.wait_true(f"document.getElementById('vms-count').dataset.total == '{total}'")
    ui.live()
    assert len(listed(ui)) == 50
    assert ui.page.locator("#page-where").inner_text() == "Page 1 of 3"
    ui.page.get_by_role("link", name="Next \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}").click()
    ui.page.wait_for_url("**/vms?page=2")
    assert listed(ui)[0] == "bulk0049"
    ui.page.get_by_label("Name or UUID").fill("WEB")
    ui.page.get_by_label("Name or UUID").press("Enter")
    ui.page.wait_for_url("**/vms?q=WEB")                  # a new search starts on page 1
    assert listed(ui) == ["web1", "web2"]
    ui.page.get_by_label("Name or UUID").fill("")
    ui.page.get_by_label("State").select_option("stop")
    ui.page.get_by_label("Node").select_option("hv2")
    ui.page.get_by_role("button", name="Apply").click()
    ui.page.wait_for_url("**/vms?state=stop&node=hv2")
    assert listed(ui) == [f"bulk{i:04d}" for i in range(1, 120) if i % 3 == 1] + ["db2"]
    assert "that match" in ui.page.locator("#vms-count").inner_text()
    ui.page.get_by_label("Tag").select_option("db")
    ui.page.get_by_role("button", name="Apply").click()
    ui.page.wait_for_url("**/vms?state=stop&node=hv2&tag=db")
    assert listed(ui) == ["db2"]
    ui.shot("vms-list-filtered")
    ui.page.get_by_role("link", name="Clear").click()
    ui.page.wait_for_url("**/vms")
    assert len(listed(ui)) == 50
    assert ui.console_errors == []


def test_the_list_follows_states_live(ui: UI, api: Api, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/vms?tag=db")
    ui.live()
    mark_page(ui)
    row = ui.page.locator('tr[data-vm="db2"]')
    assert row.get_attribute("data-state") == "stop"
    assert api.post("/vm/db2/state", params={"state": "start"}).status_code == 200
    ui.page.locator('tr[data-vm="db2"][data-state="start"]').wait_for()
    assert "start" in row.locator(".vm-state").inner_text()                  # the word, not a colour
    no_reload(ui)


def test_actions_change_the_state_live(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    """Start and migrate from a VM's page: the message comes back in place and the states follow
    through the live stream, without a reload."""
    ui.login()
    ui.goto("/vms/db2")
    ui.live()
    mark_page(ui)
    state = ui.page.locator("#vm-state")
    assert state.get_attribute("data-state") == "stop"
    ui.page.get_by_role("button", name="Start", exact=True).click()
    ui.page.locator("#flash").get_by_text("Starting VM").wait_for()
    ui.page.locator('#vm-state[data-state="start"]').wait_for()
    ui.page.get_by_label("Target node").select_option("hv3")
    ui.page.get_by_role("button", name="Migrate").click()
    ui.page.locator("#flash .flash-ok").wait_for()
    ui.page.locator('#vm-node[data-node="hv3"]').wait_for()
    ui.page.locator("#vm-migrated").get_by_text("from hv2").wait_for()
    ui.page.get_by_role("button", name="Unmigrate to hv2").wait_for()
    uuid = zk.get(schema.vm_name("db2"))
    zk.update(schema.vm(uuid), lambda d: {**d, "state": "start"})      # as hv3 settles it
    ui.page.locator('#vm-state[data-state="start"]').wait_for()
    ui.shot("vm-after-migrate")
    ui.page.get_by_role("button", name="Stop").click()                 # confirmed (the dialog is accepted)
    ui.page.locator('#vm-state[data-state="stop"]').wait_for()
    no_reload(ui)
    refused = ui.page.get_by_role("button", name="Restart")
    refused.click()
    ui.page.locator("#flash .flash-bad").get_by_text("is not in").wait_for()
    assert errors(ui) == []


def test_define_with_a_bad_xml_shows_the_refusal_in_place(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/vms")
    ui.page.get_by_role("link", name="Define a VM").click()
    ui.page.get_by_role("heading", name="Define a VM").wait_for()
    typed = "<domain type='kvm'><name>broken</name>"
    ui.page.get_by_label("libvirt domain XML").fill(typed)
    ui.page.get_by_label("Node", exact=True).select_option("hv2")
    ui.page.get_by_role("button", name="Define VM").click()
    error = ui.page.locator("#xml-error")
    error.wait_for()
    assert "xml: domain XML is not XML" in error.inner_text()
    field = ui.page.get_by_label("libvirt domain XML")
    assert field.get_attribute("aria-invalid") == "true"
    assert "xml-error" in (field.get_attribute("aria-describedby") or "")
    assert field.input_value() == typed                                 # what was typed stays
    assert ui.page.get_by_label("Node", exact=True).input_value() == "hv2"
    box, text = field.bounding_box(), error.bounding_box()
    assert box and text and 0 <= box["y"] - (text["y"] + text["height"]) < 40   # right above the field
    ui.shot("vm-define-refused")
    field.fill(sample.vm_xml("fromui", "Defined in the browser"))
    ui.page.get_by_label("Start it now").check()
    ui.page.get_by_role("button", name="Define VM").click()
    ui.page.wait_for_url("**/vms/fromui")
    ui.page.locator("#flash").get_by_text('Added new VM with Name "fromui"').wait_for()
    assert zk.get(schema.vm(zk.get(schema.vm_name("fromui"))))["state"] == "start"
    assert errors(ui) == []


def test_configuration_forms_answer_in_place(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/vms/db2")
    ui.live()
    mark_page(ui)
    ui.page.get_by_label("Memory", exact=True).fill("lots")
    ui.page.get_by_role("button", name="Set memory").click()
    ui.page.locator("#msg-memory .flash-bad").get_by_text("memory: 'lots'").wait_for()
    ui.page.get_by_label("Memory", exact=True).fill("3G")
    ui.page.get_by_role("button", name="Set memory").click()
    ui.page.locator("#msg-memory .flash-ok").wait_for()
    ui.page.locator("#vm-overview").get_by_text("3.0 GiB").wait_for()
    ui.page.get_by_label("New tag").fill("<b>bold")
    ui.page.get_by_role("button", name="Add tag").click()
    ui.page.locator("#msg-tag .flash-ok").wait_for()
    ui.page.locator("#vm-tags").get_by_text("<b>bold").wait_for()   # text, not markup
    ui.page.get_by_label("Network", exact=True).fill("vmbr200")
    ui.page.get_by_role("button", name="Add interface").click()
    ui.page.locator("#msg-nic .flash-ok").wait_for()
    ui.page.locator("#vm-nics").get_by_text("vmbr200").wait_for()
    ui.page.get_by_label("Volume to attach").fill("vms/none")
    ui.page.get_by_role("button", name="Attach volume").click()
    ui.page.locator("#msg-volume .flash-bad").get_by_text("No pool with name").wait_for()
    ui.page.get_by_label("hv3").check()
    ui.page.get_by_label("Node selector").select_option("load")
    ui.page.get_by_role("button", name="Save settings").click()
    ui.page.locator("#msg-meta .flash-ok").wait_for()
    doc = zk.get(schema.vm(zk.get(schema.vm_name("db2"))))
    assert (doc["node_limit"], doc["node_selector"]) == (["hv3"], "load")
    no_reload(ui)
    ui.shot("vm-config-answers")
    assert errors(ui) == []


def test_remove_asks_for_the_name(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/vms/mail")
    ui.page.get_by_label("Type mail to confirm").fill("mial")
    ui.page.get_by_role("button", name="Remove VM").click()
    ui.page.locator("#msg-remove .flash-bad").get_by_text("type its name to confirm").wait_for()
    assert zk.exists(schema.vm_name("mail"))
    ui.page.get_by_label("Type mail to confirm").fill("mail")
    ui.page.get_by_role("button", name="Remove VM").click()
    ui.page.wait_for_url("**/vms")
    ui.page.locator("#flash .flash-ok").wait_for()
    assert not zk.exists(schema.vm_name("mail"))


def test_what_users_wrote_is_inert(ui: UI, cluster: dict[str, Any]) -> None:
    ui.login()
    for path in ("/vms", "/vms/web1", "/vms?tag=" + sample.XSS_TAG):
        ui.goto(path)
        ui.live()
        assert ui.page.evaluate("window.__pvc_xss") is None, path
        assert ui.page.locator('img[src="x"]').count() == 0, path
    ui.page.locator("#vms-list").get_by_text(sample.XSS_TAG).wait_for()
    ui.goto("/vms/web1")
    ui.page.locator("#vm-tags").get_by_text(sample.XSS_TAG).wait_for()
    ui.page.locator("#vm-overview").get_by_text("<script>window.__pvc_xss=1</script>", exact=False).wait_for()
    assert ui.csp_violations() == []


def test_keyboard_and_labels_on_a_vm_page(ui: UI, cluster: dict[str, Any]) -> None:
    """Tab reaches every link, button and field of a VM's page with a visible focus ring; every
    control has a label."""
    ui.login()
    ui.goto("/vms/web1")
    ui.live()
    page = ui.page
    wanted, infos = tab_walk(page, "a[href], button, input:not([type=hidden]), select, textarea, summary",
                             400)
    reached = [i["key"] for i in infos]
    rings = [i["ring"] for i in infos if i["tag"] in ("A", "BUTTON", "INPUT", "SELECT")]
    missing = [w for w in wanted if w not in reached]
    assert missing == [], missing
    assert all(r.startswith("solid") and not r.endswith(" 0px") for r in rings), rings
    for path in ("/vms/web1", "/vms", "/vms/define"):
        ui.goto(path)
        unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
                'input, select, textarea, meter, progress'))
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby'))
            .map(e => e.outerHTML)""")
        assert unlabelled == [], path


def test_screenshots(ui: UI, phone: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    """Each VM page on a laptop and a phone, for a person to look at."""
    bulk_vms(zk, 60)
    uuid = zk.get(schema.vm_name("db1"))
    snapshot(zk, uuid, "before-upgrade", time.time() - 86400)
    snapshot(zk, uuid, "nightly", time.time() - 3600, consistency="crash")
    ui.login()
    pages = (("/vms", "vms-list"), ("/vms?page=2&per=25", "vms-list-page2"), ("/vms/db1", "vm-detail"),
             ("/vms/web1", "vm-detail-xss"), ("/vms/define", "vm-define"))
    for path, name in pages:
        answer = ui.goto(path)
        assert answer is not None and answer.status == 200, path
        if name != "vm-define":
            ui.live()
        ui.shot(f"laptop-{name}")
    assert ui.console_errors == []
    phone.login()
    for path, name in (("/vms", "vms-list"), ("/vms/db1", "vm-detail"), ("/vms/define", "vm-define")):
        phone.goto(path)
        if name != "vm-define":
            phone.live()
        phone.shot_parts(f"phone-{name}")
    assert phone.console_errors == []
