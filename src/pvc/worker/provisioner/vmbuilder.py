"""The base class of provisioner scripts, and loading a script's text into a class.

A provisioner script is a Python module defining `class VMBuilderScript(VMBuilder)` with the
methods setup(), create() (returns the libvirt XML), prepare(), install() and cleanup(); each
takes only self. The job sets these attributes before any method runs:

    vm_name     the VM's name as given to `pvc provisioner create`
    vm_id       the numeric suffix of the name (web2 -> 2), 0 if none
    vm_uuid     a fresh random UUID (uuid.UUID) for the VM's XML
    vm_profile  the profile's name
    vm_data     the dict described in pvc.worker.provisioner.vmdata

Helpers: log_info/log_warn/log_err(msg) write to the job's log; fail(msg) logs and raises
ProvisioningError (or the exception class given).

The script gets nothing else: it runs in pvc.worker.provisioner.sandbox, as root in its own
namespaces but with few capabilities, no settings and no credentials. It creates, clones,
resizes, maps and unmaps the VM's own volumes (`<vm>_<disk_id>`) with the daemon_lib.ceph
helpers, which the worker carries out; it mounts file systems of its mapped volumes (and binds
/dev, /proc, /sys) under /tmp/target with the ordinary mount command, which the worker also
carries out. Network is there only with the profile argument sandbox_network=yes (it shares
the node's network namespace).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

SCRIPT_CLASS = "VMBuilderScript"
STAGES = ("setup", "create", "prepare", "install", "cleanup")
_SUFFIX = re.compile(r"(\d+)$")

# Where log lines go: (level, message). The sandbox points this at the job's log; by default
# lines are printed as upstream does.
LogSink = Callable[[str, str], None]


def _print_sink(level: str, message: str) -> None:
    print(f"{level.upper()}: {message}", flush=True)


_sink: LogSink = _print_sink


def set_log_sink(sink: LogSink | None) -> None:
    global _sink
    _sink = sink or _print_sink


class ProvisioningError(Exception):
    """What a script raises (or fail() raises) when it cannot go on."""


def vm_id_of(name: str) -> int:
    """The numeric suffix of a VM name (web2 -> 2, db10 -> 10), 0 without one.

    Upstream computes this with a regex that never matches (always 0); this is what its
    documentation says it is.
    """
    match = _SUFFIX.search(name or "")
    return int(match.group(1)) if match else 0


class VMBuilder:
    """Base of VMBuilderScript; every stage is a no-op unless the script overrides it."""

    def __init__(self, vm_name: str, vm_id: int | None = None, vm_profile: str = "",
                 vm_data: dict[str, Any] | None = None, vm_uuid: uuid.UUID | str | None = None) -> None:
        self.vm_name = vm_name
        self.vm_id = vm_id_of(vm_name) if vm_id is None else int(vm_id)
        self.vm_uuid = uuid.UUID(str(vm_uuid)) if vm_uuid else uuid.uuid4()
        self.vm_profile = vm_profile
        self.vm_data = vm_data if vm_data is not None else {}

    # -- logging -------------------------------------------------------------------------------
    def log_info(self, msg: str) -> None:
        _sink("info", str(msg))

    def log_warn(self, msg: str) -> None:
        _sink("warning", str(msg))

    def log_err(self, msg: str) -> None:
        _sink("error", str(msg))

    def fail(self, msg: str, exception: type[BaseException] = ProvisioningError) -> None:
        self.log_err(msg)
        raise exception(msg)

    # -- stages (overridden by scripts) ----------------------------------------------------------
    def setup(self) -> None:
        pass

    def create(self) -> str | None:
        return None

    def prepare(self) -> None:
        pass

    def install(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


def load_script(text: str, name: str = "script") -> type[VMBuilder]:
    """Compile a script's text and return its VMBuilderScript class.

    Errors name the script and, for syntax errors, the line: `Script "x": syntax error at line 4:
    invalid syntax`. A script may import VMBuilder from pvcapid.vmbuilder or from here (the same
    class).
    """
    filename = f"<provisioner script {name}>"
    try:
        code = compile(text, filename, "exec")
    except SyntaxError as exc:
        detail = exc.msg
        if exc.text:
            detail += f": {exc.text.strip()}"
        raise ProvisioningError(f'Script "{name}": syntax error at line {exc.lineno}: {detail}') from None
    _register_source(filename, text)
    namespace: dict[str, Any] = {"__name__": f"pvc_provisioner_script_{re.sub(r'[^A-Za-z0-9_]', '_', name)}",
                                 "__file__": filename}
    try:
        exec(code, namespace)
    except Exception as exc:
        line = _script_line(exc, filename)
        where = f" at line {line}" if line else ""
        raise ProvisioningError(f'Script "{name}": loading it failed{where}: '
                                f"{type(exc).__name__}: {exc}") from None
    cls = namespace.get(SCRIPT_CLASS)
    if cls is None:
        raise ProvisioningError(f'Script "{name}" defines no class {SCRIPT_CLASS}; a provisioner script must '
                                f"define `class {SCRIPT_CLASS}(VMBuilder)` (from pvcapid.vmbuilder import "
                                f"VMBuilder)")
    if not (isinstance(cls, type) and issubclass(cls, VMBuilder)):
        raise ProvisioningError(f'Script "{name}": {SCRIPT_CLASS} must be a class derived from VMBuilder '
                                f"(from pvcapid.vmbuilder import VMBuilder)")
    return cls


def _register_source(filename: str, text: str) -> None:
    """Let tracebacks show the script's lines."""
    import linecache

    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)


def _script_line(exc: BaseException, filename: str) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def script_error(exc: BaseException, name: str = "script") -> str:
    """A one-line description of an exception raised by a script stage, with the script line."""
    line = _script_line(exc, f"<provisioner script {name}>")
    where = f" (script line {line})" if line else ""
    if isinstance(exc, ProvisioningError):
        return f"{exc}{where}"
    return f"{type(exc).__name__}: {exc}{where}"
