"""Which network faults a node must have after a reconcile pass (pvc.node.networks_faults): a pure
function of the pass's failed steps, and what to write to get there."""

from __future__ import annotations

import pytest

from pvc.node import networks_faults as nf


def test_fault_names_are_upstreams_capitals() -> None:
    assert nf.fault_name("dnsmasq-1001", "hv1") == "NETWORK_DNSMASQ-1001_HV1"
    assert nf.fault_name("nft", "hv1") == "NETWORK_NFT_HV1"
    with pytest.raises(ValueError, match="network step key"):
        nf.fault_name("a_b", "hv1")
    with pytest.raises(ValueError, match="network step key"):
        nf.fault_name("", "hv1")


def test_a_nodes_own_faults_are_found_old_spelling_included() -> None:
    assert nf.step_key("NETWORK_DNSMASQ-1001_HV1", "hv1") == "dnsmasq-1001"
    assert nf.step_key("NETWORK_NFT_hv1", "hv1") == "nft"          # written before the capitals
    assert nf.step_key("NETWORK_NFT_HV2", "hv1") is None            # another node's
    assert nf.step_key("NETWORK_NFT_HV11", "hv1") is None
    assert nf.step_key("NETWORK_NFT_A_HV1", "hv1") is None          # node a_hv1's
    assert nf.step_key("NETWORK_NFT_A_HV1", "a_hv1") == "nft"
    assert nf.step_key("NETWORK__HV1", "hv1") is None
    assert nf.step_key("DEAD_NODE_HV1", "hv1") is None
    assert nf.step_key("VM_FAILED_NETWORK_HV1", "hv1") is None


def test_the_faults_wanted_are_the_steps_failed_in_this_pass() -> None:
    failures = {"dnsmasq-1001": "network 1001 dnsmasq: exited", "dev-1002": "network 1002: no VTEP"}
    assert nf.wanted("hv1", failures) == {
        "NETWORK_DNSMASQ-1001_HV1": "Node hv1: network 1001 dnsmasq: exited",
        "NETWORK_DEV-1002_HV1": "Node hv1: network 1002: no VTEP"}
    assert nf.wanted("hv1", {}) == {}
    assert nf.wanted("hv1", {"nft": ""}) == {}


def test_plan_raises_new_and_changed_and_resolves_the_rest() -> None:
    active = {"NETWORK_NFT_HV1": "Node hv1: a", "NETWORK_DEV-1_HV1": "Node hv1: b",
              "NETWORK_GW-1_hv1": "Node hv1: c"}
    want = {"NETWORK_NFT_HV1": "Node hv1: a", "NETWORK_DEV-1_HV1": "Node hv1: b2",
            "NETWORK_TFTP-1_HV1": "Node hv1: d"}
    todo = nf.plan(want, active)
    assert todo.raise_ == {"NETWORK_DEV-1_HV1": "Node hv1: b2", "NETWORK_TFTP-1_HV1": "Node hv1: d"}
    assert todo.resolve == {"NETWORK_GW-1_hv1"}
    # nothing failing: everything resolved; nothing changed: nothing written
    assert nf.plan({}, active) == nf.Plan({}, frozenset(active))
    assert nf.plan(active, active) == nf.Plan({}, frozenset())


def test_a_pass_after_success_resolves_and_after_failure_raises() -> None:
    """fail -> succeed and fail -> network removed, as the reconciler runs them: the outcome of
    the later pass alone decides."""
    failing = nf.wanted("hv1", {"dnsmasq-1001": "network 1001 dnsmasq: exited"})
    first = nf.plan(failing, {})
    assert first.raise_ == failing and not first.resolve
    assert nf.plan(nf.wanted("hv1", {}), failing).resolve == set(failing)        # it works again
    removed = nf.wanted("hv1", {"nft": "applying the nftables ruleset: x"})     # 1001 gone, nft fails
    todo = nf.plan(removed, failing)
    assert todo.resolve == set(failing) and set(todo.raise_) == {"NETWORK_NFT_HV1"}


def test_giving_up_the_primary_role_ends_the_primarys_failures() -> None:
    problems = {"gw-1001": "g", "dnsmasq-1001": "d", "tftp-1001": "t", "chrony-1001": "c",
                "dns-view": "v", "metadata": "m", "floating": "f", "meta-addr": "a",
                "svc-dnsmasq-1002": "s", "gwdel-vmbr1001": "x", "mac-vmbr1001": "y",
                "dev-1001": "every node", "doc-1003": "doc", "nft": "rules", "guard": "guard",
                "fdb": "fdb", "frr": "frr", "del-vxlan1004": "del"}
    assert nf.after_relinquish(problems) == {
        "dev-1001": "every node", "doc-1003": "doc", "nft": "rules", "guard": "guard", "fdb": "fdb",
        "frr": "frr", "del-vxlan1004": "del"}


def test_changes_name_what_appeared_changed_and_ended() -> None:
    appeared, over = nf.changes({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "2b", "d": "4"})
    assert appeared == {"b": "2b", "d": "4"} and over == ["c"]
