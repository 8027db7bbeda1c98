"""Guest output and user-written text reach the administrator's terminal escaped (D14).

A guest controls its serial console (and so `pvc vm log`), and API users control names,
descriptions, tags and task messages: none of it may send a terminal escape sequence (window
title, OSC 52 clipboard write, cursor moves, one-byte C1 CSI) or be read as rich markup. These
run the real `pvc` commands (Click's CliRunner) against a scripted API.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from click.testing import Result

from pvc.cli.output import cell, escape_controls, key_values, render, table
from tests.unit.test_cli_flows import FakeApi, env, pvc  # noqa: F401 (env is a fixture)
from tests.unit.test_cli_vm import vm_item

# What a hostile guest or user writes: title, clipboard, erase screen + cursor home, C1 CSI, bell,
# backspaces hiding text, and a carriage return that would overwrite the line.
HOSTILE = ("boot ok\x1b]0;owned\x07 \x1b]52;c;ZWNobyBvd25lZA==\x07 \x1b[2J\x1b[H \x9b31m red"
           " \x08\x08\x08 \x90dcs\x9c \x7f end")
RAW = ("\x1b", "\x07", "\x9b", "\x08", "\x90", "\x9c", "\x7f")
# The sequences rich writes itself for colour: SGR only.
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)


def no_raw_controls(text: str, colour: bool = False) -> None:
    """No control character but newline and tab; with colour, only rich's own SGR sequences."""
    if colour:
        text = SGR.sub("", text)
    assert not [c for c in text if c not in "\n\t" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)], repr(text)


def run(api: FakeApi, env: dict[str, str], *args: str) -> Result:  # noqa: F811
    return pvc(api, env, "-q", *args)


def test_escape_controls_keeps_text_and_shows_every_control() -> None:
    assert escape_controls("a\tb\nc") == "a\tb\nc"
    assert escape_controls("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert escape_controls("\x9b\x00\x7f\r") == "\\x9b\\x00\\x7f\\x0d"
    assert escape_controls("one\ntwo", newlines=False) == "one\\x0atwo"
    assert escape_controls("héllo ✓ [red]x") == "héllo ✓ [red]x"


@pytest.mark.parametrize("colour", [False, True])
def test_render_escapes_data_in_tables_and_info_views(colour: bool) -> None:
    rendered = render(table(["Name", "Description"], [["vm\x1b]0;t\x07", HOSTILE], [cell("[red]x"), "y"]]),
                      colour=colour)
    no_raw_controls(rendered, colour)
    assert "vm\\x1b]0;t\\x07" in rendered and "[red]x" in rendered
    view = render(key_values([("Name", "[link=http://evil.example]click[/link]"), ("Description", HOSTILE)]),
                  colour=colour)
    no_raw_controls(view, colour)
    assert "[link=http://evil.example]click[/link]" in view and "\\x1b]52;c;" in view


def test_vm_log_shows_a_hostile_console_escaped(api: FakeApi, env: dict[str, str]) -> None:  # noqa: F811
    api.on("GET", "/vm/web1/console", {"name": "web1", "data": f"line1\n{HOSTILE}\nline3\n"})
    for args in (["vm", "log", "web1", "-l", "10"], ["--colour", "vm", "log", "web1", "-l", "10"]):
        result = run(api, env, *args)
        assert result.exit_code == 0, result.output
        no_raw_controls(result.stdout, colour=True)
        assert not any(c in result.stdout for c in RAW)
        assert result.stdout.splitlines() == ["line1", escape_controls(HOSTILE), "line3"]


def test_node_log_is_escaped(api: FakeApi, env: dict[str, str]) -> None:  # noqa: F811
    api.on("GET", "/node/hv1/log", {"name": "hv1", "data": [f"2026-01-01 INFO vm said {HOSTILE}"]})
    result = run(api, env, "node", "log", "hv1")
    assert result.exit_code == 0, result.output
    no_raw_controls(result.stdout)
    assert "\\x1b]0;owned\\x07" in result.stdout


def hostile_vm() -> dict[str, Any]:
    return vm_item(name="[red]web\x1b]0;x\x07", description=f"[link=http://evil.example]{HOSTILE}",
                   tags=[{"name": "t\x1b[2Jag", "type": "user", "protected": False}])


@pytest.mark.parametrize("colour", [[], ["--colour"]])
def test_vm_list_and_info_escape_user_text_and_ignore_markup(api: FakeApi, env: dict[str, str],  # noqa: F811
                                                             colour: list[str]) -> None:
    api.on("GET", "/vm", [hostile_vm()])
    api.on("GET", "/vm/web1", hostile_vm())
    for args in (["vm", "list"], ["vm", "list", "-r"], ["vm", "info", "web1"],
                 ["vm", "info", "web1", "-f", "long"]):
        result = run(api, env, *colour, *args)
        assert result.exit_code == 0, result.output
        no_raw_controls(result.stdout, colour=bool(colour))
        assert "[red]web\\x1b]0;x\\x07" in result.stdout, result.stdout


def test_json_output_is_left_to_json(api: FakeApi, env: dict[str, str]) -> None:  # noqa: F811
    api.on("GET", "/vm", [hostile_vm()])
    result = run(api, env, "vm", "list", "-f", "json")
    assert result.exit_code == 0
    no_raw_controls(result.stdout)
    assert json.loads(result.stdout)[0]["name"] == "[red]web\x1b]0;x\x07"


def test_api_error_messages_are_escaped(api: FakeApi, env: dict[str, str]) -> None:  # noqa: F811
    api.on("GET", "/vm/web1", httpx.Response(400, json={"message": f"refused: {HOSTILE}"}))
    result = run(api, env, "vm", "info", "web1")
    assert result.exit_code != 0
    no_raw_controls(result.stderr)
    assert "\\x1b]52;c;" in result.stderr


def test_task_messages_are_escaped(api: FakeApi, env: dict[str, str]) -> None:  # noqa: F811
    accepted = httpx.Response(202, json={"task_id": "ab12cd34", "task_name": "cluster.selftest",
                                         "run_on": "hv1"}, headers={"Location": "/api/v1/tasks/ab12cd34"})
    api.on("POST", "/tasks/selftest", accepted)
    api.on("GET", "/tasks/ab12cd34", {"state": "FAILURE", "current": 1, "total": 1,
                                      "status": f"script said {HOSTILE}"})
    result = pvc(api, env, "cluster", "selftest")
    no_raw_controls(result.stdout)
    no_raw_controls(result.stderr)
    assert "\\x1b]0;owned" in result.stdout + result.stderr
