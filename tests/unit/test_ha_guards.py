"""The pure rules of the HA guards (pvc.node.hamodel) and their configuration keys."""

from __future__ import annotations

import pytest

from pvc.core.config import parse_config
from pvc.core.errors import ConfigError
from pvc.node.election import deposed_for_hang
from pvc.node.fencing import FencePolicy
from pvc.node.hamodel import brake_trips, quorum_refusal

BASE = "cluster: {name: c, coordinator_nodes: [hv1]}\nzookeeper: {hosts: ['hv1:2181'], acl: false}\n"


def test_a_member_node_is_not_fenced_when_the_others_are_no_quorum() -> None:
    three = [("hv1", True), ("hv2", True), ("hv3", False)]
    why = quorum_refusal(three, "hv2")
    assert why is not None and "1 of 3 members serving" in why and "a quorum needs 2" in why
    assert quorum_refusal([("hv1", True), ("hv2", True), ("hv3", True)], "hv2") is None
    assert quorum_refusal(three, "hv3") is None          # its member is down: the others are 2 of 3
    assert quorum_refusal(three, "hv4") is None          # no member there
    five = [("hv1", True), ("hv2", True), ("hv3", True), ("hv4", False), ("hv5", False)]
    assert quorum_refusal(five, "hv1") is not None       # 2 of 5 left
    # a member nobody could place (unknown host) still counts in the ensemble's size
    assert quorum_refusal([("hv1", True), ("hv2", True), (None, False)], "hv1") is not None


def test_the_brake_trips_above_the_share_only() -> None:
    assert brake_trips({"hv2", "hv3"}, 3, 0.5)
    assert not brake_trips({"hv3"}, 3, 0.5)
    assert not brake_trips({"hv4", "hv5"}, 5, 0.5)
    assert brake_trips({"hv3", "hv4", "hv5"}, 5, 0.5)
    assert not brake_trips({"hv1", "hv2", "hv3"}, 3, 1.0)   # 1 turns it off
    assert not brake_trips(set(), 0, 0.5)


def test_deposed_for_hang() -> None:
    assert deposed_for_hang({"deposed": {"node": "hv1", "fence": True}}, "hv1")
    assert not deposed_for_hang({"deposed": {"node": "hv1", "fence": False}}, "hv1")
    assert not deposed_for_hang({"deposed": {"node": "hv2", "fence": True}}, "hv1")
    assert not deposed_for_hang(None, "hv1")


def test_guard_keys_and_their_defaults() -> None:
    policy = FencePolicy.from_settings(parse_config(BASE))
    assert (policy.brake_share, policy.brake_window, policy.lease_timeout) == (0.5, 10.0, None)
    assert policy.lease_after == policy.hung_after
    settings = parse_config(BASE + "fencing: {lease_timeout: 12, brake_share: 0.34, brake_window: 20}")
    policy = FencePolicy.from_settings(settings)
    assert (policy.lease_after, policy.brake_share, policy.brake_window) == (12, 0.34, 20)


@pytest.mark.parametrize(("line", "message"), [
    ("fencing: {brake_share: 0}", "key 'fencing.brake_share': Input should be greater than 0"),
    ("fencing: {brake_share: 1.5}", "key 'fencing.brake_share': Input should be less than or equal to 1"),
    ("fencing: {brake_window: 0.5}", "key 'fencing.brake_window'"),
    ("fencing: {lease_timeout: 1}", "key 'fencing.lease_timeout': Input should be greater than or equal"),
    ("fencing: {brake: 1}", "unknown key 'fencing.brake'"),
])
def test_bad_guard_keys_are_refused_by_name(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(BASE + line)
