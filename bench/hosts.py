#!/usr/bin/env python3
"""The real-host lane with its phase timings (issue #18): packages, lane up, the playbook's first
and second run, the acceptance checks, the rolling upgrade, lane down.

Runs pvc.lab.hosts.scenario (the same run as tests/hosts/test_lane.py) and prints one line per
phase next to its target. Machine-heavy: run it with nothing else running, e.g.
    .venv/bin/python bench/hosts.py
Usage: bench/hosts.py [--keep-up] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pvc.lab.hosts import scenario

# Targets for a 2-core machine (seconds); the lane's whole run should stay a coffee break.
TARGETS = {
    "lane up (image cached, 3 hosts booted)": 60,
    "site.yml, first run": 600,
    "site.yml, second run": 180,
    "rolling upgrade to the newer build": 600,
    "lost coordinator rebuilt by site.yml": 600,
    "total": 1800,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-up", action="store_true", help="leave the lane running (then: python -m pvc.lab.hosts down)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--recovery", action="store_true", help="also lose and rebuild a coordinator")
    parser.add_argument("--nodes", action="store_true", help="also add and remove a fourth node")
    args = parser.parse_args()
    report = scenario.Report()
    started = time.monotonic()
    error = None
    try:
        scenario.run(report, keep_up=args.keep_up, recovery=args.recovery, nodes=args.nodes)
    except Exception as exc:  # the table still shows how far it got
        error = f"{type(exc).__name__}: {exc}"
    report.seconds["total"] = round(time.monotonic() - started, 1)
    print(f"\n{'phase':<52} {'seconds':>9} {'target':>8}")
    for phase, seconds in report.seconds.items():
        target = TARGETS.get(phase)
        mark = "" if target is None else (" ok" if seconds <= target else " OVER")
        print(f"{phase:<52} {seconds:>9.1f} {target if target is not None else '':>8}{mark}")
    for key in ("old_version", "new_version", "primary", "vm_ip", "lane_up"):
        if key in report.facts:
            print(f"{key}: {report.facts[key]}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"seconds": report.seconds, "facts": report.facts, "error": error}, indent=1, default=str
            )
        )
    if error:
        print(f"FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
