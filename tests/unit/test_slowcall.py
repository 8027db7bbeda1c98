"""pvc.node.slowcall: a slow call in a worker while the caller's thread keeps proving it lives."""

from __future__ import annotations

import threading
import time

import pytest

from pvc.node.slowcall import SlowCallTimeout, call_keeping


def test_the_answer_comes_back_and_keep_runs_while_waiting() -> None:
    kept: list[float] = []
    caller = threading.get_ident()
    where: list[int] = []

    def keep() -> None:
        where.append(threading.get_ident())
        kept.append(time.monotonic())

    def slow() -> str:
        time.sleep(0.5)
        return "answer"

    assert call_keeping(slow, keep, 10, "slow", beat=0.05) == "answer"
    assert len(kept) >= 3 and set(where) == {caller}     # kept from the caller's own thread
    assert call_keeping(lambda: 7, lambda: pytest.fail("kept for a quick call"), 10, "quick") == 7


def test_the_calls_own_error_reaches_the_caller() -> None:
    def broken() -> None:
        raise ValueError("ceph said no")

    with pytest.raises(ValueError, match="ceph said no"):
        call_keeping(broken, lambda: None, 10, "broken", beat=0.01)


def test_an_error_of_keep_ends_the_wait() -> None:
    release = threading.Event()

    def lost() -> None:
        raise LookupError("lease lost")

    with pytest.raises(LookupError, match="lease lost"):
        call_keeping(lambda: release.wait(10), lost, 10, "blocked", beat=0.01)
    release.set()


def test_the_wait_is_bounded_and_names_the_call() -> None:
    release = threading.Event()
    began = time.monotonic()
    with pytest.raises(SlowCallTimeout, match=r"blocklist 10\.0\.0\.3: no answer within 0.3s"):
        call_keeping(lambda: release.wait(10), lambda: None, 0.3, "blocklist 10.0.0.3", beat=0.05)
    assert time.monotonic() - began < 5
    release.set()
