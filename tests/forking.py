"""Daemons for the tests, forked from a server that imported them once (tests/conftest.py `Daemon`).

Over a hundred tests each start their own pvcapid (and many a pvcnoded or pvcworkerd). A fresh
interpreter spends about 1.5 s importing FastAPI, pydantic, kazoo and PVC before the daemon does
anything; on the 2-core CI machine that was minutes per run. Here multiprocessing's forkserver (a
clean, single-threaded process started once, not the pytest process) imports the daemons' modules
once and forks a child per daemon. Each child is still a real process of its own: its own session
(killpg works as with `start_new_session`), environment, working directory, stdin from /dev/null,
stdout and stderr into the log, and exit code; it runs the module as `python -m <module>` does
(runpy, `__main__`, non-daemon threads joined and atexit handlers run at the end).

PVC_TEST_DAEMON_EXEC=1 makes tests/conftest.py start a fresh interpreter per daemon instead, and so
does a change to PVC's sources after the forkserver imported them (`usable()`): a daemon started
later must run the code as it is now, as an exec'd one would.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import multiprocessing.process
import os
import runpy
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

PRELOAD = ["pvc.api.daemon", "pvc.node.daemon", "pvc.worker.daemon"]
_context: Any = None
_loaded_at = 0.0          # newest source file when the forkserver was made


def _newest_source() -> float:
    import pvc

    root = Path(pvc.__file__).parent
    return max((f.stat().st_mtime for f in root.rglob("*.py")), default=0.0)


def usable() -> bool:
    """Whether forked daemons run the current sources (none changed since the preload)."""
    return _context is None or _newest_source() <= _loaded_at


def _forkserver() -> Any:
    global _context, _loaded_at
    if _context is None:
        _loaded_at = _newest_source()
        _context = multiprocessing.get_context("forkserver")
        # "__main__" too: children then need not re-run pytest's own entry script each time
        _context.set_forkserver_preload(["__main__", __name__, *PRELOAD])
    return _context


def _run(module: str, env: dict[str, str], log: str) -> None:
    """The child: become `python -m <module>` with this environment, writing into `log`."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 stays open for the process's life
    # unbuffered, as PYTHONUNBUFFERED=1 makes the exec'd daemons
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                  errors="backslashreplace")
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [module]
    # the module was imported by the forkserver; running it as __main__ is what `-m` does anyway
    warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*found in sys.modules")
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        threading._shutdown()  # type: ignore[attr-defined]  # as at interpreter exit: join threads
        atexit._run_exitfuncs()


class ForkedProcess:
    """The part of subprocess.Popen that the tests use, for a forked daemon."""

    def __init__(self, module: str, env: dict[str, str], log: str) -> None:
        self._process = _forkserver().Process(target=_run, args=(module, env, log), name=module)
        self._process.start()
        # not a child multiprocessing waits for at pytest's exit (a leaked daemon must not hang it)
        multiprocessing.process._children.discard(self._process)  # type: ignore[attr-defined]
        self.pid: int = int(self._process.pid or 0)
        self.args = [sys.executable, "-m", module]
        # as Popen(start_new_session=True): the session exists once start returns
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.poll() is None:
            try:
                if os.getsid(self.pid) == self.pid:
                    break
            except ProcessLookupError:
                break
            time.sleep(0.002)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)
