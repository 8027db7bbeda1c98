"""The invariants of a chaos run: sampled all along, and checked once the faults have healed.

Sampled (the Sampler thread, every couple of seconds):
  vm-twice          a VM's domain executes (running, blocked or shutting down; not paused, which is
                    the incoming side of a live migration) on two nodes. A first sighting is asked
                    again at once, node by node: only a second sighting counts, because a migration
                    that completes between the questions to two nodes looks like one.
  vm-restarted-unasked
                    a VM's QEMU on a node is replaced by another (a new pid) although no request on
                    the VM was made and no fault was in place since it was last seen.
  document-lost     an RBD image or snapshot the API accepted (and nobody removed) is missing from
                    Ceph in two samples VANISHED_AFTER apart, with no request on it in flight.
  rbd-stale-watch   an RBD image is watched (held open) from a node where no domain of the VM using
                    it exists, for longer than RBD_GRACE with nothing in flight on it: a client left
                    holding it (a leaked open, a QEMU libvirt lost); removing the volume then fails.
                    The grace counts from the last fault's heal too: a killed client's watch lasts
                    Ceph's watch timeout from the last re-peering of the image's placement group.
  rbd-two-writers   an RBD image has live clients (watchers) on two nodes, outside a migration of
                    the VM that uses it, for longer than RBD_GRACE (a client that dies keeps its
                    watch for Ceph's 30 s watch timeout; a blocklisted one loses it at once).

At the end (after every fault healed and a bounded wait):
  request-unfinished, failed-without-reason, task-lost, task-stuck
                    every request the API accepted ended done, or failed with a reason; no task
                    of the run is still PENDING or RUNNING.
  document-unparsable, document-lost, document-half-written, document-leftover
                    every document under the trees the workload touches parses (with its record
                    model where there is one); what the ledger expects exists in ZooKeeper and in
                    Ceph, what was removed is gone from both, and nothing exists in one only.
  vm-not-running, vm-running-elsewhere, vm-running-but-stopped, vm-state-lost
                    every VM that should run runs, once, on its node; none runs that should not.
  orphan-domain, orphan-mapping
                    no libvirt domain without a PVC VM; no rbd-fuse/rbd-nbd/krbd mapping left.
  zookeeper-unhealthy, ceph-unhealthy, fault-not-healed
                    every ZooKeeper member serves with one leader; Ceph is HEALTH_OK, or
                    HEALTH_WARN for TRANSIENT_CHECKS only; pvc.lab.chaos.faults.healthy() is empty.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.core import records, schema
from pvc.lab.chaos.context import EXECUTING, Context, address_node, rbd_images
from pvc.lab.chaos.workload import POOL, PREFIX, Ledger, Request, Workload

RBD_GRACE = 60.0
VANISHED_AFTER = 15.0      # seconds an expected image or snapshot may be missing (two RBD samples)
# Ceph health checks that may stand at the end of a run without anything being wrong, and why.
TRANSIENT_CHECKS = {
    "RECENT_CRASH": "a daemon the run killed may leave a crash report, listed for two weeks unless "
                    "archived (ceph crash archive-all); the daemon itself runs again",
}
# ... and those that may stand after a fault that silenced a node's network: Ceph warns of OSD
# heartbeat ping times above its threshold averaged over the last 1, 5 and 15 minutes, so a cut or
# a freeze the run injected keeps them listed for up to 15 minutes after the node is back.
AFTER_SILENCE_CHECKS = {
    "OSD_SLOW_PING_TIME_BACK": "OSD heartbeats on the cluster network were slow during a links_cut or "
                               "node_freeze (Ceph's 15-minute average)",
    "OSD_SLOW_PING_TIME_FRONT": "OSD heartbeats on the public network were slow during a links_cut or "
                                "node_freeze (Ceph's 15-minute average)",
}
SILENCING_KINDS = ("links_cut", "node_freeze")
MIGRATING = ("migrate", "migrate-live", "unmigrate")


@dataclass
class Violation:
    t: float
    invariant: str
    subject: str
    detail: str

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)


def executing(domains: dict[str, dict[str, str] | None], qemus: dict[str, dict[str, str]]
              ) -> dict[str, list[str]]:
    """uuid -> nodes where its guest executes: from libvirt where it answered, else from the
    node's QEMU processes (a stopped, 'T', process does not execute)."""
    out: dict[str, list[str]] = {}
    for node, answer in sorted(domains.items()):
        if answer is not None:
            running = [u for u, state in answer.items() if state in EXECUTING]
        else:
            running = [u for u, state in qemus.get(node, {}).items() if state not in ("T", "t", "Z")]
        for uuid in running:
            out.setdefault(uuid, []).append(node)
    return out


def present(raw: dict[str, Any]) -> dict[str, set[str]]:
    """uuid -> nodes where a domain of it exists (libvirt, any state but shut off) or a QEMU
    process runs it."""
    out: dict[str, set[str]] = {}
    for node, answer in (raw.get("libvirt") or {}).items():
        for uuid, state in (answer or {}).items():
            if state not in ("shutoff", "nostate"):
                out.setdefault(uuid, set()).add(node)
    for node, processes in (raw.get("pids") or {}).items():
        for uuid in processes:
            out.setdefault(uuid, set()).add(node)
    return out


def rbd_suspects(images: dict[str, dict[str, Any]], node_of: Any, vms: dict[str, dict[str, Any]]
                 ) -> dict[str, str]:
    """image -> why it looks written from two nodes now: watchers on two nodes while the VM using
    it (if any) is not migrating. `vms` are API items (name -> item, with disks and state)."""
    users: dict[str, dict[str, Any]] = {}
    for item in vms.values():
        for disk in item.get("disks") or []:
            name = str(disk.get("name", ""))
            if name.startswith(f"{POOL}/"):
                users[name.split("/", 1)[1]] = item
    found = {}
    for image, info in sorted(images.items()):
        nodes = sorted({node_of(a) for a in info.get("watchers", [])})
        if len(nodes) < 2:
            continue
        user = users.get(image)
        if user is not None and user.get("state") in MIGRATING:
            continue
        lock = sorted({node_of(a) for a in info.get("lockers", [])})
        used = f"{user['name']} ({user.get('state')} on {user.get('node')})" if user else "no VM"
        found[image] = (f"watchers on {', '.join(nodes)}; exclusive lock held from "
                        f"{', '.join(lock) or 'nobody'}; used by {used}")
    return found


def stale_watchers(images: dict[str, dict[str, Any]], node_of: Any, vms: dict[str, dict[str, Any]],
                   present: dict[str, set[str]]) -> dict[str, str]:
    """image -> which of its watchers nothing explains: a watcher on a node where no domain (any
    state, or QEMU process) of the VM using the image exists. `present` is uuid -> nodes where
    a domain or QEMU process of it exists; a volume no VM uses has no domain to explain a watch."""
    users: dict[str, dict[str, Any]] = {}
    for item in vms.values():
        for disk in item.get("disks") or []:
            name = str(disk.get("name", ""))
            if name.startswith(f"{POOL}/"):
                users[name.split("/", 1)[1]] = item
    found = {}
    for image, info in sorted(images.items()):
        user = users.get(image)
        allowed = present.get(str(user.get("uuid")), set()) if user else set()
        stale = sorted({f"{node_of(a)} ({a})" for a in info.get("watchers", []) if node_of(a) not in allowed})
        if stale:
            used = f"VM {user['name']} ({user.get('state')})" if user else "no VM"
            found[image] = (f"watched from {', '.join(stale)}, where no domain of its VM exists; used by "
                            f"{used}; domains of it on {', '.join(sorted(allowed)) or 'no node'}")
    return found


class Sampler:
    """The continuous checks (thread body: run)."""

    def __init__(self, ctx: Context, workload: Workload, interval: float = 2.0, rbd_interval: float = 10.0
                 ) -> None:
        self.ctx = ctx
        self.workload = workload
        self.interval = interval
        self.rbd_interval = rbd_interval
        self.violations: list[Violation] = []
        self.lock = threading.Lock()
        self.latest: dict[str, list[str]] | None = None
        # how much the checks saw (the report shows them, so a quiet run is not a blind one)
        self.counts = {"placement": 0, "domains_seen": 0, "twice_unconfirmed": 0, "rbd": 0, "images_seen": 0,
                       "images_watched_from_two_nodes": 0}
        self._twice_seen: set[str] = set()
        self._pids: dict[str, tuple[str, int, float]] = {}    # uuid -> (node, QEMU pid, last seen)
        self._missing: dict[str, float] = {}                    # ledger key -> first seen missing
        self._vanished: set[str] = set()
        self.present: dict[str, set[str]] | None = None        # uuid -> nodes with a domain of it
        self._stale: dict[str, float] = {}
        self._reported_stale: set[str] = set()
        self._suspects: dict[str, tuple[float, int]] = {}
        self._reported_rbd: set[str] = set()
        self.done = threading.Event()

    def where(self) -> dict[str, list[str]] | None:
        return self.latest

    def violate(self, invariant: str, subject: str, detail: str) -> None:
        violation = Violation(self.ctx.clock.now(), invariant, subject, detail)
        with self.lock:
            self.violations.append(violation)
        self.ctx.events.add("violation", invariant=invariant, subject=subject, detail=detail)

    def executing_now(self, nodes: list[Any] | None = None) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """(uuid -> nodes executing it, the raw views); the QEMU processes of every node are in
        the views too ("pids": node -> uuid -> (pid, state))."""
        probes = self.ctx.probes
        domains = probes.all_domains(nodes)
        nodes = nodes if nodes is not None else self.ctx.plan.nodes
        pids = probes.all_qemus()
        qemus = {n.name: {u: state for u, (_pid, state) in pids.get(n.name, {}).items()}
                 for n in nodes if domains.get(n.name) is None}
        return executing(domains, qemus), {"libvirt": domains, "qemu": qemus, "pids": pids}

    def sample_once(self) -> None:
        found, raw = self.executing_now()
        twice = {u: n for u, n in found.items() if len(n) > 1}
        self.counts["domains_seen"] = max(self.counts["domains_seen"], len(found))
        if twice:
            involved = sorted({n for nodes in twice.values() for n in nodes})
            again, raw_again = self.executing_now([self.ctx.plan.node(n) for n in involved])
            for uuid, nodes in twice.items():
                confirmed = again.get(uuid, [])
                if len(confirmed) > 1 and uuid not in self._twice_seen:
                    self._twice_seen.add(uuid)
                    self.violate("vm-twice", self._vm_name(uuid),
                                 f"domain {uuid} executes on {', '.join(confirmed)} (asked twice: {nodes}, "
                                 f"then {confirmed}); libvirt/qemu views: {json.dumps(raw_again)[:600]}")
                elif len(confirmed) <= 1:
                    found[uuid] = confirmed
                    self.counts["twice_unconfirmed"] += 1
        self.latest = found
        self.present = present(raw)
        self.counts["placement"] += 1
        self.check_restarts(raw.get("pids", {}))

    def check_restarts(self, pids: dict[str, dict[str, tuple[int, str]]]) -> None:
        """A VM whose QEMU on the same node was replaced (a new pid) while nobody asked: no request
        on the VM since it was last seen, and no fault anywhere meanwhile."""
        now = self.ctx.clock.now()
        for node, processes in sorted(pids.items()):
            for uuid, (pid, _state) in sorted(processes.items()):
                seen = self._pids.get(uuid)
                self._pids[uuid] = (node, pid, now)
                if seen is None or seen[0] != node or seen[1] == pid:
                    continue
                name = self._vm_name(uuid)
                if self.workload.asked(name, seen[2]) or self.ctx.faults_between(seen[2], now):
                    continue
                self.violate("vm-restarted-unasked", name,
                             f"its QEMU on {node} was pid {seen[1]} at {seen[2]}s and is pid {pid} at "
                             f"{now}s; no request on the VM and no fault meanwhile")

    def _vm_name(self, uuid: str) -> str:
        for item in (self.workload.items or {}).values():
            if item.get("uuid") == uuid:
                return str(item.get("name"))
        return uuid

    def rbd_once(self) -> None:
        plan = self.ctx.plan
        images = self.ctx.probes.in_ceph(lambda client: rbd_images(client, POOL),
                                         avoid=self.ctx.faulted_nodes())
        vms = self.workload.items
        if images is None or vms is None:
            return
        self.counts["rbd"] += 1
        self.counts["images_seen"] = max(self.counts["images_seen"], len(images))
        self.counts["images_watched_from_two_nodes"] += sum(
            1 for info in images.values()
            if len({address_node(plan, a) for a in info.get("watchers", [])}) > 1)
        now = self.ctx.clock.now()
        self.check_vanished(images, now)
        self.check_stale(images, vms, now)
        suspects = rbd_suspects(images, lambda a: address_node(plan, a), vms)
        for image in list(self._suspects):
            if image not in suspects:
                del self._suspects[image]
        for image, why in suspects.items():
            first, count = self._suspects.get(image, (now, 0))
            self._suspects[image] = (first, count + 1)
            if now - first >= RBD_GRACE and count + 1 >= 3 and image not in self._reported_rbd:
                self._reported_rbd.add(image)
                self.violate("rbd-two-writers", f"{POOL}/{image}", f"for {now - first:.0f}s: {why}")

    def check_stale(self, images: dict[str, dict[str, Any]], vms: dict[str, dict[str, Any]], now: float,
                    grace: float = RBD_GRACE) -> dict[str, str]:
        """A watch on an image that no domain explains, for longer than `grace` with nothing in
        flight on the image or its VM: a client left holding it open (a leaked open, a QEMU that
        libvirt lost). Returns the current suspects."""
        if self.present is None:
            return {}
        plan = self.ctx.plan
        found = stale_watchers(images, lambda a: address_node(plan, a), vms, self.present)
        active = self.workload.active_subjects()
        users = {str(d.get("name", "")).split("/", 1)[-1]: str(i.get("name"))
                 for i in vms.values() for d in i.get("disks") or []}
        for image in list(self._stale):
            if image not in found:
                del self._stale[image]
        for image, why in found.items():
            vm = users.get(image, "")
            touching = {image, vm} | {s for s in active if vm and s.startswith(f"{vm}@")}
            if touching & active:
                self._stale.pop(image, None)
                continue
            first = self._stale.setdefault(image, now)
            # A client killed outright (a self-fence's SIGKILL of QEMU) keeps its watch until Ceph's
            # watch timeout (30 s) runs out, and each time the image's placement group peers again
            # (an OSD killed, a node cut off or frozen and back) that timeout starts over: so the
            # grace counts from the last heal as well. A live holder outlasts any grace, and the
            # check after the run (Runner.final_watchers) comes when every fault has healed.
            quiet = max([first, *(h["t"] for h in self.ctx.events.of("heal"))])
            if now - quiet >= grace and image not in self._reported_stale:
                self._reported_stale.add(image)
                self.violate("rbd-stale-watch", f"{POOL}/{image}",
                             f"since {first}s (still at {now}s): {why}; {holder(self.ctx.plan, why)}")
        return found

    def check_vanished(self, images: dict[str, dict[str, Any]], now: float) -> None:
        """An image or RBD snapshot the ledger expects (accepted, never removed, nothing in flight
        on it, its VM or its VM snapshot) missing from Ceph in samples VANISHED_AFTER apart."""
        ledger = self.workload.ledger
        active = self.workload.active_subjects()
        snaps = {f"{image}@{snap}" for image, info in images.items() for snap in info.get("snapshots", [])}
        expected: dict[str, set[str]] = {}
        for thing in ledger.all("volume"):
            if thing.exists is True and not thing.busy:
                expected[thing.key] = {thing.key, str(thing.info.get("vm") or "")}
        for thing in ledger.all("vsnap"):
            if thing.exists is True and not thing.busy:
                volume = ledger.get("volume", str(thing.info.get("volume")))
                owner = str(thing.info.get("owner") or "")
                expected[thing.key] = {thing.key, str(thing.info.get("volume")), owner, owner.split("@")[0],
                                       str(volume.info.get("vm") or "") if volume else ""}
        for key in list(self._missing):
            if key not in expected or key in images or key in snaps:
                del self._missing[key]
        for key, touching in sorted(expected.items()):
            if key in images or key in snaps or touching & active:
                self._missing.pop(key, None)
                continue
            first = self._missing.setdefault(key, now)
            if now - first >= VANISHED_AFTER and key not in self._vanished:
                self._vanished.add(key)
                what = "RBD snapshot" if "@" in key else "RBD image"
                self.violate("document-lost", f"{POOL}/{key}",
                             f"{what} missing from Ceph since {first}s (still at {now}s): accepted, never "
                             f"removed, and no request on it, its volume or its VM in flight")

    def run(self) -> None:
        last_rbd = 0.0
        while not self.done.is_set():
            started = time.monotonic()
            try:
                self.sample_once()
                if started - last_rbd >= self.rbd_interval:
                    last_rbd = started
                    self.rbd_once()
            except Exception as exc:  # a probe's failure is not the cluster's: note it, go on
                self.ctx.events.add("note", what=f"sampler: {type(exc).__name__}: {exc}"[:300])
            self.done.wait(max(0.2, self.interval - (time.monotonic() - started)))


# -- the final checks ----------------------------------------------------------------------------------

def check_requests(requests: list[Request], t: float) -> list[Violation]:
    """Every accepted request ended; every failure has a reason; no task vanished."""
    out = []
    for request in requests:
        subject = f"{request.id} {request.op} {request.subject}"
        if request.outcome == "pending":
            out.append(Violation(t, "request-unfinished", subject,
                                 f"accepted at {request.t}s ({request.status} {request.message[:120]}), "
                                 f"expected {request.expect}, never ended"))
        elif request.outcome == "lost":
            out.append(Violation(t, "task-lost", subject, f"task {request.task_id}: {request.reason}"))
        elif request.outcome == "failed" and not request.reason.strip():
            out.append(Violation(t, "failed-without-reason", subject,
                                 "failed, and the cluster gave no reason"))
    return out


def parse_documents(raw: dict[str, tuple[bytes, bool]], t: float) -> tuple[dict[str, Any], list[Violation]]:
    """path -> parsed document of every non-empty znode; a document that does not parse (or does
    not fit its record model) is a violation."""
    models = {"/vms/*": records.VMRecord, "/vms/*/status": records.VMStatus, "/tasks/*": records.TaskRecord,
              "/vmsnapshots/*/*": records.VMSnapshotRecord}
    docs: dict[str, Any] = {}
    out = []
    for path, (data, _ephemeral) in sorted(raw.items()):
        if not data:
            continue
        try:
            doc = json.loads(data)
        except ValueError as exc:
            out.append(Violation(t, "document-unparsable", path, f"not JSON ({exc}): {data[:120]!r}"))
            continue
        parts = path.strip("/").split("/")
        shape = "/" + "/".join([parts[0], *["*"] * (len(parts) - 1)])
        if len(parts) == 3 and parts[0] == "vms":
            shape = f"/vms/*/{parts[2]}"
        model = models.get(shape)
        if model is not None:
            try:
                model.model_validate(doc)
            except ValueError as exc:
                out.append(Violation(t, "document-unparsable", path,
                                     f"not a {model.__name__}: {str(exc)[:200]}"))
        docs[path] = doc
    return docs, out


def compare_ledger(ledger: Ledger, docs: dict[str, Any], images: dict[str, dict[str, Any]], t: float
                   ) -> list[Violation]:
    """What the ledger expects against ZooKeeper (docs, paths relative to the cluster root) and
    Ceph (images of the pool): nothing lost, nothing half-written, nothing left behind."""
    out: list[Violation] = []

    def bad(invariant: str, subject: str, detail: str) -> None:
        out.append(Violation(t, invariant, subject, detail))

    names = {path.rsplit("/", 1)[1]: doc for path, doc in docs.items() if path.startswith("/vmnames/")}
    vm_docs = {path.split("/")[2]: doc for path, doc in docs.items()
               if path.startswith("/vms/") and path.count("/") == 2 and isinstance(doc, dict)}
    by_name = {str(d.get("name")): u for u, d in vm_docs.items()}
    for name, target in names.items():
        uuid = target if isinstance(target, str) else None
        if uuid not in vm_docs:
            bad("document-half-written", f"vm {name}",
                f"/vmnames/{name} points to {uuid}, which has no /vms document")
    for uuid, doc in vm_docs.items():
        if str(doc.get("name")) not in names:
            bad("document-half-written", f"vm {doc.get('name')}", f"/vms/{uuid} has no /vmnames entry")
    for vm in ledger.all("vm"):
        uuid = by_name.get(vm.key)
        if vm.exists is True and uuid is None:
            bad("document-lost", f"vm {vm.key}", "accepted, never removed, but there is no VM document")
        elif vm.exists is False and uuid is not None:
            bad("document-leftover", f"vm {vm.key}",
                f"removed (or its creation failed), but /vms/{uuid} is there")
        elif uuid is not None and vm.info.get("uuid") and vm.info["uuid"] != uuid:
            bad("document-half-written", f"vm {vm.key}", f"UUID {uuid}, not the defined {vm.info['uuid']}")
        if uuid is not None:
            vm.info.setdefault("uuid", uuid)
            if not vm.info.get("uuid"):
                vm.info["uuid"] = uuid
    volume_docs = {path.rsplit("/", 1)[1]: doc for path, doc in docs.items()
                   if path.startswith(f"/ceph/volumes/{POOL}/") and path.count("/") == 4}
    snap_docs = {"{}@{}".format(*path.rsplit("/", 2)[1:]) for path in docs
                 if path.startswith(f"/ceph/snapshots/{POOL}/") and path.count("/") == 5}
    ceph_snaps = {f"{image}@{snap}" for image, info in images.items() for snap in info.get("snapshots", [])}
    for volume in ledger.all("volume"):
        in_zk, in_ceph = volume.key in volume_docs, volume.key in images
        if volume.exists is True and not (in_zk and in_ceph):
            bad("document-lost", f"volume {volume.key}",
                f"accepted, never removed: document {in_zk}, image {in_ceph}")
        elif volume.exists is False and (in_zk or in_ceph):
            bad("document-leftover", f"volume {volume.key}", f"removed: document {in_zk}, image {in_ceph}")
        size = volume.info.get("size")
        if volume.exists is True and in_ceph and size and images[volume.key]["size"] != size:
            bad("document-half-written", f"volume {volume.key}",
                f"size in Ceph {images[volume.key]['size']}, accepted {size}")
    for name in sorted(set(volume_docs) | set(images)):
        if name.startswith(PREFIX) and (name in volume_docs) != (name in images):
            bad("document-half-written", f"volume {name}",
                "a document without an image" if name in volume_docs else "an image without a document")
    for snap in ledger.all("vsnap"):
        in_zk, in_ceph = snap.key in snap_docs, snap.key in ceph_snaps
        if snap.exists is True and not (in_zk and in_ceph):
            bad("document-lost", f"snapshot {snap.key}",
                f"accepted, never removed: document {in_zk}, RBD {in_ceph}")
        elif snap.exists is False and (in_zk or in_ceph):
            bad("document-leftover", f"snapshot {snap.key}", f"removed: document {in_zk}, RBD {in_ceph}")
    for key in sorted(snap_docs ^ ceph_snaps):
        if key.startswith(PREFIX):
            bad("document-half-written", f"snapshot {key}",
                "a document without an RBD snapshot" if key in snap_docs
                else "an RBD snapshot without a document")
    for image, info in sorted(images.items()):
        for original in info.get("trashed", []) if image.startswith(PREFIX) else []:
            bad("document-leftover", f"snapshot {image}@{original}",
                "its removal stopped half-way: librbd's trash still holds it under a UUID")
    for snap in ledger.all("vmsnap"):
        vm_name, name = snap.key.split("@", 1)
        vm = ledger.get("vm", vm_name)
        uuid = by_name.get(vm_name) or (vm.info.get("uuid") if vm else "")
        path = f"/vmsnapshots/{uuid}/{name}"
        there = path in docs
        if snap.exists is True and not there:
            bad("document-lost", f"vm snapshot {snap.key}", f"accepted and made, but {path} is missing")
        elif snap.exists is False and there:
            bad("document-leftover", f"vm snapshot {snap.key}",
                f"removed (or never made), but {path} is there")
        # a record marked "removing" declares its RBD snapshots partly gone (a removal cut short,
        # finished by a repeat): not half-written
        if there and isinstance(docs[path], dict) and docs[path].get("state") != "removing":
            for volume in docs[path].get("volumes", []):
                ref = f"{volume.get('volume')}@{volume.get('snap')}"
                if ref not in ceph_snaps:
                    bad("document-half-written", f"vm snapshot {snap.key}",
                        f"its RBD snapshot {ref} is missing")
    for net in ledger.all("network"):
        there = f"/networks/{net.key}" in docs
        if net.exists is True and not there:
            bad("document-lost", f"network {net.key}", "accepted, never removed, but its document is missing")
        elif net.exists is False and there:
            bad("document-leftover", f"network {net.key}", "removed, but its document is there")
    return out


FIXTURE_DOCS = (schema.network("3100"), schema.system_template("cx-tiny"), schema.network_template("cx-net"),
                schema.storage_template("cx-clone"), schema.userdata("cx-ud"), schema.script("cx-clone"),
                schema.profile("cx-prof"))


def check_fixture(docs: dict[str, Any], t: float) -> list[Violation]:
    return [Violation(t, "document-lost", path, "the run's provisioner fixture document is missing")
            for path in FIXTURE_DOCS if path not in docs]


def check_vms(vm_docs: dict[str, dict[str, Any]], statuses: dict[str, dict[str, Any]],
              where: dict[str, list[str]], ledger: Ledger, t: float,
              held: dict[str, set[str]] | None = None) -> list[Violation]:
    """Every VM that should run runs once, on its node; no other runs; the ledger's desired state
    is what the documents say (uuid -> VM document, uuid -> status document). `held`: uuid -> nodes
    where a domain of it exists in any state (a paused one holds its disks as a running one does)."""
    out = []
    held = held or {}
    desired = {vm.key: vm.info.get("desired") for vm in ledger.all("vm") if vm.exists is True}
    for uuid, doc in sorted(vm_docs.items()):
        name, state, node = str(doc.get("name")), str(doc.get("state")), str(doc.get("node"))
        on = where.get(uuid, [])
        subject = f"vm {name}"
        if state in ("start", "restart", "migrate", "migrate-live", "unmigrate", "shutdown"):
            if not on:
                out.append(Violation(t, "vm-not-running", subject,
                                     f"state {state} on {node}, but it runs nowhere "
                                     f"(status: {json.dumps(statuses.get(uuid, {}))[:200]})"))
            elif on != [node]:
                out.append(Violation(t, "vm-running-elsewhere", subject,
                                     f"state {state} on {node}, runs on {on}"))
        elif on:
            out.append(Violation(t, "vm-running-but-stopped", subject, f"state {state}, but it runs on {on}"))
        extra = sorted(held.get(uuid, set()) - set(on))
        if extra and (state not in ("start", "restart", "migrate", "migrate-live", "unmigrate", "shutdown")
                      or extra != [node] or on):
            out.append(Violation(t, "vm-running-elsewhere", subject,
                                 f"state {state} on {node}: a domain that does not execute (e.g. paused) "
                                 f"is left on {', '.join(extra)}"))
        want = desired.get(name)
        if want == "start" and state in ("stop", "disable"):
            out.append(Violation(t, "vm-state-lost", subject,
                                 f"asked to start (accepted), but its state is {state}"))
        if want == "stop" and state in ("start", "restart", "migrate", "migrate-live", "unmigrate"):
            out.append(Violation(t, "vm-state-lost", subject,
                                 f"asked to stop (accepted), but its state is {state}"))
        if state == "fail" and not str(statuses.get(uuid, {}).get("failed_reason") or "").strip():
            out.append(Violation(t, "failed-without-reason", subject, "state fail, and no failed_reason"))
    return out


def check_orphans(domains: dict[str, dict[str, str] | None], vm_uuids: set[str], t: float) -> list[Violation]:
    out = []
    for node, answer in sorted(domains.items()):
        if answer is None:
            out.append(Violation(t, "orphan-domain", node,
                                 f"libvirtd of {node} does not answer (cannot check)"))
            continue
        for uuid, state in sorted(answer.items()):
            if uuid not in vm_uuids:
                out.append(Violation(t, "orphan-domain", uuid,
                                     f"a domain on {node} ({state}) with no PVC VM"))
    return out


def mappings(ceph_conf: str) -> list[str]:
    """rbd-fuse/rbd-nbd processes of this lab's Ceph, mounts and loop devices under the mapping
    directory, mapping records and kernel rbd devices: what a job left mapped."""
    from pvc.adapters import rbdmap

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name in ("rbd-fuse", "rbd-nbd") \
                and ceph_conf.encode() in b" ".join(argv):
            found.append(f"process {entry.name}: {b' '.join(argv).decode(errors='replace')[:160]}")
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    found += [f"mount {m}" for m in mounts if m.startswith(str(rbdmap.FUSE_DIR))]
    found += [f"mapping record {p}" for p in sorted(rbdmap.STATE_DIR.glob("*.json"))] \
        if rbdmap.STATE_DIR.exists() else []
    rbd_devices = Path("/sys/bus/rbd/devices")
    if rbd_devices.exists():
        found += [f"kernel rbd device {p.name}" for p in sorted(rbd_devices.iterdir())]
    for loop in sorted(Path("/sys/block").glob("loop*")):
        try:
            backing = (loop / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(str(rbdmap.FUSE_DIR)):
            found.append(f"loop device /dev/{loop.name} on {backing}")
    return found


def zookeeper_problems(plan: Any) -> list[str]:
    from pvc.lab import zookeeper

    modes = {n.name: zookeeper.member_status(plan, n) for n in plan.coordinators}
    out = [f"zk:{n} is {m}" for n, m in sorted(modes.items()) if m not in zookeeper.SERVING]
    leaders = [n for n, m in modes.items() if m == "leader"]
    if len(plan.coordinators) > 1 and len(leaders) != 1:
        out.append(f"{len(leaders)} leaders ({', '.join(sorted(leaders)) or 'none'})")
    return out


def ceph_problems(plan: Any, silenced: bool = False) -> list[str]:
    """Ceph's health problems; `silenced`: the run cut or froze a node (AFTER_SILENCE_CHECKS)."""
    from pvc.lab import ceph

    status = ceph.status(plan)
    health, checks = status.get("health"), list(status.get("checks", []))
    if health == "HEALTH_OK":
        return []
    allowed = set(TRANSIENT_CHECKS) | (set(AFTER_SILENCE_CHECKS) if silenced else set())
    if health == "HEALTH_WARN" and checks and all(c in allowed for c in checks):
        return []
    return [f"{health}: {', '.join(checks) or 'no checks listed'}"]


def holder(plan: Any, why: str) -> str:
    """Which PVC process holds a watch, from the daemons' logs (each logs its Ceph client's
    address on connecting: pvc.adapters.ceph.connection); else it is none of them (a QEMU)."""
    nonces = set(re.findall(r":\d+/(\d+)", why))
    if not nonces:
        return "holder unknown"
    found = []
    for path in sorted(Path(plan.log_dir).glob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if "Ceph client" in line and "connected from" in line and any(f"/{n}" in line for n in nonces):
                found.append(f"{path.name}: {line.strip()[:200]}")
    return ("held by " + " | ".join(found)) if found else "no PVC daemon logged that client (a QEMU, or rbd)"
