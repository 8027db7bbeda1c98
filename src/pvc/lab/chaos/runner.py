"""A chaos run, start to end: `pvc-lab chaos --minutes N --seed S` and bench/chaos.py.

    preflight   the lab is healthy (pvc.lab.chaos.faults.healthy), leftovers of an earlier run go,
                the provisioning fixture is made
    workload    worker threads draw operations, the tracker follows each accepted request, the
                sampler checks the continuous invariants, the fault thread injects one fault at a
                time (seeded gap, kind, target, hold), heals it and waits until the lab is healthy
    stopping    the workers finish their request; the fault in place is healed
    settling    bounded waits: the lab healthy, every accepted request ended, tasks finished, VMs
                where their documents say
    checking    the final invariants (pvc.lab.chaos.invariants)
    cleanup     everything the run made is removed; the report is written

The exit status of `pvc-lab chaos` is 0 only with no violation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pvc.lab.chaos import invariants, report
from pvc.lab.chaos.context import Clock, Context, Events, Probes, address_node, rbd_images
from pvc.lab.chaos.invariants import Sampler, Violation
from pvc.lab.chaos.workload import POOL, Workload
from pvc.lab.plan import STATE_ROOT, LabPlan

# outside any lab's state directory (which `pvc-lab down` removes); not a valid lab name
REPORT_DIR = STATE_ROOT / "chaos-reports"
# faults that cut a node off or freeze it: the probes ask elsewhere meanwhile
NODE_SILENCING = ("links_cut", "node_freeze")
DOC_TREES = ("/vms", "/vmnames", "/networks", "/ceph/volumes", "/ceph/snapshots", "/vmsnapshots",
             "/provisioner", "/tasks")


class ChaosError(Exception):
    """The run could not start or went wrong in the runner itself (not a cluster violation)."""


@dataclass
class Config:
    minutes: float = 3.0
    seed: int = 0
    workers: int = 3
    max_vms: int = 5
    kinds: tuple[str, ...] = ()                          # empty: every kind faults.KINDS has
    fault_gap: tuple[float, float] = (10.0, 40.0)        # seconds between a heal and the next fault
    fault_hold: tuple[float, float] = (5.0, 30.0)        # seconds a fault stays before its heal
    faults: bool = True
    settle: float = 300.0                                # bounded waits after the faults healed
    report_dir: Path = field(default=REPORT_DIR)

    def replay(self, lab: str) -> str:
        words = [f"pvc-lab chaos --name {lab} --minutes {self.minutes:g} --seed {self.seed}",
                 f"--workers {self.workers} --max-vms {self.max_vms}"]
        if self.kinds:
            words.append(f"--kinds {','.join(self.kinds)}")
        if not self.faults:
            words.append("--no-faults")
        return " ".join(words)

    def view(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "seed": self.seed, "workers": self.workers, "max_vms": self.max_vms,
                "kinds": list(self.kinds), "fault_gap": list(self.fault_gap),
                "fault_hold": list(self.fault_hold), "faults": self.faults, "settle": self.settle}


class Runner:
    """One chaos run against the running lab `plan`. `fault_module` is pvc.lab.chaos.faults unless
    a test gives a stand-in with the same seam (KINDS, inject, targets, healthy)."""

    def __init__(self, plan: LabPlan, config: Config, echo: Callable[[str], None] | None = None,
                 fault_module: ModuleType | Any | None = None) -> None:
        if fault_module is None:
            from pvc.lab.chaos import faults as fault_module
        self.faults = fault_module
        self.plan = plan
        self.config = config
        kinds = config.kinds or tuple(self.faults.KINDS)
        unknown = [k for k in kinds if k not in self.faults.KINDS]
        if unknown:
            raise ChaosError(f"unknown fault kind(s) {', '.join(unknown)}; "
                             f"known: {', '.join(self.faults.KINDS)}")
        self.kinds = kinds
        self.echo = echo
        clock = Clock()
        stream = config.report_dir / f"chaos-{plan.name}-{config.seed}.events.jsonl"
        self.ctx = Context(plan, config.seed, clock, Events(clock, stream, echo), Probes(plan))
        self.workload = Workload(self.ctx, config.workers, config.max_vms)
        self.sampler = Sampler(self.ctx, self.workload)
        self.workload.where = self.sampler.where
        self.final: list[Violation] = []
        self.injected: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.cleanup: list[str] = []

    # -- phases ----------------------------------------------------------------------------------

    def phase(self, name: str, detail: str = "") -> None:
        self.ctx.events.add("phase", phase=name, detail=detail)

    def violate(self, invariant: str, subject: str, detail: str) -> None:
        self.final.append(Violation(self.ctx.clock.now(), invariant, subject, detail))
        self.ctx.events.add("violation", invariant=invariant, subject=subject, detail=detail)

    def record(self, found: list[Violation]) -> None:
        """Final-check violations, kept and shown as they are found."""
        for violation in found:
            self.final.append(violation)
            self.ctx.events.add("violation", invariant=violation.invariant, subject=violation.subject,
                                detail=violation.detail)

    def unhealthy(self, timeout: float) -> list[str]:
        """Wait until the lab is healthy; what is still not, after `timeout`."""
        deadline = time.monotonic() + timeout
        left: list[str] = []
        while True:
            try:
                left = list(self.faults.healthy(self.plan.name))
            except Exception as exc:  # the observation failed: count it as not healthy yet
                left = [f"cannot observe the lab: {type(exc).__name__}: {exc}"[:300]]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(3)

    def run(self) -> dict[str, Any]:
        ctx, config, workload = self.ctx, self.config, self.workload
        self.phase("preflight", f"seed {config.seed}, {config.minutes:g} min, faults {', '.join(self.kinds)}")
        left = self.unhealthy(180)
        if left:
            raise ChaosError(f"lab {self.plan.name} is not healthy before the run: {'; '.join(left)}")
        api = ctx.api()
        try:
            old = workload.teardown(api)
            if old:
                raise ChaosError(f"leftovers of an earlier run cannot be removed: {'; '.join(old)}")
            workload.setup(api)
        finally:
            api.close()
        drained = threading.Event()
        tracker = threading.Thread(target=workload.tracker, args=(drained,), name="chaos-tracker",
                                   daemon=True)
        sampler = threading.Thread(target=self.sampler.run, name="chaos-sampler", daemon=True)
        workers = [threading.Thread(target=workload.worker, args=(i,), name=f"chaos-w{i}", daemon=True)
                   for i in range(config.workers)]
        fault_thread = threading.Thread(target=self.fault_loop, name="chaos-faults", daemon=True)
        try:
            for thread in [sampler, tracker, *workers]:
                thread.start()
            if config.faults:
                fault_thread.start()
            self.phase("workload")
            try:
                ctx.stop.wait(config.minutes * 60)
            except KeyboardInterrupt:
                self.phase("interrupted", "stopping early at the operator's request")
        finally:
            # whatever happened, the fault in place is healed and the workers stop
            self.phase("stopping")
            ctx.stop.set()
            workload.stopping.set()
            for thread in workers:
                thread.join(240)
            if fault_thread.is_alive():
                fault_thread.join(900)
        try:
            self.settle(drained)
            self.phase("checking")
            self.final_checks(time.monotonic() + config.settle)
        finally:
            drained.set()
            self.sampler.done.set()
            tracker.join(60)
            sampler.join(60)
            self.phase("cleanup")
            api = ctx.api()
            try:
                self.cleanup = workload.teardown(api)
            finally:
                api.close()
        self.phase("done")
        return self.report()

    def settle(self, drained: threading.Event) -> None:
        """Bounded waits once the workers and faults stopped: the lab healthy again, then every
        accepted request ended (the tracker still runs)."""
        self.phase("settling", "until the lab is healthy")
        for problem in self.unhealthy(300):
            self.violate("fault-not-healed", "lab", f"after every heal and 300 s: {problem}")
        self.phase("settling", "until every accepted request ended")
        deadline = time.monotonic() + self.config.settle
        while self.workload.pending() and time.monotonic() < deadline:
            time.sleep(2)
        drained.set()

    # -- faults ----------------------------------------------------------------------------------

    def fault_loop(self) -> None:
        """Thread body: one fault at a time until the run stops."""
        ctx, config = self.ctx, self.config
        rng = ctx.rng("faults")
        while ctx.sleep(rng.uniform(*config.fault_gap)):
            kind = rng.choice(self.kinds)
            try:
                valid = sorted(self.faults.targets(kind, self.plan.name))
            except Exception as exc:
                self.skip(kind, "", f"targets: {type(exc).__name__}: {exc}")
                continue
            if not valid:
                self.skip(kind, "", "no valid target now")
                continue
            target = rng.choice(valid)
            hold = rng.uniform(*config.fault_hold)
            try:
                injected = self.faults.inject(kind, self.plan.name, target, rng)
            except Exception as exc:
                self.skip(kind, target, f"{type(exc).__name__}: {exc}")
                continue
            self.hold_and_heal(injected, hold)

    def skip(self, kind: str, target: str, reason: str) -> None:
        item = {"t": self.ctx.clock.now(), "kind": kind, "target": target, "reason": reason[:300]}
        self.skipped.append(item)
        self.ctx.events.add("fault-skipped", kind=kind, target=target, reason=reason[:300])

    def hold_and_heal(self, injected: Any, hold: float) -> None:
        ctx = self.ctx
        record = {"t": ctx.clock.at(injected.at), "kind": injected.kind, "target": injected.target,
                  "detail": injected.detail, "expect_fence": injected.expect_fence, "hold_s": round(hold, 1)}
        self.injected.append(record)
        window = f"{len(self.injected)}:{injected.kind}:{injected.target}"
        ctx.fault_began(window, record["t"])
        node = injected.target if injected.kind in NODE_SILENCING else ""
        if node:
            ctx.set_faulted(node, injected.kind)
        ctx.events.add("fault", kind=injected.kind, target=injected.target, detail=injected.detail,
                       hold=round(hold, 1))
        ctx.stop.wait(hold)
        try:
            injected.heal()
        except Exception as exc:
            record["heal_error"] = f"{type(exc).__name__}: {exc}"[:300]
        record["healed_t"] = ctx.clock.now()
        if node:
            ctx.set_faulted(node, None)
        ctx.events.add("heal", kind=injected.kind, target=injected.target, error=record.get("heal_error"))
        left = self.unhealthy(300)
        record["healthy_t"] = ctx.clock.now()
        ctx.fault_ended(window)
        if left:
            record["unhealthy"] = left
            self.violate("fault-not-healed", f"{injected.kind} {injected.target}",
                         f"300 s after its heal: {'; '.join(left)}")
        else:
            ctx.events.add("healthy", after=f"{injected.kind} {injected.target}")

    # -- the end -----------------------------------------------------------------------------------

    def final_checks(self, deadline: float) -> None:
        """The final invariants; the convergent ones are retried until `deadline` (the bounded
        wait after heal), the rest are checked once."""
        from pvc.lab import pvcnodes

        ctx = self.ctx
        now = ctx.clock.now
        self.record(invariants.check_requests(self.workload.requests, now()))
        zk = pvcnodes.lab_zk(self.plan)
        try:
            def documents() -> tuple[dict[str, Any], list[Violation]]:
                raw: dict[str, tuple[bytes, bool]] = {}
                for tree in DOC_TREES:
                    raw.update(zk.walk(tree))
                return invariants.parse_documents(raw, now())

            def vm_state() -> list[Violation]:
                docs, _bad = documents()
                vm_docs = {p.split("/")[2]: d for p, d in docs.items()
                           if p.startswith("/vms/") and p.count("/") == 2 and isinstance(d, dict)}
                statuses = {p.split("/")[2]: d for p, d in docs.items()
                            if p.startswith("/vms/") and p.endswith("/status") and isinstance(d, dict)}
                where, raw = self.sampler.executing_now()
                stuck = [Violation(now(), "task-stuck", p, f"{d.get('kind')} {d.get('state')}, created at "
                                   f"{ctx.clock.at_wall(float(d.get('created') or 0)):.1f}s")
                         for p, d in docs.items()
                         if p.startswith("/tasks/") and p.count("/") == 2 and isinstance(d, dict)
                         and d.get("state") in ("PENDING", "RUNNING")
                         and float(d.get("created") or 0) >= ctx.clock.wall0 - 5]
                return invariants.check_vms(vm_docs, statuses, where, self.workload.ledger, now(),
                                            invariants.present(raw)) + stuck

            found = vm_state()
            while found and time.monotonic() < deadline:
                time.sleep(5)
                found = vm_state()
            self.record(found)
            docs, bad = documents()
            self.record(bad)
            images = ctx.probes.in_ceph(lambda client: rbd_images(client, POOL))
            if images is None:
                self.violate("ceph-unhealthy", f"pool {POOL}", "its images cannot be listed")
            else:
                self.record(invariants.compare_ledger(self.workload.ledger, docs, images, now()))
            self.record(invariants.check_fixture(docs, now()))
            vm_uuids = {p.split("/")[2] for p in docs if p.startswith("/vms/") and p.count("/") == 2}
            self.record(invariants.check_orphans(ctx.probes.all_domains(), vm_uuids, now()))
        finally:
            zk.stop()
        self.final_watchers()
        for leftover in invariants.mappings(str(self.plan.ceph_conf)):
            self.violate("orphan-mapping", "host", leftover)
        for problem in invariants.zookeeper_problems(self.plan):
            self.violate("zookeeper-unhealthy", "ensemble", problem)
        silenced = any(f["kind"] in invariants.SILENCING_KINDS for f in self.injected)
        problems = invariants.ceph_problems(self.plan, silenced)
        while problems and time.monotonic() < deadline + 120:
            time.sleep(5)
            problems = invariants.ceph_problems(self.plan, silenced)
        for problem in problems:
            self.violate("ceph-unhealthy", "cluster", problem)
        for problem in self.unhealthy(0):
            self.violate("fault-not-healed", "lab", problem)

    def final_watchers(self, patience: float = 90.0) -> None:
        """No image is held open from a node where no domain of its VM exists, once the run is over
        (asked again for up to `patience` seconds: a killed client's watch lasts Ceph's 30 s)."""
        ctx = self.ctx
        deadline = time.monotonic() + patience
        api = ctx.api()
        try:
            while True:
                self.sampler.sample_once()
                images = ctx.probes.in_ceph(lambda client: rbd_images(client, POOL))
                answer = api.read("/vm", deadline=30)
                items = {str(i["name"]): i for i in answer.body} if isinstance(answer.body, list) else {}
                found = {} if images is None or self.sampler.present is None else invariants.stale_watchers(
                    images, lambda a: address_node(self.plan, a), items, self.sampler.present)
                if not found or time.monotonic() > deadline:
                    break
                time.sleep(10)
        finally:
            api.close()
        for image, why in found.items():
            if image not in self.sampler._reported_stale:
                self.violate("rbd-stale-watch", f"{POOL}/{image}", f"after the run: {why}")

    def violations(self) -> list[Violation]:
        return sorted([*self.sampler.violations, *self.final], key=lambda v: v.t)

    def report(self) -> dict[str, Any]:
        ctx = self.ctx
        events = ctx.events
        return report.build(
            lab=self.plan.name, seed=self.config.seed, config=self.config.view(), started=ctx.clock.wall0,
            duration=time.monotonic() - ctx.clock.t0,
            operations=[r.view() for r in self.workload.requests], faults=self.injected,
            skipped=self.skipped, violations=[v.view() for v in self.violations()],
            phases=events.of("phase"), notes=events.of("note"), cleanup=self.cleanup,
            samples=dict(self.sampler.counts),
            replay=self.config.replay(self.plan.name))


def run(plan: LabPlan, config: Config, echo: Callable[[str], None] | None = None
        ) -> tuple[dict[str, Any], Path, Path]:
    """Run, write the report; (report, JSON path, text path). If the runner itself fails after the
    preflight, what it has seen so far is written before the error goes on."""
    chaos = Runner(plan, config, echo)
    try:
        result = chaos.run()
    except ChaosError:
        raise
    except BaseException as exc:
        chaos.ctx.events.add("note", what=f"the runner failed: {type(exc).__name__}: {exc}"[:300])
        paths = report.write(chaos.report(), config.report_dir)
        raise ChaosError(f"the chaos runner failed ({type(exc).__name__}: {exc}); partial report: "
                         f"{paths[1]}") from exc
    json_path, text_path = report.write(result, config.report_dir)
    return result, json_path, text_path
