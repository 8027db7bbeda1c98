"""`pvc node`: view nodes, hand over the primary coordinator role, flush and ready hypervisors."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import click
from rich.console import RenderableType
from rich.text import Text

from pvc.cli.client import decode
from pvc.cli.logs import show_log
from pvc.cli.output import (
    coordinator_style,
    daemon_style,
    domain_style,
    fence_events,
    fence_summary,
    health_style,
    health_text,
    human_mib,
    json_formatters,
    key_values,
    table,
)
from pvc.cli.state import format_option, get_state, wait_option
from pvc.cli.waiters import NODE_TRANSITIONS, wait_for_node
from pvc.core.vocabulary import COORDINATOR_STATES, DAEMON_STATES, DOMAIN_STATES

# -- formatting --------------------------------------------------------------------------------------

def _memory(node: dict[str, Any]) -> dict[str, Any]:
    memory = node.get("memory")
    return memory if isinstance(memory, dict) else {}


def _over(memory: dict[str, Any], key: str) -> str:
    """Allocated/provisioned memory beyond the node's total is worth a yellow flag."""
    try:
        return "yellow" if int(memory.get(key, 0)) > int(memory.get("total", 0)) else ""
    except (TypeError, ValueError):
        return ""


def _state(node: dict[str, Any], key: str) -> Text:
    value = str(node.get(key, ""))
    style = {"daemon_state": daemon_style, "coordinator_state": coordinator_style,
             "domain_state": domain_style}[key](value)
    return Text(value, style=style)


def _mem(memory: dict[str, Any], key: str) -> Text:
    return Text(human_mib(memory.get(key, 0)), style=_over(memory, key) if key in ("allocated", "provisioned")
                else "")


def node_row(node: dict[str, Any]) -> list[Any]:
    memory = _memory(node)
    health = node.get("health", "N/A")
    return [
        node.get("name", ""),
        node.get("pvc_version") or "N/A",
        Text(health_text(health), style=health_style(health)),
        _state(node, "daemon_state"),
        _state(node, "coordinator_state"),
        _state(node, "domain_state"),
        node.get("domains_count", 0),
        node.get("cpu_count", 0),
        node.get("load", 0),
        *(_mem(memory, key) for key in ("total", "used", "free", "allocated", "provisioned")),
    ]


NODE_COLUMNS: list[str | tuple[str, str]] = [
    "Name", "PVC Version", ("Health", "right"), "Daemon", "Coordinator", "Domain", ("VMs", "right"),
    ("CPUs", "right"), ("Load", "right"), ("Mem Total", "right"), ("Used", "right"), ("Free", "right"),
    ("Alloc", "right"), ("Prov", "right"),
]


def format_list_pretty(nodes: Sequence[dict[str, Any]]) -> RenderableType:
    if not nodes:
        return "No nodes found."
    return table(NODE_COLUMNS, (node_row(n) for n in sorted(nodes, key=lambda n: str(n.get("name")))))


def format_list_raw(nodes: Sequence[dict[str, Any]]) -> str:
    return "\n".join(sorted(str(n.get("name")) for n in nodes))


LIST_FORMATS = {"pretty": format_list_pretty, "raw": format_list_raw, **json_formatters()}


def format_info(node: dict[str, Any], long: bool = False) -> RenderableType:
    memory = _memory(node)
    vcpu: dict[str, Any] = node["vcpu"] if isinstance(node.get("vcpu"), dict) else {}
    health = node.get("health", "N/A")
    details = node.get("health_details") or []
    shown = [d for d in details if isinstance(d, dict) and (long or int(d.get("health_delta") or 0) > 0)]
    items: list[tuple[str, Any]] = [
        ("Name", node.get("name", "")),
        ("PVC Version", node.get("pvc_version") or "N/A"),
        ("Health", Text(health_text(health), style=health_style(health))),
    ]
    if shown:
        items.append(("Health Plugin Details", "\n".join(
            f"{d.get('name')}: {d.get('message')}" + (f" (-{d.get('health_delta')}%)" if d.get("health_delta")
                                                      else "") for d in shown)))
    items += [
        ("", ""),
        ("Daemon State", _state(node, "daemon_state")),
        ("Coordinator State", _state(node, "coordinator_state")),
        ("Domain State", _state(node, "domain_state")),
    ]
    if long:
        items += [
            ("", ""),
            ("Architecture", node.get("arch") or "N/A"),
            ("Operating System", node.get("os") or "N/A"),
            ("Kernel Version", node.get("kernel") or "N/A"),
        ]
    items += [
        ("", ""),
        ("Active VM Count", node.get("domains_count", 0)),
        ("Host CPUs", node.get("cpu_count", vcpu.get("total", 0))),
        ("vCPUs", vcpu.get("allocated", 0)),
        ("Load", node.get("load", 0)),
        ("Total RAM", _mem(memory, "total")),
        ("Used RAM", _mem(memory, "used")),
        ("Free RAM", _mem(memory, "free")),
        ("Allocated RAM", _mem(memory, "allocated")),
        ("Provisioned RAM", _mem(memory, "provisioned")),
    ]
    if long and node.get("running_domains"):
        items.append(("Running VMs", ", ".join(str(d) for d in node["running_domains"])))
    fencing = node.get("fencing")
    if isinstance(fencing, dict):
        items += [("", ""), ("Fencing", fence_summary(fencing)),
                  ("Fencing events", fence_events(fencing.get("events") or [], None if long else 15))]
    if node.get("self_fence_events"):
        items.append(("Self-fence", fence_events(node["self_fence_events"])))
    return key_values(items)



INFO_FORMATS = {"pretty": lambda n: format_info(n), "long": lambda n: format_info(n, long=True),
                **json_formatters()}


# -- commands ----------------------------------------------------------------------------------------

@click.group(name="node", short_help="Manage PVC nodes.")
def group() -> None:
    """Manage the state of the nodes of a PVC cluster."""


def local_node() -> str:
    """This host's short name: the NODE that node commands default to, as upstream's client."""
    return socket.gethostname().split(".")[0]


def node_argument(function: Any) -> Any:
    """An optional NODE argument defaulting to this host (upstream's DEFAULT_NODE_HOSTNAME)."""
    return click.argument("node", required=False, default=None, callback=_default_node)(function)


def _default_node(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    return value or local_node()


def _node(name: str) -> dict[str, Any]:
    return get_state().api().get_one(f"/node/{name}", what="Node")


def _set_state(node: str, action: str, wait: bool) -> None:
    """POST the coordinator/domain state, then (with --wait) follow the transition over GET /node."""
    state = get_state()
    api = state.api()
    field_name = NODE_TRANSITIONS[action][0]
    initial = str(_node(node).get(field_name)) if wait else ""
    endpoint = "coordinator-state" if field_name == "coordinator_state" else "domain-state"
    state.out(api.message("POST", f"/node/{node}/{endpoint}", params={"state": action}))
    if wait:
        wait_for_node(state, node, action, initial)


def _state_command(action: str, short_help: str, help_text: str, wait_help: str) -> None:
    """`pvc node <action> NODE [--wait]` for one of the NODE_TRANSITIONS."""
    @group.command(name=action, short_help=short_help, help=help_text + " NODE defaults to this host.")
    @node_argument
    @wait_option(False, wait_help)
    def command(node: str, wait: bool) -> None:
        _set_state(node, action, wait)


_state_command("primary", "Make a coordinator the primary.",
               "Make the coordinator NODE the primary coordinator of the cluster.",
               "Wait for the hand-over to finish.")
_state_command("secondary", "Make the primary coordinator secondary.",
               "Make the coordinator NODE a secondary; another coordinator takes over as primary.",
               "Wait for the hand-over to finish.")
_state_command("flush", "Move all VMs off a node.",
               "Take the hypervisor NODE out of service: migrate its VMs away and accept no new ones.",
               "Wait for the flush to finish.")
_state_command("ready", "Return a node to service.",
               "Return the hypervisor NODE to service and move its VMs back.",
               "Wait for the node to be ready.")


@group.command(name="is-primary", short_help="Exit 0 if a node is the primary coordinator.")
@node_argument
def is_primary(node: str) -> None:
    """Exit 0 if NODE (default: this host) is the primary coordinator, 1 otherwise."""
    state = get_state()
    response = state.api().call("GET", "/status/primary_node", ok=(200, 204))
    body = decode(response)
    current = body.get("primary_node") if isinstance(body, dict) else None
    if current == node:
        state.info(f"Node {node} is the primary coordinator.")
        return
    state.info(f"Node {node} is not the primary coordinator (primary: {current or 'none'}).")
    raise click.exceptions.Exit(1)


@group.command(name="log", short_help="Show a node's daemon log.")
@node_argument
@click.option("-l", "--lines", type=click.IntRange(min=0), default=100, show_default=True,
              help="Number of lines to show.")
@click.option("-f", "--follow", is_flag=True, default=False, help="Keep printing new lines (Ctrl-C stops).")
def log(node: str, lines: int, follow: bool) -> None:
    """Show the last lines of the node daemon's log of NODE (default: this host)."""
    show_log(get_state(), f"/node/{node}/log", lines, follow)


@group.command(name="info", short_help="Show details of a node.")
@node_argument
@format_option(INFO_FORMATS)
def info(node: str, formatter: Any) -> None:
    """Show the details of NODE (default: this host).

    \b
    Formats: pretty, long (adds system details and all health plugins), json, json-pretty.
    """
    state = get_state()
    state.emit(_node(node), formatter)


@group.command(name="list", short_help="List nodes.")
@click.argument("limit", required=False, default=None)
@click.option("-ds", "--daemon-state", type=click.Choice(DAEMON_STATES), default=None,
              help="Only nodes in this daemon state.")
@click.option("-cs", "--coordinator-state", type=click.Choice(COORDINATOR_STATES), default=None,
              help="Only nodes in this coordinator state.")
@click.option("-vs", "--domain-state", type=click.Choice(DOMAIN_STATES), default=None,
              help="Only nodes in this domain state.")
@format_option(LIST_FORMATS)
def list_(limit: str | None, daemon_state: str | None, coordinator_state: str | None,
          domain_state: str | None, formatter: Any) -> None:
    """List the nodes of the cluster, optionally only those whose name matches the regex LIMIT.

    The state filters are OR-combined, as in PVC. Formats: pretty, raw (names), json, json-pretty.
    """
    state = get_state()
    nodes = state.api().get_list("/node", params={"limit": limit, "daemon_state": daemon_state,
                                                  "coordinator_state": coordinator_state,
                                                  "domain_state": domain_state})
    state.emit(nodes, formatter)



