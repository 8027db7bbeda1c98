"""The Networks pages in Chromium against a real pvcapid over a private ZooKeeper: the list, a
network's page, a DHCP reservation and a firewall rule added and removed from the page (the tables
following without a reload), refusals shown beside their form, a lease arriving live, what DHCP
clients and old writers stored staying inert, and screenshots on a laptop and a phone."""

from __future__ import annotations

from typing import Any

import pytest

from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.ui import sample
from tests.ui.conftest import UI
from tests.ui.test_dashboard import tab_walk


@pytest.fixture
def networks(api: Api, zk: ZK, cluster: dict[str, Any]) -> dict[str, Any]:
    return {**cluster, **sample.networks(zk, api.http)}


def errors(ui: UI) -> list[str]:
    """Console errors, less the browser's note on each refusal these tests provoke (a 400 or 404
    answer carries the refusal's message, swapped in place)."""
    return [e for e in ui.console_errors if "status of 400" not in e and "status of 404" not in e]


def mark_page(ui: UI) -> None:
    ui.page.evaluate("window.__pvc_same_page = 1")


def no_reload(ui: UI) -> None:
    assert ui.page.evaluate("window.__pvc_same_page") == 1, "the page was reloaded"


def test_list_and_a_networks_page(ui: UI, networks: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/networks")
    ui.live()
    rows = ui.page.locator("#network-table tbody tr")
    vnis = [rows.nth(i).get_attribute("data-vni") for i in range(rows.count())]
    assert vnis == ["100", "200", "1001", "4000"]
    prod = ui.page.locator("#network-row-100")
    assert prod.locator('[data-label="VMs"]').inner_text().strip() == str(len(sample.VMS))
    assert prod.locator('[data-label="DHCPv4"]').inner_text().startswith("on")
    assert ui.page.locator("#network-row-200").locator('[data-label="DHCPv4"]').inner_text().strip() == "off"
    ui.shot("networks-list")
    ui.page.locator("#network-row-100").get_by_role("link", name="100").click()
    ui.page.get_by_role("heading", name="Network 100").wait_for()
    ui.live()
    assert ui.page.locator("#network-vm-table tbody tr").count() == len(sample.VMS)
    assert ui.page.locator("#reservation-table tbody tr").count() == len(sample.RESERVATIONS)
    assert ui.page.locator("#lease-table tbody tr").count() == len(sample.LEASES)
    in_rules = ui.page.locator("#acl-table-in tbody tr")
    names = [in_rules.nth(i).get_attribute("data-acl") for i in range(in_rules.count())]
    assert names == ["allow-ssh", "allow-web"]
    assert ui.page.evaluate("window.__pvc_xss") is None
    ui.shot("network-detail")
    ui.shot_parts("network-detail")
    assert errors(ui) == [] and ui.csp_violations() == []


def test_reservation_and_rule_from_the_page(ui: UI, zk: ZK, networks: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/networks/100")
    ui.live()
    mark_page(ui)
    # a refusal, beside the form that made it
    ui.page.get_by_label("MAC address").fill("52:54:00:ab:cd:ef")
    ui.page.get_by_label("IPv4 address").fill("10.100.0.1")
    ui.page.get_by_role("button", name="Add reservation").click()
    ui.page.locator("#msg-reservation .flash-bad").get_by_text("is the gateway of network 100").wait_for()
    ui.shot("network-reservation-refused")
    # then a good one: the table follows without a reload
    ui.page.get_by_label("IPv4 address").fill("10.100.0.42")
    ui.page.get_by_label("Host name (optional)").fill("cache")
    ui.page.get_by_role("button", name="Add reservation").click()
    ui.page.locator("#msg-reservation .flash-ok").get_by_text("added successfully").wait_for()
    ui.page.locator('#reservation-table tr[data-mac="52:54:00:ab:cd:ef"]').wait_for()
    assert zk.get(schema.network_reservation(100, "52:54:00:ab:cd:ef"))["ip4_address"] == "10.100.0.42"

    ui.page.get_by_label("Description").fill("allow-dns")
    ui.page.get_by_label("Direction").select_option("in")
    ui.page.get_by_label("Order (optional)").fill("0")
    ui.page.get_by_label("Rule", exact=True).fill("udp dport 53 bananas")
    ui.page.get_by_role("button", name="Add rule").click()
    ui.page.locator("#msg-acl .flash-bad").get_by_text("nft refuses the rule").wait_for()
    ui.page.get_by_label("Rule", exact=True).fill("udp dport 53 accept")
    ui.page.get_by_role("button", name="Add rule").click()
    ui.page.locator("#msg-acl .flash-ok").get_by_text('Firewall rule "allow-dns" added').wait_for()
    first = ui.page.locator("#acl-table-in tbody tr").first
    first.and_(ui.page.locator('[data-acl="allow-dns"]')).wait_for()
    ui.shot("network-rule-added")

    ui.page.locator('#reservation-table tr[data-mac="52:54:00:ab:cd:ef"]').get_by_role("button",
                                                                                     name="Remove").click()
    ui.page.locator('#reservation-table tr[data-mac="52:54:00:ab:cd:ef"]').wait_for(state="detached")
    ui.page.locator('#acl-table-in tr[data-acl="allow-dns"]').get_by_role("button", name="Remove").click()
    ui.page.locator('#acl-table-in tr[data-acl="allow-dns"]').wait_for(state="detached")
    assert not zk.exists(schema.network_reservation(100, "52:54:00:ab:cd:ef"))
    no_reload(ui)
    assert errors(ui) == [] and ui.csp_violations() == []


def test_a_lease_arrives_live_and_removal_is_refused_in_place(ui: UI, zk: ZK,
                                                              networks: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/networks/100")
    ui.live()
    mark_page(ui)
    mac = "52:54:00:ee:00:01"
    zk.put(schema.network_lease(100, mac), {"mac_address": mac, "ip4_address": "10.100.0.177",
                                            "hostname": "newcomer", "expiry": 2_000_000_000})
    ui.page.locator(f'#lease-table tr[data-mac="{mac}"]').get_by_text("newcomer").wait_for()
    ui.page.get_by_label("Type 100 to confirm").fill("100")
    ui.page.get_by_role("button", name="Remove network").click()
    ui.page.locator("#msg-remove .flash-bad").get_by_text("Cannot remove network 100").wait_for()
    assert zk.exists(schema.network(100))
    no_reload(ui)
    ui.shot("network-remove-refused")
    assert errors(ui) == [] and ui.csp_violations() == []


def test_add_a_network_with_a_refusal_in_place(ui: UI, zk: ZK, networks: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/networks")
    ui.page.get_by_role("link", name="Add a network").click()
    ui.page.get_by_role("heading", name="Add a network").wait_for()
    ui.page.get_by_label("VNI").fill("300")
    ui.page.get_by_label("Description").fill("dmz")
    ui.page.get_by_label("IPv4 network (optional)").fill("10.30.0.0/24")
    ui.page.get_by_label("IPv4 gateway (optional)").fill("10.30.0.1")
    ui.page.get_by_label("DHCPv4 on").check()
    ui.page.get_by_label("DHCPv4 range start (optional)").fill("10.30.0.1")
    ui.page.get_by_label("DHCPv4 range end (optional)").fill("10.30.0.50")
    ui.page.get_by_role("button", name="Add network").click()
    error = ui.page.locator("#dhcp4_start-error")
    error.get_by_text("contains the gateway 10.30.0.1").wait_for()
    assert ui.page.get_by_label("Description").input_value() == "dmz"          # what was typed is kept
    assert ui.page.get_by_label("DHCPv4 range start (optional)").get_attribute("aria-invalid") == "true"
    ui.shot("network-add-refused")
    ui.page.get_by_label("DHCPv4 range start (optional)").fill("10.30.0.10")
    ui.page.get_by_role("button", name="Add network").click()
    ui.page.get_by_role("heading", name="Network 300").wait_for()
    ui.page.locator("#flash").get_by_text('Network "dmz" added successfully!').wait_for()
    assert zk.get(schema.network(300))["ip4"]["dhcp_end"] == "10.30.0.50"
    assert errors(ui) == [] and ui.csp_violations() == []


def test_what_clients_wrote_is_inert(ui: UI, networks: dict[str, Any]) -> None:
    ui.login()
    for path in ("/networks", "/networks/4000", "/networks/100"):
        ui.goto(path)
        ui.live()
        assert ui.page.evaluate("window.__pvc_xss") is None, path
    assert sample.XSS_HOSTNAME in ui.page.locator("#lease-table").inner_text()
    ui.goto("/networks/4000")
    assert sample.XSS_NETWORK in ui.page.locator("#network-settings").inner_text()
    assert ui.page.locator("#network-acls img, #network-settings script, #lease-table img").count() == 0
    assert errors(ui) == [] and ui.csp_violations() == []


def test_keyboard_reaches_every_control(ui: UI, networks: dict[str, Any]) -> None:
    """Tab reaches every link, button and field of a network's page with a visible focus ring."""
    ui.login()
    ui.goto("/networks/100")
    ui.live()
    page = ui.page
    wanted, infos = tab_walk(page, "a[href], button, input:not([type=hidden]), select, textarea", 300)
    reached = [i["key"] for i in infos]
    rings = [i["ring"] for i in infos if i["tag"] in ("A", "BUTTON", "INPUT", "SELECT")]
    assert [w for w in wanted if w not in reached] == []
    assert rings and all(r.startswith("solid") and not r.endswith(" 0px") for r in rings), rings


def test_screenshots_on_a_laptop_and_a_phone(ui: UI, phone: UI, networks: dict[str, Any]) -> None:
    for handle, width in ((ui, "laptop"), (phone, "phone")):
        handle.login()
        for path in ("/networks", "/networks/100", "/networks/200", "/networks/add", "/networks/100/edit"):
            answer = handle.goto(path)
            assert answer is not None and answer.status == 200, path
            name = path.strip("/").replace("/", "-")
            if path in ("/networks", "/networks/100"):
                handle.live()
            handle.shot(f"{width}-{name}")
            if width == "phone":
                overflow = handle.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, (path, overflow)
        if width == "phone":
            handle.goto("/networks/100")
            handle.shot_parts("phone-networks-100")
        assert errors(handle) == [] and handle.csp_violations() == [], width
