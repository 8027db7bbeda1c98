"""Helpers for benchmark scripts: a private ZooKeeper, daemons as processes, result tables."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Daemon, write_config  # noqa: E402

from pvc.lab import labtls  # noqa: E402
from pvc.lab.plan import LabPlan  # noqa: E402
from pvc.lab.zkserver import ZooKeeperServer, free_port  # noqa: E402

__all__ = ["Daemon", "ZooKeeperServer", "free_port", "lab_client", "percentile", "table", "wait_up",
           "workdir", "write_config"]


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"pvc-bench-{name}-"))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def table(title: str, rows: list[tuple[str, str, str, bool]]) -> None:
    """Print measured figures next to their targets: (metric, measured, target, met)."""
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'metric':<{width}}{'measured':>14}  {'target':<14}ok")
    for metric, measured, target, met in rows:
        print(f"{metric:<{width}}{measured:>14}  {target:<14}{'yes' if met else 'NO'}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def wait_up(daemon: Daemon, base: str) -> None:
    """Until pvcapid answers `GET /api/v1/` (or exits, or 30 s pass)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not daemon.running:
            raise SystemExit(f"pvcapid exited:\n{daemon.output()}")
        try:
            if httpx.get(base + "/api/v1/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("pvcapid did not answer within 30 s")


def lab_client(name: str) -> tuple[LabPlan, httpx.Client]:
    """(plan, API client) of the running lab `name`; exits with advice when there is none."""
    plan = LabPlan.load(name)
    if plan is None:
        raise SystemExit(f"no lab named {name}: run `pvc-lab up` first")
    return plan, labtls.api_client(plan, timeout=240)


DEFAULT_LAB = "pvclab"  # what ./scripts/lab brings up


def bench_lab(lab: str | None, own: bool, name: str, nodes: int, timeout: float
              ) -> tuple[LabPlan, httpx.Client, bool]:
    """(plan, API client, whether the bench brought the lab up itself): the running lab `lab`
    (default: the README's, when it is up), else a private lab `name` brought up fresh (as
    `make bench` without a lab always did)."""
    if lab is None and not own:
        own = LabPlan.load(DEFAULT_LAB) is None
    if not own:
        plan, api = lab_client(lab or DEFAULT_LAB)
        return plan, api, False
    from pvc.lab.main import lab_down, lab_up

    lab_down(name)
    plan = lab_up(name, nodes)
    return plan, labtls.api_client(plan, timeout=timeout), True
