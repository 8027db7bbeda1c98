"""pvc.lab.supervise's decision: restart a crashed lab daemon as systemd's Restart=on-failure does,
leave deliberate kills and stops alone, give up at the start limit.

The supervisor as real processes is in tests/integration/test_lab_supervise_run.py.
"""

from __future__ import annotations

import signal

import pytest

from pvc.lab import pvcnodes
from pvc.lab.supervise import (
    CRASH_SIGNALS,
    RESTART_SEC,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL,
    decide,
    describe,
    exit_status,
    main,
)


@pytest.mark.parametrize("sig", sorted(CRASH_SIGNALS))
def test_a_crash_signal_restarts(sig: signal.Signals) -> None:
    decision = decide(-sig, (), now=100.0)
    assert decision.action == "restart"
    assert decision.how == f"signal {sig.name}"
    assert decision.restarts == (100.0,)


def test_the_crash_signals_are_the_brief_s() -> None:
    assert {s.name for s in CRASH_SIGNALS} == {"SIGABRT", "SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGTRAP"}
    assert RESTART_SEC == 2


@pytest.mark.parametrize("code", [1, 2, 70, 255])
def test_a_failed_exit_restarts(code: int) -> None:
    decision = decide(code, (), now=5.0)
    assert (decision.action, decision.how) == ("restart", f"exit code {code}")


@pytest.mark.parametrize("returncode", [0, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP,
                                        -signal.SIGUSR1])
def test_a_clean_exit_or_a_deliberate_kill_ends(returncode: int) -> None:
    """SIGKILL/SIGTERM are the chaos runner's and the HA tests' kills; exit 0 a stop."""
    assert decide(returncode, (), now=5.0).action == "end"


@pytest.mark.parametrize("returncode", [-signal.SIGABRT, 1, 0, -signal.SIGTERM])
def test_never_a_restart_once_the_supervisor_is_told_to_stop(returncode: int) -> None:
    assert decide(returncode, (), now=5.0, stopping=True).action == "end"


def test_the_start_limit_more_than_ten_restarts_in_sixty_seconds() -> None:
    assert (START_LIMIT_BURST, START_LIMIT_INTERVAL) == (10, 60)
    restarts: tuple[float, ...] = ()
    now = 1000.0
    for _ in range(START_LIMIT_BURST):
        decision = decide(-signal.SIGABRT, restarts, now)
        assert decision.action == "restart"
        restarts, now = decision.restarts, now + 5
    assert len(restarts) == 10
    decision = decide(-signal.SIGABRT, restarts, now)         # the eleventh within 50 s
    assert decision.action == "give-up"
    assert decision.how == "signal SIGABRT"


def test_old_restarts_fall_out_of_the_window() -> None:
    restarts = (0.0, 1.0, 2.0, 3.0, 100.0)
    decision = decide(1, restarts, now=61.5)                  # 0 and 1 are more than 60 s ago
    assert decision.action == "restart"
    assert decision.restarts == (2.0, 3.0, 100.0, 61.5)
    assert decide(1, (10.0,) * 10, now=70.0).action == "restart"    # exactly 60 s: outside
    assert decide(1, (10.1,) * 10, now=70.0).action == "give-up"


def test_decide_leaves_its_input_alone() -> None:
    restarts = (50.0, 55.0)
    assert decide(0, restarts, now=60.0).restarts == restarts
    assert restarts == (50.0, 55.0)


def test_describe_and_exit_status() -> None:
    assert describe(-signal.SIGSEGV) == "signal SIGSEGV"
    assert describe(3) == "exit code 3"
    assert describe(-200) == "signal 200"
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGKILL) == 137


def test_the_command_line_needs_a_command() -> None:
    with pytest.raises(SystemExit):
        main(["--name", "pvcworkerd", "--"])


def test_the_lab_supervises_pvcworkerd_only() -> None:
    """pvcnoded stays unsupervised: the HA tests kill it and expect it to stay dead."""
    worker = pvcnodes.daemon_command("pvcworkerd")
    assert worker[1:6] == ["-m", "pvc.lab.supervise", "--name", "pvcworkerd", "--"]
    assert worker[-2:] == ["-m", "pvc.worker.daemon"]
    assert pvcnodes.daemon_command("pvcnoded")[1:] == ["-m", "pvc.node.daemon"]
