"""Fault injectors for the chaos runner (issue 17): real faults on a running lab, each with a heal
that brings the target back as systemd or an operator would.

The seam the runner uses (CONTRACT: KINDS, Injected, inject, targets, healthy). Which targets are
valid is decided by pure rules over a LabView (choose_targets, refusal, problems), so the guards
(one node out at a time, never below a ZooKeeper or Ceph mon quorum, never below a pool's
min_size) are unit-tested without a lab; observe() fills the view from the lab's processes,
links, ZooKeeper and Ceph.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pvc.lab import proc
from pvc.lab.chaos import space
from pvc.lab.plan import LabPlan, NodePlan
from pvc.lab.proc import LabError

KINDS: tuple[str, ...] = ("kill_pvcnoded", "kill_pvcworkerd", "kill_pvcapid", "zk_member_restart",
                          "zk_leader_restart", "osd_kill", "links_cut", "node_freeze", "state_dir_full")
# Faults that may take a whole node out of the cluster: a node whose pvcnoded is dead, whose links
# are cut or whose processes are frozen is fenced by the HA monitor once its keepalive lapses.
NODE_KINDS = frozenset({"kill_pvcnoded", "links_cut", "node_freeze"})
DAEMON_OF = {"kill_pvcnoded": "pvcnoded", "kill_pvcworkerd": "pvcworkerd"}
SERVING = ("leader", "follower", "standalone")   # pvc.lab.zookeeper.SERVING
KEEPALIVE_FRESH = 15.0     # seconds: a node whose keepalive is older is not back
CONFIRM = 6.0              # seconds a healed node must stay in service (over a keepalive interval)
API_MODULE = b"pvc.api.daemon"


class FaultRefused(LabError):
    """The target is not a valid one now (the message says why)."""


@dataclass
class Injected:
    kind: str          # one of KINDS
    target: str        # node name (e.g. "hv2") or "zk:<node>", "osd.<id>"
    detail: str        # human text for the report
    at: float          # time.monotonic() of injection
    heal: Callable[[], None]   # idempotent; brings the target back as an operator/systemd would
    expect_fence: bool  # True when the fault may legitimately get the node fenced


# -- the view and the pure rules --------------------------------------------------------------------

@dataclass
class NodeView:
    name: str
    coordinator: bool
    # what should run there -> whether it does: pvcnoded, pvcworkerd, libvirtd; zookeeper, mon on
    # coordinators; mgr on its node
    running: dict[str, bool] = field(default_factory=dict)
    pvcapid: bool = False
    links_down: list[str] = field(default_factory=list)
    stopped: int = 0                   # processes held by SIGSTOP
    zk_mode: str | None = None         # coordinators: leader/follower/standalone/down/starting/...
    daemon_state: str | None = None    # from ZooKeeper (None: unknown)
    domain_state: str | None = None
    keepalive_age: float | None = None
    state_mount: bool = False          # has a size-limited state directory (chaos lab)
    mount_problem: str | None = None


@dataclass
class OsdView:
    id: int
    node: str
    running: bool
    up: bool


@dataclass
class LabView:
    nodes: dict[str, NodeView]
    primary: str | None = None
    osds: list[OsdView] | None = None      # None: Ceph was not asked
    min_size: int = 2                      # the largest min_size of any pool
    mons_in_quorum: list[str] | None = None
    ceph_problem: str | None = None
    zk_problem: str | None = None

    @property
    def coordinators(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.coordinator]


def majority(members: int) -> int:
    return members // 2 + 1


def quorum_allows(members: Collection[str], serving: Iterable[str], taking: Iterable[str]) -> bool:
    """Whether the ensemble `members` keeps a majority serving once `taking` are gone."""
    left = set(serving) & set(members)
    left -= set(taking)
    return len(left) >= majority(len(members))


def node_out(node: NodeView) -> list[str]:
    """Why a node is not fully in service now (empty: it is)."""
    reasons = []
    if node.stopped:
        reasons.append(f"{node.stopped} process(es) stopped")
    if node.links_down:
        reasons.append(f"links down ({', '.join(node.links_down)})")
    if not node.running.get("pvcnoded", False):
        reasons.append("pvcnoded not running")
    if node.daemon_state is not None and node.daemon_state != "run":
        reasons.append(f"daemon_state {node.daemon_state}")
    if node.domain_state is not None and node.domain_state != "ready":
        reasons.append(f"domain_state {node.domain_state}")
    return reasons


def _usable(node: NodeView) -> bool:
    """Neither frozen nor cut off: its processes can be reached and signalled meaningfully."""
    return not node.stopped and not node.links_down


def zk_serving(view: LabView) -> set[str]:
    return {n.name for n in view.nodes.values()
            if n.coordinator and n.zk_mode in SERVING and _usable(n)}


def mons_up(view: LabView) -> set[str]:
    if view.mons_in_quorum is not None:
        return {m for m in view.mons_in_quorum if m in view.nodes and _usable(view.nodes[m])}
    return {n.name for n in view.nodes.values()
            if n.coordinator and n.running.get("mon", False) and _usable(n)}


def _quorum_refusal(view: LabView, taking: str) -> str | None:
    """Why taking node `taking` (its ZooKeeper member and mon) would break a quorum."""
    coordinators = view.coordinators
    if taking not in coordinators:
        return None
    for what, serving in (("ZooKeeper", zk_serving(view)), ("the Ceph mons", mons_up(view))):
        if not quorum_allows(coordinators, serving, {taking}):
            return (f"taking {taking} would leave {what} without a quorum ({len(serving - {taking})} of "
                    f"{len(coordinators)} serving, {majority(len(coordinators))} needed)")
    return None


def _osd_refusal(view: LabView, taking: Collection[int]) -> str | None:
    """Why taking the OSDs `taking` would leave a pool below its min_size."""
    if view.osds is None:
        return None
    up = [o.id for o in view.osds
          if o.up and o.running and (o.node not in view.nodes or _usable(view.nodes[o.node]))]
    left = [o for o in up if o not in taking]
    if taking and len(left) < view.min_size:
        return (f"taking {', '.join(f'osd.{i}' for i in sorted(taking))} would leave {len(left)} OSD(s) up, "
                f"below the pools' min_size {view.min_size}")
    return None


def _node_removal_refusal(view: LabView, name: str, allow_quorum_loss: bool) -> str | None:
    node = view.nodes[name]
    reasons = node_out(node)
    if reasons:
        return f"{name} is not in service ({'; '.join(reasons)})"
    if allow_quorum_loss:
        return None
    others = {n.name: node_out(n) for n in view.nodes.values() if n.name != name}
    out = {n: r for n, r in others.items() if r}
    if out:
        first = sorted(out)[0]
        return f"{first} is already out ({'; '.join(out[first])}): one node out at a time"
    return _quorum_refusal(view, name) or _osd_refusal(
        view, [o.id for o in view.osds or [] if o.node == name])


def candidates(kind: str, view: LabView) -> list[str]:
    """Every target name a fault of `kind` could have in this lab, valid now or not."""
    check_kind(kind)
    if kind in ("zk_member_restart", "zk_leader_restart"):
        return [f"zk:{n}" for n in view.coordinators]
    if kind == "osd_kill":
        return [f"osd.{o.id}" for o in sorted(view.osds or [], key=lambda o: o.id)]
    return list(view.nodes)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")


def _target_node(kind: str, view: LabView, target: str) -> str:
    """The node a target names (its ZooKeeper member's or OSD's node for those kinds)."""
    if kind in ("zk_member_restart", "zk_leader_restart"):
        if not target.startswith("zk:"):
            raise FaultRefused(f"{kind} targets a ZooKeeper member named zk:<node>, not {target!r}")
        name = target[3:]
    elif kind == "osd_kill":
        osd = _osd(view, target)
        name = osd.node
    else:
        name = target
    if name not in view.nodes:
        raise FaultRefused(f"{kind}: no node {name!r} in the lab")
    return name


def _osd(view: LabView, target: str) -> OsdView:
    ident = target.removeprefix("osd.")
    if not target.startswith("osd.") or not ident.isdigit():
        raise FaultRefused(f"osd_kill targets an OSD named osd.<id>, not {target!r}")
    for osd in view.osds or []:
        if osd.id == int(ident):
            return osd
    raise FaultRefused(f"osd_kill: no OSD {target} in the lab")


def refusal(kind: str, view: LabView, target: str, allow_quorum_loss: bool = False) -> str | None:
    """Why `target` is not a valid target of `kind` now; None when it is."""
    check_kind(kind)
    try:
        name = _target_node(kind, view, target)
    except FaultRefused as exc:
        return str(exc)
    node = view.nodes[name]
    if kind in NODE_KINDS:
        return _node_removal_refusal(view, name, allow_quorum_loss)
    if node.stopped:
        return f"{name}'s processes are stopped"
    if kind == "kill_pvcworkerd":
        return None if node.running.get("pvcworkerd") else f"pvcworkerd is not running on {name}"
    if kind == "kill_pvcapid":
        return None if node.pvcapid else f"pvcapid is not running on {name}"
    if kind == "state_dir_full":
        if name != view.primary:
            return f"{name} is not the primary ({view.primary or 'none'} is)"
        if not node.state_mount:
            return f"{name} has no size-limited state directory (bring the lab up with PVC_LAB_CHAOS=1)"
        return node.mount_problem and f"{name}: {node.mount_problem}"
    if kind == "osd_kill":
        osd = _osd(view, target)
        if not (osd.running and osd.up):
            return f"{target} is not up"
        if node.links_down:
            return f"{name}'s links are down"
        return None if allow_quorum_loss else _osd_refusal(view, [osd.id])
    # ZooKeeper members: the leader for zk_leader_restart, a follower for zk_member_restart
    want = "leader" if kind == "zk_leader_restart" else "follower"
    if not node.coordinator:
        return f"{name} runs no ZooKeeper member"
    if node.zk_mode != want:
        return f"zk:{name} is not a {want} (it is {node.zk_mode or 'unknown'})"
    if allow_quorum_loss:
        return None
    serving = zk_serving(view)
    if not quorum_allows(view.coordinators, serving, {name}):
        return (f"restarting zk:{name} would leave ZooKeeper without a quorum "
                f"({len(serving - {name})} of {len(view.coordinators)} serving)")
    return None


def choose_targets(kind: str, view: LabView, allow_quorum_loss: bool = False) -> list[str]:
    return [t for t in candidates(kind, view) if refusal(kind, view, t, allow_quorum_loss) is None]


def problems(view: LabView) -> list[str]:
    """What is not healthy in the view: every entry names its node, member or OSD."""
    found = []
    if view.zk_problem:
        found.append(f"ZooKeeper: {view.zk_problem}")
    if view.ceph_problem:
        found.append(f"Ceph: {view.ceph_problem}")
    for node in view.nodes.values():
        found += [f"{node.name}: {d} not running" for d, up in node.running.items() if not up]
        found += [f"{node.name}: {r}" for r in node_out(node) if r != "pvcnoded not running"]
        if node.coordinator and node.running.get("zookeeper") and node.zk_mode not in SERVING:
            found.append(f"zk:{node.name}: not serving ({node.zk_mode or 'unknown'})")
        if node.keepalive_age is not None and node.keepalive_age > KEEPALIVE_FRESH:
            found.append(f"{node.name}: keepalive {node.keepalive_age:.0f}s old")
        if node.mount_problem:
            found.append(f"{node.name}: {node.mount_problem}")
    if view.primary is None or view.primary not in view.nodes:
        found.append("no primary coordinator")
    elif not view.nodes[view.primary].pvcapid:
        found.append(f"{view.primary}: pvcapid not running on the primary")
    if view.mons_in_quorum is not None:
        found += [f"mon.{m}: not in quorum" for m in view.coordinators if m not in view.mons_in_quorum]
    for osd in view.osds or []:
        if not (osd.running and osd.up):
            found.append(f"osd.{osd.id} ({osd.node}): {'down' if osd.running else 'not running'}")
    return found



# -- observing the lab ------------------------------------------------------------------------------

def load_plan(lab: str) -> LabPlan:
    plan = LabPlan.load(lab)
    if plan is None:
        raise LabError(f"no lab named {lab!r} (pvc-lab up --name {lab})")
    return plan


def netns_pids(netns: str) -> list[int]:
    """Pids of the processes in a namespace, never this one's."""
    result = proc.run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def stopped_pids(netns: str) -> list[int]:
    table = proc.process_table()
    return [p for p in netns_pids(netns) if table.get(p, ("?",))[0] == "T"]


def pvcapid_pids(netns: str) -> list[int]:
    """pvcapid processes in a node's namespace (pvcnoded runs one on the primary)."""
    found = []
    for pid in netns_pids(netns):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if API_MODULE in argv and proc.alive(pid):
            found.append(pid)
    return found


def _link_flags(netns: str) -> dict[str, list[str]]:
    result = proc.run(["ip", "-n", netns, "-j", "link", "show"], check=False)
    try:
        return {link["ifname"]: link.get("flags", []) for link in json.loads(result.stdout or "[]")}
    except ValueError:
        return {}


def links_down(plan: LabPlan, node: NodePlan, switch: dict[str, list[str]] | None = None,
               world: dict[str, list[str]] | None = None) -> list[str]:
    """The node's cables that pass no traffic: its eth0/eth1, and its ports on the switch and the
    world bridge ('sw:hv2', 'wd:hv2')."""
    from pvc.lab import netns

    down = []
    mine = _link_flags(node.netns)
    for iface in (netns.NODE_IFACE, netns.UPSTREAM_IFACE):
        flags = mine.get(iface)
        if flags is not None and not ("UP" in flags and "LOWER_UP" in flags):
            down.append(iface)
    for prefix, links in (("sw", switch if switch is not None else _link_flags(plan.switch_netns)),
                          ("wd", world if world is not None else _link_flags(plan.world_netns))):
        flags = links.get(netns.switch_port(node))
        if flags is not None and "UP" not in flags:
            down.append(f"{prefix}:{node.name}")
    return down


def _usable_coordinators(plan: LabPlan, nodes: dict[str, NodeView]) -> list[NodePlan]:
    """Coordinators to ask from: not frozen, cabled in (a frozen member still accepts connections,
    which would hang a client, and one behind cut links answers nobody)."""
    usable = [c for c in plan.coordinators if c.name in nodes and _usable(nodes[c.name])]
    return usable or list(plan.coordinators)


def _zk_session(plan: LabPlan, via: list[NodePlan], timeout: float = 5) -> Any:
    """An authenticated ZooKeeper session made from inside a usable coordinator's namespace, to the
    members there are (not through the loopback relay, which may pick a frozen member)."""
    from pvc.core.zk import ZK
    from pvc.lab import pvcnodes
    from pvc.lab.plan import ZK_CLIENT_PORT

    auth = pvcnodes.zk_auth(plan)
    hosts = [f"{c.address}:{ZK_CLIENT_PORT}" for c in via]
    session = ZK(hosts, pvcnodes.ZK_ROOT, auth=(auth["username"], auth["password"]))
    # kazoo's connection thread starts in this namespace and stays there
    return proc.netns_call(via[0].netns, session.start, timeout, timeout=timeout + 10)


def read_nodes(plan: LabPlan, via: list[NodePlan]) -> tuple[dict[str, dict], str | None, str | None]:
    """(node documents, primary, problem) from the lab's ZooKeeper."""
    from pvc.core import schema

    try:
        zk = _zk_session(plan, via)
    except Exception as exc:   # unavailable, auth, socket errors: all "no answer"
        return {}, None, f"no session ({str(exc)[:160]})"
    try:
        docs = zk.get_many([schema.node(n.name) for n in plan.nodes])
        primary = zk.get(schema.PRIMARY_NODE, None)
    except Exception as exc:
        return {}, None, f"reads fail ({str(exc)[:160]})"
    finally:
        zk.stop()
    nodes = {n.name: docs.get(schema.node(n.name)) for n in plan.nodes}
    return ({k: v for k, v in nodes.items() if isinstance(v, dict)},
            primary if isinstance(primary, str) and primary not in ("", "none") else None, None)


def _ceph_view(plan: LabPlan, via: list[NodePlan]) -> tuple[list[OsdView], list[str] | None, int, str | None]:
    """(OSDs, mons in quorum, largest pool min_size, problem), asked from a usable coordinator."""
    from pvc.lab import ceph

    known = []
    try:
        known = ceph.all_osds(plan)
    except LabError:
        pass
    running = {o.id: proc.pid_of(ceph._pidfile(plan, plan.node(o.node), f"osd.{o.id}")) is not None
               for o in known}
    try:
        status = ceph.mon_command(plan, "status", netns=via[0].netns, timeout=5)
        dump = ceph.mon_command(plan, "osd dump", netns=via[0].netns, timeout=5)
    except (LabError, ValueError, OSError) as exc:
        return ([OsdView(o.id, o.node, running[o.id], False) for o in known], None, 2,
                f"unreachable ({str(exc)[-160:]})")
    up = {int(e["osd"]): bool(e["up"]) for e in dump.get("osds", [])}
    min_size = max([int(p.get("min_size", 1)) for p in dump.get("pools", [])] or [1])
    osds = [OsdView(o.id, o.node, running[o.id], up.get(o.id, False)) for o in known]
    return osds, list(status.get("quorum_names", [])), min_size, None


def observe(plan: LabPlan, with_ceph: bool = True) -> LabView:
    """The lab as it is now: processes, links, ZooKeeper members, node documents, Ceph."""
    from pvc.lab import ceph, libvirt, netns, pvcnodes, zookeeper

    switch, world = _link_flags(plan.switch_netns), _link_flags(plan.world_netns)
    mgr_node = plan.coordinators[0].name if plan.coordinators else ""
    nodes: dict[str, NodeView] = {}
    for node in plan.nodes:
        view = NodeView(node.name, node.coordinator)
        nodes[node.name] = view
        if not netns.exists(node.netns):
            view.links_down = ["namespace gone"]
            continue
        view.stopped = len(stopped_pids(node.netns))
        view.links_down = links_down(plan, node, switch, world)
        view.running = {d: proc.pid_of(pvcnodes.pidfile(plan, node, d)) is not None for d in pvcnodes.DAEMONS}
        view.running["libvirtd"] = proc.pid_of(libvirt.pidfile(plan, node)) is not None
        if node.coordinator:
            view.running["zookeeper"] = proc.pid_of(zookeeper.pidfile(plan, node)) is not None
            view.running["mon"] = proc.pid_of(ceph._pidfile(plan, node, f"mon.{node.name}")) is not None
            view.zk_mode = "frozen" if view.stopped else zookeeper.member_status(plan, node)
        if node.name == mgr_node:
            view.running["mgr"] = proc.pid_of(ceph._pidfile(plan, node, f"mgr.{node.name}")) is not None
        view.pvcapid = bool(pvcapid_pids(node.netns))
        mount = space.mount_state(plan, node)
        if mount is not None:
            view.state_mount, view.mount_problem = mount.mounted, mount.problem()
    via = _usable_coordinators(plan, nodes)
    docs, primary, zk_problem = read_nodes(plan, via)
    now = time.time()
    for name, doc in docs.items():
        view = nodes[name]
        view.daemon_state, view.domain_state = doc.get("daemon_state"), doc.get("domain_state")
        view.keepalive_age = max(0.0, now - float(doc.get("keepalive") or 0))
    result = LabView(nodes, primary=primary, zk_problem=zk_problem)
    if with_ceph:
        result.osds, result.mons_in_quorum, result.min_size, result.ceph_problem = _ceph_view(plan, via)
    return result


# -- healing ---------------------------------------------------------------------------------------

def thaw(node: NodePlan) -> int:
    """SIGCONT every stopped process of the node; how many there were."""
    return send(stopped_pids(node.netns), signal.SIGCONT)


def send(pids: Iterable[int], sig: signal.Signals) -> int:
    """Signal each pid that still exists; how many were signalled."""
    done = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            done += 1
        except ProcessLookupError:
            pass
    return done


def start_missing(plan: LabPlan, node: NodePlan) -> list[str]:
    """Start whatever of the node is not running, in the order a booting node starts it (as systemd
    would after a crash or a power cycle); names what was started."""
    from pvc.lab import ceph, libvirt, pvcnodes, zookeeper

    started = []
    if node.coordinator and proc.pid_of(zookeeper.pidfile(plan, node)) is None:
        zookeeper.start_member(plan, node)
        started.append("zookeeper")
    before = set(ceph.daemon_pids(plan))
    ceph.start_node_daemons(plan, node)
    started += sorted(set(ceph.daemon_pids(plan)) - before)
    if proc.pid_of(libvirt.pidfile(plan, node)) is None:
        libvirt.start_libvirtd(plan, node)
        libvirt.wait_libvirtd(plan, node)
        started.append("libvirtd")
    for daemon in pvcnodes.DAEMONS:
        if proc.pid_of(pvcnodes.pidfile(plan, node, daemon)) is None:
            pvcnodes.restart_daemon(plan, node, daemon)
            started.append(daemon)
    return started


def _ready(plan: LabPlan, name: str) -> None:
    """Ask the API to ready the node, as an operator does after a fence (errors: try again later)."""
    import httpx

    from pvc.lab import labtls

    try:
        with labtls.api_client(plan) as api:
            api.post(f"/node/{name}/domain-state", params={"state": "ready"})
    except httpx.HTTPError:
        pass


def restore_node(plan: LabPlan, node: NodePlan, timeout: float = 300) -> None:
    """Bring a node back into service, whatever happened to it: thaw what is stopped, cable it back
    in, start what is not running, and ready it if it was fenced (tests/system/ha.py's restore).
    Repeats until the node has run with ready domains and keepalives written since the heal began
    for CONFIRM seconds (a fence decided before may still be on its way and undo a step); LabError
    when it is not back in `timeout` seconds."""
    from pvc.lab import netns

    began, deadline = time.time(), time.monotonic() + timeout
    last_ready, fine_since, setback = 0.0, None, ""
    while True:
        try:
            thaw(node)
            if links_down(plan, node):
                netns.rejoin(plan, node)
            start_missing(plan, node)
        except LabError as exc:
            # a fence still on its way kills what was just started (libvirtd "exited" while
            # starting): the next round starts it again
            setback = str(exc).splitlines()[0]
        view = observe(plan, with_ceph=False).nodes[node.name]
        age = view.keepalive_age
        fresh = age is not None and age < min(KEEPALIVE_FRESH, time.time() - began)
        if fresh and not node_out(view):
            fine_since = fine_since or time.monotonic()
            if time.monotonic() - fine_since >= CONFIRM:
                return
        else:
            fine_since = None
        if fresh and (view.daemon_state in ("dead", "fenced") or view.domain_state == "flushed") \
                and time.monotonic() - last_ready > 10:
            _ready(plan, node.name)
            last_ready = time.monotonic()
        if time.monotonic() > deadline:
            last = f"; last setback: {setback}" if setback else ""
            raise LabError(f"{node.name} not back in service after {timeout:.0f}s: "
                           f"{'; '.join(node_out(view)) or 'keepalive not fresh'}{last}")
        time.sleep(1)


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    proc.wait_until(check, timeout, what, interval=0.5)


# -- injectors ------------------------------------------------------------------------------------

def _is_ceph(pid: int) -> bool:
    """Ceph daemons run as units of their own on a real host (an OSD PVC added is a child of
    pvcworkerd only in the lab's `direct` mode): a daemon's death does not take them along."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().startswith("ceph-")
    except OSError:
        return False


def _kill_daemon(plan: LabPlan, kind: str, target: str) -> Injected:
    from pvc.lab import pvcnodes

    node, daemon = plan.node(target), DAEMON_OF[kind]
    pid = proc.pid_of(pvcnodes.pidfile(plan, node, daemon))
    if pid is None:
        raise FaultRefused(f"{kind} on {target} refused: {daemon} is not running there")
    at = time.monotonic()
    # pvcworkerd runs under pvc.lab.supervise (the pid file's): kill_unit SIGKILLs both, the
    # supervisor first, so this stays a kill and never becomes a restart
    daemon_pid = proc.supervised_daemon(pid)
    signalled = proc.kill_unit(pid, spare=_is_ceph)
    mains = 1 if daemon_pid is None else 2
    detail = f"SIGKILL {daemon} (pid {pid if daemon_pid is None else daemon_pid}) on {target}"
    if daemon_pid is not None:
        detail += f" and its supervisor (pid {pid})"
    if len(signalled) > mains:
        detail += f"; {len(signalled) - mains} process(es) it had started stopped, as systemd does"
    return Injected(kind, target, detail, at, lambda: restore_node(plan, node),
                    expect_fence=kind == "kill_pvcnoded")


def _kill_pvcapid(plan: LabPlan, target: str) -> Injected:
    node = plan.node(target)
    pids = pvcapid_pids(node.netns)
    if not pids:
        raise FaultRefused(f"kill_pvcapid on {target} refused: pvcapid is not running there")
    at = time.monotonic()
    send(pids, signal.SIGKILL)

    def heal() -> None:
        # pvcnoded is pvcapid's supervisor (it restarts it with back-off); if it is gone too, the
        # node is restarted like any other; then the API must run on whoever is primary
        from pvc.lab import pvcnodes

        if proc.pid_of(pvcnodes.pidfile(plan, node, "pvcnoded")) is None:
            restore_node(plan, node)

        def serving() -> bool:
            view = observe(plan, with_ceph=False)
            return view.primary is not None and view.nodes[view.primary].pvcapid

        _wait("pvcapid running on the primary", serving, 120)

    return Injected("kill_pvcapid", target, f"SIGKILL pvcapid (pid {', '.join(map(str, pids))}) on {target}",
                    at, heal, expect_fence=False)


def _restart_zk(plan: LabPlan, kind: str, target: str, view: LabView) -> Injected:
    from pvc.lab import zookeeper

    node = plan.node(target[3:])
    pid = proc.pid_of(zookeeper.pidfile(plan, node))
    if pid is None:
        raise FaultRefused(f"{kind} on {target} refused: the member is not running")
    at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _wait(f"ZooKeeper member of {node.name} to die", lambda: not proc.alive(pid), 10)

    def heal() -> None:
        zookeeper.start_member(plan, node)
        _wait(f"zk:{node.name} serving", lambda: zookeeper.member_status(plan, node) in SERVING, 120)

    mode = view.nodes[node.name].zk_mode
    return Injected(kind, target, f"SIGKILL ZooKeeper member of {node.name} ({mode}, pid {pid})", at, heal,
                    expect_fence=False)


def _kill_osd(plan: LabPlan, target: str, view: LabView) -> Injected:
    from pvc.lab import ceph

    osd = _osd(view, target)
    node = plan.node(osd.node)
    pid = proc.pid_of(ceph._pidfile(plan, node, f"osd.{osd.id}"))
    if pid is None:
        raise FaultRefused(f"osd_kill on {target} refused: it is not running")
    at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def heal() -> None:
        ceph.start_osd(plan, node)

        def up() -> bool:
            current = _ceph_view(plan, _usable_coordinators(plan, observe(plan, with_ceph=False).nodes))[0]
            return any(o.id == osd.id and o.running and o.up for o in current)

        _wait(f"{target} up", up, 180)

    return Injected("osd_kill", target, f"SIGKILL {target} (pid {pid}) on {node.name}", at, heal,
                    expect_fence=False)


def _cut_links(plan: LabPlan, target: str) -> Injected:
    from pvc.lab import netns

    node = plan.node(target)
    at = time.monotonic()
    for iface in (netns.NODE_IFACE, netns.UPSTREAM_IFACE):
        proc.run(["ip", "-n", node.netns, "link", "set", iface, "down"])
    return Injected("links_cut", target, f"{target}'s {netns.NODE_IFACE} and {netns.UPSTREAM_IFACE} down "
                    f"in its namespace", at, lambda: restore_node(plan, node), expect_fence=True)


def freeze(node: NodePlan, rounds: int = 50) -> int:
    """SIGSTOP every process of the node (again for any forked meanwhile); how many are stopped."""
    for _ in range(rounds):
        table = proc.process_table()
        running = [p for p in netns_pids(node.netns) if table.get(p, ("Z",))[0] not in ("T", "Z")]
        if not running:
            break
        send(running, signal.SIGSTOP)
        time.sleep(0.05)
    return len(stopped_pids(node.netns))


def _freeze_node(plan: LabPlan, target: str) -> Injected:
    node = plan.node(target)
    at = time.monotonic()
    count = freeze(node)
    return Injected("node_freeze", target, f"SIGSTOP of {count} process(es) in {node.netns}", at,
                    lambda: restore_node(plan, node), expect_fence=True)


def _fill_state_dir(plan: LabPlan, target: str) -> Injected:
    node = plan.node(target)
    at = time.monotonic()
    written = space.fill(plan, node)

    def heal() -> None:
        space.unfill(node)
        restore_node(plan, node)     # whatever died of the full disk restarts, as systemd would

    return Injected("state_dir_full", target, f"{written >> 20} MiB of zeros fill {space.state_dir(node)} "
                    f"on {target}", at, heal, expect_fence=False)


def _apply(plan: LabPlan, kind: str, target: str, view: LabView) -> Injected:
    if kind in DAEMON_OF:
        return _kill_daemon(plan, kind, target)
    if kind == "kill_pvcapid":
        return _kill_pvcapid(plan, target)
    if kind in ("zk_member_restart", "zk_leader_restart"):
        return _restart_zk(plan, kind, target, view)
    if kind == "osd_kill":
        return _kill_osd(plan, target, view)
    if kind == "links_cut":
        return _cut_links(plan, target)
    if kind == "node_freeze":
        return _freeze_node(plan, target)
    return _fill_state_dir(plan, target)


# -- the seam ---------------------------------------------------------------------------------------

def _needs_ceph(kind: str) -> bool:
    return kind == "osd_kill" or kind in NODE_KINDS


def targets(kind: str, lab: str) -> list[str]:
    """Valid targets of `kind` now (never one that would break a quorum or a pool's min_size, never
    a second node out at once)."""
    check_kind(kind)
    return choose_targets(kind, observe(load_plan(lab), with_ceph=_needs_ceph(kind)))


def healthy(lab: str) -> list[str]:
    """What is still not back (daemons not running, ZooKeeper members not serving, OSDs down, links
    down, frozen processes, full state directories, nodes out of service); empty = all healthy."""
    return problems(observe(load_plan(lab)))


def inject(kind: str, lab: str, target: str, rng: random.Random, *,
           allow_quorum_loss: bool = False) -> Injected:
    """Inject one fault of `kind` into `target`. FaultRefused when the target is not valid now;
    `allow_quorum_loss` lifts the quorum, min_size and one-node-out guards (only for a runner that
    means to go below them). `rng` is reserved for faults with a random shape (none of the present
    ones has one), so a seeded run stays replayable when one is added."""
    del rng
    check_kind(kind)
    plan = load_plan(lab)
    view = observe(plan, with_ceph=_needs_ceph(kind))
    reason = refusal(kind, view, target, allow_quorum_loss)
    if reason:
        raise FaultRefused(f"{kind} on {target} refused: {reason}")
    return _apply(plan, kind, target, view)
