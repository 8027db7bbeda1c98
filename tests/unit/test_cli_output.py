"""Pure CLI formatting and decision logic: tables, info views, task flattening, waits, log following."""

from __future__ import annotations

import httpx
import pytest

from pvc.cli import logs
from pvc.cli.client import encode_params, error_message
from pvc.cli.commands import cluster, node
from pvc.cli.output import health_style, human_mib, render
from pvc.cli.waiters import node_wait_needed, node_wait_step, task_result_line
from pvc.core.units import format_bytes

NODE = {
    "name": "hv1", "daemon_state": "run", "coordinator_state": "primary", "domain_state": "ready",
    "pvc_version": "1.0.3", "cpu_count": 8, "kernel": "6.1.0", "os": "linux", "arch": "x86_64",
    "health": 100, "health_plugins": ["disk"], "load": 0.42, "domains_count": 2,
    "health_details": [{"name": "disk", "last_run": 1, "health_delta": 0, "message": "all [ok]"}],
    "running_domains": ["vm1", "vm2"], "vcpu": {"total": 8, "allocated": 4},
    "memory": {"total": 16384, "allocated": 2048, "provisioned": 32768, "used": 4096, "free": 12288},
    "interfaces": {},
}


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_human_units_and_health_colours() -> None:
    assert human_mib(16384) == "16G"
    assert human_mib(1536) == "1.5G"
    assert human_mib(512) == "512M"
    assert human_mib("n/a") == "n/a"
    assert [health_style(h) for h in (100, 90, 50, "N/A")] == ["green", "yellow", "red", "blue"]


def test_node_list_table() -> None:
    hv2 = {**NODE, "name": "hv2", "daemon_state": "dead", "coordinator_state": "secondary",
           "domain_state": "flushed", "health": "N/A"}
    text = render(node.format_list_pretty([hv2, NODE]))
    rows = lines(text)
    assert rows[0][:6] == ["Name", "PVC", "Version", "Health", "Daemon", "Coordinator"]
    assert rows[1] == ["hv1", "1.0.3", "100%", "run", "primary", "ready", "2", "8", "0.42",
                       "16G", "4G", "12G", "2G", "32G"]
    assert rows[2][:6] == ["hv2", "1.0.3", "N/A", "dead", "secondary", "flushed"]
    assert node.format_list_raw([hv2, NODE]) == "hv1\nhv2"
    assert render(node.format_list_pretty([])) == "No nodes found."


def test_node_list_colours_states_and_overcommit() -> None:
    text = render(node.format_list_pretty([NODE]), colour=True)
    assert "\x1b[32mrun" in text          # run is green
    assert "\x1b[33m 32G" in text         # provisioned beyond total is flagged yellow
    assert "\x1b" not in render(node.format_list_pretty([NODE]))


def test_node_info_pretty_and_long() -> None:
    pretty = render(node.format_info(NODE))
    assert "Name:" in pretty and "hv1" in pretty
    assert "Health Plugin Details" not in pretty  # only plugins with a delta in the short view
    assert "Total RAM:" in pretty and "16G" in pretty
    assert "Kernel Version" not in pretty
    long = render(node.format_info(NODE, long=True))
    assert "Kernel Version:" in long and "6.1.0" in long
    assert "disk: all [ok]" in long  # brackets in data are shown literally, not taken as markup
    assert "vm1, vm2" in long


def test_new_log_lines() -> None:
    assert logs.new_log_lines([], ["a", "b"]) == ["a", "b"]
    assert logs.new_log_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert logs.new_log_lines(["a", "b", "c"], ["a", "b", "c"]) == []
    # repeated text: the latest occurrence of the shown tail is the anchor
    assert logs.new_log_lines(["x", "y"], ["x", "y", "z", "x", "y", "w"]) == ["w"]
    # the log moved on by more than a fetch: everything fetched is new
    assert logs.new_log_lines(["a", "b"], ["p", "q"]) == ["p", "q"]
    # the fetched tail starts inside what was shown
    assert logs.new_log_lines(["a", "b", "c"], ["c", "d"]) == ["d"]


@pytest.mark.parametrize(("action", "initial", "seen", "expected"), [
    ("primary", "secondary", ["secondary"], False),           # daemon has not reacted yet
    ("primary", "secondary", ["secondary", "takeover"], False),
    ("primary", "secondary", ["secondary", "takeover", "primary"], True),
    ("primary", "secondary", ["primary"], True),              # reacted and done between two polls
    ("secondary", "primary", ["relinquish", "secondary"], True),
    ("flush", "ready", ["flush"], False),
    ("flush", "ready", ["flush", "flushed"], True),
    ("ready", "unflush", ["ready"], True),
])
def test_node_wait_rule(action: str, initial: str, seen: list[str], expected: bool) -> None:
    reacted = done = False
    for value in seen:
        reacted, done = node_wait_step(action, initial, reacted, value)
    assert done is expected


def test_node_wait_skipped_when_already_there() -> None:
    assert not node_wait_needed("primary", "primary")
    assert not node_wait_needed("flush", "flushed")
    assert node_wait_needed("ready", "flushed")


STATUS = {
    "cluster_name": "pvc1",
    "cluster_health": {"health": 40, "messages": [{"id": "f1", "health_delta": 60, "text": "hv2 dead"}]},
    "node_health": {"hv1": {"health": 100, "messages": []}, "hv2": {"health": "None", "messages": []}},
    "maintenance": "true", "primary_node": "hv1", "pvc_version": "1.0.3", "upstream_ip": "10.0.0.250",
    "nodes": {"total": 2, "run,ready": 1, "dead,flushed": 1}, "vms": {"total": 0}, "networks": 0,
    "osds": {"total": 0}, "pools": 0, "volumes": 0, "snapshots": 0,
    "resources": {"memory": {"total": 32768, "used": 8192, "free": 24576, "allocated": 0, "provisioned": 0,
                             "utilization": 25.0},
                  "cpu": {"total": 16, "load": 1.5, "allocated": 0, "utilization": 9.38},
                  "disk": {"total": 10 << 20, "used": 1 << 20, "free": 9 << 20, "utilization": 10.0}},
}


def test_cluster_status_pretty_and_short() -> None:
    pretty = render(cluster.format_status_pretty(STATUS))
    assert "40% (cluster in maintenance)" in pretty
    assert "(-60%) hv2 dead" in pretty
    assert "hv2: None" in pretty and "hv1: 100%" not in pretty  # only unhealthy nodes
    assert "Primary node:" in pretty and "10.0.0.250" in pretty
    assert "2 total, 1 dead,flushed, 1 run,ready" in pretty
    assert "8G used of 32G (25.0%)" in pretty
    # disk figures are KiB on the wire, as upstream
    assert f"{format_bytes(1 << 30)} used of {format_bytes(10 << 30)} (10.0%)" in pretty
    short = render(cluster.format_status_short(STATUS))
    assert "40%" in short and "Primary node" not in short


def test_fault_formats() -> None:
    faults = [{"id": "abc", "first_reported": "2024-01-01 00:00:00.0",
               "last_reported": "2024-01-02 00:00:00.0", "acknowledged_at": "", "status": "new",
               "health_delta": 50, "message": "hv2 [disk] failed"}]
    short = lines(render(cluster.format_faults_short(faults)))
    assert short[0] == ["ID", "Status", "Delta", "Last", "Reported", "Message"]
    assert short[1][:3] == ["abc", "new", "-50%"] and short[1][-3:] == ["hv2", "[disk]", "failed"]
    long = render(cluster.format_faults_long(faults))
    assert "First Reported" in long and "N/A" in long
    assert render(cluster.format_faults_short([])) == "No faults found."


def test_flatten_tasks() -> None:
    tasks = {
        "active": {"pvcworkerd@hv1": [
            {"id": "aa", "name": "cluster.selftest", "args": [], "kwargs": {"n": 1}}]},
        "reserved": {"pvcworkerd@hv2": [{"id": "bb", "name": "osd.add", "args": [], "kwargs": {}}]},
        "scheduled": {},
    }
    rows = cluster.flatten_tasks(tasks)
    assert rows == [
        {"type": "active", "worker": "pvcworkerd@hv1", "id": "aa", "name": "cluster.selftest", "args": [],
         "kwargs": {"n": 1}},
        {"type": "pending", "worker": "pvcworkerd@hv2", "id": "bb", "name": "osd.add", "args": [],
         "kwargs": {}},
    ]
    table = lines(render(cluster.format_task_list_pretty(rows)))
    assert table[1] == ["active", "pvcworkerd@hv1", "aa", "cluster.selftest", "n=1"]
    assert cluster.flatten_tasks(None) == []
    assert "No active" in render(cluster.format_task_list_pretty([]))


def test_task_views() -> None:
    status = {"state": "RUNNING", "current": 2, "total": 5, "status": "Step two"}
    text = render(cluster.format_task_pretty({"id": "ab12cd34", **status}))
    assert "ab12cd34" in text and "2/5" in text and "Step two" in text
    assert task_result_line({"state": "SUCCESS", "status": "done"}) == "SUCCESS: done"


def test_decode_backup_accepts_double_encoding() -> None:
    inner = {"/config": "x"}
    import json
    assert cluster.decode_backup(json.dumps(inner)) == inner
    assert cluster.decode_backup(inner) == inner
    with pytest.raises(Exception, match="not a JSON object"):
        cluster.decode_backup(json.dumps([1]))


def test_error_messages_from_any_server_shape() -> None:
    def msg(status: int, **kwargs: object) -> str:
        return error_message(httpx.Response(status, **kwargs))  # type: ignore[arg-type]

    assert msg(400, json={"message": "Node hv3 is not a coordinator."}) == "Node hv3 is not a coordinator."
    assert msg(400, json={"message": {"state": "A valid state must be specified"}}) == \
        "state: A valid state must be specified"
    assert msg(422, json={"detail": [{"loc": ["query", "state"], "msg": "field required"}]}) == \
        "state: field required"
    assert msg(500, text="Internal Server Error") == "Internal Server Error"
    assert msg(502, content=b"") == "HTTP 502 Bad Gateway"


def test_encode_params() -> None:
    assert encode_params({"a": True, "b": None, "c": 3, "d": ["x", False]}) == {
        "a": "true", "c": "3", "d": ["x", "false"]}


def test_argument_errors_read_as_text() -> None:
    """Argument errors come as upstream's {"message": {"<argument>": "<text>"}}: the CLI prints
    them as 'argument: text', never as a Python dict."""
    from pvc.cli.client import message_text

    assert message_text({"message": {"xml": "required"}}) == "xml: required"
    assert message_text({"message": {"a": "x", "b": "y"}}) == "a: x; b: y"
    assert message_text({"message": "plain"}) == "plain"
