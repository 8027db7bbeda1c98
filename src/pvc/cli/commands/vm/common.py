"""What the `pvc vm` commands share: reading a VM, its XML, the restart/live options and the write-back.

Configuration edits (vcpu, memory, network, volume, modify) are made here, on the client, to the
XML fetched with `GET /vm/<vm>`, and pushed back with `PUT /vm/<vm>` (plus a live
`POST/DELETE /vm/<vm>/device` when the VM runs), exactly as PVC's own client does: the API v1
has no finer-grained routes, and existing clients must keep working against our API. The XML
edits themselves are the pure functions of `pvc.core.domainxml`, so client and server agree on
what a valid domain is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from lxml import etree

from pvc.cli.client import ApiClient, decode
from pvc.cli.errors import CLIError
from pvc.cli.output import escape_controls
from pvc.cli.state import CLIState, get_state
from pvc.cli.waiters import run_task
from pvc.core import domainxml
from pvc.core.errors import InvalidInput
from pvc.core.units import parse_size
from pvc.core.vocabulary import MIGRATION_METHODS, SELECTOR_CHOICES, VMState

F = TypeVar("F", bound=Callable[..., Any])

# Only a VM that is settled in "start" is running for an edit: it is offered a restart and gets
# hot-plugged devices. A VM in transition (restart, shutdown, migrate, ...) is not, as upstream.
RUNNING_STATE: VMState = "start"
MIB = 1024 * 1024


# -- XML helpers -------------------------------------------------------------------------------------

_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


def pretty_xml(xml: str) -> str:
    """XML re-indented (as upstream's dump and diff show it); unparsable text is returned as is."""
    try:
        root = etree.fromstring(xml.strip().encode("utf-8"), _SAFE_PARSER)
    except etree.XMLSyntaxError:
        return xml.strip()
    return etree.tostring(root, pretty_print=True, encoding="unicode").strip()


def check_xml(xml: str) -> domainxml.Domain:
    """Refuse XML that is not a domain PVC can run before it goes to the API."""
    try:
        return domainxml.parse(xml)
    except InvalidInput as exc:
        raise CLIError(f"Error: XML is malformed or invalid: {exc.message}") from None


def edit_xml(function: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """Run a domainxml edit; its precise message becomes the command's error."""
    try:
        return function(*args, **kwargs)
    except InvalidInput as exc:
        raise CLIError(exc.message) from None


def parse_memory(value: str) -> int:
    """MiB from '2048', '2048M', '2G', '1.5GiB' (a plain number is MiB, as upstream)."""
    text = value.strip()
    if text.isdigit():
        mib = int(text)
    else:
        try:
            mib = parse_size(text, "memory") // MIB
        except InvalidInput as exc:
            raise CLIError(exc.message) from None
    if mib < 1:
        raise CLIError(f"memory: '{value}' is less than 1 MiB")
    return mib


def parse_topology(value: str, vcpus: int) -> domainxml.Topology:
    """`S,C,T` whose product must equal VCPUS."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise CLIError(f"The topology '{value}' is not valid: give <sockets>,<cores>,<threads>.")
    topology = domainxml.Topology(int(parts[0]), int(parts[1]), int(parts[2]))
    if topology.vcpus != vcpus:
        raise CLIError(f"The topology '{value}' gives {topology.vcpus} vCPUs, not {vcpus}.")
    return topology


def bridge_of(net: str) -> str:
    """A PVC network VNI becomes its bridge vmbr<vni>; anything else is taken as a bridge name."""
    return f"vmbr{net}" if net.isdigit() else net


# -- reading a VM ------------------------------------------------------------------------------------

def fetch_vm(name: str) -> dict[str, Any]:
    """The API item of the VM `name` (by name or UUID)."""
    return get_state().api().get_one(f"/vm/{name}", what="VM")


def read_for_edit(name: str) -> tuple[dict[str, Any], str | None]:
    """The VM's item and its ETag: the version an edit of it is based on (None from an API without)."""
    return get_state().api().get_versioned(f"/vm/{name}", what="VM")


def is_running(vm: dict[str, Any]) -> bool:
    return str(vm.get("state")) == RUNNING_STATE


def flag(value: bool) -> bool | None:
    """Boolean API parameters are only sent when set, so the API keeps its defaults."""
    return True if value else None


def with_progress(state: CLIState, domain: str, label: str, call: Callable[[], str]) -> str:
    """Run a server-side `wait=true` call while showing the VM's state and node on stderr.

    PVC's API blocks until the transition is over (as upstream clients expect); a second
    connection polls the VM once a second so the administrator sees what is happening.
    """
    if state.quiet or state.silent:
        return call()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["message"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    state.api()  # announce the connection before the spinner starts
    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    with state.stderr_console().status(escape_controls(f"{label} {domain}")) as status, \
            ApiClient(state.connection, transport=state.transport, retries=0) as poller:
        while worker.is_alive():
            worker.join(1.0)
            try:
                info = poller.get_one(f"/vm/{domain}", what="VM")
                where = info.get("node", "?")
                moved = f" (from {info['last_node']})" if info.get("last_node") else ""
                status.update(escape_controls(f"{label} {domain}: state {info.get('state')}, node {where}"
                                              f"{moved}, {time.monotonic() - started:.0f}s"))
            except Exception:
                status.update(escape_controls(f"{label} {domain}: {time.monotonic() - started:.0f}s"))
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["message"])


# -- options -----------------------------------------------------------------------------------------

def restart_option(function: F) -> F:
    """`-r/--restart` / `-R/--no-restart`; unset means ask (only when the VM runs)."""
    return click.option("-r/-R", "--restart/--no-restart", "restart", default=None,
                        help="Restart the VM to apply the change or not (default: ask if it runs).")(function)


def yes_option(function: F) -> F:
    """`-y/--yes` confirms a requested restart; it never asks for one by itself."""
    return click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
                        help="Confirm a --restart without asking (never restarts by itself).")(function)


def live_option(function: F) -> F:
    return click.option("-l/-L", "--live/--no-live", "live", default=True, show_default=True,
                        help="Hot-(un)plug the device if the VM runs (not with --restart).")(function)


def selector_option(help_text: str, default: str | None = None) -> Callable[[F], F]:
    """`-s/--node-selector`: how to choose a target node ("none": the cluster's default)."""
    return click.option("-s", "--node-selector", "--selector", "node_selector",
                        type=click.Choice(SELECTOR_CHOICES), default=default,
                        show_default=default is not None, help=help_text)


def method_option(default: str | None = None) -> Callable[[F], F]:
    """`-m/--method`; `vm define` sends "none" when unset, as upstream (the cluster default applies)."""
    return click.option("-m", "--method", "--migration-method", "migration_method",
                        type=click.Choice(MIGRATION_METHODS), default=default,
                        show_default=default is not None,
                        help='Preferred migration method; "none" uses the cluster default.')


def downtime_option(function: F) -> F:
    return click.option("-d", "--max-downtime", "--migration-max-downtime", "migration_max_downtime",
                        type=click.IntRange(min=1), default=None,
                        help="Maximum live-migration downtime in ms [API default: 300].")(function)


# -- writing an edited VM back -----------------------------------------------------------------------

def decide_restart(state: CLIState, vm: dict[str, Any], restart: bool | None, confirmed: bool) -> bool:
    """Restart only a running VM (a restart request would start a stopped one); ask when unset."""
    if not is_running(vm):
        return False
    if restart is None:
        if confirmed or state.unsafe:
            return False
        try:
            return click.confirm(escape_controls(f'Restart VM "{vm.get("name")}" to apply the change'),
                                 prompt_suffix="? ",
                                 default=False, err=True)
        except click.Abort:
            return False
    if restart and not (confirmed or state.unsafe):
        try:
            ok = click.confirm(escape_controls(f'Restart virtual machine "{vm.get("name")}"'),
                               prompt_suffix="? ", default=False, err=True)
        except click.Abort:
            ok = False
        if not ok:
            raise CLIError("Aborted.")
    return restart


def live_restart(live: bool, restart: bool | None) -> bool | None:
    """A hot-plugged change needs no restart: only ask when the change cannot be made live."""
    return False if live and restart is None else restart


def apply_xml(name: str, vm: dict[str, Any], etag: str | None, new_xml: str, restart: bool, *,
              device: tuple[str, str] | None = None, force: bool = False) -> None:
    """PUT the edited XML; then hot-(un)plug `device` = (method, device XML) if given.

    The PUT carries the ETag the VM was read with as If-Match, so a VM changed by someone else
    since is refused (412, the API's message, exit 1) instead of losing their change. The
    definition is written first so the API validates it; a failed hot-plug then leaves a saved
    definition that applies at the next restart, and the command says so and fails.
    """
    state = get_state()
    api = state.api()
    message = api.message("PUT", f"/vm/{name}", params={"restart": restart, "force": True if force else None},
                          data={"xml": new_xml}, headers={"If-Match": etag} if etag else None)
    if device is not None:
        method, device_xml = device
        # No If-Match here: our own PUT just moved the version on, and the device is the one it wrote.
        try:
            response = api.call(method, f"/vm/{name}/device", data={"xml": device_xml}, ok=(200, 202))
            body = decode(response)
            state.out(message)
            if response.status_code == 202:
                run_task(state, body, wait=True)
            elif isinstance(body, dict) and body.get("message"):
                state.out(str(body["message"]))
            return
        except CLIError as exc:
            verb = "attach" if method == "POST" else "detach"
            raise CLIError(f"{message} Live {verb} failed: {exc.message}; "
                           f"the change applies at the next restart.") from None
    if is_running(vm) and not restart:
        message = f"{message} Changes will be applied on next VM start/restart.".strip()
    state.out(message)
