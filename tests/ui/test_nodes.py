"""Nodes in Chromium: the list, a node's detail, flush/ready and primary/secondary from the page,
and its log followed live."""

from __future__ import annotations

from typing import Any

from pvc.core import schema
from pvc.core.zk import ZK
from tests.integration.apihelp import node_daemons_react
from tests.ui.conftest import UI


def test_node_list_links_to_each_node(ui: UI, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/nodes")
    ui.live()
    rows = ui.page.locator("#nodes-table tbody tr")
    assert rows.count() == 4
    ui.page.get_by_role("link", name="hv2").click()
    ui.page.get_by_role("heading", name="Node hv2").wait_for()
    assert ui.page.locator("#node-coordinator-state").inner_text().strip().endswith("secondary")


def test_flush_and_ready_from_the_page(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/nodes/hv2")
    ui.live()
    with node_daemons_react(zk):              # stands in for pvcnoded: flush -> flushed, unflush -> ready
        ui.page.get_by_role("button", name="Flush").click()             # the confirm dialog is accepted
        ui.page.locator("#flash").get_by_text("Flushing hypervisor hv2").wait_for()
        ui.page.locator("#node-domain-state").get_by_text("flushed").wait_for()
        ui.shot("node-flushed")
        ui.page.get_by_role("button", name="Ready").click()
        ui.page.locator("#flash").get_by_text("Restoring hypervisor hv2").wait_for()
        ui.page.locator("#node-domain-state").get_by_text("ready").wait_for()
    assert zk.get(schema.node("hv2"))["domain_state"] == "ready"


def test_primary_hand_over_and_a_refusal(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/nodes/hv3")
    ui.page.get_by_role("button", name="Make primary").click()
    ui.page.locator("#flash").get_by_text("Setting node hv3 in primary coordinator state").wait_for()
    assert zk.get(schema.PRIMARY_REQUEST)["node"] == "hv3"
    ui.goto("/nodes/hv4")                                    # a hypervisor: no coordinator actions
    assert ui.page.get_by_role("button", name="Make primary").count() == 0
    zk.update(schema.node("hv3"), lambda d: {**d, "daemon_state": "stop"})
    ui.goto("/nodes/hv3")
    ui.page.get_by_role("button", name="Make primary").click()
    error = ui.page.locator("#flash .flash-bad")
    error.get_by_text("is not in run state").wait_for()
    ui.shot("node-refused-action")


def test_node_log_is_followed(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/nodes/hv1")
    ui.live()
    log = ui.page.locator("#node-log")
    assert "\\x1b[31mred" in log.inner_text()                 # terminal escapes shown, not acted on
    zk.update(schema.node_log("hv1"), lambda lines: [*lines, "2026-01-01 00:01:00 INFO a new line <b>"])
    log.get_by_text("a new line <b>").wait_for()
    at_bottom = ui.page.evaluate("(e => e.scrollHeight - e.scrollTop - e.clientHeight < 30)"
                                 "(document.getElementById('node-log'))")
    assert at_bottom
