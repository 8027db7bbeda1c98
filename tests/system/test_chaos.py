"""A short seeded chaos run on the shared lab (issue #17): a workload through the API (VMs defined,
started, migrated, moved, stopped, removed; provisioning; volumes and their snapshots; VM
snapshots; networks) while faults are injected one at a time, and no invariant may break. The
30-minute run is bench/chaos.py; a failure here names the seed that replays it:
`pvc-lab chaos --name <lab> --seed <seed> --minutes 3 ...` on a running lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.lab.chaos import runner
from pvc.lab.plan import LabPlan

SEED = 1717
MINUTES = 3.0


@pytest.mark.timeout(int(MINUTES * 60 + 600))        # the run, its settling (240 s at most), clean-up
def test_a_short_chaos_run_breaks_no_invariant(lab: LabPlan, tmp_path: Path) -> None:
    config = runner.Config(minutes=MINUTES, seed=SEED, workers=3, max_vms=4, fault_gap=(5.0, 20.0),
                           fault_hold=(5.0, 20.0), settle=240.0, report_dir=tmp_path)
    result, _json_path, text_path = runner.run(lab, config, echo=print)
    counts = result["counts"]
    lines = text_path.read_text().splitlines()
    # the report's head, then every line about a subject of a violation (its operations, its
    # task, the faults around it): what a failure needs, without the run's whole log
    subjects = {str(v.get("subject", "")).split()[-1] for v in result.get("violations", [])}
    about = [line for line in lines[60:] if any(s and s in line for s in subjects)]
    head = "\n".join([*lines[:60], "", "About the violations' subjects:", *about])
    assert counts["violations"] == 0, f"replay: {result['replay']}\n{head}"
    assert result["cleanup_errors"] == [], head
    assert counts["accepted"] > 0 and counts["faults"] > 0, head
