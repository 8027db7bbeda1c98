"""The HA simulator's scenarios (tests/sim/scenarios.py) against their golden event logs.

Every scenario runs the real HAMonitor, SelfFence and the VM reconciler's decide() in virtual
time; the world checks after every 0.1 s step that no VM runs twice and at the end that no VM
was lost. The event log must match tests/sim/expected/<scenario>.log; `PVC_SIM_UPDATE=1`
rewrites the logs (read the diff: each log must still tell the right story).

Scenarios flagged `known_bug` show a defect not fixed yet: they are expected to fail one of the
world's checks and have no golden log. Once one passes, drop its flag and record its log.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pytest

from .scenarios import SCENARIOS
from .world import Scenario, SimFailure, World

EXPECTED = Path(__file__).parent / "expected"
UPDATE = os.environ.get("PVC_SIM_UPDATE") == "1"


def _params() -> list[Any]:
    return [pytest.param(sc, id=sc.name, marks=[pytest.mark.xfail(strict=True, raises=SimFailure,
                                                                  reason=f"known bug: {sc.known_bug}")]
                         if sc.known_bug else [])
            for sc in SCENARIOS]


def render(sc: Scenario, lines: list[str]) -> str:
    return f"# {sc.name}: {sc.story}\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("sc", _params())
def test_scenario(sc: Scenario) -> None:
    text = render(sc, World(sc).run())
    if sc.known_bug:
        pytest.fail(f"{sc.name} passes now: drop known_bug and record its golden log")
    path = EXPECTED / f"{sc.name}.log"
    if UPDATE:
        EXPECTED.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"no golden log {path}; run with PVC_SIM_UPDATE=1 and read it"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"expected/{sc.name}.log", "this run"))
        pytest.fail(f"event log of {sc.name} changed:\n{diff}")


def test_every_golden_log_has_a_scenario() -> None:
    names = {sc.name for sc in SCENARIOS if not sc.known_bug}
    stale = sorted(p.stem for p in EXPECTED.glob("*.log") if p.stem not in names)
    assert not stale, f"golden logs without a (passing) scenario: {stale}"


def test_enough_scenarios() -> None:
    assert sum(1 for sc in SCENARIOS if not sc.known_bug) >= 30
