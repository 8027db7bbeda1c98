"""Running a provisioner script's stages in a sandbox that is a boundary (issues #7 and #13).

The job starts one child per run (`python -m pvc.worker.provisioner.sandbox`), so the script's
instance keeps its attributes from one stage to the next. The child (pvc.worker.provisioner.confine):

- joins its own cgroup first (pvc.worker.provisioner.limits: pids.max, memory.max without swap,
  a low cpu.weight; the worker made it and removes it, killing what is left), so all the script
  starts is born inside; every scratch tmpfs is capped at worker.sandbox_tmp_size;
- unshares mount, PID, IPC, UTS and cgroup namespaces, and a network namespace holding only `lo`
  unless the job allows network (the profile argument `sandbox_network=yes`), then forks: the
  script runs as PID 1 of its own PID namespace, so it sees no host process and everything it
  starts dies with it (a stage's time limit or a cancel also kills whatever the stage left
  running);
- pivot_roots into a new root of read-only binds of /usr, a curated /etc and PVC's code, with a
  fresh /tmp (and /tmp/target), /run, /var and /root, a minimal /dev, its own /proc with
  /proc/sys read-only, and /sys read-only; the host's root is detached. /etc/pvc, the
  configuration file, Ceph keyrings, token and key files, /root, /home, /var/lib/ceph, the
  libvirt sockets and every other process are simply not there;
- keeps only the capabilities an install needs (confine.CAPS; no CAP_SYS_ADMIN, CAP_MKNOD,
  CAP_SYS_MODULE, CAP_SYS_PTRACE...), sets no_new_privs and loads a seccomp filter
  (pvc.worker.provisioner.seccompfilter). mount(), umount2() and mknod() of character devices are
  done by the worker on the script's behalf, within limits (pvc.worker.provisioner.broker);
- receives exactly the documented VMBuilder data (vm_name, vm_id, vm_uuid, vm_profile, vm_data)
  and no settings: volume work (create, clone, map, import...) of the VM's own volumes goes
  through the worker (pvc.worker.provisioner.scriptapi), which holds the credentials;
- loads the script (a script without VMBuilderScript, or with a syntax error, fails here with
  the line), then runs one stage per command, each with a time limit (SIGALRM raises inside the
  stage; cleanup() can then still run in the same process).

Protocol: commands are JSON lines on the child's stdin; events are JSON lines on a separate
pipe (log lines, a stage's result or its error); requests to the worker travel on a socket pair;
the child's own stdout and stderr (print(), commands' output) are read line by line into the
job's log. A cancel is SIGTERM to the child, which raises inside the running stage. A child that
does not answer within the grace time after its limit (or a cancel) is killed with its whole
process group, and with it its PID namespace.

Runs as root (namespaces and mounts need it); the worker does.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from pvc.worker.provisioner import limits as limits_mod
from pvc.worker.provisioner.broker import Broker, BrokerServer
from pvc.worker.provisioner.limits import Limits, SandboxCgroup
from pvc.worker.provisioner.vmbuilder import ProvisioningError

GRACE = 10.0            # after a time limit or a cancel, how long the stage may take to give up
LOAD_TIMEOUT = 60.0
EVENT_FD_ENV = "PVC_SANDBOX_EVENT_FD"
BROKER_FD_ENV = "PVC_SANDBOX_BROKER_FD"
# the only variables of the worker's environment the script sees
ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
                 broker: Broker | None = None, secrets: Iterable[str] = (), network: bool = False,
                 isolate: bool = True, python: str = sys.executable, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.spec = {"script": script, "script_name": script_name, "vm_name": vm_name,
                     "vm_profile": vm_profile, "vm_data": vm_data, "vm_uuid": vm_uuid,
                     "secrets": sorted(set(secrets)), "network": bool(network), "isolate": isolate,
                     "tmp_size": self.limits.tmp_size, "cgroup_procs": []}
        self.cgroup: SandboxCgroup | None = None
        self.log, self.python, self.isolate = log, python, isolate
        self.broker = broker or Broker(vm_name, vm_data, log)
        self.server: BrokerServer | None = None
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
        # The cgroup exists, limits set, before the child does: the child joins it first thing.
        self.cgroup = limits_mod.create_or_warn(str(self.spec["vm_name"]), self.limits, self.log)
        if self.cgroup is not None:
            self.spec["cgroup_procs"] = self.cgroup.procs_files()
            self.log(f"script sandbox limits: {self.limits.describe()}, "
                     f"{limits_mod.format_bytes(self.limits.tmp_size)} per scratch file system "
                     f"({self.cgroup.describe()})")
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: os.environ[k] for k in ENVIRONMENT if k in os.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env.update({EVENT_FD_ENV: str(write_fd), BROKER_FD_ENV: str(theirs.fileno()),
                    "PYTHONUNBUFFERED": "1", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"})
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "pvc.worker.provisioner.sandbox"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(write_fd, theirs.fileno()),
                env=env, start_new_session=True, cwd="/")
        except OSError as exc:
            os.close(read_fd)
            ours.close()
            raise StageError("load", f"cannot start the script sandbox: {exc}") from None
        finally:
            os.close(write_fd)
            theirs.close()
        self.server = BrokerServer(ours, self.broker, self.log)
        self.server.start()
        self._spawn(self._read_events, os.fdopen(read_fd, "rb"))
        assert self.proc.stdout is not None
        self._spawn(self._read_output, self.proc.stdout)
        self._send(self.spec)
        try:
            event = self._wait(timeout, lambda: False, "loading the script")
        except StageError as exc:
            raise self._with_news(exc) from None
        if event.get("type") != "ready":
            raise StageError("load", str(event.get("message", "the script could not be loaded")),
                             str(event.get("traceback", "")))
        self.vm_id = event.get("vm_id")
        self.broker.pid1 = self.init_pid()

    def init_pid(self) -> int | None:
        """The host pid of the script's process (PID 1 of its namespace; the child's child)."""
        if self.proc is None:
            return None
        if not self.isolate:
            return self.proc.pid
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(p) for p in f.read().split()]
            return children[0] if children else None
        except OSError:
            pass
        for entry in os.listdir("/proc"):         # kernels without /proc/<pid>/task/<tid>/children
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        return int(entry)
            except (OSError, ValueError, IndexError):
                continue
        return None

    def run(self, stage: str, timeout: float, cancelled: Callable[[], bool] = lambda: False) -> Any:
        """Run one stage; its result (create(): the XML), or StageError."""
        if self.proc is None or self.proc.poll() is not None:
            raise StageError("crashed", f"the script process is not running (before {stage}())")
        self._send({"op": "run", "stage": stage, "timeout": timeout})
        try:
            event = self._wait(timeout + GRACE, cancelled, f"{stage}()")
        except StageError as exc:
            raise self._with_news(exc) from None
        if event.get("type") == "done":
            self._news()
            return event.get("result")
        raise self._with_news(StageError(str(event.get("kind", "failed")), str(event.get("message", "")),
                                         str(event.get("traceback", ""))))

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
        if self.cgroup is not None:
            self._news()
            for left in self.cgroup.remove():
                self.log(f"WARNING: the script sandbox's cgroup could not be removed: {left}")
            self.cgroup = None
        if self.server is not None:
            self.server.close()
            self.server = None
        self.broker.release()
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
    def _news(self) -> list[str]:
        """Log what the sandbox ran into since the last look (OOM kills, refused forks)."""
        notes = self.cgroup.news() if self.cgroup is not None else []
        for note in notes:
            self.log(f"WARNING: {note}")
        return notes

    def _with_news(self, exc: StageError) -> StageError:
        """`exc`, saying what the sandbox ran into (an OOM kill explains a crashed stage)."""
        notes = self._news()
        if notes:
            exc.message = f"{exc.message} ({'; '.join(notes)})"
            exc.args = (exc.message,)
        return exc

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
                how = f"exit code {code}"
                if code > 128 and code - 128 in signal.valid_signals():
                    how = f"killed by {signal.Signals(code - 128).name}"
                raise StageError("crashed", f"the script process ended during {what} ({how})")
            return event


# ============================================================================== child side

def code_under_tmp() -> list[str]:
    """The interpreter's prefix and import paths that live under /tmp (outermost only), which
    the sandbox's fresh /tmp would otherwise hide (they are bound read-only into it)."""
    from pvc.worker.provisioner.confine import code_paths

    return [p for p in code_paths() if p.startswith("/tmp/")]


def enter_sandbox(spec: dict[str, Any], broker: socket.socket) -> None:
    """Become PID 1 of the sandbox's namespaces, in its new root, confined (module docstring)."""
    from pvc.worker.provisioner import confine, seccompfilter
    from pvc.worker.provisioner.broker import send_fds

    network = bool(spec.get("network"))
    confine.unshare_and_fork(network)
    confine.build_root(str(spec["root"]), [str(s) for s in spec.get("secrets") or []], network,
                       int(spec.get("tmp_size") or 0))
    confine.pivot(str(spec["root"]))
    try:
        socket.sethostname(str(spec.get("vm_name") or "sandbox")[:63])
    except OSError:
        pass
    if not network:
        confine.loopback_up()
    confine.drop_capabilities()
    confine.no_new_privs()
    notify_fd = seccompfilter.load()
    send_fds(broker, {"op": "seccomp"}, [notify_fd])
    os.close(notify_fd)


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


def kill_leftovers() -> int:
    """As PID 1 of the sandbox: kill every other process in it (what an interrupted stage left
    running, daemons included) and reap them; how many were reaped."""
    if os.getpid() != 1:
        return 0
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return 0
    reaped = 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)
            continue
        reaped += 1
    return reaped


def child_main() -> int:
    global _in_stage
    from pvc.worker.provisioner import scriptapi, vmbuilder

    # The job's channels are this process's alone: not inherited by what the script runs (its
    # commands get /dev/null as stdin), so nothing else can read commands or forge events.
    event_fd, broker_fd = int(os.environ.pop(EVENT_FD_ENV)), int(os.environ.pop(BROKER_FD_ENV))
    command_fd = os.dup(0)
    for fd in (event_fd, broker_fd, command_fd):
        os.set_inheritable(fd, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    commands = os.fdopen(command_fd, "r")
    events = os.fdopen(event_fd, "w", buffering=1)
    broker = socket.socket(fileno=broker_fd)

    def emit(**event: Any) -> None:
        events.write(json.dumps(event, default=str) + "\n")
        events.flush()

    vmbuilder.set_log_sink(lambda level, message: emit(type="log", level=level, message=message))
    spec = json.loads(commands.readline() or "{}")
    name = str(spec.get("script_name") or "script")
    try:
        # First of all, into the sandbox's cgroup (before its cgroup namespace is made, so that
        # namespace is rooted there): everything the script ever starts is born inside it.
        limits_mod.join([str(p) for p in spec.get("cgroup_procs") or []])
        if spec.get("isolate"):
            enter_sandbox(spec, broker)
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGALRM, _on_signal)
        scriptapi.bind_compat_modules(broker)
        cls = vmbuilder.load_script(str(spec.get("script") or ""), name)
        builder = cls(spec["vm_name"], None, spec.get("vm_profile", ""), spec.get("vm_data") or {},
                      spec.get("vm_uuid"))
    except ProvisioningError as exc:
        emit(type="error", kind="load", message=str(exc))
        return 1
    except Exception as exc:
        emit(type="error", kind="load", message=f"cannot prepare the script sandbox: {exc}",
             traceback="".join(traceback.format_exception(exc)))
        return 1
    emit(type="ready", vm_id=builder.vm_id)
    for line in commands:
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
            killed = kill_leftovers()
            text = (f"{stage}() did not finish within {math.ceil(limit)} s" if exc.kind == "timeout"
                    else f"{stage}() was cancelled")
            if killed:
                text += f"; {killed} process{'es' if killed != 1 else ''} it left running were killed"
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


# What `pvcapid.Daemon.config` is for the running script: in the sandbox a
# scriptapi.ScriptConfig holding no settings at all.
SETTINGS: Any = None


if __name__ == "__main__":
    # Run the imported module's child_main, so its globals (SETTINGS) are the ones others import.
    from pvc.worker.provisioner import sandbox as _module

    sys.exit(_module.child_main())
