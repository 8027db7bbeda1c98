"""`pvc vm`: define, change, run, move and inspect virtual machines.

Configuration edits (vcpu, memory, network, volume) are made here, on the client, to the XML
fetched with `GET /vm/<vm>`, and pushed back with `PUT /vm/<vm>` (plus a live
`POST/DELETE /vm/<vm>/device` when the VM runs), exactly as PVC's own client does: the API v1
has no finer-grained routes, and existing clients must keep working against our API. The XML
edits themselves are the pure functions of `pvc.core.domainxml`, so client and server agree on
what a valid domain is.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import click
from lxml import etree
from rich.console import Group, RenderableType
from rich.text import Text

from pvc.cli.client import ApiClient, decode, error_message
from pvc.cli.errors import ApiError, CLIError
from pvc.cli.logs import show_log
from pvc.cli.output import human_mib, json_formatters, key_values, table
from pvc.cli.state import CLIState, confirm_option, format_option, get_state, wait_option
from pvc.cli.waiters import run_task
from pvc.core import domainxml
from pvc.core.errors import InvalidInput
from pvc.core.units import format_bytes, parse_size

F = TypeVar("F", bound=Callable[..., Any])

SELECTORS = ("mem", "memprov", "load", "vcpus", "vms", "none")
MIGRATION_METHODS = ("none", "live", "shutdown")
LIST_STATES = ("start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "unmigrate",
               "provision", "mirror")
RUNNING_STATES = ("start",)
DISK_BUSES = ("scsi", "virtio", "sata", "ide", "usb")
MIB = 1024 * 1024

# as upstream's list: running green, transitional yellow, stopped/failed red, everything else blue
VM_STATE_STYLES = {
    "start": "green",
    "restart": "yellow", "shutdown": "yellow", "disable": "yellow",
    "stop": "red", "fail": "bold red", "delete": "red",
    "mirror": "magenta",
}


def vm_state_style(state: str) -> str:
    """Colour of a VM state (migrate, unmigrate, provision, ... are blue)."""
    return VM_STATE_STYLES.get(state, "blue")


def _state_text(state: Any) -> Text:
    return Text(str(state or ""), style=vm_state_style(str(state or "")))


# -- small data helpers ------------------------------------------------------------------------------

def _tag_names(vm: dict[str, Any]) -> list[str]:
    tags = [t for t in vm.get("tags") or [] if isinstance(t, dict)]
    return [str(t.get("name")) for t in sorted(tags, key=lambda t: f"{t.get('type', '')}{t.get('name', '')}")]


def _net_ids(vm: dict[str, Any]) -> list[str]:
    return [str(n.get("vni", "")) for n in vm.get("networks") or [] if isinstance(n, dict)]


def _node_limit(vm: dict[str, Any]) -> str:
    limit = vm.get("node_limit")
    if isinstance(limit, list):
        return ", ".join(str(n) for n in limit) if limit else "Any"
    return str(limit) if limit else "Any"


def _migrated(vm: dict[str, Any]) -> str:
    migrated = vm.get("migrated")
    if migrated:
        return str(migrated)
    return f"from {vm['last_node']}" if vm.get("last_node") else "no"


def _metric(value: Any) -> str:
    """Counters as upstream shows them: 1234567 -> 1.2M."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}{unit}".replace(".0", "")
    return f"{number:.0f}"


def _bytes(value: Any) -> str:
    try:
        return format_bytes(int(value))
    except (TypeError, ValueError):
        return str(value)


def _pair(item: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    return f"{fmt(item.get(f'rd_{key}', 0))}/{fmt(item.get(f'wr_{key}', 0))}"


def _stats_line(stats: Any) -> str:
    if not isinstance(stats, dict) or not stats:
        return "N/A"
    return ", ".join(f"{key}={value}" for key, value in stats.items())


# -- formatters --------------------------------------------------------------------------------------

LIST_COLUMNS: list[str | tuple[str, str]] = [
    "Name", "State", "Tags", ("Snapshots", "right"), "Networks", ("RAM", "right"), ("vCPUs", "right"),
    "Node", "Migrated",
]


def vm_row(vm: dict[str, Any]) -> list[Any]:
    """One row of `pvc vm list`."""
    return [
        vm.get("name", ""),
        _state_text(vm.get("state")),
        ",".join(_tag_names(vm)) or "N/A",
        len(vm.get("snapshots") or []),
        ",".join(_net_ids(vm)) or "N/A",
        human_mib(vm.get("memory", 0)),
        vm.get("vcpu", 0),
        vm.get("node", ""),
        _migrated(vm),
    ]


def format_list_pretty(vms: Sequence[dict[str, Any]]) -> RenderableType:
    if not vms:
        return "No VMs found."
    return table(LIST_COLUMNS, (vm_row(v) for v in sorted(vms, key=lambda v: str(v.get("name")))))


def format_list_raw(vms: Sequence[dict[str, Any]]) -> str:
    return "\n".join(sorted(str(v.get("name")) for v in vms))


LIST_FORMATS = {"pretty": format_list_pretty, "raw": format_list_raw, **json_formatters()}


def format_info(vm: dict[str, Any], long: bool = False) -> RenderableType:
    """`pvc vm info`: identity, resources, state and placement; `long` adds devices and stats."""
    vnc = vm.get("vnc") if isinstance(vm.get("vnc"), dict) else {}
    vnc_text = f"{vnc.get('listen')}:{vnc.get('port')}" if vnc and vnc.get("port") not in (None, "None", "") \
        else "N/A"
    items: list[tuple[str, Any]] = [
        ("UUID", vm.get("uuid", "")),
        ("Name", vm.get("name", "")),
        ("Description", vm.get("description") or "N/A"),
        ("Profile", vm.get("profile") or "N/A"),
        ("Memory", human_mib(vm.get("memory", 0))),
        ("vCPUs", vm.get("vcpu", 0)),
        ("Topology (S/C/T)", vm.get("vcpu_topology") or "N/A"),
    ]
    if long:
        items += [
            ("Memory stats", _stats_line(vm.get("memory_stats"))),
            ("vCPU stats", _stats_line(vm.get("vcpu_stats"))),
            ("", ""),
            ("Domain type", vm.get("type") or "N/A"),
            ("Architecture", vm.get("arch") or "N/A"),
            ("Machine", vm.get("machine") or "N/A"),
            ("Emulator", vm.get("emulator") or "N/A"),
            ("Features", ", ".join(str(f) for f in vm.get("features") or []) or "N/A"),
            ("Console", vm.get("console") or "N/A"),
        ]
    items += [
        ("", ""),
        ("State", _state_text(vm.get("state"))),
        ("Current node", vm.get("node") or "N/A"),
        ("Previous node", vm.get("last_node") or "N/A"),
        ("Migrated", _migrated(vm)),
    ]
    if vm.get("failed_reason"):
        items.append(("Failed reason", Text(str(vm["failed_reason"]), style="red")))
    items += [
        ("VNC", vnc_text),
        ("", ""),
        ("Node limit", _node_limit(vm)),
        ("Node selector", vm.get("node_selector") or "none"),
        ("Autostart", str(bool(vm.get("node_autostart")))),
        ("Migration method", vm.get("migration_method") or "none"),
        ("Max live downtime", f"{vm.get('migration_max_downtime', 300)} ms"),
        ("Tags", ", ".join(_tag_names(vm)) or "N/A"),
        ("Snapshots", ", ".join(str(s.get("name")) for s in vm.get("snapshots") or []
                                if isinstance(s, dict)) or "N/A"),
        ("Networks", ", ".join(_net_ids(vm)) or "N/A"),
    ]
    if not long:
        return key_values(items)
    disks = table(["ID", "Type", "Name", "Dev", "Bus", "Requests (r/w)", "Data (r/w)"],
                  ([i, d.get("type"), d.get("name"), d.get("dev"), d.get("bus"), _pair(d, "req", _metric),
                    _pair(d, "bytes", _bytes)] for i, d in enumerate(vm.get("disks") or [])),
                  title="Disks")
    nics = table(["ID", "Type", "Source", "Model", "MAC", "Data (r/w)", "Packets (r/w)", "Errors (r/w)"],
                 ([i, n.get("type"), n.get("source"), n.get("model") or "N/A", n.get("mac"),
                   _pair(n, "bytes", _bytes), _pair(n, "packets", _metric), _pair(n, "errors", _metric)]
                  for i, n in enumerate(vm.get("networks") or [])),
                 title="Interfaces")
    controllers = table(["ID", "Type", "Model"],
                        ([i, c.get("type"), c.get("model") or "N/A"]
                         for i, c in enumerate(vm.get("controllers") or [])),
                        title="Controllers")
    return Group(key_values(items), "", disks, "", nics, "", controllers)


INFO_FORMATS = {"pretty": lambda v: format_info(v), "long": lambda v: format_info(v, long=True),
                **json_formatters()}


def format_tags(data: dict[str, Any]) -> RenderableType:
    tags = [t for t in data.get("tags") or [] if isinstance(t, dict)]
    if not tags:
        return "No tags found."
    return table(["Name", "Type", "Protected"],
                 ([t.get("name"), t.get("type"), str(bool(t.get("protected")))]
                  for t in sorted(tags, key=lambda t: str(t.get("name")))))


TAG_FORMATS = {"pretty": format_tags,
               "raw": lambda d: "\n".join(str(t.get("name")) for t in d.get("tags") or []),
               **json_formatters()}


def vcpu_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `vcpu get` shape: {name, vcpus, sockets, cores, threads}."""
    vcpus = int(vm.get("vcpu") or 0)
    parts = str(vm.get("vcpu_topology") or "").split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        sockets, cores, threads = (int(p) for p in parts)
    else:
        sockets, cores, threads = 1, vcpus, 1
    return {"name": vm.get("name"), "vcpus": vcpus, "sockets": sockets, "cores": cores, "threads": threads}


VCPU_FORMATS = {
    "pretty": lambda d: table(["Name", ("vCPUs", "right"), "Topology (S/C/T)"],
                              [[d["name"], d["vcpus"], f"{d['sockets']}/{d['cores']}/{d['threads']}"]]),
    "raw": lambda d: str(d["vcpus"]),
    **json_formatters(),
}


def memory_data(vm: dict[str, Any]) -> dict[str, Any]:
    return {"name": vm.get("name"), "memory": int(vm.get("memory") or 0)}


MEMORY_FORMATS = {
    "pretty": lambda d: table(["Name", ("RAM (M)", "right"), ("RAM", "right")],
                              [[d["name"], d["memory"], human_mib(d["memory"])]]),
    "raw": lambda d: str(d["memory"]),
    **json_formatters(),
}


def network_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `network get` shape: {name, networks: [{network, mac_address, model}]}."""
    return {"name": vm.get("name"),
            "networks": [{"network": str(n.get("vni", "")), "mac_address": n.get("mac"),
                          "model": n.get("model"), "type": n.get("type"), "source": n.get("source")}
                         for n in vm.get("networks") or [] if isinstance(n, dict)]}


NETWORK_FORMATS = {
    "pretty": lambda d: table(["Network", "Source", "MAC Address", "Model"],
                              ([n["network"], n["source"], n["mac_address"], n["model"] or "N/A"]
                               for n in d["networks"])) if d["networks"] else "No networks found.",
    "raw": lambda d: ",".join(n["network"] for n in d["networks"]),
    **json_formatters(),
}


def volume_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `volume get` shape: {name, volumes: [{volume, disk_id, protocol, bus}]}."""
    return {"name": vm.get("name"),
            "volumes": [{"volume": d.get("name"), "disk_id": d.get("dev"), "protocol": d.get("type"),
                         "bus": d.get("bus")} for d in vm.get("disks") or [] if isinstance(d, dict)]}


VOLUME_FORMATS = {
    "pretty": lambda d: table(["Volume", "Disk ID", "Protocol", "Bus"],
                              ([v["volume"], v["disk_id"], v["protocol"], v["bus"] or "N/A"]
                               for v in d["volumes"])) if d["volumes"] else "No volumes found.",
    "raw": lambda d: ",".join(f"{v['protocol']}:{v['volume']}" for v in d["volumes"]),
    **json_formatters(),
}


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


def _edit(function: Callable[..., str], *args: Any, **kwargs: Any) -> str:
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


# -- shared command plumbing -------------------------------------------------------------------------

@click.group(name="vm", short_help="Manage PVC VMs.")
def group() -> None:
    """Manage and view the status of the virtual machines of a PVC cluster."""


def _vm(name: str) -> dict[str, Any]:
    return get_state().api().get_one(f"/vm/{name}", what="VM")


def _running(vm: dict[str, Any]) -> bool:
    return str(vm.get("state")) in RUNNING_STATES


def restart_option(function: F) -> F:
    """`-r/--restart` / `-R/--no-restart`; unset means ask (only when the VM runs)."""
    return click.option("-r/-R", "--restart/--no-restart", "restart", default=None,
                        help="Restart the VM to apply the change or not (default: ask if it runs).")(function)


def yes_option(function: F) -> F:
    """`-y/--yes` confirms a requested restart; it never asks for one by itself."""
    return click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
                        help="Confirm a --restart without asking (never restarts by itself).")(function)


def method_option(function: F) -> F:
    return click.option("-m", "--method", "--migration-method", "migration_method",
                        type=click.Choice(MIGRATION_METHODS), default=None,
                        help='Preferred migration method; "none" uses the cluster default.')(function)


def downtime_option(function: F) -> F:
    return click.option("-d", "--max-downtime", "--migration-max-downtime", "migration_max_downtime",
                        type=click.IntRange(min=1), default=None,
                        help="Maximum live-migration downtime in ms [API default: 300].")(function)


def _decide_restart(state: CLIState, vm: dict[str, Any], restart: bool | None, confirmed: bool) -> bool:
    """Restart only a running VM (a restart request would start a stopped one); ask when unset."""
    if not _running(vm):
        return False
    if restart is None:
        if confirmed or state.unsafe:
            return False
        try:
            return click.confirm(f'Restart VM "{vm.get("name")}" to apply the change', prompt_suffix="? ",
                                 default=False, err=True)
        except click.Abort:
            return False
    if restart and not (confirmed or state.unsafe):
        try:
            ok = click.confirm(f'Restart virtual machine "{vm.get("name")}"', prompt_suffix="? ",
                               default=False, err=True)
        except click.Abort:
            ok = False
        if not ok:
            raise CLIError("Aborted.")
    return restart


def _apply(name: str, vm: dict[str, Any], new_xml: str, restart: bool, *,
           device: tuple[str, str] | None = None) -> None:
    """PUT the edited XML; then hot-(un)plug `device` = (method, device XML) if given.

    The definition is written first so the API validates it; a failed hot-plug then leaves a
    saved definition that applies at the next restart, and the command says so and fails.
    """
    state = get_state()
    api = state.api()
    message = api.message("PUT", f"/vm/{name}", params={"restart": restart}, data={"xml": new_xml})
    if device is not None:
        method, device_xml = device
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
    if _running(vm) and not restart:
        message = f"{message} Changes will be applied on next VM start/restart.".strip()
    state.out(message)


def _live_restart(live: bool, restart: bool | None) -> bool | None:
    """A hot-plugged change needs no restart: only ask when the change cannot be made live."""
    return False if live and restart is None else restart


def _flag(value: bool) -> bool | None:
    """Boolean API parameters are only sent when set, so the API keeps its defaults."""
    return True if value else None


# -- define / meta / modify / rename / remove ----------------------------------------------------------

@group.command(name="define", short_help="Define a new VM from libvirt XML.")
@click.argument("vmconfig", type=click.File("r"))
@click.option("-t", "--target", "--node", "node", default=None, metavar="NODE",
              help="Home node of the VM; chosen by the selector if unset.")
@click.option("-l", "--limit", "--node-limit", "node_limit", default=None, metavar="NODES",
              help="Comma-separated nodes the VM may run on; saved with the VM.")
@click.option("-s", "--node-selector", "--selector", "node_selector", type=click.Choice(SELECTORS),
              default=None, help='How to choose a target node; "none" uses the cluster default.')
@click.option("-a/-A", "--autostart/--no-autostart", "--node-autostart/--no-node-autostart",
              "node_autostart", default=False,
              help="Start the VM on the next ready of its home node; unset by the daemon once used.")
@method_option
@downtime_option
@click.option("-g", "--tag", "--user-tag", "user_tags", multiple=True, help="User tag; repeatable.")
@click.option("-G", "--protected-tag", "protected_tags", multiple=True,
              help="Protected user tag; repeatable.")
def define(vmconfig: IO[str], node: str | None, node_limit: str | None, node_selector: str | None,
           node_autostart: bool, migration_method: str | None, migration_max_downtime: int | None,
           user_tags: tuple[str, ...], protected_tags: tuple[str, ...]) -> None:
    """Define a new virtual machine from the libvirt XML file VMCONFIG ("-" reads stdin).

    \b
    Node selectors: mem (most free memory), memprov (least provisioned memory),
    vcpus (fewest allocated vCPUs), load (lowest load), vms (fewest VMs), none (cluster default).
    """
    xml = vmconfig.read()
    check_xml(xml)
    state = get_state()
    state.out(state.api().message("POST", "/vm", params={
        "node": node, "limit": node_limit, "selector": node_selector, "autostart": node_autostart,
        "migration_method": migration_method, "migration_max_downtime": migration_max_downtime,
        "user_tags": list(user_tags), "protected_tags": list(protected_tags),
    }, data={"xml": xml}))


@group.command(name="meta", short_help="Change the PVC metadata of a VM.")
@click.argument("domain")
@click.option("-l", "--limit", "--node-limit", "node_limit", default=None, metavar="NODES",
              help='Comma-separated nodes the VM may run on; "" removes the limit.')
@click.option("-s", "--node-selector", "--selector", "node_selector", type=click.Choice(SELECTORS),
              default=None, help="How to choose a target node.")
@click.option("-a/-A", "--autostart/--no-autostart", "--node-autostart/--no-node-autostart",
              "node_autostart", default=None, help="Start the VM on the next ready of its home node.")
@method_option
@downtime_option
@click.option("-p", "--profile", "profile", default=None, help="Provisioner profile of the VM.")
def meta(domain: str, node_limit: str | None, node_selector: str | None, node_autostart: bool | None,
         migration_method: str | None, migration_max_downtime: int | None, profile: str | None) -> None:
    """Change the PVC metadata of the VM DOMAIN (name or UUID); only the given options change."""
    params = {"limit": node_limit, "selector": node_selector, "autostart": node_autostart,
              "migration_method": migration_method, "migration_max_downtime": migration_max_downtime,
              "profile": profile}
    if all(value is None for value in params.values()):
        raise CLIError("At least one metadata option must be specified to update.")
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/meta", params=params))


@group.command(name="modify", short_help="Replace the XML of a VM.")
@click.argument("domain")
@click.argument("cfgfile", type=click.File("r"), required=False, default=None)
@click.option("-e", "--editor", is_flag=True, default=False, help="Edit the current XML in $EDITOR.")
@restart_option
@click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
              help="Confirm the changes (and the restart) without asking.")
def modify(domain: str, cfgfile: IO[str] | None, editor: bool, restart: bool | None, confirmed: bool) -> None:
    """Replace the libvirt XML of the VM DOMAIN with CFGFILE ("-" reads stdin) or edit it.

    The difference is shown on stderr and confirmed before anything is written.
    """
    state = get_state()
    if cfgfile is None and not editor:
        raise CLIError('Either an XML config file or the "--editor" option must be specified.')
    vm = _vm(domain)
    current = pretty_xml(str(vm.get("xml", "")))
    if editor:
        edited = click.edit(text=current, require_save=True, extension=".xml")
        if edited is None:
            state.info("Aborting with no modifications.")
            return
        new_xml = edited.strip()
    else:
        assert cfgfile is not None
        new_xml = cfgfile.read().strip()
    check_xml(new_xml)
    diff = list(difflib.unified_diff(current.split("\n"), pretty_xml(new_xml).split("\n"),
                                     fromfile="current", tofile="modified", lineterm="", n=3))
    if not diff:
        state.info("Aborting with no modifications.")
        return
    shown = Text()
    for line in diff:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else \
            "blue" if line.startswith("@") else ""
        shown.append(line + "\n", style=style)
    state.info("Pending modifications:\n")
    state.info(shown)
    if not (confirmed or state.unsafe):
        try:
            ok = click.confirm("Write modifications to cluster", prompt_suffix="? ", default=False, err=True)
        except click.Abort:
            ok = False
        if not ok:
            raise CLIError("Aborted.")
    _apply(domain, vm, new_xml, _decide_restart(state, vm, restart, confirmed))


@group.command(name="rename", short_help="Rename a VM.")
@click.argument("domain")
@click.argument("new_name")
@confirm_option("Rename virtual machine {domain} to {new_name}")
def rename(domain: str, new_name: str) -> None:
    """Rename the (stopped) VM DOMAIN, and the disk volumes named after it, to NEW_NAME."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/rename", params={"new_name": new_name}))


@group.command(name="undefine", short_help="Undefine a VM, keeping its disks.")
@click.argument("domain")
@confirm_option("Remove definition of virtual machine {domain}")
def undefine(domain: str) -> None:
    """Stop the VM DOMAIN and remove its definition; its disk volumes are kept."""
    state = get_state()
    state.out(state.api().message("DELETE", f"/vm/{domain}", params={"delete_disks": False}))


@group.command(name="remove", short_help="Remove a VM and its disks.")
@click.argument("domain")
@confirm_option("Remove virtual machine {domain} and all disks")
def remove(domain: str) -> None:
    """Stop the VM DOMAIN and remove it together with all its disk volumes."""
    state = get_state()
    state.out(state.api().message("DELETE", f"/vm/{domain}", params={"delete_disks": True}))


# -- state -------------------------------------------------------------------------------------------

def _with_progress(state: CLIState, domain: str, label: str, call: Callable[[], str]) -> str:
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
    with state.stderr_console().status(f"{label} {domain}") as status, \
            ApiClient(state.connection, transport=state.transport, retries=0) as poller:
        while worker.is_alive():
            worker.join(1.0)
            try:
                info = poller.get_one(f"/vm/{domain}", what="VM")
                where = info.get("node", "?")
                moved = f" (from {info['last_node']})" if info.get("last_node") else ""
                status.update(f"{label} {domain}: state {info.get('state')}, node {where}{moved}, "
                              f"{time.monotonic() - started:.0f}s")
            except Exception:
                status.update(f"{label} {domain}: {time.monotonic() - started:.0f}s")
    if "error" in outcome:
        raise outcome["error"]
    return str(outcome["message"])


def _set_state(domain: str, target: str, *, force: bool = False, wait: bool = False) -> None:
    """POST /vm/<vm>/state; `wait` blocks server-side, as upstream, with progress shown here."""
    state = get_state()

    def call() -> str:
        return state.api().message("POST", f"/vm/{domain}/state",
                                   params={"state": target, "force": _flag(force), "wait": _flag(wait)})

    state.out(_with_progress(state, domain, f"Waiting for {target} of", call) if wait else call())


@group.command(name="start", short_help="Start a VM.")
@click.argument("domain")
@click.option("--force", is_flag=True, default=False, help="Also start a mirror replica.")
def start(domain: str, force: bool) -> None:
    """Start the VM DOMAIN on its node."""
    _set_state(domain, "start", force=force)


@group.command(name="restart", short_help="Restart a running VM.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the restart to finish.")
@confirm_option("Restart virtual machine {domain}")
def restart_(domain: str, wait: bool) -> None:
    """Restart the running VM DOMAIN (shutdown, then start)."""
    _set_state(domain, "restart", wait=wait)


@group.command(name="shutdown", short_help="Gracefully shut down a VM.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the shutdown to finish.")
@confirm_option("Shut down virtual machine {domain}")
def shutdown(domain: str, wait: bool) -> None:
    """Shut down the VM DOMAIN with ACPI; it is stopped if it does not finish in time."""
    _set_state(domain, "shutdown", wait=wait)


@group.command(name="stop", short_help="Forcibly stop a VM.")
@click.argument("domain")
@confirm_option("Forcibly stop virtual machine {domain}")
def stop(domain: str) -> None:
    """Halt (destroy) the VM DOMAIN at once."""
    _set_state(domain, "stop")


@group.command(name="disable", short_help="Shut down a VM and mark it disabled.")
@click.argument("domain")
@click.option("--force", is_flag=True, default=False, help="Stop the VM instead of waiting for a shutdown.")
@confirm_option("Shut down and disable virtual machine {domain}")
def disable(domain: str, force: bool) -> None:
    """Shut down the VM DOMAIN and mark it disabled (not counted as degraded, unlike stopped VMs)."""
    _set_state(domain, "disable", force=force)


# -- placement ---------------------------------------------------------------------------------------

def _move(domain: str, action: str, node: str | None, *, force: bool = False, wait: bool = False,
          force_live: bool = False) -> None:
    """POST /vm/<vm>/node; `wait` blocks server-side until the migration is over (progress shown)."""
    state = get_state()

    def call() -> str:
        return state.api().message("POST", f"/vm/{domain}/node", params={
            "action": action, "node": node, "force": force, "wait": wait, "force_live": force_live})

    state.out(_with_progress(state, domain, f"Waiting for {action} of", call) if wait else call())


def _target(node: str | None, target: str | None) -> str | None:
    if node and target and node != target:
        raise CLIError(f"Two target nodes given: {node} and {target}.")
    return node or target


@group.command(name="move", short_help="Permanently move a VM to another node.")
@click.argument("domain")
@click.argument("node", required=False, default=None)
@click.option("-t", "--target", "target", default=None, help="Target node (same as NODE).")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def move(domain: str, node: str | None, target: str | None, wait: bool, force_live: bool) -> None:
    """Move the VM DOMAIN to NODE for good (live if it runs); without NODE the selector chooses."""
    _move(domain, "move", _target(node, target), wait=wait, force_live=force_live)


@group.command(name="migrate", short_help="Temporarily migrate a VM to another node.")
@click.argument("domain")
@click.argument("node", required=False, default=None)
@click.option("-t", "--target", "target", default=None, help="Target node (same as NODE).")
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Migrate an already migrated VM again (its original node is kept).")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def migrate(domain: str, node: str | None, target: str | None, force: bool, wait: bool,
            force_live: bool) -> None:
    """Migrate the VM DOMAIN to NODE, remembering where it came from (see unmigrate)."""
    _move(domain, "migrate", _target(node, target), force=force, wait=wait, force_live=force_live)


@group.command(name="unmigrate", short_help="Return a migrated VM to its original node.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def unmigrate(domain: str, wait: bool, force_live: bool) -> None:
    """Return the migrated VM DOMAIN to the node it was migrated from."""
    _move(domain, "unmigrate", None, wait=wait, force_live=force_live)


@group.command(name="flush-locks", short_help="Flush stale RBD locks of a VM.")
@click.argument("domain")
@wait_option(True)
def flush_locks(domain: str, wait: bool) -> None:
    """Remove stale RBD locks of the VM DOMAIN (which must be stopped, disabled or failed).

    A task on the VM's node: --wait (default) follows it, --no-wait prints its ID.
    """
    state = get_state()
    response = state.api().call("POST", f"/vm/{domain}/locks", ok=(200, 202))
    body = decode(response)
    if response.status_code == 202:
        run_task(state, body, wait)
    else:
        state.out(str(body.get("message", "")) if isinstance(body, dict) else str(body or ""))


# -- views -------------------------------------------------------------------------------------------

@group.command(name="log", short_help="Show the serial console log of a VM.")
@click.argument("domain")
@click.option("-l", "--lines", type=click.IntRange(min=0), default=None,
              help="Number of lines to show.  [default: 1000; with --follow: 10]")
@click.option("-f", "--follow", is_flag=True, default=False, help="Keep printing new lines (Ctrl-C stops).")
def log(domain: str, lines: int | None, follow: bool) -> None:
    """Show the serial console log of the VM DOMAIN (kept by its node; a migration starts it afresh)."""
    count = lines if lines is not None else (10 if follow else 1000)
    show_log(get_state(), f"/vm/{domain}/console", count, follow)


@group.command(name="dump", short_help="Print the libvirt XML of a VM.")
@click.argument("domain")
@click.option("-f", "--file", "filename", type=click.File("w"), default=None,
              help="Write the XML to this file.")
def dump(domain: str, filename: IO[str] | None) -> None:
    """Print the libvirt XML definition of the VM DOMAIN (re-indented), or write it to a file."""
    state = get_state()
    xml = pretty_xml(str(_vm(domain).get("xml", "")))
    if filename is not None:
        filename.write(xml + "\n")
        state.out(f'VM XML written to "{filename.name}".')
    else:
        state.out(xml)


@group.command(name="info", short_help="Show details of a VM.")
@click.argument("domain")
@format_option(INFO_FORMATS)
def info(domain: str, formatter: Any) -> None:
    """Show the details of the VM DOMAIN.

    \b
    Formats: pretty, long (adds devices with their counters and the VM's stats), json, json-pretty.
    """
    get_state().emit(_vm(domain), formatter)


@group.command(name="list", short_help="List VMs.")
@click.argument("limit", required=False, default=None)
@click.option("-t", "--target", "node", default=None, help="Only VMs on this node.")
@click.option("-s", "--state", "vm_state", type=click.Choice(LIST_STATES), default=None,
              help="Only VMs in this state.")
@click.option("-g", "--tag", "tag", default=None, help="Only VMs with this tag.")
@click.option("-n", "--negate", is_flag=True, default=False, help="Negate the node, state and tag filters.")
@click.option("-r", "--raw", is_flag=True, default=False, help="Only the names, one per line (= -f raw).")
@format_option(LIST_FORMATS)
def list_(limit: str | None, node: str | None, vm_state: str | None, tag: str | None, negate: bool,
          raw: bool, formatter: Any) -> None:
    """List the VMs, optionally only those whose name matches the regex LIMIT (or whose UUID is LIMIT)."""
    state = get_state()
    vms = state.api().get_list("/vm", params={"limit": limit, "node": node, "state": vm_state, "tag": tag,
                                              "negate": _flag(negate)})
    state.emit(vms, format_list_raw if raw else formatter)


# -- tags --------------------------------------------------------------------------------------------

@group.group(name="tag", short_help="Manage the tags of a VM.")
def tag_group() -> None:
    """View and change the tags of VMs."""


@tag_group.command(name="get", short_help="Show the tags of a VM.")
@click.argument("domain")
@format_option(TAG_FORMATS)
def tag_get(domain: str, formatter: Any) -> None:
    """Show the tags of the VM DOMAIN."""
    state = get_state()
    body = state.api().get_json(f"/vm/{domain}/tags")
    if isinstance(body, list):  # tolerate a bare list of tags
        body = {"name": domain, "tags": body}
    state.emit(body if isinstance(body, dict) else {"name": domain, "tags": []}, formatter)


@tag_group.command(name="add", short_help="Add a tag to a VM.")
@click.argument("domain")
@click.argument("tag")
@click.option("-p", "--protected", is_flag=True, default=False, help="Protect the tag from removal.")
def tag_add(domain: str, tag: str, protected: bool) -> None:
    """Add TAG to the VM DOMAIN."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/tags",
                                  params={"action": "add", "tag": tag, "protected": protected}))


@tag_group.command(name="remove", short_help="Remove a tag from a VM.")
@click.argument("domain")
@click.argument("tag")
def tag_remove(domain: str, tag: str) -> None:
    """Remove TAG from the VM DOMAIN (protected tags cannot be removed)."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/tags", params={"action": "remove", "tag": tag}))


# -- vcpu / memory -----------------------------------------------------------------------------------

@group.group(name="vcpu", short_help="Manage the vCPUs of a VM.")
def vcpu_group() -> None:
    """View and change the vCPUs of VMs (by editing their XML)."""


@vcpu_group.command(name="get", short_help="Show the vCPUs of a VM.")
@click.argument("domain")
@format_option(VCPU_FORMATS)
def vcpu_get(domain: str, formatter: Any) -> None:
    """Show the vCPU count and topology of the VM DOMAIN."""
    get_state().emit(vcpu_data(_vm(domain)), formatter)


@vcpu_group.command(name="set", short_help="Set the vCPUs of a VM.")
@click.argument("domain")
@click.argument("vcpus", type=click.IntRange(min=1))
@click.option("-t", "--topology", default=None, metavar="S,C,T",
              help="Sockets,cores,threads; their product must equal VCPUS [default: 1,VCPUS,1].")
@restart_option
@yes_option
def vcpu_set(domain: str, vcpus: int, topology: str | None, restart: bool | None, confirmed: bool) -> None:
    """Set the vCPU count of the VM DOMAIN to VCPUS; it applies at the next (re)start."""
    topo = parse_topology(topology, vcpus) if topology else None
    vm = _vm(domain)
    new_xml = _edit(domainxml.set_vcpus, str(vm.get("xml", "")), vcpus, topo)
    _apply(domain, vm, new_xml, _decide_restart(get_state(), vm, restart, confirmed))


@group.group(name="memory", short_help="Manage the memory of a VM.")
def memory_group() -> None:
    """View and change the memory of VMs (by editing their XML)."""


@memory_group.command(name="get", short_help="Show the memory of a VM.")
@click.argument("domain")
@format_option(MEMORY_FORMATS)
def memory_get(domain: str, formatter: Any) -> None:
    """Show the provisioned memory of the VM DOMAIN."""
    get_state().emit(memory_data(_vm(domain)), formatter)


@memory_group.command(name="set", short_help="Set the memory of a VM.")
@click.argument("domain")
@click.argument("memory")
@restart_option
@yes_option
def memory_set(domain: str, memory: str, restart: bool | None, confirmed: bool) -> None:
    """Set the memory of the VM DOMAIN to MEMORY: MiB, or with a suffix (512M, 4G)."""
    mib = parse_memory(memory)
    vm = _vm(domain)
    new_xml = _edit(domainxml.set_memory, str(vm.get("xml", "")), mib)
    _apply(domain, vm, new_xml, _decide_restart(get_state(), vm, restart, confirmed))


# -- network -----------------------------------------------------------------------------------------

def live_option(function: F) -> F:
    return click.option("-l/-L", "--live/--no-live", "live", default=True, show_default=True,
                        help="Hot-(un)plug the device if the VM runs (not with --restart).")(function)


@group.group(name="network", short_help="Manage the network interfaces of a VM.")
def network_group() -> None:
    """View and change the network interfaces of VMs (by editing their XML)."""


@network_group.command(name="get", short_help="Show the network interfaces of a VM.")
@click.argument("domain")
@format_option(NETWORK_FORMATS)
def network_get(domain: str, formatter: Any) -> None:
    """Show the network interfaces of the VM DOMAIN."""
    get_state().emit(network_data(_vm(domain)), formatter)


@network_group.command(name="add", short_help="Add a network interface to a VM.")
@click.argument("domain")
@click.argument("net")
@click.option("-a", "--macaddr", default=None, help="MAC address [default: derived from the VM UUID].")
@click.option("-m", "--model", default="virtio", show_default=True, help="libvirt NIC model.")
@live_option
@restart_option
@yes_option
def network_add(domain: str, net: str, macaddr: str | None, model: str, live: bool, restart: bool | None,
                confirmed: bool) -> None:
    """Add an interface on network NET to the VM DOMAIN.

    NET is a PVC network VNI (bridge vmbr<VNI>) or a bridge name. A running VM gets the new
    interface at once (hot-plug) unless --no-live or --restart is given.
    """
    if net.isdigit():  # a PVC network must exist, or the VM would get a bridge no node creates
        response = get_state().api().request("GET", f"/network/{net}")
        if response.status_code == 404 and "message" in (decode(response) or {}):
            raise CLIError(f'Network {net} does not exist; add it first ("pvc network add {net} ...").')
        if response.status_code not in (200, 404):  # 404 without a message: an API without networks
            raise ApiError(error_message(response), response.status_code)
    vm = _vm(domain)
    old_xml = str(vm.get("xml", ""))
    new_xml = _edit(domainxml.add_interface, old_xml, bridge_of(net), mac=macaddr, model=model)
    do_restart = _decide_restart(get_state(), vm, _live_restart(live, restart), confirmed)
    device = None
    if live and _running(vm) and not do_restart:
        added = [m for m in domainxml.parse(new_xml).macs if m not in set(domainxml.parse(old_xml).macs)]
        if len(added) == 1:
            device = ("POST", _edit(domainxml.device_xml, new_xml, mac=added[0]))
    _apply(domain, vm, new_xml, do_restart, device=device)


@network_group.command(name="remove", short_help="Remove a network interface from a VM.")
@click.argument("domain")
@click.argument("net", required=False, default=None)
@click.option("-m", "--mac-address", "macaddr", default=None, help="MAC address of the interface to remove.")
@live_option
@restart_option
@yes_option
def network_remove(domain: str, net: str | None, macaddr: str | None, live: bool, restart: bool | None,
                   confirmed: bool) -> None:
    """Remove the interface on network NET (or with --mac-address) from the VM DOMAIN.

    Several interfaces on NET are ambiguous: give the MAC address.
    """
    if net is None and macaddr is None:
        raise CLIError("Give the network NET or the --mac-address of the interface to remove.")
    vm = _vm(domain)
    old_xml = str(vm.get("xml", ""))
    new_xml = _edit(domainxml.remove_interface, old_xml, mac=macaddr,
                    bridge=bridge_of(net) if net is not None else None)
    do_restart = _decide_restart(get_state(), vm, _live_restart(live, restart), confirmed)
    device = None
    if live and _running(vm) and not do_restart:
        removed = [m for m in domainxml.parse(old_xml).macs if m not in set(domainxml.parse(new_xml).macs)]
        if len(removed) == 1:
            device = ("DELETE", _edit(domainxml.device_xml, old_xml, mac=removed[0]))
    _apply(domain, vm, new_xml, do_restart, device=device)


# -- volume ------------------------------------------------------------------------------------------

@group.group(name="volume", short_help="Manage the disk volumes of a VM.")
def volume_group() -> None:
    """View and change the disk volumes of VMs (by editing their XML)."""


@volume_group.command(name="get", short_help="Show the volumes of a VM.")
@click.argument("domain")
@format_option(VOLUME_FORMATS)
def volume_get(domain: str, formatter: Any) -> None:
    """Show the disk volumes of the VM DOMAIN."""
    get_state().emit(volume_data(_vm(domain)), formatter)


_RBD_VOLUME_RE = re.compile(r"^[^/\s]+/[^/\s]+$")


@volume_group.command(name="add", short_help="Add an RBD volume to a VM.")
@click.argument("domain")
@click.argument("volume")
@click.option("-d", "--disk-id", "disk_id", default=None, help="Target (sdX/vdX/hdX) [default: next free].")
@click.option("-b", "--bus", type=click.Choice(DISK_BUSES), default="scsi", show_default=True,
              help="Bus of the disk (scsi adds a virtio-scsi controller if the VM has none).")
@click.option("--monitor", "monitors", multiple=True, metavar="HOST[:PORT]",
              help="Ceph monitor of the disk source; repeatable.")
@click.option("--secret-uuid", default=None, help="UUID of the libvirt secret holding the Ceph key.")
@click.option("--ceph-user", default=None, help="Ceph client user of the disk [default: the cluster's].")
@live_option
@restart_option
@yes_option
def volume_add(domain: str, volume: str, disk_id: str | None, bus: str, monitors: tuple[str, ...],
               secret_uuid: str | None, ceph_user: str, live: bool, restart: bool | None,
               confirmed: bool) -> None:
    """Attach the Ceph RBD volume VOLUME ("pool/volume") to the VM DOMAIN.

    The volume must exist in the cluster. The node running the VM fills in the Ceph monitors and
    its libvirt secret when it starts or hot-plugs the disk; --monitor and --secret-uuid are only
    needed to point a disk at another Ceph cluster.
    """
    if not _RBD_VOLUME_RE.match(volume):
        raise CLIError(f"The volume '{volume}' is not in the form pool/volume.")
    pool, name = volume.split("/", 1)
    get_state().api().get_one(f"/storage/ceph/volume/{pool}/{name}", what="Volume")  # must exist
    vm = _vm(domain)
    new_xml = _edit(domainxml.add_rbd_disk, str(vm.get("xml", "")), pool, name, list(monitors), secret_uuid,
                    user=ceph_user or "admin", target=disk_id, bus=bus)
    do_restart = _decide_restart(get_state(), vm, _live_restart(live, restart), confirmed)
    device = None
    if live and _running(vm) and not do_restart:
        device = ("POST", _edit(domainxml.device_xml, new_xml, source=volume))
    _apply(domain, vm, new_xml, do_restart, device=device)


@volume_group.command(name="remove", short_help="Remove a volume from a VM.")
@click.argument("domain")
@click.argument("volume")
@live_option
@restart_option
@yes_option
def volume_remove(domain: str, volume: str, live: bool, restart: bool | None, confirmed: bool) -> None:
    """Detach VOLUME ("pool/volume", a file path or a target such as sdb) from the VM DOMAIN."""
    vm = _vm(domain)
    old_xml = str(vm.get("xml", ""))
    new_xml = _edit(domainxml.remove_disk, old_xml, volume)
    do_restart = _decide_restart(get_state(), vm, _live_restart(live, restart), confirmed)
    device = None
    if live and _running(vm) and not do_restart:
        key = {"target": volume} if re.fullmatch(r"[a-z]+", volume) else {"source": volume}
        device = ("DELETE", _edit(domainxml.device_xml, old_xml, **key))
    _apply(domain, vm, new_xml, do_restart, device=device)
