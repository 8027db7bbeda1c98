"""Fence agents: power a dead node off so its VMs can safely run elsewhere (DESIGN D10).

The primary's `HAMonitor` (pvc.node.fencing) starts a job and polls it on every tick, so an agent
that hangs never blocks the monitor; it cancels the job after `fencing.agent_timeout`. So every
agent's `start()` returns at once and its commands run in a daemon thread (`_Steps`) that `cancel()`
can cut short.

`DispatchAgent` is what the daemon uses: it fences each node with the agent that node published in
its `fence_info()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pvc.core.errors import ConfigError
from pvc.core.secrets import FENCE_SECRETS, is_sealed, mask

if TYPE_CHECKING:
    from pvc.core.config import Settings

log = logging.getLogger("pvcnoded.fence")


@dataclass(frozen=True)
class FenceOutcome:
    success: bool
    message: str


class FenceJob(Protocol):
    def poll(self) -> FenceOutcome | None:
        """The outcome once the agent finished; None while it runs."""

    def cancel(self) -> None:
        """Give up on the agent (it hangs); must not block."""


class FenceAgent(Protocol):
    def start(self, node: str, info: dict[str, Any]) -> FenceJob:
        """Begin powering `node` off; `info` is what the node published (`/fenceinfo/<node>`)."""


# -- the node's published fence info -----------------------------------------------------------------


def fence_info(settings: Settings) -> dict[str, Any]:
    """What this node publishes (`/fenceinfo/<node>`) so that whichever node is primary when it dies
    can fence it: the agent and its parameters, with `{node}` in the IPMI hostname filled in. The
    password is plaintext here: the publisher seals it (`pvc.core.secrets.seal_fence_info`)."""
    fencing, node = settings.fencing, settings.node_name
    info: dict[str, Any] = {"agent": fencing.agent, "node": node}
    if fencing.agent == "ipmi":
        ipmi = fencing.ipmi
        password = ipmi.password
        if ipmi.password_file:
            try:
                password = Path(ipmi.password_file).read_text().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"fencing.ipmi.password_file {ipmi.password_file}: cannot read it: "
                                  f"{exc}") from None
        info |= {"hostname": ipmi.hostname.replace("{node}", node), "username": ipmi.username,
                 "password": password, "interface": ipmi.interface, "power_on_after": ipmi.power_on_after}
    elif fencing.agent == "lab":
        info["lab_name"] = fencing.lab_name
    return info


# -- running an agent's commands off the monitor's thread ----------------------------------------------


@dataclass(frozen=True)
class _Result:
    code: int
    stdout: str
    stderr: str


class _Cancelled(Exception):
    """Raised inside a job's thread when the job was cancelled, to skip its remaining steps."""


class _Done:
    """A job whose outcome is known at once (no agent, bad fence info): nothing to run."""

    def __init__(self, outcome: FenceOutcome) -> None:
        self._outcome = outcome

    def poll(self) -> FenceOutcome | None:
        return self._outcome

    def cancel(self) -> None:
        pass


class _Steps:
    """A job running `work` in a daemon thread. `work` runs its commands through `run()` and waits
    through `sleep()`, so `cancel()` can kill the command running (its whole process group) and stop
    the steps after it, without waiting for either."""

    def __init__(self, work: Callable[[_Steps], FenceOutcome], name: str = "fence-agent") -> None:
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._child: subprocess.Popen[str] | None = None
        self._outcome: FenceOutcome | None = None
        self._on_done: Callable[[], None] | None = None
        threading.Thread(target=self._main, args=(work,), name=name, daemon=True).start()

    def notify(self, on_done: Callable[[], None]) -> None:
        """Call `on_done` (once, from the agent's thread, or now if it finished already) when the
        outcome is known, so the HA monitor polls it at once instead of on its next pass."""
        with self._lock:
            if self._outcome is None:
                self._on_done = on_done
                return
        on_done()

    def _main(self, work: Callable[[_Steps], FenceOutcome]) -> None:
        try:
            outcome = work(self)
        except _Cancelled:
            outcome = FenceOutcome(False, "fence agent cancelled")
        except Exception as exc:
            log.exception("fence agent failed")
            outcome = FenceOutcome(False, f"fence agent error: {exc}")
        with self._lock:
            self._outcome = outcome
            on_done, self._on_done = self._on_done, None
        if on_done is not None:
            try:
                on_done()
            except Exception:             # a waker must not lose the outcome
                log.exception("fence agent: notifying the HA monitor failed")

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> _Result:
        """Run one command to its end: argument list, no shell, no stdin, its own process group."""
        with self._lock:                  # spawned under the lock: cancel() always sees the child
            if self._cancelled.is_set():
                raise _Cancelled
            child = self._child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                errors="replace", env=env, start_new_session=True)
        try:
            stdout, stderr = child.communicate()
        finally:
            with self._lock:
                self._child = None
        if self._cancelled.is_set():
            raise _Cancelled
        return _Result(child.returncode, stdout, stderr)

    def sleep(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise _Cancelled

    def poll(self) -> FenceOutcome | None:
        with self._lock:
            return self._outcome

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            child = self._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)


def _tail(text: str, limit: int = 400) -> str:
    """The end of a command's output, where its error is, short enough for an event message (which
    the API shows), with any secret this process knows masked."""
    text = mask(text.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def failed(message: str) -> FenceJob:
    """A job that failed before any agent ran (bad fence info, a secret that does not open)."""
    return _Done(FenceOutcome(False, message))


def _missing(node: str, info: dict[str, Any], keys: tuple[str, ...]) -> FenceJob | None:
    absent = [key for key in keys if not info.get(key)]
    if not absent:
        return None
    return _Done(FenceOutcome(False, f"fence info of {node} lacks {', '.join(absent)}"))


# -- the agents ------------------------------------------------------------------------------------------


class NoAgent:
    """fencing.agent none: no fence; the recovery then follows `fencing.actions.failed_fence`."""

    def start(self, node: str, info: dict[str, Any]) -> FenceJob:
        return _Done(FenceOutcome(False, "no fence agent configured (fencing.agent: none)"))


class IpmiAgent:
    """Power the node off through its BMC with ipmitool, and check that it is off.

    The password reaches ipmitool through IPMI_PASSWORD (its `-E`), never its command line, where
    every local user could read it in the process list."""

    def __init__(self, executable: str = "ipmitool", status_tries: int = 10,
                 status_interval: float = 1.0) -> None:
        self.executable = executable
        self.status_tries = status_tries
        self.status_interval = status_interval

    def start(self, node: str, info: dict[str, Any]) -> FenceJob:
        if any(is_sealed(info.get(key)) for key in FENCE_SECRETS):
            return failed(f"fence info of {node}: its password is still sealed (the HA monitor opens "
                          "it with the cluster key before the agent runs)")
        return _missing(node, info, ("hostname", "username", "password")) or \
            _Steps(lambda job: self._fence(job, info), name=f"fence-ipmi-{node}")

    def _fence(self, job: _Steps, info: dict[str, Any]) -> FenceOutcome:
        # Looked up now, not at import: PATH may change (and tests put a fake first on it).
        exe = shutil.which(self.executable)
        if exe is None:
            return FenceOutcome(False, f"{self.executable} not found")
        host = str(info["hostname"])
        base = [exe, "-I", str(info.get("interface") or "lanplus"), "-H", host, "-U", str(info["username"]),
                "-E", "chassis", "power"]
        env = {**os.environ, "IPMI_PASSWORD": str(info["password"])}
        done = job.run([*base, "off"], env)
        if done.code != 0:
            return FenceOutcome(False, f"IPMI power off at {host} failed (exit {done.code}): "
                                       f"{_tail(done.stderr or done.stdout)}")
        for attempt in range(max(1, self.status_tries)):
            if attempt:
                job.sleep(self.status_interval)
            done = job.run([*base, "status"], env)
            if done.code == 0 and "chassis power is off" in done.stdout.lower():
                break
        else:
            last = _tail(done.stderr or done.stdout) or f"exit {done.code}"
            return FenceOutcome(False, f"IPMI power status at {host} did not report off after power off "
                                       f"({self.status_tries} tries; last: {last})")
        message = f"powered off via IPMI at {host}"
        if info.get("power_on_after"):
            done = job.run([*base, "on"], env)
            message += ("; powered on again" if done.code == 0 else
                        f"; power on failed (exit {done.code}): {_tail(done.stderr or done.stdout)}")
        return FenceOutcome(True, message)


def lab_fence_argv(lab_name: str, node: str) -> list[str]:
    """`pvc-lab fence`, run with this interpreter so it works from a venv that is not on PATH."""
    return [sys.executable, "-m", "pvc.lab.main", "fence", "--name", lab_name, node]


class LabAgent:
    """fencing.agent lab: the lab's fence tool stands in for a BMC (it kills the node's VMs and
    daemons and cuts its links)."""

    def __init__(self, command: Callable[[str, str], list[str]] = lab_fence_argv) -> None:
        self.command = command

    def start(self, node: str, info: dict[str, Any]) -> FenceJob:
        return _missing(node, info, ("lab_name",)) or \
            _Steps(lambda job: self._fence(job, node, str(info["lab_name"])), name=f"fence-lab-{node}")

    def _fence(self, job: _Steps, node: str, lab_name: str) -> FenceOutcome:
        done = job.run(self.command(lab_name, node))
        if done.code != 0:
            return FenceOutcome(False, f"lab fence agent failed (exit {done.code}): "
                                       f"{_tail(done.stderr or done.stdout)}")
        lines = done.stdout.strip().splitlines()
        return FenceOutcome(True, f"lab fence agent: {lines[-1] if lines else 'done'}")


class DispatchAgent:
    """The agent the primary uses: each dead node is fenced by the agent it published, so nodes
    of one cluster may have different fence hardware. `on_done` is called when a job's outcome
    is known (the HA loop wakes for it: docs/architecture.md, "Failover timing")."""

    def __init__(self, agents: dict[str, FenceAgent] | None = None,
                 on_done: Callable[[], None] | None = None) -> None:
        self.agents: dict[str, FenceAgent] = agents if agents is not None else {
            "none": NoAgent(), "ipmi": IpmiAgent(), "lab": LabAgent()}
        self.on_done = on_done

    def start(self, node: str, info: dict[str, Any]) -> FenceJob:
        job = self._start(node, info)
        if self.on_done is not None and isinstance(job, _Steps):
            job.notify(self.on_done)
        return job

    def _start(self, node: str, info: dict[str, Any]) -> FenceJob:
        if info.get("error"):           # the node could not publish its fence info (registration)
            return failed(f"fence info of {node}: {info['error']}")
        name = info.get("agent") or "none"
        agent = self.agents.get(name)
        if agent is None:
            return _Done(FenceOutcome(False, f"unknown fence agent '{name}'"))
        return agent.start(node, info)
