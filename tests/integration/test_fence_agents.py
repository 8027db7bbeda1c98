"""Fence agents against real child processes: a fake `ipmitool` first on PATH, a fake lab command,
and the real `pvc-lab fence` for a lab that does not exist."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.fence import (
    DispatchAgent,
    FenceJob,
    FenceOutcome,
    IpmiAgent,
    LabAgent,
    NoAgent,
    fence_info,
    lab_fence_argv,
)
from pvc.core.config import parse_config
from pvc.core.errors import ConfigError

PASSWORD = "s3cret-Pa55"
INFO = {"agent": "ipmi", "node": "hv2", "hostname": "hv2-lom", "username": "admin", "password": PASSWORD,
        "interface": "lanplus", "power_on_after": True}
CONFIG = """
cluster: {name: c1, coordinator_nodes: [hv1, hv2, hv3]}
zookeeper: {hosts: ["hv1:2181"], acl: false}
node: {name: hv2}
"""

# Answers like ipmitool; modes: ok, stuck (power stays on), fail (no session), hang (sleeps 60).
FAKE_IPMITOOL = """#!{python}
import json, os, subprocess, sys, time
log, state, mode = {log!r}, {state!r}, {mode!r}
# hang: a grandchild holding our stdout too, as a shell wrapper's would; only a group kill ends both
helper = subprocess.Popen(["sleep", "60"]) if mode == "hang" else None
with open(log, "a") as f:
    f.write(json.dumps({{"argv": sys.argv, "env_password": os.environ.get("IPMI_PASSWORD"),
                        "pids": [os.getpid()] + ([helper.pid] if helper else [])}}) + "\\n")
if mode == "hang":
    time.sleep(60)
if mode == "fail":
    print("Error: Unable to establish IPMI v2 / RMCP+ session", file=sys.stderr)
    sys.exit(1)
action = sys.argv[-1]
power = open(state).read() if os.path.exists(state) else "on"
if action in ("off", "on"):
    if mode != "stuck":
        open(state, "w").write(action)
    print("Chassis Power Control: " + ("Down/Off" if action == "off" else "Up/On"))
elif action == "status":
    print("Chassis Power is " + power)
else:
    print("unknown command", file=sys.stderr)
    sys.exit(1)
"""


class FakeBMC:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str = "ok") -> None:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        self.log, self.state = tmp_path / "ipmitool.log", tmp_path / "power"
        script = bindir / "ipmitool"
        script.write_text(FAKE_IPMITOOL.format(python=sys.executable, log=str(self.log),
                                               state=str(self.state), mode=mode))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def actions(self) -> list[str]:
        return [call["argv"][-1] for call in self.calls()]


def wait_for(job: FenceJob) -> FenceOutcome:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        outcome = job.poll()
        if outcome is not None:
            return outcome
        time.sleep(0.05)
    raise AssertionError("the fence job did not finish")


def until(condition: Any) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Exited; a zombie counts (an orphan is reaped by init, which some containers do slowly)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def fast_ipmi() -> IpmiAgent:
    return IpmiAgent(status_tries=3, status_interval=0.05)


# -- IPMI -------------------------------------------------------------------------------------------


def test_ipmi_powers_off_checks_and_powers_on_with_the_password_only_in_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch)
    outcome = wait_for(fast_ipmi().start("hv2", INFO))
    assert outcome.success, outcome.message
    assert outcome.message.startswith("powered off via IPMI at hv2-lom")
    assert "powered on again" in outcome.message
    assert bmc.actions() == ["off", "status", "on"]
    for call in bmc.calls():
        assert call["argv"][1:-1] == ["-I", "lanplus", "-H", "hv2-lom", "-U", "admin", "-E", "chassis",
                                      "power"]
        assert not any(PASSWORD in arg for arg in call["argv"])
        assert call["env_password"] == PASSWORD
    assert bmc.state.read_text() == "on"


def test_ipmi_without_power_on_leaves_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch)
    outcome = wait_for(fast_ipmi().start("hv2", {**INFO, "power_on_after": False}))
    assert outcome == FenceOutcome(True, "powered off via IPMI at hv2-lom")
    assert bmc.actions() == ["off", "status"]


def test_ipmi_status_is_compared_without_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch)
    script = Path(os.environ["PATH"].split(os.pathsep)[0]) / "ipmitool"
    script.write_text(script.read_text().replace('"Chassis Power is "', '"CHASSIS POWER IS "'))
    assert wait_for(fast_ipmi().start("hv2", INFO)).success
    assert bmc.actions() == ["off", "status", "on"]


def test_ipmi_bmc_that_stays_on_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch, mode="stuck")
    outcome = wait_for(fast_ipmi().start("hv2", INFO))
    assert not outcome.success
    assert "did not report off" in outcome.message and "Chassis Power is on" in outcome.message
    assert bmc.actions() == ["off", "status", "status", "status"]     # no power on after a failure


def test_ipmi_failure_names_the_step_and_carries_stderr(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch, mode="fail")
    outcome = wait_for(fast_ipmi().start("hv2", INFO))
    assert not outcome.success
    assert "power off at hv2-lom failed" in outcome.message
    assert "Unable to establish IPMI v2 / RMCP+ session" in outcome.message
    assert bmc.actions() == ["off"]


def test_ipmi_hanging_is_cancelled_and_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch, mode="hang")
    job = fast_ipmi().start("hv2", INFO)
    until(lambda: bmc.calls())
    pids = bmc.calls()[0]["pids"]
    for _ in range(5):
        assert job.poll() is None
        time.sleep(0.05)
    job.cancel()
    until(lambda: all(gone(pid) for pid in pids))  # well before their 60 s sleeps end
    outcome = wait_for(job)
    assert not outcome.success and "cancelled" in outcome.message
    assert bmc.actions() == ["off"]                # nothing ran after the cancel
    job.cancel()                                   # again: harmless


@pytest.mark.parametrize("key", ["hostname", "username", "password"])
def test_ipmi_missing_key_is_a_failure_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  key: str) -> None:
    bmc = FakeBMC(tmp_path, monkeypatch)
    info = {k: v for k, v in INFO.items() if k != key}
    outcome = wait_for(fast_ipmi().start("hv2", info))
    assert not outcome.success and key in outcome.message
    assert bmc.calls() == []


def test_ipmi_missing_ipmitool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert wait_for(IpmiAgent().start("hv2", INFO)) == FenceOutcome(False, "ipmitool not found")


# -- fence info -------------------------------------------------------------------------------------


def test_fence_info_ipmi_with_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "ipmi.pw"
    secret.write_text(PASSWORD + "\n")
    settings = parse_config(CONFIG + f"fencing: {{agent: ipmi, ipmi: {{password_file: '{secret}', "
                                     "username: root, power_on_after: false}}\n")
    assert fence_info(settings) == {"agent": "ipmi", "node": "hv2", "hostname": "hv2-lom", "username": "root",
                                    "password": PASSWORD, "interface": "lanplus", "power_on_after": False}


def test_fence_info_password_file_unreadable_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pw"
    settings = parse_config(CONFIG + f"fencing: {{agent: ipmi, ipmi: {{password_file: '{missing}'}}}}\n")
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        fence_info(settings)


def test_fence_info_other_agents() -> None:
    settings = parse_config(CONFIG + "fencing: {agent: ipmi, ipmi: {hostname: 'bmc-{node}.lan', "
                                     "password: x}}\n")
    assert fence_info(settings)["hostname"] == "bmc-hv2.lan"
    assert fence_info(parse_config(CONFIG + "fencing: {agent: lab, lab_name: pvclab}\n")) == {
        "agent": "lab", "node": "hv2", "lab_name": "pvclab"}
    assert fence_info(parse_config(CONFIG)) == {"agent": "none", "node": "hv2"}


# -- lab, none, dispatch --------------------------------------------------------------------------------


def fake_lab(script: str) -> LabAgent:
    return LabAgent(command=lambda lab, node: [sys.executable, "-c", script, lab, node])


def test_lab_agent_success_reports_the_last_line() -> None:
    agent = fake_lab("import sys; print('killing VMs'); print(sys.argv[2] + ': fenced in ' + sys.argv[1])")
    outcome = wait_for(agent.start("hv2", {"agent": "lab", "lab_name": "pvclab"}))
    assert outcome == FenceOutcome(True, "lab fence agent: hv2: fenced in pvclab")


def test_lab_agent_failure_carries_stderr() -> None:
    agent = fake_lab("import sys; sys.stderr.write('Error: node hv2 is not in the lab\\n'); sys.exit(2)")
    outcome = wait_for(agent.start("hv2", {"agent": "lab", "lab_name": "pvclab"}))
    assert not outcome.success
    assert "exit 2" in outcome.message and "Error: node hv2 is not in the lab" in outcome.message


def test_lab_agent_runs_pvc_lab_fence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lab_fence_argv("pvclab", "hv2") == [sys.executable, "-m", "pvc.lab.main", "fence", "--name",
                                               "pvclab", "hv2"]
    monkeypatch.setenv("PVC_LAB_DIR", str(tmp_path))          # no lab there
    outcome = wait_for(LabAgent().start("hv2", {"agent": "lab", "lab_name": "nolab"}))
    assert not outcome.success and "no lab named 'nolab'" in outcome.message


def test_lab_agent_without_lab_name() -> None:
    outcome = wait_for(LabAgent().start("hv2", {"agent": "lab"}))
    assert not outcome.success and "lab_name" in outcome.message


def test_no_agent() -> None:
    assert wait_for(NoAgent().start("hv2", {})) == FenceOutcome(
        False, "no fence agent configured (fencing.agent: none)")


def test_dispatch_picks_the_published_agent() -> None:
    lab = fake_lab("print('fenced')")
    dispatch = DispatchAgent({"none": NoAgent(), "lab": lab})
    assert wait_for(dispatch.start("hv2", {"agent": "lab", "lab_name": "x"})).success
    assert "no fence agent" in wait_for(dispatch.start("hv2", {})).message
    assert wait_for(DispatchAgent().start("hv2", {"agent": "bmc9000"})) == FenceOutcome(
        False, "unknown fence agent 'bmc9000'")
    assert set(DispatchAgent().agents) == {"none", "ipmi", "lab"}
