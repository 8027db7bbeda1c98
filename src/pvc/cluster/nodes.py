"""Node operations on desired state: listing, coordinator hand-over and flush/ready requests."""

from __future__ import annotations

import time
from typing import Any

from pvc.cluster.common import NAME_RE, limit_matcher, wait_until
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import NodeRecord
from pvc.core.vocabulary import NODE_OUT_OF_SERVICE
from pvc.core.zk import ZK


def node_names(zk: ZK, fresh: bool = False) -> list[str]:
    """The registered nodes' names; fresh=True reads ZooKeeper, not the API's watch cache."""
    cached = None if fresh else zk.cached_children(schema.NODES)
    return cached if cached is not None else zk.children(schema.NODES)


def load_nodes(zk: ZK, names: list[str] | None = None, fresh: bool = False) -> list[NodeRecord]:
    """The node records (all, or those named), from the API's watch cache when live.

    fresh: read from ZooKeeper now (one listing, one pipelined read), never from the cache,
    which may lag the server: for every check or choice that decides a write (placement, fit
    and node-limit refusals, a hand-over); displays may use the cache.
    """
    cached = None if fresh else zk.cached_children_docs(schema.NODES)
    if cached is not None:
        wanted = sorted(cached) if names is None else names
        return [NodeRecord.model_validate(cached[n]) for n in wanted if isinstance(cached.get(n), dict)]
    names = node_names(zk, fresh) if names is None else names
    docs = zk.get_many([schema.node(n) for n in names])
    out = []
    for name in names:
        data = docs.get(schema.node(name))
        if isinstance(data, dict):
            out.append(NodeRecord.model_validate(data))
    return out


def get_node(zk: ZK, name: str) -> NodeRecord:
    # A name that cannot be a node's ("..", "a/b", ...) would be a bad ZooKeeper path, not a miss.
    data = zk.get(schema.node(name), None) if NAME_RE.match(name or "") else None
    if not isinstance(data, dict):
        raise NotFound(f"Node not found: {name}")
    return NodeRecord.model_validate(data)


def list_nodes(
    zk: ZK,
    limit: str | None = None,
    daemon_state: str | None = None,
    coordinator_state: str | None = None,
    domain_state: str | None = None,
) -> list[NodeRecord]:
    """Nodes matching the name regex; the state filters are OR-combined, as PVC clients expect."""
    matcher = limit_matcher(limit)
    names = [n for n in node_names(zk) if matcher is None or matcher.fullmatch(n)]
    nodes = load_nodes(zk, names)
    if daemon_state or coordinator_state or domain_state:
        nodes = [
            n for n in nodes
            if (daemon_state and n.daemon_state == daemon_state)
            or (coordinator_state and n.coordinator_state == coordinator_state)
            or (domain_state and n.domain_state == domain_state)
        ]
    return nodes


def primary_node(zk: ZK) -> str | None:
    value = zk.get(schema.PRIMARY_NODE, None)
    return value if value and value != "none" else None


def fencing_view(record: Any, events: int = 50) -> dict[str, Any] | None:
    """A node's fencing record as the API shows it: the chain's outcome and its latest events."""
    if not isinstance(record, dict):
        return None
    keys = ("phase", "reason", "started", "by", "fence", "fence_message", "blocklist", "action",
            "recovered", "stranded", "attempts")
    view: dict[str, Any] = {k: record.get(k) for k in keys}
    view["events"] = list(record.get("events") or [])[-events:]
    return view


def load_fencing(zk: ZK, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    cached = zk.cached_children_docs(schema.FENCING)
    if cached is not None:
        return {n: d for n, d in cached.items() if isinstance(d, dict) and (names is None or n in names)}
    names = zk.children(schema.FENCING) if names is None else names
    docs = zk.get_many([schema.node_fencing(n) for n in names]) if names else {}
    return {n: d for n in names if isinstance(d := docs.get(schema.node_fencing(n)), dict)}


def node_health(node: NodeRecord) -> int | None:
    """The node's health in percent, or None ("N/A") when it is not known now: the daemon is not
    running (stopped, dead, fenced, starting or stopping), or its health checks never reported
    (no health, or a health with no plugin behind it: the record's default)."""
    if node.daemon_state != "run" or node.health is None:
        return None
    if not (node.health_plugins or node.health_details):
        return None
    return node.health


def node_view(node: NodeRecord, fencing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node item of API v1 (PVC's JSON shape), plus PVC's own fencing history."""
    return {
        "name": node.name,
        "daemon_state": node.daemon_state,
        "coordinator_state": node.coordinator_state,
        "domain_state": node.domain_state,
        "pvc_version": node.pvc_version,
        "cpu_count": node.cpu_count,
        "kernel": node.kernel,
        "os": node.os,
        "arch": node.arch,
        "health": health if (health := node_health(node)) is not None else "N/A",
        "health_plugins": node.health_plugins,
        "health_details": node.health_details,
        "load": node.load,
        "domains_count": node.domains_count,
        "running_domains": node.running_domains,
        "vcpu": node.vcpu.doc(),
        "memory": node.memory.doc(),
        "interfaces": node.interfaces,
        "keepalive": int(node.keepalive),
        "fencing": fencing_view(fencing),
        "self_fence_events": node.self_fence_events[-10:],
    }


# -- coordinator hand-over -----------------------------------------------------------------------

def set_coordinator_state(zk: ZK, name: str, state: str) -> str:
    """Ask for a primary hand-over; the coordinators carry it out (pvc.node.election)."""
    if state not in ("primary", "secondary"):
        raise InvalidInput(f"state: '{state}' is not one of primary, secondary")
    node = get_node(zk, name)
    if node.mode != "coordinator":
        raise Conflict(f"Node {name} is not a coordinator and cannot be a primary node.")
    if node.daemon_state != "run":
        raise Conflict(f"Node {name} is not in run state ({node.daemon_state}); try again later.")
    current = primary_node(zk)
    if state == "primary":
        if current == name and node.coordinator_state == "primary":
            return f"Node {name} is already in primary coordinator state."
        request = {"node": name, "exclude": None, "time": time.time()}
        zk.put(schema.PRIMARY_REQUEST, request)
        return f"Setting node {name} in primary coordinator state."
    if current != name:
        return f"Node {name} is already in secondary coordinator state."
    others = [
        n for n in load_nodes(zk, fresh=True)
        if n.name != name and n.mode == "coordinator" and n.daemon_state == "run"
    ]
    if not others:
        raise Conflict(f"Node {name} is the only running coordinator; no other node can become primary.")
    zk.put(schema.PRIMARY_REQUEST, {"node": None, "exclude": name, "time": time.time()})
    return f"Setting node {name} in secondary coordinator state."


# -- flush / ready -------------------------------------------------------------------------------

def set_domain_state(zk: ZK, name: str, state: str, wait: bool = False, timeout: float = 3600) -> str:
    """Record a flush or ready request; the node daemon does the work and reports the result."""
    if state not in ("flush", "ready"):
        raise InvalidInput(f"state: '{state}' is not one of flush, ready")
    get_node(zk, name)
    outcome: dict[str, str] = {}

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            raise NotFound(f"Node not found: {name}")
        current = doc.get("domain_state")
        if state == "flush":
            if current in ("flushed", "flush"):
                outcome["message"] = f"Node {name} is already flushed."
                return doc
            outcome["message"] = f"Flushing hypervisor {name} of running VMs."
            return {**doc, "domain_state": "flush"}
        if current in ("ready", "unflush"):
            outcome["message"] = f"Node {name} is already ready."
            return doc
        if doc.get("daemon_state") in NODE_OUT_OF_SERVICE:
            phase = (zk.get(schema.node_fencing(name), None) or {}).get("phase")
            if phase in ("dead", "fencing", "blocklisting", "recovering"):
                raise Conflict(f"Node {name} is being fenced ({phase}); wait until its recovery is done.")
            if not zk.exists(schema.node_alive(name)):
                raise Conflict(f"Node {name} is {doc.get('daemon_state')} and its node daemon is not "
                               "running; start it before readying the node.")
            outcome["message"] = (f"Returning fenced node {name} to service: its Ceph blocklist is lifted "
                                  "by the primary, then it takes VMs again.")
            return {**doc, "domain_state": "unflush"}
        outcome["message"] = f"Restoring hypervisor {name} to active service."
        return {**doc, "domain_state": "unflush"}

    zk.update(schema.node(name), change)
    if wait:
        wait_until(lambda: get_node(zk, name).domain_state not in ("flush", "unflush"), timeout, 0.5)
    return outcome["message"]


def node_log(zk: ZK, name: str, lines: int = 10) -> str:
    if lines < 0:
        raise InvalidInput(f"lines: must not be negative ({lines})")
    get_node(zk, name)
    text = zk.get(schema.node_log(name), "") or ""
    if not isinstance(text, str):
        text = "\n".join(text) if isinstance(text, list) else str(text)
    all_lines = text.splitlines()
    return "\n".join(all_lines[-lines:]) if lines else ""
