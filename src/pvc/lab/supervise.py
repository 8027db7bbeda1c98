"""`python -m pvc.lab.supervise [--name NAME] -- CMD...`: restart a lab daemon that crashed.

On a real host systemd restarts a crashed pvcworkerd (deploy/systemd/pvcworkerd.service:
Restart=on-failure, RestartSec=2s); in the lab nobody would, and a worker that aborted inside
librbd left its node without one. This runs the daemon as its child and starts it again after a
crash, but leaves deliberate ends alone: a SIGKILL or SIGTERM of the child (the chaos runner, the
HA tests) or a clean exit ends the supervisor too, and a stop signal to the supervisor is passed
on and never followed by a restart.

The child stays in the supervisor's process group (spawn's pidfile names the supervisor, the
group's leader), so `proc.stop`'s killpg reaches both; the child dies with the supervisor
(PR_SET_PDEATHSIG), so a SIGKILL of the pid in the pidfile never leaves a worker running.
Only the standard library: `pvc.lab.proc` imports it to find the daemon below a supervisor.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CRASH_SIGNALS = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE,
                           signal.SIGTRAP})
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)   # passed on to the child
RESTART_SEC = 2.0                 # systemd's RestartSec=2s
# more restarts than this within START_LIMIT_INTERVAL: give up (as deploy/systemd/pvcworkerd.service)
START_LIMIT_BURST = 10
START_LIMIT_INTERVAL = 60.0
MODULE = "pvc.lab.supervise"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Decision:
    """What to do about a child that ended: `action` is "restart", "end" or "give-up"; `restarts`
    the restart times (monotonic) still inside the start-limit window, this one included."""
    action: str
    how: str
    restarts: tuple[float, ...]


def describe(returncode: int) -> str:
    """How a child ended, from Popen's returncode (-N: killed by signal N)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def decide(returncode: int, restarts: Sequence[float], now: float, stopping: bool = False,
           burst: int = START_LIMIT_BURST, interval: float = START_LIMIT_INTERVAL) -> Decision:
    """Restart after a crash signal or a non-zero exit (systemd's Restart=on-failure), unless the
    supervisor was told to stop or the start limit is reached; anything else (exit 0, SIGKILL,
    SIGTERM or another signal someone sent on purpose) ends the supervisor."""
    how = describe(returncode)
    recent = tuple(t for t in restarts if now - t < interval)
    crashed = returncode > 0 or (returncode < 0 and -returncode in CRASH_SIGNALS)
    if stopping or not crashed:
        return Decision("end", how, recent)
    if len(recent) >= burst:
        return Decision("give-up", how, recent)
    return Decision("restart", how, (*recent, now))


def exit_status(returncode: int) -> int:
    """The supervisor's own exit status for a child's returncode (a shell's 128+N for signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def is_supervisor(pid: int) -> bool:
    """Whether `pid` runs this module (`python -m pvc.lab.supervise ...`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in argv[1:3]


def _log(name: str, message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pvc.lab.supervise: {name} {message}", file=sys.stderr,
          flush=True)


def _die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    """In the forked child before exec: SIGKILL when the supervisor goes (as a unit's processes
    go with it), at once if it already went."""
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def supervise(name: str, argv: Sequence[str]) -> int:
    """Run `argv`, restarting it after crashes; return the status to exit with."""
    child: subprocess.Popen[bytes] | None = None
    stop_signal: int | None = None
    restarts: tuple[float, ...] = ()
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)      # loaded before any fork

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stop_signal
        stop_signal = signum
        if child is not None:
            child.send_signal(signum)     # a no-op once the child has been reaped

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    while True:
        child = subprocess.Popen(list(argv), preexec_fn=lambda: _die_with_parent(libc, parent))
        if stop_signal is not None:       # told to stop while it was being started
            child.send_signal(stop_signal)
        returncode = child.wait()
        decision = decide(returncode, restarts, time.monotonic(), stopping=stop_signal is not None)
        restarts = decision.restarts
        if decision.action == "end":
            why = "stopped" if stop_signal is not None else \
                f"not restarted (a {'clean exit' if returncode == 0 else 'deliberate kill'})"
            _log(name, f"(pid {child.pid}) ended by {decision.how}; {why}")
            return exit_status(returncode)
        if decision.action == "give-up":
            _log(name, f"(pid {child.pid}) ended by {decision.how}; more than {START_LIMIT_BURST} restarts "
                       f"within {START_LIMIT_INTERVAL:.0f} s: start limit hit, giving up")
            return exit_status(returncode) or 1
        _log(name, f"(pid {child.pid}) ended by {decision.how}; restarting in {RESTART_SEC:.0f} s "
                   f"(as systemd's Restart=on-failure)")
        deadline = time.monotonic() + RESTART_SEC
        while stop_signal is None and time.monotonic() < deadline:
            time.sleep(0.05)              # a stop signal meanwhile: no restart
        if stop_signal is not None:
            _log(name, f"not restarted: the supervisor got {signal.Signals(stop_signal).name}")
            return exit_status(returncode)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvc.lab.supervise", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="pvcworkerd", help="the daemon's name in log lines")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    parsed = parser.parse_args(args)
    command = parsed.command[1:] if parsed.command[:1] == ["--"] else parsed.command
    if not command:
        parser.error("no command given (after --)")
    return supervise(parsed.name, command)


if __name__ == "__main__":
    sys.exit(main())
