"""The chaos runner's fault loop and report, with a stand-in for pvc.lab.chaos.faults (same seam)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pvc.lab.chaos import report
from pvc.lab.chaos.runner import ChaosError, Config, Runner
from pvc.lab.plan import make_plan


@dataclass
class Injected:
    kind: str
    target: str
    detail: str
    at: float
    heal: Any
    expect_fence: bool


class StandIn:
    """KINDS, targets, inject, healthy as the contract has them; records what was done."""

    KINDS = ("kill_pvcnoded", "osd_kill", "links_cut")

    def __init__(self, valid: dict[str, list[str]], heal_fails: bool = False) -> None:
        self.valid = valid
        self.heal_fails = heal_fails
        self.log: list[str] = []
        self.broken: set[str] = set()

    def targets(self, kind: str, lab: str) -> list[str]:
        return list(self.valid.get(kind, []))

    def healthy(self, lab: str) -> list[str]:
        return sorted(self.broken)

    def inject(self, kind: str, lab: str, target: str, rng: random.Random) -> Injected:
        self.log.append(f"inject {kind} {target}")
        self.broken.add(target)

        def heal() -> None:
            self.log.append(f"heal {kind} {target}")
            if self.heal_fails:
                raise RuntimeError("the node did not come back")
            self.broken.discard(target)

        return Injected(kind, target, f"{kind} on {target}", time.monotonic(), heal, kind == "links_cut")


def runner(tmp_path: Path, faults: StandIn, **config: Any) -> Runner:
    cfg = Config(minutes=0.01, seed=42, fault_gap=(0.0, 0.01), fault_hold=(0.0, 0.01), report_dir=tmp_path,
                 **config)
    return Runner(make_plan("t", 3), cfg, fault_module=faults)


def run_faults(r: Runner, seconds: float) -> None:
    thread = threading.Thread(target=r.fault_loop, daemon=True)
    thread.start()
    time.sleep(seconds)
    r.ctx.stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_faults_are_injected_one_at_a_time_and_healed(tmp_path: Path) -> None:
    faults = StandIn({"kill_pvcnoded": ["hv2", "hv1"], "osd_kill": ["osd.3"], "links_cut": ["hv3"]})
    r = runner(tmp_path, faults)
    run_faults(r, 0.3)
    assert r.injected and faults.broken == set()
    pairs = list(zip(faults.log[::2], faults.log[1::2], strict=False))
    assert all(a.startswith("inject") and b == a.replace("inject", "heal") for a, b in pairs)
    assert all(f["healed_t"] is not None and f["healthy_t"] is not None for f in r.injected)
    assert r.final == [] and r.ctx.faulted_nodes() == set()


def test_the_same_seed_draws_the_same_faults(tmp_path: Path) -> None:
    def drawn(seed: int) -> list[str]:
        faults = StandIn({"kill_pvcnoded": ["hv2", "hv1"], "osd_kill": ["osd.3", "osd.1"],
                          "links_cut": ["hv3"]})
        r = runner(tmp_path, faults)
        r.config.seed = seed
        r.ctx.seed = seed
        rng = r.ctx.rng("faults")
        out = []
        for _ in range(10):
            rng.uniform(*r.config.fault_gap)
            kind = rng.choice(r.kinds)
            out.append(f"{kind} {rng.choice(sorted(faults.targets(kind, 't')))}")
            rng.uniform(*r.config.fault_hold)
        return out

    assert drawn(1) == drawn(1) and drawn(1) != drawn(2)


def test_a_fault_without_a_target_is_skipped_and_recorded(tmp_path: Path) -> None:
    r = runner(tmp_path, StandIn({}), kinds=("osd_kill",))
    run_faults(r, 0.1)
    assert r.injected == [] and r.skipped and r.skipped[0]["reason"] == "no valid target now"


def test_a_heal_that_fails_is_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = StandIn({"links_cut": ["hv3"]}, heal_fails=True)
    r = runner(tmp_path, faults, kinds=("links_cut",))
    monkeypatch.setattr(r, "unhealthy", lambda timeout: faults.healthy("t"))
    thread = threading.Thread(target=r.fault_loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not r.final and time.monotonic() < deadline:
        time.sleep(0.01)
    r.ctx.stop.set()
    thread.join(10)
    assert r.injected[0]["heal_error"] == "RuntimeError: the node did not come back"
    assert r.final[0].invariant == "fault-not-healed" and "hv3" in r.final[0].detail


def test_unknown_kinds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ChaosError, match="unknown fault kind"):
        runner(tmp_path, StandIn({}), kinds=("kill_everything",))


def test_the_report_names_the_seed_the_replay_and_every_event(tmp_path: Path) -> None:
    faults = StandIn({"kill_pvcnoded": ["hv2"]})
    r = runner(tmp_path, faults, kinds=("kill_pvcnoded",))
    run_faults(r, 0.1)
    result = r.report()
    assert result["seed"] == 42
    assert result["replay"] == ("pvc-lab chaos --name t --minutes 0.01 --seed 42 --workers 3 --max-vms 5 "
                                "--kinds kill_pvcnoded")
    assert result["counts"]["faults"] == len(r.injected) and result["counts"]["violations"] == 0
    json_path, text_path = report.write(result, tmp_path)
    text = text_path.read_text()
    assert "seed 42" in text and "kill_pvcnoded hv2" in text and json_path.exists()
    assert (tmp_path / "chaos-t-42.events.jsonl").read_text().count('"event": "fault"') == len(r.injected)
