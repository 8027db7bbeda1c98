"""Placement: selectors, node limits, eligibility and capacity (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.cluster.placement import Demand, check_selector, find_target, fits
from pvc.core.errors import InvalidInput
from pvc.core.records import Memory, NodeRecord, VCpu


def node(name: str, free: int = 1000, used: int = 1000, prov: int = 0, load: float = 0.0,
         vcpus: int = 0, vms: int = 0, state: str = "run", domain: str = "ready") -> NodeRecord:
    return NodeRecord(name=name, daemon_state=state, domain_state=domain, cpu_count=8, load=load,
                      memory=Memory(total=free + used, used=used, free=free, provisioned=prov),
                      vcpu=VCpu(total=8, allocated=vcpus), domains_count=vms)


NODES = [node("hv1", free=500, load=2.0, vcpus=4, vms=3, prov=900),
         node("hv2", free=800, load=0.5, vcpus=6, vms=1, prov=1500),
         node("hv3", free=700, load=1.0, vcpus=2, vms=2, prov=100)]


@pytest.mark.parametrize(("selector", "expected"), [
    ("mem", "hv2"), ("memprov", "hv3"), ("load", "hv2"), ("vcpus", "hv3"), ("vms", "hv2"),
])
def test_selectors(selector: str, expected: str) -> None:
    assert find_target(NODES, selector).name == expected  # type: ignore[union-attr]


def test_default_selector_applies_when_vm_has_none() -> None:
    assert find_target(NODES, None, default_selector="vcpus").name == "hv3"  # type: ignore[union-attr]
    assert find_target(NODES, "none", default_selector="load").name == "hv2"  # type: ignore[union-attr]


def test_current_node_limit_and_states_exclude() -> None:
    assert find_target(NODES, "mem", current="hv2").name == "hv3"  # type: ignore[union-attr]
    assert find_target(NODES, "mem", limit=["hv1"]).name == "hv1"  # type: ignore[union-attr]
    flushed = [node("hv1", domain="flushed"), node("hv2", state="dead")]
    assert find_target(flushed, "mem") is None


def test_capacity() -> None:
    small = node("hv1", free=500, used=500)
    assert fits(small, Demand(memory_mib=1000, vcpus=1)) is not None
    assert "vCPUs" in (fits(small, Demand(memory_mib=10, vcpus=9)) or "")
    assert fits(small, Demand(memory_mib=999, vcpus=8)) is None
    assert find_target([small], "mem", demand=Demand(2000, 1)) is None


def test_bad_selector() -> None:
    with pytest.raises(InvalidInput, match="selector: 'fastest'"):
        check_selector("fastest")


@given(st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 64), st.integers(0, 64),
                          st.integers(0, 500)), min_size=1, max_size=12),
       st.sampled_from(["mem", "memprov", "load", "vcpus", "vms"]))
def test_choice_is_an_eligible_node_and_deterministic(specs, selector) -> None:
    nodes = [node(f"hv{i}", free=f, load=ld, vcpus=v, vms=m) for i, (f, ld, v, m) in enumerate(specs)]
    first = find_target(nodes, selector)
    assert first is not None and first in nodes
    assert find_target(list(reversed(nodes)), selector).name == first.name  # type: ignore[union-attr]
