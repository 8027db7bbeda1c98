"""Choosing a node for a VM: PVC's selectors, node limits and capacity checks (pure logic).

Candidates are the nodes in `run` daemon state and `ready` domain state, other than the VM's
current node, restricted to its node limit; the selector picks among them (pvc-facts §3.6).
A VM that can never fit a node (memory at or above the node's total, more vCPUs than the host
has) is refused outright rather than started and left to fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pvc.core import domainxml
from pvc.core.errors import InvalidInput
from pvc.core.records import NodeRecord, VMRecord

SELECTORS = ("mem", "memprov", "load", "vcpus", "vms")


@dataclass(frozen=True)
class Demand:
    """What a VM needs from a node."""

    memory_mib: int
    vcpus: int


def check_selector(selector: str | None, field: str = "selector") -> str | None:
    if selector in (None, "", "none"):
        return None
    if selector not in SELECTORS:
        raise InvalidInput(f"{field}: '{selector}' is not one of {', '.join((*SELECTORS, 'none'))}")
    return selector


def fits(node: NodeRecord, demand: Demand) -> str | None:
    """Why the VM can never run on `node`, or None when it can."""
    if node.memory.total and demand.memory_mib >= node.memory.total:
        return (f"{demand.memory_mib} MiB of memory is not less than node {node.name}'s total "
                f"({node.memory.total} MiB)")
    if node.cpu_count and demand.vcpus > node.cpu_count:
        return f"{demand.vcpus} vCPUs is more than node {node.name} has ({node.cpu_count})"
    return None


def candidates(nodes: Iterable[NodeRecord], current: str | None = None,
               limit: Sequence[str] = (), demand: Demand | None = None) -> list[NodeRecord]:
    out = []
    for node in nodes:
        if node.name == current or node.daemon_state != "run" or node.domain_state != "ready":
            continue
        if limit and node.name not in limit:
            continue
        if demand is not None and fits(node, demand) is not None:
            continue
        out.append(node)
    return out


def _score(node: NodeRecord, selector: str) -> tuple[float, str]:
    """Lower is better; ties go to the lowest node name so the choice is deterministic."""
    if selector == "mem":
        return (-node.memory.free, node.name)
    if selector == "memprov":
        return (-(node.memory.used + node.memory.free - node.memory.provisioned), node.name)
    if selector == "load":
        return (node.load, node.name)
    if selector == "vcpus":
        return (node.vcpu.allocated, node.name)
    return (node.domains_count, node.name)


def find_target(nodes: Iterable[NodeRecord], selector: str | None, default_selector: str = "mem",
                current: str | None = None, limit: Sequence[str] = (),
                demand: Demand | None = None) -> NodeRecord | None:
    """The node a VM should go to, or None when no node qualifies."""
    chosen = check_selector(selector) or check_selector(default_selector, "default selector") or "mem"
    pool = candidates(nodes, current, limit, demand)
    return min(pool, key=lambda node: _score(node, chosen)) if pool else None


_demands: dict[int, Demand] = {}


def vm_demand(record: VMRecord) -> Demand:
    """Memory and vCPUs of a VM definition (each XML text parsed once)."""
    key = hash(record.xml)
    if key not in _demands:
        try:
            domain = domainxml.parse(record.xml)
            _demands[key] = Demand(memory_mib=domain.memory_mib, vcpus=domain.vcpus)
        except InvalidInput:
            _demands[key] = Demand(memory_mib=0, vcpus=0)
        if len(_demands) > 10000:
            _demands.clear()
    return _demands[key]
