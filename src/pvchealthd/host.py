"""The plugin host: runs health plugins, each in a process of its own, with a timeout.

`python -m pvchealthd.host` is a small single-threaded process the node daemon starts once. For
every pass it reads one request (a JSON line on stdin: the plugins' files, timeouts and
`self.config`, which may hold the IPMI password, so it never travels on a command line) and
forks one child per plugin, all at once. Each child is the leader of its own process group,
loads the plugin file (compiled once by the host and shared by fork, so a pass costs a fork per
plugin rather than an interpreter start), runs setup(), run() and cleanup(), and writes its
result into a pipe. A child that outlives its timeout is killed with its whole process group
(whatever commands it started). The host answers with one JSON line of results.

`PluginHost` is the daemon's side: it starts the host and exchanges requests and answers, and
kills and restarts the host if it ever stops answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from types import CodeType
from typing import Any

PRELOAD = ("pvchealthd.objects.MonitoringInstance", "daemon_lib.common", "json", "re", "shutil", "socket",
           "subprocess", "libvirt", "rados")
MAX_RESULT_BYTES = 1024 * 1024
MAX_MESSAGE = 4000

# -- the host process ------------------------------------------------------------------------------

_code_cache: dict[str, tuple[tuple[int, int], CodeType]] = {}
_protocol_fd = -1                  # the host's answer pipe, closed in every child
_children: set[int] = set()        # process groups of the plugins running now


def _compile(path: str) -> CodeType:
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size)
    cached = _code_cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    with open(path, "rb") as handle:
        code = compile(handle.read(), path, "exec")
    _code_cache[path] = (key, code)
    return code


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_MESSAGE]


def _child(plugin: dict[str, Any], request: dict[str, Any], code: CodeType | None,
           compile_error: str | None, out: int) -> None:
    """In the forked child: run the plugin once and write its result to `out`."""
    from pvchealthd.objects.MonitoringInstance import PluginLogger, ThisNode

    logger = PluginLogger(bool(request.get("debug")))
    result: dict[str, Any] = {"name": plugin["name"]}
    started = time.monotonic()
    try:
        if code is None:
            raise SyntaxError(compile_error or "the plugin file could not be read")
        module: dict[str, Any] = {"__name__": f"pvc_health_plugin_{plugin['name']}",
                                  "__file__": plugin["path"], "__builtins__": __builtins__}
        exec(code, module)
        cls = module.get("MonitoringPluginScript")
        if cls is None:
            raise TypeError("the file defines no class MonitoringPluginScript")
        declared = module.get("PLUGIN_NAME")
        if declared is not None and declared != plugin["name"]:
            logger.out(f"PLUGIN_NAME {declared!r} differs from the file name; using {plugin['name']!r}",
                       state="w")
        interval = module.get("PLUGIN_INTERVAL")
        if isinstance(interval, int | float) and interval > 0:
            result["interval"] = float(interval)
        this_node = ThisNode(request["node"], request.get("coordinator_state"))
        instance = cls(None, dict(request.get("config", {})), logger, this_node, plugin["name"])
        try:
            refusal = instance.setup()
        except Exception as exc:
            refusal = _error_text(exc)
        if refusal is not None:
            result["refused"] = str(refusal)[:MAX_MESSAGE]
        else:
            try:
                outcome = instance.run(coordinator_state=request.get("coordinator_state"))
            finally:
                with contextlib.suppress(Exception):
                    instance.cleanup()
            result.update(_outcome(outcome))
    except BaseException as exc:        # anything a plugin throws is its result
        result["error"] = _error_text(exc)
        tb = traceback.format_exc(limit=4)
        logger.out(tb[-MAX_MESSAGE:], state="d")
    result["runtime"] = round(time.monotonic() - started, 3)
    result["log"] = logger.lines
    try:
        payload = json.dumps(result).encode()
    except (TypeError, ValueError) as exc:
        payload = json.dumps({"name": plugin["name"], "runtime": result["runtime"],
                              "error": f"the result cannot be stored: {exc}"}).encode()
    view = memoryview(payload[:MAX_RESULT_BYTES])
    while view:
        view = view[os.write(out, view):]


def _outcome(outcome: Any) -> dict[str, Any]:
    """A run()'s return checked: a PluginResult-like object with an integer delta ≥ 0."""
    if outcome is None or not hasattr(outcome, "health_delta"):
        raise TypeError(f"run() returned {type(outcome).__name__}, not the plugin_result")
    delta = outcome.health_delta
    if isinstance(delta, bool) or not isinstance(delta, int | float) or delta < 0:
        raise ValueError(f"health_delta {delta!r} is not a number ≥ 0")
    data = getattr(outcome, "data", {})
    json.dumps(data)                    # raises for data that cannot be stored
    return {"health_delta": int(delta), "message": str(getattr(outcome, "message", ""))[:MAX_MESSAGE],
            "data": data}


def _fork(plugin: dict[str, Any], request: dict[str, Any]) -> tuple[int, int]:
    code, compile_error = None, None
    try:
        code = _compile(plugin["path"])
    except (OSError, SyntaxError, ValueError) as exc:
        compile_error = _error_text(exc)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                              # the child
        status = 0
        try:
            os.setpgid(0, 0)
            os.close(read_end)
            if _protocol_fd >= 0:
                os.close(_protocol_fd)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)                                  # the request (and its secrets) stay here
            os.dup2(2, 1)                                     # prints go to the log, not the protocol
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _child(plugin, request, code, compile_error, write_end)
        except BaseException:             # the child must never return into the host
            status = 70
        finally:
            os._exit(status)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)                                  # either side may win the race
    _children.add(pid)
    os.close(write_end)
    return pid, read_end


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"the plugin process was killed by signal {os.WTERMSIG(status)}"
    return f"the plugin process exited with code {os.waitstatus_to_exitcode(status)} without a result"


def run_pass(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Fork every plugin of the request, wait for each until its timeout, collect the results."""
    running: dict[int, dict[str, Any]] = {}        # read fd -> state
    results: list[dict[str, Any]] = []
    for plugin in request.get("plugins", []):
        started = time.monotonic()
        pid, fd = _fork(plugin, request)
        running[fd] = {"plugin": plugin, "pid": pid, "started": started, "chunks": [],
                       "deadline": started + float(plugin.get("timeout", 10))}
    while running:
        now = time.monotonic()
        wait = max(0.0, min(state["deadline"] for state in running.values()) - now)
        ready, _, _ = select.select(list(running), [], [], wait)
        for fd in ready:
            state = running[fd]
            chunk = os.read(fd, 65536)
            if chunk and sum(len(c) for c in state["chunks"]) < MAX_RESULT_BYTES:
                state["chunks"].append(chunk)
                continue
            if chunk:
                continue
            del running[fd]
            os.close(fd)
            results.append(_finish(state, timed_out=False))
        now = time.monotonic()
        for fd in [fd for fd, state in running.items() if state["deadline"] <= now]:
            state = running.pop(fd)
            os.close(fd)
            results.append(_finish(state, timed_out=True))
    return results


def _finish(state: dict[str, Any], timed_out: bool) -> dict[str, Any]:
    plugin, pid = state["plugin"], state["pid"]
    _kill_group(pid)                 # a timeout, or what a finished plugin left running behind it
    _, status = os.waitpid(pid, 0)
    _children.discard(pid)
    runtime = round(time.monotonic() - state["started"], 3)
    raw = b"".join(state["chunks"])
    if timed_out and not _complete(raw):
        return {"name": plugin["name"], "timed_out": True, "runtime": runtime,
                "error": f"timed out after {float(plugin.get('timeout', 10)):g} s"}
    try:
        result = json.loads(raw) if raw else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return {"name": plugin["name"], "runtime": runtime, "error": _exit_text(status)}
    result["name"] = plugin["name"]
    return result


def _complete(raw: bytes) -> bool:
    """A child that wrote its result but left something holding the pipe open has finished."""
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _terminate(*_args: object) -> None:
    """SIGTERM (the daemon stops): the running plugins' process groups go first."""
    for pid in list(_children):
        _kill_group(pid)
    os._exit(0)


def main() -> None:
    """Serve requests from stdin until it closes; never let a plugin reach the protocol."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the daemon decides when the host stops
    signal.signal(signal.SIGTERM, _terminate)
    # Modules plugins use, imported once here and shared by every fork (a fork then costs
    # about a millisecond; an import in every child would cost tens).
    import importlib

    for module in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    global _protocol_fd
    _protocol_fd = os.dup(1)
    protocol = os.fdopen(_protocol_fd, "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer: dict[str, Any] = {"id": request.get("id"), "results": run_pass(request)}
        except Exception as exc:          # a malformed request: say so, keep serving
            answer = {"id": None, "error": _error_text(exc)}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()


# -- the daemon's side ----------------------------------------------------------------------------


class HostFailed(Exception):
    """The plugin host did not answer a request (it died, or hung past the pass's deadline)."""


class PluginHost:
    """The node daemon's handle on one plugin host process (started on first use)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            env = {**os.environ, **(self.env or {})}
            self.proc = subprocess.Popen([sys.executable, "-m", "pvchealthd.host"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, start_new_session=True)
            self._buffer = b""
        return self.proc

    def run(self, request: dict[str, Any], deadline: float) -> list[dict[str, Any]]:
        """One pass: send the request, wait up to `deadline` seconds for the answer."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is not None:
                # died between passes (killed, out of memory): a failure of this pass as much as a
                # death mid-pass, whichever the timing; the next pass starts a new host
                code, self.proc = self.proc.returncode, None
                raise HostFailed(f"the plugin host failed: it exited (code {code}) since the last pass")
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            self._next_id += 1
            request = {**request, "id": self._next_id}
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
                answer = self._read(proc, time.monotonic() + deadline)
            except (OSError, ValueError, HostFailed) as exc:
                self._kill()
                raise HostFailed(f"the plugin host failed: {exc}") from None
            if answer.get("id") != request["id"]:
                self._kill()
                raise HostFailed(f"the plugin host answered out of turn: {answer.get('error', '')}")
            return list(answer.get("results", []))

    def _read(self, proc: subprocess.Popen[bytes], until: float) -> dict[str, Any]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = until - time.monotonic()
            if left <= 0:
                raise HostFailed("no answer before the pass's deadline")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise HostFailed(f"it exited (code {proc.wait()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            _kill_group(proc.pid)
            proc.wait()

    def close(self) -> None:
        """Stop the host and any plugin still running: SIGTERM (the host kills the plugins'
        process groups), SIGKILL if it does not go. A pass in progress fails at once."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
        with self._lock:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            if self.proc is proc:
                self._kill()
            for pipe in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()


if __name__ == "__main__":
    main()
