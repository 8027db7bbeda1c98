"""Running a provisioner script's stages in a sandboxed child process (the seed's "modified chroot").

The job starts one child per run (`python -m pvc.worker.provisioner.sandbox`), so the script's
instance keeps its attributes from one stage to the next. The child:

- enters its own mount namespace (unshare(CLONE_NEWNS), then private propagation, so nothing it
  mounts is seen outside and everything it mounted vanishes with it);
- binds / recursively onto a new root and makes every mount in it read-only except /dev, /sys,
  /proc and /run (writable, as upstream), mounts a fresh tmpfs on /tmp with an empty /tmp/target,
  and chroots into it. The hypervisor's files are all visible, read-only; ZooKeeper, Ceph and
  the network work as outside;
- loads the script (a script without VMBuilderScript, or with a syntax error, fails here with
  the line), then runs one stage per command, each with a time limit (SIGALRM raises inside the
  stage; cleanup() can then still run in the same process).

Protocol: commands are JSON lines on the child's stdin; events are JSON lines on a separate
pipe (log lines, a stage's result or its error); the child's own stdout and stderr (print(),
commands' output) are read line by line into the job's log. A cancel is SIGTERM to the child,
which raises inside the running stage. A child that does not answer within the grace time after
its limit (or a cancel) is killed with its whole process group.

Runs as root (mounts need it); the worker does.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from pvc.worker.provisioner.vmbuilder import ProvisioningError

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
WRITABLE = ("/dev", "/sys", "/proc", "/run")
GRACE = 10.0            # after a time limit or a cancel, how long the stage may take to give up
LOAD_TIMEOUT = 60.0
EVENT_FD_ENV = "PVC_SANDBOX_EVENT_FD"


class StageError(Exception):
    """A stage did not complete: kind is failed, timeout, cancelled, crashed or load."""

    def __init__(self, kind: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind, self.message, self.detail = kind, message, detail


# ============================================================================= parent side

class Sandbox:
    """The parent's handle on one sandboxed script process."""

    def __init__(self, *, script: str, script_name: str, vm_name: str, vm_profile: str,
                 vm_data: dict[str, Any], vm_uuid: str, log: Callable[[str], None],
                 settings: dict[str, Any] | None = None, isolate: bool = True,
                 python: str = sys.executable) -> None:
        self.spec = {"script": script, "script_name": script_name, "vm_name": vm_name,
                     "vm_profile": vm_profile, "vm_data": vm_data, "vm_uuid": vm_uuid,
                     "settings": settings, "isolate": isolate}
        self.log, self.python, self.isolate = log, python, isolate
        self.proc: subprocess.Popen[bytes] | None = None
        self.root: str | None = None
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.vm_id: int | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = LOAD_TIMEOUT) -> None:
        """Start the child and load the script; StageError(kind="load") says why it could not."""
        if self.isolate:
            self.root = tempfile.mkdtemp(prefix="pvc-sandbox-")
        self.spec["root"] = self.root
        read_fd, write_fd = os.pipe()
        env = {**os.environ, EVENT_FD_ENV: str(write_fd), "PYTHONUNBUFFERED": "1"}
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "pvc.worker.provisioner.sandbox"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_fd,), env=env,
                start_new_session=True, cwd="/")
        except OSError as exc:
            os.close(read_fd)
            raise StageError("load", f"cannot start the script sandbox: {exc}") from None
        finally:
            os.close(write_fd)
        self._spawn(self._read_events, os.fdopen(read_fd, "rb"))
        assert self.proc.stdout is not None
        self._spawn(self._read_output, self.proc.stdout)
        self._send(self.spec)
        event = self._wait(timeout, lambda: False, "loading the script")
        if event.get("type") != "ready":
            raise StageError("load", str(event.get("message", "the script could not be loaded")))
        self.vm_id = event.get("vm_id")

    def run(self, stage: str, timeout: float, cancelled: Callable[[], bool] = lambda: False) -> Any:
        """Run one stage; its result (create(): the XML), or StageError."""
        if self.proc is None or self.proc.poll() is not None:
            raise StageError("crashed", f"the script process is not running (before {stage}())")
        self._send({"op": "run", "stage": stage, "timeout": timeout})
        event = self._wait(timeout + GRACE, cancelled, f"{stage}()")
        if event.get("type") == "done":
            return event.get("result")
        raise StageError(str(event.get("kind", "failed")), str(event.get("message", "")),
                         str(event.get("traceback", "")))

    def close(self) -> None:
        """Stop the child and everything it started; remove the sandbox directory."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    self._send({"op": "quit"})
                    proc.wait(timeout=5)
                except (OSError, ValueError, subprocess.TimeoutExpired):
                    pass
            self._kill_group()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for thread in self._threads:
            thread.join(timeout=2)
        if self.root:
            try:
                os.rmdir(self.root)
            except OSError:
                shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, fn: Callable[[Any], None], arg: Any) -> None:
        thread = threading.Thread(target=fn, args=(arg,), daemon=True, name="sandbox-io")
        thread.start()
        self._threads.append(thread)

    def _read_events(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.events.put(event)
        self.events.put({"type": "eof"})

    def _read_output(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    self.log(f"script: {line}")

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait(self, timeout: float, cancelled: Callable[[], bool], what: str) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        cancel_deadline: float | None = None
        while True:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                now = time.monotonic()
                if cancel_deadline is None and cancelled():
                    self.log(f"cancel requested: interrupting {what}")
                    try:
                        os.kill(self.proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    cancel_deadline = now + GRACE
                if cancel_deadline is not None and now > cancel_deadline:
                    self._kill_group()
                    raise StageError("cancelled", f"{what} was cancelled (the script process was killed)") \
                        from None
                if now > deadline:
                    self._kill_group()
                    raise StageError("timeout", f"{what} did not finish within {timeout:.0f} s; the script "
                                                f"process was killed") from None
                continue
            kind = event.get("type")
            if kind == "log":
                level = str(event.get("level", "info"))
                prefix = "" if level == "info" else f"{level.upper()}: "
                self.log(f"{prefix}{event.get('message', '')}")
                continue
            if kind == "eof":
                code = self.proc.wait()
                raise StageError("crashed", f"the script process ended during {what} (exit code {code})")
            return event


# ============================================================================== child side

def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or ''} on {target}: {os.strerror(err)}")


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _mounts_under(root: str) -> list[tuple[str, set[str]]]:
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            point = _unescape(fields[4])
            if point == root or point.startswith(root + "/"):
                found.append((point, set(fields[5].split(","))))
    return found


def code_under_tmp() -> list[str]:
    """The interpreter's prefix and import paths that live under /tmp (outermost only), which
    the sandbox's fresh /tmp would otherwise hide."""
    found: list[str] = []
    for entry in sorted({os.path.realpath(p) for p in (sys.prefix, *sys.path) if p}, key=len):
        if (entry == "/tmp" or not entry.startswith("/tmp/") or not os.path.isdir(entry)
                or any(entry == f or entry.startswith(f + "/") for f in found)):
            continue
        found.append(entry)
    return found


def enter_sandbox(root: str) -> None:
    """Private mount namespace; read-only / with writable /dev, /sys, /proc, /run; fresh /tmp."""
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)} (the worker must run as root)")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "/", root, None, MS_BIND | MS_REC)
    keep = tuple(root + w for w in WRITABLE)
    for point, options in _mounts_under(root):
        if any(point == k or point.startswith(k + "/") for k in keep):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        flags |= (MS_NOSUID if "nosuid" in options else 0) | (MS_NODEV if "nodev" in options else 0)
        flags |= MS_NOEXEC if "noexec" in options else 0
        try:
            _mount(libc, None, point, None, flags)
        except OSError:
            if point == root:
                raise
    # /run may be part of the root filesystem: bind it again, writable.
    _mount(libc, "/run", root + "/run", None, MS_BIND | MS_REC)
    _mount(libc, "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    os.makedirs(root + "/tmp/target", exist_ok=True)
    # PVC itself (a checkout or virtual environment under /tmp) must stay importable in there.
    for path in code_under_tmp():
        os.makedirs(root + path, exist_ok=True)
        _mount(libc, path, root + path, None, MS_BIND | MS_REC)
        _mount(libc, None, root + path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    os.chroot(root)
    os.chdir("/")


class _Interrupt(BaseException):
    """Raised inside a stage by a signal (BaseException: scripts' `except Exception` let it pass)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


_in_stage = False


def _on_signal(signum: int, _frame: Any) -> None:
    if not _in_stage:
        return
    raise _Interrupt("timeout" if signum == signal.SIGALRM else "cancelled")


def child_main() -> int:
    global _in_stage
    from pvc.worker.provisioner import vmbuilder

    events = os.fdopen(int(os.environ.pop(EVENT_FD_ENV)), "w", buffering=1)

    def emit(**event: Any) -> None:
        events.write(json.dumps(event, default=str) + "\n")
        events.flush()

    vmbuilder.set_log_sink(lambda level, message: emit(type="log", level=level, message=message))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    spec = json.loads(sys.stdin.readline() or "{}")
    name = str(spec.get("script_name") or "script")
    try:
        if spec.get("settings"):
            set_settings(spec["settings"])
        if spec.get("isolate"):
            enter_sandbox(spec["root"])
        cls = vmbuilder.load_script(str(spec.get("script") or ""), name)
        builder = cls(spec["vm_name"], None, spec.get("vm_profile", ""), spec.get("vm_data") or {},
                      spec.get("vm_uuid"))
    except ProvisioningError as exc:
        emit(type="error", kind="load", message=str(exc))
        return 1
    except Exception as exc:
        emit(type="error", kind="load", message=f"cannot prepare the script sandbox: {exc}")
        return 1
    emit(type="ready", vm_id=builder.vm_id)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") != "run":
            break
        stage = str(command.get("stage"))
        if stage not in vmbuilder.STAGES:
            emit(type="error", kind="failed", message=f"unknown stage {stage}")
            continue
        limit = max(float(command.get("timeout") or 0), 0.001)
        try:
            _in_stage = True
            signal.setitimer(signal.ITIMER_REAL, limit)
            result = getattr(builder, stage)()
            _in_stage = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        except _Interrupt as exc:
            _in_stage = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            text = (f"{stage}() did not finish within {math.ceil(limit)} s" if exc.kind == "timeout"
                    else f"{stage}() was cancelled")
            emit(type="error", kind=exc.kind, message=text)
            continue
        except BaseException as exc:
            _in_stage = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            emit(type="error", kind="failed", message=vmbuilder.script_error(exc, name),
                 traceback="".join(traceback.format_exception(exc)))
            continue
        if stage == "create" and result is not None and not isinstance(result, str):
            result = result.decode() if isinstance(result, bytes) else str(result)
        emit(type="done", stage=stage, result=result if stage == "create" else None)
    return 0


# Settings of the job that started this process (pvcapid.Daemon.config for upstream scripts).
SETTINGS: Any = None


def set_settings(data: dict[str, Any]) -> None:
    global SETTINGS
    from pvc.core.config import Settings

    SETTINGS = Settings.model_validate(data)


if __name__ == "__main__":
    # Run the imported module's child_main, so its globals (SETTINGS) are the ones others import.
    from pvc.worker.provisioner import sandbox as _module

    sys.exit(_module.child_main())
