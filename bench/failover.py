#!/usr/bin/env python3
"""Failover on the lab, both figures of issue #17: how fast, and never by mistake.

1. Kill runs: from `pvc-lab node kill` to every VM of that node running elsewhere, median of
   `--runs` (target <= 8 s), with the phase timeline from the node's fencing record.
2. False-fence soak: `--soak-minutes` (default 10) with both cores saturated (stress-ng, one CPU
   worker per core) and ZooKeeper under a steady write load (`--zk-writes` 1 KiB writes a second
   to a scratch znode outside the cluster's root), guests running on every node. Counted: fencing
   chains started, self-fences, ZooKeeper sessions replaced (a session that expired), nodes out of
   the run state (target 0 for each); shown beside them: the slowest ZooKeeper answer the bench
   itself saw, the oldest keepalive, the near misses nodes logged ("no ZooKeeper answer for ...")
   and how busy the CPUs were.
3. Isolation runs (`--isolate-runs`): a node cut off the network, not killed, must destroy its
   VMs itself before the primary declares it dead: the least headroom (dead - self-fence, from
   the fencing record and the node's log) must stay above 0; the budget's safety inequality.

Uses the running lab `--lab` (default pvclab) or, with `--own` or when none runs, brings a lab up
and down itself. Each kill run boots guests (named after a fresh tag) with their root on RBD on a
node that is not the primary, kills that node hard, polls every node's libvirtd (every 0.1 s)
until each VM runs elsewhere, then brings the node back (rejoin, start, ready) and removes the
guests and their volumes, however the run ends. Phases, each measured from the kill:
  lost       the primary saw the node's ZooKeeper session gone (its alive marker expired)
  dead       the primary declared the node dead (lost + fencing.margin)
  fenced     the fence agent reported the node off
  blocklist  the node's Ceph client blocklisted (and its OSDs marked down)
  recovered  the chain placed the VMs on new nodes
  running    the last VM's QEMU runs on its new node
  mon quorum the surviving Ceph mons formed a quorum without the killed node's mon (osdmap
             changes - blocklist, OSDs down, lock breaks - wait for it; 0: no new quorum logged)
The timing budget behind these is in docs/architecture.md ("Failover timing").

Usage: bench/failover.py [--lab pvclab | --own] [--runs 5] [--vms 2] [--isolate-runs 2]
                         [--soak-minutes 10] [--zk-writes 100] [--soak-vms 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from _common import bench_lab, table  # puts the repository on sys.path for `tests`
from _lab_docs import BASE_POOL, Cleanup, bench_tag, delete, remove_vm

# isort: split
from tests.system import ha
from tests.system.helpers import call

from pvc.lab import main as labmain
from pvc.lab import pvcnodes, zookeeper
from pvc.lab.plan import LabPlan

TARGET = 8.0
PHASES = ("lost", "dead", "fenced", "blocklist", "recovered", "mon quorum")
NEAR_MISS = re.compile(r"no ZooKeeper answer for ([0-9.]+)s")


def remove_guest(api: httpx.Client, name: str) -> None:
    """The guest and its root volume (a clone made before the VM: a failed define leaves it alone)."""
    remove_vm(api, name)
    delete(api, f"/storage/ceph/volume/{BASE_POOL}/{name}_vda")


def mon_logs(lab: LabPlan) -> dict[Path, int]:
    """Each mon log and its size now (where to read new lines from)."""
    return {path: path.stat().st_size for path in sorted((lab.ceph_dir / "log").glob("mon.*.log"))}


def mon_quorum_after(offsets: dict[Path, int], victim: str) -> float:
    """The wall time a surviving mon logged a new quorum ("is new leader") after `offsets`; 0 if
    none did (the killed node's mon was not needed for the quorum to go on)."""
    found = []
    for path, offset in offsets.items():
        if path.name == f"mon.{victim}.log" or not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(offset)
            for line in f.read().decode(errors="replace").splitlines():
                if "is new leader" in line:
                    stamp = line.split(" ", 1)[0]
                    try:
                        found.append(datetime.datetime.fromisoformat(stamp.replace("+0000", "+00:00"))
                                     .timestamp())
                    except ValueError:
                        continue
    return min(found, default=0.0)


def zk_leader(lab: LabPlan) -> str:
    """The node whose ZooKeeper member leads ('' when none answers as leader)."""
    return next((n.name for n in lab.coordinators if zookeeper.member_status(lab, n) == "leader"), "")


# -- kill runs ----------------------------------------------------------------------------------------


def one_run(lab: LabPlan, api: httpx.Client, tag: str, run: int, count: int) -> dict[str, float]:
    primary = ha.other_than(api, lab, "none")
    victim = [n.name for n in lab.nodes if n.name != primary][run % (len(lab.nodes) - 1)]
    names = [f"{tag}r{run}n{i}" for i in range(count)]
    with Cleanup() as cleanup:
        uuids = {}
        for name in names:
            cleanup.add(f"remove guest {name}", lambda name=name: remove_guest(api, name))
            uuids[name] = ha.rbd_guest(lab, api, name, victim)
        cleanup.add(f"restore {victim}", lambda: ha.restore(lab, api, victim))  # before the guests go
        leader = zk_leader(lab)
        mons = mon_logs(lab)
        t0 = time.time()
        labmain.node_kill(lab, lab.node(victim))
        done: dict[str, float] = {}
        while len(done) < len(uuids) and time.time() - t0 < 120:
            for name, uuid in uuids.items():
                where = ha.running_on(lab, uuid)
                if len(where) > 1:
                    raise SystemExit(f"{name} runs on {where}: twice!")
                if name not in done and where and where[0] != victim:
                    done[name] = time.time() - t0
            time.sleep(0.1)
        if len(done) < len(uuids):
            raise SystemExit(f"run {run}: not every VM came back within 120 s: {done}")
        record: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while record.get("phase") != "done" and time.monotonic() < deadline:
            record = ha.fencing(api, victim)
            time.sleep(0.2)
        phases = ha.event_times(record)
        fenced = phases.get("fenced", phases.get("fence-failed", 0))
        # the API's record leaves lost_since out; the reason says how long before the declaration
        ago = re.search(r"session lost ([0-9.]+)s ago", str(record.get("reason") or ""))
        lost = phases["dead"] - float(ago.group(1)) if ago else float(record.get("lost_since") or t0)
        result = {"lost": lost - t0, "dead": phases["dead"] - t0,
                  "fenced": fenced - t0, "blocklist": phases.get("blocklist", 0) - t0,
                  "recovered": phases["done"] - t0, "running": max(done.values())}
        quorum = mon_quorum_after(mons, victim)
        result["mon quorum"] = quorum - t0 if quorum else 0.0
        # a survivor that destroyed its VMs meanwhile (e.g. the ZooKeeper leader died with the
        # node and the election outlasted the session timeout) is a false fence
        result["survivor self-fences"] = float(sum(
            1 for n in lab.nodes if n.name != victim
            for event in call(api, "GET", f"/node/{n.name}")[0].get("self_fence_events") or []
            if float(event.get("time") or 0) > t0 and "self-fence" in str(event.get("message"))))
        note = " (it led the ZooKeeper ensemble)" if leader == victim else ""
        timeline = ", ".join(f"{k} {v:.2f}s" for k, v in result.items() if k != "survivor self-fences")
        timeline += f"; self-fences on survivors: {result['survivor self-fences']:.0f}"
        print(f"run {run + 1}: {victim} killed{note}; {timeline}", flush=True)
        return result


SELF_FENCE = re.compile(r"^(\S+ \S+) .*self-fence: no ZooKeeper answer for ([0-9.]+)s \(session timeout "
                        r"([0-9.]+)s\)")


def self_fence_in_log(lab: LabPlan, node: str, offset: int) -> tuple[float, float] | None:
    """(wall time, lateness) of the node's self-fence logged after `offset`: when it destroyed its
    VMs, and by how much its silence exceeded the session timeout (the δ of the budget)."""
    path = lab.log_dir / f"{node}-pvcnoded.log"
    with path.open("rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            match = SELF_FENCE.match(line)
            if match:
                stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                return stamp, float(match.group(2)) - float(match.group(3))
    return None


def isolate_run(lab: LabPlan, api: httpx.Client, tag: str, run: int, count: int) -> dict[str, float]:
    """A node cut off the network (not killed): it must destroy its VMs itself before the
    primary declares it dead. The headroom is the safety inequality's slack on the lab."""
    from pvc.lab import netns

    primary = ha.other_than(api, lab, "none")
    victim = [n.name for n in lab.nodes if n.name != primary][run % (len(lab.nodes) - 1)]
    names = [f"{tag}i{run}n{i}" for i in range(count)]
    with Cleanup() as cleanup:
        uuids = {}
        for name in names:
            cleanup.add(f"remove guest {name}", lambda name=name: remove_guest(api, name))
            uuids[name] = ha.rbd_guest(lab, api, name, victim)
        cleanup.add(f"restore {victim}", lambda: ha.restore(lab, api, victim))
        offset = log_size(lab, victim)
        t0 = time.time()
        netns.isolate(lab, lab.node(victim))
        record: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while record.get("phase") != "done" and time.monotonic() < deadline:
            latest = ha.fencing(api, victim)
            record = latest if float(latest.get("started") or 0) > t0 else {}
            time.sleep(0.2)
        if record.get("phase") != "done":
            raise SystemExit(f"isolation run {run}: {victim} was not fenced within 120 s")
        fenced = self_fence_in_log(lab, victim, offset)
        if fenced is None:
            raise SystemExit(f"isolation run {run}: {victim} logged no self-fence")
        dead = ha.event_times(record)["dead"]
        result = {"self-fence": fenced[0] - t0, "dead": dead - t0, "headroom": dead - fenced[0],
                  "lateness": fenced[1]}
        print(f"isolation {run + 1}: {victim} cut off; self-fence {result['self-fence']:.2f}s (late by "
              f"{result['lateness']:.1f}s), dead {result['dead']:.2f}s, headroom "
              f"{result['headroom']:.2f}s", flush=True)
        return result


def isolate_rows(runs: list[dict[str, float]]) -> list[tuple[str, str, str, bool]]:
    least = min(r["headroom"] for r in runs)
    late = max(r["lateness"] for r in runs)
    return [(f"isolated node: self-fence -> dead, least of {len(runs)}", f"{least:.2f} s", "> 0", least > 0),
            ("isolated node: self-fence lateness, worst (0.1 s steps)", f"{late:.1f} s", "< margin", True)]


def kill_rows(runs: list[dict[str, float]]) -> list[tuple[str, str, str, bool]]:
    rows = []
    for phase in PHASES:
        values = [r[phase] for r in runs]
        rows.append((f"{phase} (median of {len(runs)})", f"{statistics.median(values):.2f} s", "-", True))
    total = [r["running"] for r in runs]
    rows.append(("kill -> all VMs running, median", f"{statistics.median(total):.2f} s", f"<= {TARGET:.0f} s",
                 statistics.median(total) <= TARGET))
    rows.append(("kill -> all VMs running, worst", f"{max(total):.2f} s", "-", True))
    false = int(sum(r["survivor self-fences"] for r in runs))
    rows.append(("self-fences on surviving nodes", f"{false}", "0", false == 0))
    return rows


# -- the false-fence soak ---------------------------------------------------------------------------


class ZKWriter:
    """A steady write load on the lab's ZooKeeper: `rate` 1 KiB writes a second to a scratch
    znode outside the cluster root (so nothing of PVC's reads it), in batches every 0.1 s; also
    measures how long each batch's answers take (what a node's requests wait for too)."""

    PATH = "/pvc-bench-zkload"

    def __init__(self, lab: LabPlan, rate: int) -> None:
        from kazoo.client import KazooClient
        from kazoo.security import make_digest_acl

        auth = pvcnodes.zk_auth(lab)
        user, password = auth["username"], auth["password"]
        self.client = KazooClient(hosts=f"127.0.0.1:{lab.zk_port}", timeout=10,
                                  auth_data=[("digest", f"{user}:{password}")],
                                  default_acl=[make_digest_acl(user, password, all=True)])
        self.rate, self.writes, self.slowest = rate, 0, 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="zk-writer", daemon=True)

    def start(self) -> None:
        self.client.start(timeout=15)
        self.client.ensure_path(self.PATH)
        self.thread.start()

    def _loop(self) -> None:
        payload, batch = os.urandom(1024), max(1, self.rate // 10)
        next_at = time.monotonic()
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                pending = [self.client.set_async(self.PATH, payload) for _ in range(batch)]
                for result in pending:
                    result.get(timeout=30)
                self.writes += batch
            except Exception as exc:   # counted as a slow answer; the soak goes on
                print(f"zk writer: {type(exc).__name__}: {exc}", flush=True)
            self.slowest = max(self.slowest, time.monotonic() - began)
            next_at += 0.1
            self.stopping.wait(max(0.0, next_at - time.monotonic()))
            if next_at < time.monotonic() - 1:
                next_at = time.monotonic()          # fell behind: do not burst

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(35)
        try:
            self.client.delete(self.PATH, recursive=True)
        finally:
            self.client.stop()
            self.client.close()


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def sessions(lab: LabPlan, zk: Any) -> dict[str, int]:
    """Node -> owner session of its alive marker (0 when it has none)."""
    from pvc.core import schema

    out = {}
    for node in lab.nodes:
        stat = zk.stat(schema.node_alive(node.name))
        out[node.name] = stat.ephemeralOwner if stat is not None else 0
    return out


def log_size(lab: LabPlan, node: str) -> int:
    path = lab.log_dir / f"{node}-pvcnoded.log"
    return path.stat().st_size if path.exists() else 0


def near_misses(lab: LabPlan, offsets: dict[str, int]) -> list[float]:
    """The silences nodes warned about ("no ZooKeeper answer for X s") since `offsets`."""
    found = []
    for node, offset in offsets.items():
        path = lab.log_dir / f"{node}-pvcnoded.log"
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        found += [float(m.group(1)) for m in NEAR_MISS.finditer(text)]
    return found


def soak(lab: LabPlan, api: httpx.Client, tag: str, minutes: float, rate: int, guests: int
         ) -> list[tuple[str, str, str, bool]]:
    stress = shutil.which("stress-ng")
    if stress is None:
        raise SystemExit("stress-ng is not installed (scripts/install installs it)")
    nodes = [n.name for n in lab.nodes]
    zk = pvcnodes.lab_zk(lab)
    counts = {"chains": 0, "self-fences": 0, "sessions replaced": 0, "out of run": 0}
    seen: dict[str, set[str]] = {"chains": set(), "self-fences": set(), "out of run": set()}
    oldest_keepalive = 0.0
    with Cleanup() as cleanup:
        cleanup.add("stop the ZooKeeper session", zk.stop)
        for i in range(guests):
            name = f"{tag}s{i}"
            cleanup.add(f"remove guest {name}", lambda name=name: remove_guest(api, name))
            ha.rbd_guest(lab, api, name, nodes[i % len(nodes)])
        before = sessions(lab, zk)
        offsets = {n: log_size(lab, n) for n in nodes}
        mons = mon_logs(lab)
        writer = ZKWriter(lab, rate)
        writer.start()
        cleanup.add("stop the ZooKeeper writes", writer.stop)
        seconds = int(minutes * 60)
        busy0, total0 = cpu_busy()
        began, wall0 = time.monotonic(), time.time()
        child = subprocess.Popen([stress, "--cpu", str(os.cpu_count() or 2), "--cpu-load", "100",
                                  "--timeout", f"{seconds}s", "--quiet"])
        cleanup.add("stop stress-ng", lambda: (child.kill(), child.wait()))
        print(f"soak: {minutes:g} min, stress-ng on {os.cpu_count()} CPU(s), {rate} ZooKeeper "
              f"writes/s, {guests} guest(s)", flush=True)
        last_print = began
        while time.monotonic() - began < seconds:
            time.sleep(2)
            try:
                docs = {n: call(api, "GET", f"/node/{n}")[0] for n in nodes}
                now_sessions = sessions(lab, zk)
            except Exception as exc:   # an API answer slow under load is no fence; note and go on
                print(f"soak: poll failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            now = time.time()
            for n, doc in docs.items():
                record = doc.get("fencing") or {}
                if float(record.get("started") or 0) > wall0:
                    seen["chains"].add(f"{n}@{record.get('started')}")
                for event in doc.get("self_fence_events") or []:
                    if float(event.get("time") or 0) > wall0 and "self-fence" in str(event.get("message")):
                        seen["self-fences"].add(f"{n}@{event.get('time')}")
                if doc.get("daemon_state") != "run":
                    seen["out of run"].add(f"{n}:{doc.get('daemon_state')}")
                oldest_keepalive = max(oldest_keepalive, now - float(doc.get("keepalive") or now))
            for n, session in now_sessions.items():
                if session != before.get(n):
                    counts["sessions replaced"] += 1
                    before[n] = session
            if time.monotonic() - last_print >= 60:
                last_print = time.monotonic()
                print(f"soak: {(last_print - began) / 60:.0f} min, {writer.writes} writes, "
                      f"{sum(len(v) for v in seen.values()) + counts['sessions replaced']} fence sign(s)",
                      flush=True)
        elapsed = time.monotonic() - began
        busy1, total1 = cpu_busy()
        writes, slowest = writer.writes, writer.slowest
        misses = near_misses(lab, offsets)
        elections = 0
        for path, offset in mons.items():
            with path.open("rb") as f:
                f.seek(offset)
                elections += f.read().decode(errors="replace").count("calling monitor election")
    for key, values in seen.items():
        counts[key] = len(values)
        if values:
            print(f"soak: {key}: {', '.join(sorted(values))}")
    fences = counts["chains"] + counts["self-fences"]
    busy = 100 * (busy1 - busy0) / max(1, total1 - total0)
    expired, rate_seen = counts["sessions replaced"], writes / elapsed
    return [
        ("soak length", f"{elapsed / 60:.1f} min", f">= {minutes:g} min", elapsed >= seconds),
        ("CPU busy during the soak", f"{busy:.0f} %", "saturated", busy >= 95),
        ("ZooKeeper writes/s achieved", f"{rate_seen:.0f}", f"~{rate}", rate_seen >= rate * 0.8),
        ("slowest ZooKeeper write batch", f"{slowest:.2f} s", "-", True),
        ("oldest keepalive seen", f"{oldest_keepalive:.1f} s", "-", True),
        ("near misses logged (no answer >= bound/2)", f"{len(misses)}"
         + (f" (max {max(misses):.1f} s)" if misses else ""), "-", True),
        ("false fences (chains + self-fences)", f"{fences}", "0", fences == 0),
        ("ZooKeeper sessions expired", f"{expired}", "0", expired == 0),
        ("nodes seen out of run", f"{counts['out of run']}", "0", counts["out of run"] == 0),
        ("Ceph mon elections called (not PVC's; shown)", f"{elections}", "-", True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab", default=None, help="a running lab (default pvclab when it runs)")
    parser.add_argument("--own", action="store_true", help="bring a lab 'bfail' up and down here")
    parser.add_argument("--runs", type=int, default=5, help="kill runs (0: none)")
    parser.add_argument("--vms", type=int, default=2, help="guests on the killed node per run")
    parser.add_argument("--isolate-runs", type=int, default=2,
                        help="runs cutting a node off (self-fence before dead); 0: none")
    parser.add_argument("--soak-minutes", type=float, default=10.0, help="false-fence soak (0: none)")
    parser.add_argument("--zk-writes", type=int, default=100, help="ZooKeeper writes/s during the soak")
    parser.add_argument("--soak-vms", type=int, default=3, help="guests running during the soak")
    args = parser.parse_args()
    lab, api, own = bench_lab(args.lab, args.own, "bfail", 3, 240)
    rows: list[tuple[str, str, str, bool]] = []
    try:
        with api:
            tag = bench_tag("fo")
            if args.runs > 0:
                rows += kill_rows([one_run(lab, api, tag, i, args.vms) for i in range(args.runs)])
            if args.soak_minutes > 0:
                rows += soak(lab, api, tag, args.soak_minutes, args.zk_writes, args.soak_vms)
            if args.isolate_runs > 0:
                try:
                    rows += isolate_rows([isolate_run(lab, api, tag, i, 1) for i in range(args.isolate_runs)])
                except (SystemExit, Exception) as exc:   # the other figures still print
                    rows.append(("isolated node: self-fence -> dead", f"failed: {exc}"[:40], "> 0", False))
    finally:
        if own:
            labmain.lab_down(lab.name)
    table(f"failover on lab {lab.name}: {args.runs} kill runs of {args.vms} VMs; "
          f"{args.soak_minutes:g} min false-fence soak", rows)


if __name__ == "__main__":
    main()
