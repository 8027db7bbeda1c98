"""Running lab processes: commands inside namespaces, background daemons with pid files.

The lab is the one place outside adapters that runs system commands (it builds the machine
the product runs on); every command is an argument list, never a shell string.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class LabError(Exception):
    pass


def in_netns(netns: str | None, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)


def run(cmd: Sequence[str], netns: str | None = None, check: bool = True, input: str | None = None,
        timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = in_netns(netns, cmd)
    result = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(full)} failed ({result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()[-800:]}")
    return result


def spawn(cmd: Sequence[str], log: Path, pidfile: Path, netns: str | None = None,
          env: dict[str, str] | None = None) -> int:
    """Start a long-running process in its own session; record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(in_netns(netns, cmd), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def pid_of(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def stop(pidfile: Path, timeout: float = 15, kill: bool = False) -> None:
    """Stop the process group started by spawn(); SIGKILL after timeout."""
    pid = pid_of(pidfile)
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pidfile.unlink(missing_ok=True)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
