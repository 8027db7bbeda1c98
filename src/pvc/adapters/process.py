"""Child processes a daemon supervises (pvcnoded runs pvcapid on the primary).

The adapter for starting and stopping our own long-running programs: one place that spawns,
so the layering rule "only adapters start processes" holds and tests can see what runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class ChildProcess:
    """`python -m <module>` with extra environment, output appended to a log file."""

    def __init__(self, module: str, env: dict[str, str], log_file: Path | None) -> None:
        self.module, self.env, self.log_file = module, env, log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        out: int | object = subprocess.DEVNULL
        handle = None
        if self.log_file is not None:
            try:
                self.log_file.parent.mkdir(parents=True, exist_ok=True)
                handle = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
                out = handle
            except OSError:
                out = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], env={**os.environ, **self.env},
                                         stdout=out, stderr=subprocess.STDOUT,  # type: ignore[arg-type]
                                         stdin=subprocess.DEVNULL)
        finally:
            if handle is not None:
                handle.close()

    def wait(self) -> int | None:
        """Block until the child exits; its exit code."""
        return self.proc.wait() if self.proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
