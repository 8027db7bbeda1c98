"""pvc.lab.supervise as real processes (no lab): a crashed child is started again, a killed one is
not, a stop reaches the child, and the lab's kills (proc.kill_unit, proc.stop) take the child too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pvc.lab import proc, supervise

# The child: records each start's pid in `starts`; aborts on its first start when told to; notes
# a SIGTERM in `termed` and exits 0 then (as pvcworkerd does); otherwise sleeps. Its handler is in
# place before its start is recorded (the tests signal it once it is), and it ignores the second
# SIGTERM a stop brings (the group's and the supervisor's forward) and skips the interpreter's
# finalization, which restores the default action and could let that second one kill it.
CHILD = """
import os, pathlib, resource, signal, sys, time
starts, termed, abort_once = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
def term(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    termed.write_text(str(os.getpid()))
    os._exit(0)
signal.signal(signal.SIGTERM, term)
first = not starts.exists()
with starts.open("a") as handle:
    handle.write(f"{os.getpid()}\\n")
if first and abort_once:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))     # no core file from the test
    os.abort()
time.sleep(120)
"""


class Run:
    def __init__(self, tmp_path: Path, abort_once: bool) -> None:
        self.starts, self.termed, self.log = tmp_path / "starts", tmp_path / "termed", tmp_path / "log"
        argv = [sys.executable, "-m", "pvc.lab.supervise", "--name", "toyd", "--",
                sys.executable, "-c", CHILD, str(self.starts), str(self.termed), "1" if abort_once else "0"]
        with open(self.log, "wb") as out:
            # its own session, as proc.spawn starts lab daemons: the supervisor leads the group
            self.sup = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self) -> list[int]:
        return [int(p) for p in self.starts.read_text().split()] if self.starts.exists() else []

    def child(self, starts: int = 1, timeout: float = 15) -> int:
        """The pid of the `starts`-th start, once it is up and its supervisor knows it."""
        wait(lambda: len(self.pids()) >= starts and proc.supervised_daemon(self.sup.pid) == self.pids()[-1],
             timeout, f"start {starts}")
        return self.pids()[starts - 1]

    def text(self) -> str:
        return self.log.read_text()


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[[bool], Run]]:
    made: list[Run] = []

    def make(abort_once: bool = False) -> Run:
        directory = tmp_path / f"run{len(made)}"
        directory.mkdir()
        made.append(Run(directory, abort_once))
        return made[-1]

    yield make
    for run in made:
        for pid in [run.sup.pid, *run.pids()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run.sup.wait(10)


def test_a_child_that_aborts_is_started_again(runs: Callable[[bool], Run]) -> None:
    run = runs(True)
    started = time.monotonic()
    second = run.child(starts=2)
    assert time.monotonic() - started >= supervise.RESTART_SEC - 0.1      # RestartSec=2s
    first = run.pids()[0]
    assert first != second and not proc.alive(first) and proc.alive(second)
    lines = [line for line in run.text().splitlines() if "pvc.lab.supervise" in line]
    assert len(lines) == 1, run.text()
    assert f"toyd (pid {first}) ended by signal SIGABRT; restarting in 2 s" in lines[0]
    assert run.sup.poll() is None
    assert os.getpgid(second) == run.sup.pid                  # in the supervisor's group (killpg)


def test_a_child_killed_with_sigkill_ends_the_supervisor(runs: Callable[[bool], Run]) -> None:
    run = runs(False)
    child = run.child()
    os.kill(child, signal.SIGKILL)
    assert run.sup.wait(10) == 128 + signal.SIGKILL
    time.sleep(supervise.RESTART_SEC + 0.5)                  # no restart comes
    assert run.pids() == [child]
    assert "ended by signal SIGKILL; not restarted (a deliberate kill)" in run.text()
    assert "restarting" not in run.text()


def test_sigterm_to_the_supervisor_reaches_the_child_and_both_end(runs: Callable[[bool], Run]) -> None:
    run = runs(False)
    child = run.child()
    os.kill(run.sup.pid, signal.SIGTERM)                     # the supervisor alone, not its group
    assert run.sup.wait(10) == 0
    assert run.termed.read_text() == str(child)
    wait(lambda: not proc.alive(child), 5, "the child gone")
    assert run.pids() == [child]
    assert "stopped" in run.text() and "restarting" not in run.text()


def test_a_frozen_node_thaws_without_a_restart(runs: Callable[[bool], Run]) -> None:
    """The chaos runner's node_freeze: SIGSTOP of every process (child first here), later SIGCONT."""
    run = runs(False)
    child = run.child()
    for pid in (child, run.sup.pid):
        os.kill(pid, signal.SIGSTOP)
    wait(lambda: proc.process_table()[child][0] == "T", 5, "the child stopped")
    time.sleep(0.5)
    for pid in (run.sup.pid, child):
        os.kill(pid, signal.SIGCONT)
    time.sleep(0.5)
    assert proc.alive(child) and run.sup.poll() is None
    assert run.pids() == [child] and "pvc.lab.supervise" not in run.text()


def test_proc_stop_ends_both_without_a_restart(runs: Callable[[bool], Run], tmp_path: Path) -> None:
    """The lab's stop: SIGTERM to the whole group (the pidfile holds the supervisor's pid)."""
    run = runs(False)
    child = run.child()
    pidfile = tmp_path / "toyd.pid"
    pidfile.write_text(f"{run.sup.pid}\n")
    proc.stop(pidfile, timeout=10)
    assert run.sup.wait(5) == 0
    assert run.termed.read_text() == str(child)
    assert not proc.alive(child) and run.pids() == [child]


def test_kill_unit_sigkills_the_child_too(runs: Callable[[bool], Run]) -> None:
    """The chaos runner's kill_pvcworkerd: the daemon itself gets SIGKILL (no graceful SIGTERM
    handler runs) and nothing is restarted."""
    run = runs(False)
    child = run.child()
    signalled = proc.kill_unit(run.sup.pid, timeout=5)
    assert signalled[:2] == [run.sup.pid, child]
    assert run.sup.wait(5) == -signal.SIGKILL
    wait(lambda: not proc.alive(child), 5, "the child gone")
    assert not run.termed.exists()
    assert run.pids() == [child]


def test_sigkill_of_the_supervisor_alone_takes_the_child(runs: Callable[[bool], Run]) -> None:
    """A kill of the pid in the pid file never leaves the daemon running orphaned."""
    run = runs(False)
    child = run.child()
    os.kill(run.sup.pid, signal.SIGKILL)
    run.sup.wait(5)
    wait(lambda: not proc.alive(child), 5, "the child gone")
    assert not run.termed.exists()
