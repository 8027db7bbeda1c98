"""`ProcessServices`: the long-running helpers PVC starts itself (dnsmasq, FRR), as plain processes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pvc.adapters.network.base import NetworkError, Services
from pvc.adapters.network.netns import netns_argv

_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class ProcessServices(Services):
    """Services as plain child processes in their own sessions, tracked by pid files
    (`<pid>\\n<program>\\n`) so a restarted pvcnoded finds and stops what its predecessor
    started; the program name guards against a recycled pid."""

    START_GRACE = 0.1

    def __init__(self, run_dir: str | Path, netns: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.netns = netns
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ProcessServices({str(self.run_dir)!r}, netns={self.netns!r})"

    def _path(self, key: str, suffix: str) -> Path:
        if not _KEY_RE.match(key):
            raise NetworkError(f"'{key}' is not a service key")
        return self.run_dir / f"{key}{suffix}"

    def _record(self, key: str) -> tuple[int, str] | None:
        try:
            lines = self._path(key, ".pid").read_text().split("\n")
            return int(lines[0]), lines[1].strip() if len(lines) > 1 else ""
        except (OSError, ValueError):
            return None

    def _alive(self, pid: int, program: str) -> bool:
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
            return False
        argv0 = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline else ""
        if argv0 == program:
            return True
        # `ip netns exec` between fork and exec
        return bool(self.netns) and cmdline[:3] == [b"ip", b"netns", b"exec"]

    def pid(self, key: str) -> int | None:
        record = self._record(key)
        if record is None:
            return None
        return record[0] if self._alive(*record) else None

    def start(self, key: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        if not argv:
            raise NetworkError(f"start {key}: empty command")
        pidfile, log = self._path(key, ".pid"), self._path(key, ".log")
        program = os.path.basename(argv[0])
        with self._lock:
            if self.pid(key) is not None:
                raise NetworkError(f"start {key}: already running (pid {self.pid(key)})")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {shlex.join(argv)}\n".encode())
                out.flush()
                try:
                    child = subprocess.Popen(netns_argv(self.netns, argv), stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                             env={**os.environ, **(env or {})})
                except OSError as e:
                    raise NetworkError(f"start {key}: {argv[0]}: {e.strerror or e}") from None
            self._children[child.pid] = child
            tmp = pidfile.with_suffix(".pid.tmp")
            tmp.write_text(f"{child.pid}\n{program}\n")
            tmp.replace(pidfile)
            deadline = time.monotonic() + self.START_GRACE
            while time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.01)
            if child.poll() is not None:
                self._children.pop(child.pid, None)
                pidfile.unlink(missing_ok=True)
                raise NetworkError(f"start {key}: {program} exited at once (status {child.returncode}): "
                                   f"{_tail(log)}")
            return child.pid

    def argv(self, key: str) -> list[str] | None:
        pid = self.pid(key)
        if pid is None:
            return None
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]

    def _wait_gone(self, pid: int, program: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid, program):
                return True
            time.sleep(0.01)
        return not self._alive(pid, program)

    def stop(self, key: str, timeout: float = 5.0) -> None:
        pidfile = self._path(key, ".pid")
        with self._lock:
            record = self._record(key)
            if record is not None and self._alive(*record):
                pid, program = record
                for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                    try:   # the whole session's group: dnsmasq's script helper goes too
                        os.killpg(pid, signum)
                    except ProcessLookupError:
                        break
                    except PermissionError:
                        os.kill(pid, signum)
                    if self._wait_gone(pid, program, wait):
                        break
                else:
                    raise NetworkError(f"stop {key}: pid {pid} survived SIGKILL")
                child = self._children.pop(pid, None)
                if child is not None:
                    child.wait()
            pidfile.unlink(missing_ok=True)

    def signal(self, key: str, signum: int) -> None:
        pid = self.pid(key)
        if pid is None:
            raise NetworkError(f"signal {key}: not running")
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            raise NetworkError(f"signal {key}: not running") from None

    def names(self) -> list[str]:
        if not self.run_dir.is_dir():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.pid") if _KEY_RE.match(p.stem))


def _tail(path: Path, limit: int = 800) -> str:
    try:
        text = path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if not line.startswith("--- ")]
    return " | ".join(lines[-8:]).strip() or "(no output)"
