"""Node health checks on the lab (issue #16): the shipped plugins run in every node daemon, each
in its own process, against the lab's real libvirtd, Ceph, ZooKeeper and network devices.

* a healthy lab: every node at 100 % with every applicable plugin listed, none faulted;
* a plugin that hangs and one that raises, dropped into the plugin directory: timeout and
  crash deductions with NODE_PLUGIN_<PLUGIN>_<NODE> faults, health drops; removed, health
  returns and the faults clear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.core.config import HealthSettings, TimerSettings
from pvc.lab.plan import LabPlan
from pvc.lab.pvcnodes import PLUGIN_DIRECTORY
from tests.system.helpers import call, wait

# a pass every monitoring interval; a hung plugin holds its pass for the plugin timeout
PASS = TimerSettings().monitoring_interval + HealthSettings().plugin_timeout + 10
EVERYWHERE = {"ceph", "clock", "dpkg", "fs", "kydb", "lbvt", "load", "nics", "psql"}

HANG = '''
import time
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin

PLUGIN_NAME = "labhang"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        time.sleep(3600)
        return self.plugin_result
'''

BOOM = '''
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin

PLUGIN_NAME = "labboom"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state=None):
        raise RuntimeError("the lab's disk is on fire")
'''


def node_list(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in call(api, "GET", "/node")}


def faults(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in call(api, "GET", "/faults")}


def expected_plugins(lab: LabPlan, node: str) -> set[str]:
    coordinators = {n.name for n in lab.coordinators}
    return EVERYWHERE | ({"zkpr"} if node in coordinators else set())


def test_healthy_lab_every_node_at_100(lab: LabPlan, api: httpx.Client) -> None:
    def all_healthy() -> bool:
        found = node_list(api)
        return all(n.get("health") == 100 and expected_plugins(lab, name) <= set(n.get("health_plugins", []))
                   for name, n in found.items())

    try:
        wait("every node at 100 % with its plugins", all_healthy, PASS * 2)
    finally:
        for name, node in sorted(node_list(api).items()):
            print(name, node.get("health"), [(d["name"], d["health_delta"], d["message"])
                                             for d in node.get("health_details", [])])
    for name, node in node_list(api).items():
        details = {d["name"]: d for d in node["health_details"]}
        assert all(d["health_delta"] == 0 for d in details.values()), (name, details)
        assert details["psql"]["message"].startswith("not applicable")
        assert time.time() - details["load"]["last_run"] < PASS * 2
        assert node["interfaces"], f"{name}: no NIC figures"
    assert not [f for f in faults(api) if f.startswith("NODE_PLUGIN_")]


@pytest.fixture
def bad_plugins() -> Iterator[list[Path]]:
    files = [PLUGIN_DIRECTORY / "labhang.py", PLUGIN_DIRECTORY / "labboom.py"]
    try:
        yield files
    finally:
        for path in files:
            path.unlink(missing_ok=True)


def test_hanging_and_raising_plugins_fault_and_recover(lab: LabPlan, api: httpx.Client,
                                                       bad_plugins: list[Path]) -> None:
    hang, boom = bad_plugins
    hang.write_text(HANG)
    boom.write_text(BOOM)
    names = sorted(n.name for n in lab.nodes)
    wanted = {f"NODE_PLUGIN_{p}_{n.upper()}" for p in ("LABHANG", "LABBOOM") for n in names}
    wait("timeout and crash faults on every node", lambda: wanted <= set(faults(api)), PASS * 2)
    found = faults(api)
    timeout = HealthSettings().plugin_timeout
    for node in names:
        assert found[f"NODE_PLUGIN_LABHANG_{node.upper()}"]["health_delta"] == 5
        assert f"timed out after {timeout:g} s" in found[f"NODE_PLUGIN_LABHANG_{node.upper()}"]["message"]
        assert "on fire" in found[f"NODE_PLUGIN_LABBOOM_{node.upper()}"]["message"]
    wait("both deductions in every node's health",
         lambda: all(n["health"] == 80 for n in node_list(api).values()), PASS)
    hang.unlink()
    boom.unlink()
    wait("health back to 100 on every node",
         lambda: all(n["health"] == 100 for n in node_list(api).values()), PASS * 2)
    for node in node_list(api).values():
        assert not {"labhang", "labboom"} & set(node["health_plugins"])
    wait("the plugin faults cleared", lambda: not wanted & set(faults(api)), PASS)
