#!/usr/bin/env python3
"""Chaos on the lab (issue #17): a seeded workload through the API for 30 minutes (default) while
seeded faults are injected one at a time (SIGKILL of pvcnoded, pvcworkerd or pvcapid; a ZooKeeper
member or the leader killed and restarted; an OSD killed; a node's links cut; a node frozen; the
primary's state directory full), with the invariants checked all along and at the end.

Prints the counts (operations, faults injected, invariant violations: target 0) and where the
report is (text and JSON: the seed, every operation and fault with its time, each violation).

Needs a running lab (`./scripts/lab` or `pvc-lab up`, default name pvclab), or brings up its own
(`--own`, or when there is none) with PVC_LAB_CHAOS=1, so the state-directory fault has its
size-limited mount, and takes it down afterwards.

Usage: bench/chaos.py [--lab pvclab | --own] [--minutes 30] [--seed S] [--workers 3] [--max-vms 5]
                      [--kinds k1,k2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys

from _common import bench_lab, table  # puts the repository on sys.path
from pvc.lab.chaos import runner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="a running lab (default: pvclab when it is up)")
    parser.add_argument("--own", action="store_true",
                        help="bring up a private chaos lab 'chaosb' for the run")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-vms", type=int, default=5)
    parser.add_argument("--kinds", default="", help="comma-separated fault kinds (default: all)")
    args = parser.parse_args()
    seed = random.SystemRandom().randrange(1, 10**6) if args.seed is None else args.seed
    if args.own or args.lab is None:
        os.environ.setdefault("PVC_LAB_CHAOS", "1")   # only a lab this bench brings up is affected
    plan, api, own = bench_lab(args.lab, args.own, "chaosb", 3, 240)
    api.close()
    config = runner.Config(minutes=args.minutes, seed=seed, workers=args.workers, max_vms=args.max_vms,
                           kinds=tuple(k for k in args.kinds.split(",") if k))
    print(f"chaos on lab {plan.name} for {args.minutes:g} min, seed {seed} "
          f"(replay: {config.replay(plan.name)})", flush=True)
    try:
        result, json_path, text_path = runner.run(plan, config, echo=lambda line: print(line, flush=True))
    finally:
        if own:
            from pvc.lab.main import lab_down

            lab_down(plan.name)
    counts = result["counts"]
    table(f"Chaos, {args.minutes:g} min on lab {plan.name}, seed {seed}", [
        ("operations", str(counts["operations"]), "> 0", counts["operations"] > 0),
        ("  accepted", str(counts["accepted"]), "-", True),
        *[(f"  {outcome}", str(n), "-", True) for outcome, n in counts["outcomes"].items()],
        ("faults injected", str(counts["faults"]), "> 0", counts["faults"] > 0),
        *[(f"  {kind}", str(n), "-", True) for kind, n in counts["faults_by_kind"].items()],
        ("invariant violations", str(counts["violations"]), "0", counts["violations"] == 0),
        *[(f"  {name}", str(n), "0", False) for name, n in counts["violations_by_invariant"].items()],
        ("clean-up leftovers", str(len(result["cleanup_errors"])), "0", not result["cleanup_errors"]),
    ])
    print(f"\nreport: {text_path}\n        {json_path}")
    return 0 if counts["violations"] == 0 and not result["cleanup_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
