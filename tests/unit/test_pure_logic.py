"""Pure logic: units, list filters, election requests, task routing and views."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.cluster.common import check_name, limit_matcher
from pvc.cluster.tasks import accepted, task_view
from pvc.core.errors import InvalidInput
from pvc.core.records import TaskRecord
from pvc.core.units import parse_bool, parse_size
from pvc.node.election import REQUEST_TTL, request_wants
from pvc.worker.runner import runnable


@pytest.mark.parametrize(("text", "size"), [("10G", 10 * 1024**3), ("512M", 512 * 1024**2),
                                             ("1024", 1024), ("1.5K", 1536), ("2T", 2 * 1024**4)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "ten", "10X"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="size"):
        parse_size(text)


def test_parse_bool() -> None:
    assert parse_bool("True") and parse_bool("yes") and not parse_bool("false") and not parse_bool("0")
    with pytest.raises(InvalidInput, match="state"):
        parse_bool("maybe", "state")


def test_limit_matcher_is_fuzzy_unless_anchored() -> None:
    fuzzy = limit_matcher("hv")
    assert fuzzy and fuzzy.fullmatch("xhv1")
    anchored = limit_matcher("^hv1$")
    assert anchored and anchored.fullmatch("hv1") and not anchored.fullmatch("hv10")
    assert limit_matcher(None) is None
    with pytest.raises(InvalidInput, match="limit"):
        limit_matcher("(")


@given(st.text(max_size=80))
def test_check_name_never_crashes(text: str) -> None:
    try:
        assert check_name(text) == text
    except InvalidInput as exc:
        assert "name" in exc.message


def test_request_wants() -> None:
    now = 1000.0
    assert request_wants(None, "hv1", now) == "none"
    assert request_wants({"node": "hv1", "time": now}, "hv1", now) == "take"
    assert request_wants({"node": "hv1", "time": now}, "hv2", now) == "avoid"
    assert request_wants({"exclude": "hv2", "time": now}, "hv2", now) == "avoid"
    assert request_wants({"exclude": "hv2", "time": now}, "hv3", now) == "none"
    assert request_wants({"node": "hv1", "time": now - REQUEST_TTL - 1}, "hv2", now) == "none"


def test_task_routing() -> None:
    task = TaskRecord(id="a", kind="k")
    assert runnable(task, "hv1", "hv1") and not runnable(task, "hv2", "hv1")
    pinned = TaskRecord(id="b", kind="k", target="hv2")
    assert runnable(pinned, "hv2", "hv1") and not runnable(pinned, "hv1", "hv1")
    assert not runnable(pinned.model_copy(update={"state": "RUNNING"}), "hv2", "hv1")
    assert accepted(task, "hv1") == {"task_id": "a", "task_name": "k", "run_on": "hv1 (primary)"}


def test_task_views_match_pvc() -> None:
    pending = TaskRecord(id="a", kind="k", total=5, current=2)
    assert task_view(pending) == {"state": "PENDING", "current": 0, "total": 1,
                                  "status": "Pending job start"}
    failed = pending.model_copy(update={"state": "FAILURE", "status": "ValueError: x"})
    assert task_view(failed) == {"state": "FAILURE", "current": 1, "total": 1, "status": "ValueError: x"}
    done = pending.model_copy(update={"state": "SUCCESS", "current": 5, "result": {"x": 1}})
    assert task_view(done)["result"] == {"x": 1}
