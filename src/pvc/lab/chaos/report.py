"""The report of a chaos run: JSON (everything, for tools and replays) and text (for people).

Both name the seed and the command that replays the run, and list every operation and every
fault with its time on the run's clock (seconds since the run started, `started` is its wall time).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any


def counts(operations: list[dict[str, Any]], faults: list[dict[str, Any]], violations: list[dict[str, Any]]
           ) -> dict[str, Any]:
    outcomes = Counter(str(o.get("outcome") or "?") for o in operations)
    return {
        "operations": len(operations),
        "accepted": sum(1 for o in operations if o.get("status") is not None and 200 <= o["status"] < 300),
        "outcomes": dict(sorted(outcomes.items())),
        "faults": len(faults),
        "faults_by_kind": dict(sorted(Counter(str(f["kind"]) for f in faults).items())),
        "violations": len(violations),
        "violations_by_invariant": dict(sorted(Counter(str(v["invariant"]) for v in violations).items())),
    }


def build(*, lab: str, seed: int, config: dict[str, Any], started: float, duration: float,
          operations: list[dict[str, Any]], faults: list[dict[str, Any]], skipped: list[dict[str, Any]],
          violations: list[dict[str, Any]], phases: list[dict[str, Any]], notes: list[dict[str, Any]],
          cleanup: list[str], samples: dict[str, int], replay: str) -> dict[str, Any]:
    return {
        "lab": lab, "seed": seed, "replay": replay, "config": config,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "duration_s": round(duration, 1),
        "counts": counts(operations, faults, violations),
        "samples": samples,
        "phases": phases, "faults": faults, "faults_skipped": skipped, "violations": violations,
        "operations": operations, "notes": notes, "cleanup_errors": cleanup,
    }


def text(report: dict[str, Any]) -> str:
    c = report["counts"]
    lines = [
        f"Chaos run on lab {report['lab']}: seed {report['seed']}, started {report['started']}, "
        f"{report['duration_s']}s",
        f"replay: {report['replay']}",
        "",
        f"operations {c['operations']} (accepted {c['accepted']}; "
        + ", ".join(f"{k} {v}" for k, v in c["outcomes"].items()) + ")",
        f"faults injected {c['faults']} ("
        + (", ".join(f"{k} {v}" for k, v in c["faults_by_kind"].items()) or "none") + ")",
        f"invariant violations {c['violations']}"
        + (" (" + ", ".join(f"{k} {v}" for k, v in c["violations_by_invariant"].items()) + ")"
           if c["violations"] else ""),
        f"samples: {', '.join(f'{k} {v}' for k, v in report['samples'].items())}",
        "",
        "Violations:" if report["violations"] else "Violations: none",
    ]
    for v in report["violations"]:
        lines.append(f"  [{v['t']:8.1f}s] {v['invariant']}: {v['subject']}: {v['detail']}")
    lines += ["", "Phases:"]
    lines += [f"  [{p['t']:8.1f}s] {p['phase']} {p.get('detail', '')}".rstrip() for p in report["phases"]]
    lines += ["", "Faults:" if report["faults"] else "Faults: none"]
    for f in report["faults"]:
        lines.append(f"  [{f['t']:8.1f}s] {f['kind']} {f['target']}: {f['detail']} "
                     f"(healed {fmt(f.get('healed_t'))}, healthy {fmt(f.get('healthy_t'))}"
                     f"{', may be fenced' if f.get('expect_fence') else ''})"
                     + (f" heal error: {f['heal_error']}" if f.get("heal_error") else ""))
    if report["faults_skipped"]:
        lines += ["", "Faults drawn but not injected:"]
        lines += [f"  [{s['t']:8.1f}s] {s['kind']} {s.get('target', '')}: {s['reason']}"
                  for s in report["faults_skipped"]]
    lines += ["", "Operations:"]
    for o in report["operations"]:
        end = f" -> {o['outcome']} at {fmt(o.get('outcome_t'))}" if o.get("outcome") else ""
        why = f": {o['reason']}" if o.get("reason") else ""
        task = f" task {o['task_id']}" if o.get("task_id") else ""
        lines.append(f"  [{o['t']:8.1f}s] {o['id']} {o['worker']} {o['op']} {o['subject']} "
                     f"{o['method']} {o['path']} {o['status']}{task}{end}{why}")
    if report["notes"]:
        lines += ["", "Notes (the runner's own trouble, not the cluster's):"]
        lines += [f"  [{n['t']:8.1f}s] {n['what']}" for n in report["notes"]]
    if report["cleanup_errors"]:
        lines += ["", "Clean-up left:"] + [f"  {e}" for e in report["cleanup_errors"]]
    return "\n".join(lines) + "\n"


def fmt(t: float | None) -> str:
    return "-" if t is None else f"{t:.1f}s"


def write(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write `<lab>-<seed>-<time>.json` and `.txt` into `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"chaos-{report['lab']}-{report['seed']}-{report['started'].replace(' ', 'T').replace(':', '')}"
    json_path, text_path = directory / f"{stem}.json", directory / f"{stem}.txt"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    text_path.write_text(text(report))
    return json_path, text_path
