"""Resource limits of the provisioner sandbox (issue #13): a cgroup per sandbox.

Root is exempt from RLIMIT_NPROC, so only a cgroup stops a fork bomb; only a memory cgroup keeps
a memory hog (or a full tmpfs: its pages are charged to the writer's cgroup) from pushing the
node's daemons into the OOM killer. Each sandbox gets its own cgroup with pids.max, memory.max
(memory.swap.max 0) and a low cpu.weight, created by the worker before the child starts. The
child writes its own pid into the cgroup's cgroup.procs as its very first step, before it
unshares its cgroup namespace and long before the script is loaded, so every process the script
ever runs is born inside (no window where a process could fork outside it). The cgroup namespace
is rooted at that cgroup, /sys is read-only with /sys/fs/cgroup masked and CAP_SYS_ADMIN is gone:
the sandbox cannot write its limit files. When the sandbox ends, what is left in the cgroup is
killed (cgroup.kill where the kernel has it) and the cgroup is removed.

Where the cgroup lives:

- cgroup v2 (a real node): under the worker's own cgroup. With systemd, pvcworkerd's unit needs
  `Delegate=yes` (and `DelegateSubgroup=worker` on systemd >= 254, or the worker moves its own
  processes into `<unit cgroup>/worker` itself, as done here): the unit's cgroup then holds
  `worker/` (the daemon) and `pvc-sandbox/<sandbox>` (one per running script), since cgroup v2
  allows processes only in leaves once controllers are enabled below. Without systemd, with
  the worker in the root cgroup: /sys/fs/cgroup/pvc-sandbox/<sandbox>.
- cgroup v1 hierarchies (hosts that still mount them, like some development machines): the same
  path under the worker's cgroup in each of the pids, memory and cpu hierarchies.
- neither usable (no controllers, read-only): a warning (once per process, and in every job's
  log) and provisioning carries on with only the scratch file systems' size limits.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pvc.core.units import format_bytes, parse_size

log = logging.getLogger(__name__)

GIB = 1024 ** 3
CGROUP_DIR = "pvc-sandbox"          # below the worker's cgroup (or the root cgroup)
WORKER_LEAF = "worker"              # where the worker moves itself on a delegated v2 cgroup
REQUIRED = ("pids", "memory")
OPTIONAL = ("cpu",)
_counter = itertools.count(1)
_warned = False


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use; settings worker.sandbox_* (pvc.core.config.WorkerSettings)."""
    pids_max: int = 512
    memory_max: int = 4 * GIB
    tmp_size: int = 2 * GIB
    cpu_weight: int = 20

    @classmethod
    def from_settings(cls, worker: Any) -> Limits:
        return cls(pids_max=int(worker.sandbox_pids_max),
                   memory_max=parse_size(str(worker.sandbox_memory_max), "worker.sandbox_memory_max"),
                   tmp_size=parse_size(str(worker.sandbox_tmp_size), "worker.sandbox_tmp_size"),
                   cpu_weight=int(worker.sandbox_cpu_weight))

    def describe(self) -> str:
        return (f"at most {self.pids_max} processes, {format_bytes(self.memory_max)} of memory "
                f"(no swap), CPU weight {self.cpu_weight}")


class Unavailable(Exception):
    """Why the node cannot give the sandbox a cgroup (the message names what is missing)."""


# ======================================================================== discovery

def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup file system."""
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
                found.append((fields[4].replace("\\040", " "), rest[0], set(rest[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy: "" for v2, else each v1 controller name."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if number == "0" and not controllers:
                own[""] = path
            for name in controllers.split(","):
                if name:
                    own[name] = path
    return own


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _counter_in(path: str, key: str) -> int:
    """A `key value` line of a flat keyed file (memory.events, pids.events, memory.oom_control)."""
    try:
        for line in _read(path).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "sandbox"


# ======================================================================== one sandbox's cgroup

@dataclass
class SandboxCgroup:
    """The cgroup (v2: one directory; v1: one per controller) one sandbox runs in."""
    version: int
    dirs: dict[str, str]                    # "" (v2) or controller name -> directory
    limits: Limits
    _seen: dict[str, int] = field(default_factory=dict)

    def path(self, controller: str) -> str:
        return self.dirs["" if self.version == 2 else controller]

    def procs_files(self) -> list[str]:
        """The cgroup.procs files the sandbox's first process writes its pid into."""
        return [os.path.join(d, "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def describe(self) -> str:
        where = self.dirs.get("") or self.dirs.get("pids", "")
        return f"cgroup v{self.version} {where}"

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files():
            try:
                found.update(int(p) for p in _read(procs).split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def pids_current(self) -> int:
        try:
            return int(_read(os.path.join(self.path("pids"), "pids.current")))
        except (OSError, ValueError):
            return 0

    def pids_peak(self) -> int | None:
        """The most processes the sandbox ever had at once (kernels with pids.peak), else None."""
        try:
            return int(_read(os.path.join(self.path("pids"), "pids.peak")))
        except (OSError, ValueError):
            return None

    def forks_refused(self) -> int:
        return _counter_in(os.path.join(self.path("pids"), "pids.events"), "max")

    def oom_kills(self) -> int:
        memory = self.path("memory")
        if self.version == 2:
            return _counter_in(os.path.join(memory, "memory.events"), "oom_kill")
        return _counter_in(os.path.join(memory, "memory.oom_control"), "oom_kill")

    def news(self) -> list[str]:
        """What the sandbox ran into since the last call, for the job's log."""
        notes = []
        for key, now, text in (
                ("oom", self.oom_kills(),
                 f"the script's sandbox reached its memory limit ({format_bytes(self.limits.memory_max)}): "
                 "the kernel's OOM killer ended {n} of its processes"),
                ("forks", self.forks_refused(),
                 f"the script's sandbox reached its process limit ({self.limits.pids_max}): "
                 "{n} attempts to start a process were refused (EAGAIN)")):
            new = now - self._seen.get(key, 0)
            self._seen[key] = now
            if new > 0:
                notes.append(text.format(n=new))
        return notes

    def kill_all(self, wait: float = 5.0) -> None:
        """SIGKILL whatever is left in the cgroup (cgroup.kill: one step, forks cannot race it)."""
        if self.version == 2 and os.path.exists(os.path.join(self.dirs[""], "cgroup.kill")):
            try:
                _write(os.path.join(self.dirs[""], "cgroup.kill"), "1")
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> list[str]:
        """Kill what is left and remove the cgroup; the directories that could not be removed."""
        self.kill_all()
        left = []
        for directory in dict.fromkeys(self.dirs.values()):
            deadline = time.monotonic() + 5
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        left.append(f"{directory} ({exc.strerror})")
                        break
                    time.sleep(0.05)
        return left


# ======================================================================== creation

def _v2_parent(mount: str, own: str) -> str:
    """The directory sandboxes' cgroups go in, with pids, memory (and cpu) enabled for them.

    In the root cgroup (no systemd): <mount>/pvc-sandbox. In a delegated cgroup (systemd unit
    with Delegate=yes): the worker first moves its own processes into <own>/worker, since v2
    allows controllers below a cgroup only when it holds no processes itself."""
    base = os.path.normpath(mount + "/" + own)
    available = set(_read(os.path.join(base, "cgroup.controllers")).split())
    missing = [c for c in REQUIRED if c not in available]
    if missing:
        raise Unavailable(f"cgroup v2 at {base} does not offer the {' and '.join(missing)} controller"
                          f"{'s' if len(missing) > 1 else ''} (cgroup.controllers: "
                          f"{' '.join(sorted(available)) or 'none'})")
    wanted = [c for c in (*REQUIRED, *OPTIONAL) if c in available]
    enabled = set(_read(os.path.join(base, "cgroup.subtree_control")).split())
    if own != "/" and not set(wanted) <= enabled:
        leaf = os.path.join(base, WORKER_LEAF)
        os.makedirs(leaf, exist_ok=True)
        for pid in _read(os.path.join(base, "cgroup.procs")).split():
            try:
                _write(os.path.join(leaf, "cgroup.procs"), pid)
            except ProcessLookupError:
                pass
    parent = os.path.join(base, CGROUP_DIR)
    for directory in (base, parent):
        os.makedirs(directory, exist_ok=True)
        enabled = set(_read(os.path.join(directory, "cgroup.subtree_control")).split())
        todo = [c for c in wanted if c not in enabled]
        if todo:
            _write(os.path.join(directory, "cgroup.subtree_control"), " ".join(f"+{c}" for c in todo))
    return parent


def _create_v2(mount: str, own: str, name: str, limits: Limits) -> SandboxCgroup:
    parent = _v2_parent(mount, own)
    directory = os.path.join(parent, name)
    os.mkdir(directory)
    group = SandboxCgroup(2, {"": directory}, limits)
    try:
        _write(os.path.join(directory, "pids.max"), str(limits.pids_max))
        _write(os.path.join(directory, "memory.max"), str(limits.memory_max))
        if os.path.exists(os.path.join(directory, "memory.swap.max")):
            _write(os.path.join(directory, "memory.swap.max"), "0")
        if os.path.exists(os.path.join(directory, "cpu.weight")):
            _write(os.path.join(directory, "cpu.weight"), str(limits.cpu_weight))
    except OSError:
        group.remove()
        raise
    return group


def _create_v1(hierarchies: dict[str, str], own: dict[str, str], name: str, limits: Limits) -> SandboxCgroup:
    dirs: dict[str, str] = {}
    group = SandboxCgroup(1, dirs, limits)
    try:
        for controller, mount in hierarchies.items():
            directory = os.path.normpath(f"{mount}/{own.get(controller, '/')}/{CGROUP_DIR}/{name}")
            os.makedirs(os.path.dirname(directory), exist_ok=True)
            os.mkdir(directory)
            dirs[controller] = directory
        _write(os.path.join(dirs["pids"], "pids.max"), str(limits.pids_max))
        _write(os.path.join(dirs["memory"], "memory.limit_in_bytes"), str(limits.memory_max))
        if os.path.exists(os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")):
            _write(os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes"), str(limits.memory_max))
        if "cpu" in dirs:
            _write(os.path.join(dirs["cpu"], "cpu.shares"), str(max(2, limits.cpu_weight * 1024 // 100)))
    except OSError:
        group.remove()
        raise
    return group


def create(label: str, limits: Limits) -> SandboxCgroup:
    """A new cgroup for one sandbox with `limits` applied; Unavailable says why there is none."""
    name = f"{_safe_name(label)}-{os.getpid()}-{next(_counter)}"
    mounts = _mounts()
    own = _own_cgroups()
    problems = []
    v2 = [m for m in mounts if m[1] == "cgroup2"]
    if v2 and "" in own:
        try:
            return _create_v2(v2[0][0], own[""], name, limits)
        except Unavailable as exc:
            problems.append(str(exc))
        except OSError as exc:
            problems.append(f"cgroup v2 at {v2[0][0]}: {exc.strerror} ({exc.filename})")
    else:
        problems.append("no cgroup v2 file system is mounted")
    hierarchies: dict[str, str] = {}
    for point, fstype, options in mounts:
        for controller in (*REQUIRED, *OPTIONAL):
            if fstype == "cgroup" and controller in options and controller not in hierarchies:
                hierarchies[controller] = point
    if all(c in hierarchies for c in REQUIRED):
        try:
            return _create_v1(hierarchies, own, name, limits)
        except OSError as exc:
            problems.append(f"cgroup v1: {exc.strerror} ({exc.filename})")
    raise Unavailable("; ".join(problems))


def create_or_warn(label: str, limits: Limits, job_log: Callable[[str], None]) -> SandboxCgroup | None:
    """create(), or None after a warning: once in the daemon's log, always in the job's."""
    global _warned
    try:
        return create(label, limits)
    except Unavailable as exc:
        text = (f"the script sandbox runs without a process, memory and CPU limit: {exc}; a fork "
                f"bomb or a memory hog in the script can still hurt this node (only the sandbox's "
                f"scratch file systems are limited, to {format_bytes(limits.tmp_size)} each)")
        if not _warned:
            log.warning(text)
            _warned = True
        job_log(f"WARNING: {text}")
        return None


def join(procs_files: list[str]) -> None:
    """In the sandbox's first process: move this process into its cgroup (before anything else)."""
    for procs in procs_files:
        _write(procs, str(os.getpid()))
