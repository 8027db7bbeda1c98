"""Running lab processes: commands inside namespaces, background daemons with pid files.

The lab is the one place outside adapters that runs system commands (it builds the machine
the product runs on); every command is an argument list, never a shell string.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pvc.lab import supervise

T = TypeVar("T")


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


def process_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (state letter, parent pid, process group) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (rest[0], int(rest[1]), int(rest[2]))
    return table


def descendants(pid: int, table: dict[int, tuple[str, int, int]] | None = None) -> list[int]:
    """Every live process below `pid` (children first found, then theirs)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (_state, parent, _group) in table.items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        if table[child][0] != "Z":
            found.append(child)
        queue.extend(children.get(child, []))
    return found


def supervised_daemon(pid: int, table: dict[int, tuple[str, int, int]] | None = None) -> int | None:
    """The daemon a `pvc.lab.supervise` process runs (its live child), or None when `pid` is no
    supervisor or is between two starts: what the lab kills as the daemon's main process."""
    if not supervise.is_supervisor(pid):
        return None
    table = process_table() if table is None else table
    return next((child for child, (state, parent, _group) in table.items() if parent == pid and state != "Z"),
                None)


def kill_unit(pid: int, spare: Callable[[int], bool] = lambda _pid: False, timeout: float = 5) -> list[int]:
    """SIGKILL a daemon's main process, then stop what it had started, as systemd does with the rest
    of a unit's control group when its main process dies (SIGTERM, SIGKILL after `timeout`).

    Processes for which `spare(pid)` is true stay (on a real host they run in units of their own,
    e.g. an OSD PVC started). A daemon the lab runs under `pvc.lab.supervise` is a main process
    too: SIGKILLed right after its supervisor, as systemd would kill the daemon itself. Returns
    the pids signalled, main ones first.
    """
    table = process_table()
    daemon = supervised_daemon(pid, table)
    mains = [pid] if daemon is None else [pid, daemon]
    rest = [p for p in descendants(pid, table) if p not in mains and not spare(p)]
    rest += [p for p, (state, _parent, group) in table.items()
             if group == pid and p not in mains and p not in rest and state != "Z" and not spare(p)]
    for main in mains:       # the supervisor first: it must not see its daemon's death
        try:
            os.kill(main, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for child in rest:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in [*mains, *rest]) and time.monotonic() < deadline:
            time.sleep(0.05)
    return [*mains, *rest]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


_CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")   # where `ip netns add` mounts them


def enter_netns(netns: str) -> None:
    """Move the *calling thread* into a named network namespace (network namespaces are per thread).

    Sockets the thread opens afterwards, and threads it starts, live in that namespace; the rest
    of the process is untouched. Used to probe or talk to lab services without a subprocess.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_call(netns: str, fn: Callable[..., T], *args: Any, timeout: float | None = 60,
               **kwargs: Any) -> T:
    """Run fn(*args, **kwargs) in a fresh thread inside `netns` and return its result.

    A fresh thread each time, so no pooled thread is ever left in the wrong namespace.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter_netns(netns)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LabError(f"call inside {netns} did not finish in {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]
