"""`pvc cluster`: initialization, status, maintenance, backup/restore, tasks and faults."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import RenderableType
from rich.text import Text

from pvc.cli.client import decode
from pvc.cli.errors import CLIError
from pvc.cli.output import (
    TASK_STYLES,
    daemon_style,
    fence_events,
    fence_summary,
    health_style,
    health_text,
    human_mib,
    json_formatters,
    key_values,
    table,
)
from pvc.cli.restore_report import render_import
from pvc.cli.state import confirm_option, format_option, get_state, wait_option
from pvc.cli.waiters import finish_task, run_task, wait_for_task
from pvc.core.units import format_bytes

FAULT_SORT_KEYS = ("first_reported", "last_reported", "acknowledged_at", "status", "health_delta", "message")
TASK_TYPES = (("active", "active"), ("reserved", "pending"), ("scheduled", "scheduled"))


# -- status ------------------------------------------------------------------------------------------

def _health_line(status: dict[str, Any]) -> Text:
    health = (status.get("cluster_health") or {}).get("health", "N/A")
    line = Text(health_text(health), style=health_style(health))
    if str(status.get("maintenance")).lower() == "true":
        line.append(" (cluster in maintenance)", style="blue")
    return line


def _fault_lines(status: dict[str, Any]) -> Text | None:
    messages = (status.get("cluster_health") or {}).get("messages") or []
    if not messages:
        return None
    text = Text()
    for index, message in enumerate(messages):
        if index:
            text.append("\n")
        if isinstance(message, dict):
            delta = message.get("health_delta", 0)
            text.append(f"(-{delta}%) ", style=health_style(100 - int(delta or 0)))
            text.append(str(message.get("text", "")))
        else:
            text.append(str(message))
    return text


def _node_health_lines(status: dict[str, Any]) -> Text | None:
    """Only nodes that are not fully healthy; a healthy cluster stays one line."""
    text = Text()
    for name, info in sorted((status.get("node_health") or {}).items()):
        info = info if isinstance(info, dict) else {}
        health = info.get("health", "N/A")
        if health == 100 and not info.get("messages"):
            continue
        if text:
            text.append("\n")
        text.append(f"{name}: ")
        text.append(health_text(health), style=health_style(health))
        for message in info.get("messages") or []:
            text.append(f"\n  {message}")
    return text or None


def _state_counts(counts: Any, colour_of: Any = None) -> Text:
    if not isinstance(counts, dict):
        return Text(str(counts))
    text = Text(f"{counts.get('total', 0)} total")
    for key, value in sorted(counts.items()):
        if key == "total":
            continue
        text.append(", ")
        text.append(f"{value} {key}", style=colour_of(key) if colour_of else "")
    return text


def _node_state_style(key: str) -> str:
    daemon, _, domain = key.partition(",")
    if daemon != "run":
        return daemon_style(daemon)
    return "green" if domain == "ready" else "blue"


def _fencing_lines(status: dict[str, Any], recent_s: float = 86400) -> Text | None:
    """Chains in progress, and those that ended in the last day, with their last events."""
    shown = [f for f in status.get("fencing") or [] if isinstance(f, dict) and (
        f.get("phase") != "done" or time.time() - float(f.get("started") or 0) < recent_s)]
    if not shown:
        return None
    text = Text()
    for index, chain in enumerate(shown):
        if index:
            text.append("\n")
        text.append(f"{chain.get('node')}: ", style="bold")
        text.append_text(fence_summary(chain))
        text.append("\n" + fence_events(chain.get("events") or [], 6))
    return text


def _status_head(status: dict[str, Any]) -> list[tuple[str, Any]]:
    """What every status view starts with: the name, the health, the faults and node health (if any)."""
    items: list[tuple[str, Any]] = [("Cluster", status.get("cluster_name", "")),
                                    ("Health", _health_line(status))]
    faults = _fault_lines(status)
    if faults is not None:
        items.append(("Faults", faults))
    nodes = _node_health_lines(status)
    if nodes is not None:
        items.append(("Node health", nodes))
    return items


def format_status_short(status: dict[str, Any]) -> RenderableType:
    return key_values(_status_head(status))


def format_status_pretty(status: dict[str, Any]) -> RenderableType:
    items = _status_head(status)
    fencing = _fencing_lines(status)
    if fencing is not None:
        items.append(("Fencing", fencing))
    primary = status.get("primary_node")
    items += [
        ("", ""),
        ("Primary node", Text(str(primary or "none"), style="green" if primary else "red")),
        ("PVC version", status.get("pvc_version") or "N/A"),
        ("Upstream IP", status.get("upstream_ip") or "N/A"),
        ("", ""),
        ("Nodes", _state_counts(status.get("nodes", {}), _node_state_style)),
        ("VMs", _state_counts(status.get("vms", {}))),
        ("Networks", status.get("networks", 0)),
        ("OSDs", _state_counts(status.get("osds", {}))),
        ("Pools", status.get("pools", 0)),
        ("Volumes", status.get("volumes", 0)),
        ("Snapshots", status.get("snapshots", 0)),
    ]
    resources = status.get("resources") or {}
    cpu, memory, disk = (resources.get(k) or {} for k in ("cpu", "memory", "disk"))
    if resources:
        items += [
            ("", ""),
            ("CPU", f"{cpu.get('total', 0)} host CPUs, load {cpu.get('load', 0)} "
                    f"({cpu.get('utilization', 0)}%), {cpu.get('allocated', 0)} vCPUs allocated"),
            ("Memory", f"{human_mib(memory.get('used', 0))} used of {human_mib(memory.get('total', 0))} "
                       f"({memory.get('utilization', 0)}%), "
                       f"{human_mib(memory.get('allocated', 0))} allocated, "
                       f"{human_mib(memory.get('provisioned', 0))} provisioned"),
            # KiB on the wire, as upstream (the sum of the OSDs' kb figures)
            ("Disk", f"{_kib(disk.get('used', 0))} used of {_kib(disk.get('total', 0))} "
                     f"({disk.get('utilization', 0)}%)"),
        ]
    return key_values(items)


def _kib(value: Any) -> str:
    try:
        return format_bytes(int(value) * 1024)
    except (TypeError, ValueError):
        return str(value)


STATUS_FORMATS = {"pretty": format_status_pretty, "short": format_status_short, **json_formatters()}


# -- tasks -------------------------------------------------------------------------------------------

def flatten_tasks(tasks: Any) -> list[dict[str, Any]]:
    """`GET /tasks` ({active, reserved, scheduled} keyed by worker) as one list of rows."""
    rows: list[dict[str, Any]] = []
    if not isinstance(tasks, dict):
        return rows
    for key, label in TASK_TYPES:
        for worker, items in sorted((tasks.get(key) or {}).items()):
            for item in items or []:
                rows.append({
                    "type": label, "worker": worker, "id": item.get("id"), "name": item.get("name"),
                    "args": item.get("args", []), "kwargs": item.get("kwargs", {}),
                })
    return rows


def _arguments(row: dict[str, Any]) -> str:
    parts = [json.dumps(a) if not isinstance(a, str) else a for a in row.get("args") or []]
    parts += [f"{k}={v}" for k, v in (row.get("kwargs") or {}).items()]
    return ", ".join(parts)


def format_task_list_pretty(rows: Sequence[dict[str, Any]]) -> RenderableType:
    if not rows:
        return "No active, pending or scheduled tasks."
    styles = {"active": "cyan", "pending": "blue", "scheduled": "magenta"}
    return table(["Type", "Worker", "ID", "Name", "Arguments"],
                 ([Text(r["type"], style=styles.get(r["type"], "")), r["worker"], r["id"], r["name"],
                   _arguments(r)] for r in rows))


def format_task_pretty(status: dict[str, Any]) -> RenderableType:
    state = str(status.get("state", "UNKNOWN"))
    items: list[tuple[str, Any]] = [
        ("Task", status.get("id", "")),
        ("State", Text(state, style=TASK_STYLES.get(state, ""))),
        ("Progress", f"{status.get('current', 0)}/{status.get('total', 1)}"),
        ("Status", status.get("status", "")),
    ]
    if not status.get("id"):
        items.pop(0)
    if status.get("result") is not None:
        items.append(("Result", json.dumps(status["result"])))
    return key_values(items)


def format_tasks(data: Any) -> RenderableType:
    return format_task_list_pretty(data) if isinstance(data, list) else format_task_pretty(data)


def format_tasks_raw(data: Any) -> str:
    """Upstream's `raw`: the task IDs of a list, or the state of one task."""
    if isinstance(data, list):
        return "\n".join(str(row.get("id")) for row in data)
    return str(data.get("state", "")) if isinstance(data, dict) else str(data)


TASK_FORMATS = {"pretty": format_tasks, "raw": format_tasks_raw, **json_formatters()}


# -- faults ------------------------------------------------------------------------------------------

def _fault_row(fault: dict[str, Any], long: bool) -> list[Any]:
    delta = fault.get("health_delta", 0)
    status = str(fault.get("status", ""))
    status_style = "green" if status == "ack" else health_style(100 - int(delta or 0))
    if fault.get("active") is False:            # ours: its condition ended (listed with --all)
        status, status_style = f"{status},resolved", "green"
    row: list[Any] = [fault.get("id", ""), Text(status, style=status_style),
                      Text(f"-{delta}%", style=status_style)]
    if long:
        row += [fault.get("first_reported", ""), fault.get("last_reported", ""),
                fault.get("acknowledged_at") or "N/A", fault.get("resolved_at") or "N/A"]
    else:
        row.append(fault.get("last_reported", ""))
    row.append(fault.get("message", ""))
    return row


def format_faults_short(faults: Sequence[dict[str, Any]]) -> RenderableType:
    if not faults:
        return "No faults found."
    return table(["ID", "Status", ("Delta", "right"), "Last Reported", "Message"],
                 (_fault_row(f, long=False) for f in faults))


def format_faults_long(faults: Sequence[dict[str, Any]]) -> RenderableType:
    if not faults:
        return "No faults found."
    return table(["ID", "Status", ("Delta", "right"), "First Reported", "Last Reported", "Acknowledged",
                  "Resolved", "Message"], (_fault_row(f, long=True) for f in faults))


FAULT_FORMATS = {"short": format_faults_short, "long": format_faults_long, **json_formatters()}


# -- backup ------------------------------------------------------------------------------------------

def decode_backup(body: Any) -> dict[str, Any]:
    """PVC's `/backup` body is JSON encoded twice (a JSON string of JSON); accept either."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise CLIError(f"The backup from the API is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CLIError("The backup from the API is not a JSON object.")
    return body


def read_backup_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CLIError(f'Cannot read backup file "{path}": {exc.strerror}') from None
    try:
        data = json.loads(text)
        if isinstance(data, str):  # a raw, still double-encoded API body
            data = json.loads(data)
    except ValueError as exc:
        raise CLIError(f'Backup file "{path}" is not valid JSON: {exc}') from None
    if not isinstance(data, dict):
        raise CLIError(f'Backup file "{path}" does not contain a cluster backup (a JSON object).')
    return data


def write_private(path: Path, text: str) -> None:
    """Backups contain every secret of the cluster: create them readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


# -- commands ----------------------------------------------------------------------------------------

@click.group(name="cluster", short_help="Manage the PVC cluster.")
def group() -> None:
    """Manage and view the status of a PVC cluster."""


def _init_question(kwargs: dict[str, Any]) -> str:
    return ("Initialize the cluster and DELETE ALL EXISTING DATA" if kwargs.get("overwrite")
            else "Initialize the cluster")


@group.command(name="init", short_help="Initialize a new cluster.")
@click.option("-o", "--overwrite", is_flag=True, default=False,
              help="Remove and overwrite any existing data (DANGEROUS).")
@confirm_option(_init_question)
def init(overwrite: bool) -> None:
    """Initialize a new PVC cluster; with --overwrite, wipe all existing cluster data first."""
    state = get_state()
    state.out(state.api().message("POST", "/initialize",
                                  params={"overwrite": overwrite, "yes-i-really-mean-it": "yes"}))


@group.command(name="status", short_help="Show cluster status.")
@format_option(STATUS_FORMATS)
def status(formatter: Any) -> None:
    """Show the health and status of the cluster.

    \b
    Formats: pretty (everything), short (health only), json, json-pretty.
    """
    state = get_state()
    data = state.api().get_json("/status")
    if not isinstance(data, dict):
        raise CLIError("Unexpected answer from the API for /status")
    state.emit(data, formatter)


@group.group(name="maintenance", short_help="Manage cluster maintenance mode.")
def maintenance() -> None:
    """Maintenance mode suppresses fault generation and alerting while the cluster is worked on."""


@maintenance.command(name="on", short_help="Enable maintenance mode.")
def maintenance_on() -> None:
    """Put the cluster in maintenance mode."""
    state = get_state()
    state.out(state.api().message("POST", "/status", params={"state": "true"}))


@maintenance.command(name="off", short_help="Disable maintenance mode.")
def maintenance_off() -> None:
    """Take the cluster out of maintenance mode."""
    state = get_state()
    state.out(state.api().message("POST", "/status", params={"state": "false"}))


@group.command(name="backup", short_help="Create a JSON backup of the cluster.")
@click.option("-f", "--file", "filename", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the backup to this file (mode 600) instead of stdout.")
def backup(filename: Path | None) -> None:
    """Create a JSON backup of the whole cluster state database."""
    state = get_state()
    # The manifest (schema version, cluster, time, checksum) lets `restore` verify the file.
    data = decode_backup(state.api().get_json("/backup", params={"manifest": "true"}))
    text = json.dumps(data)
    if filename is None:
        state.out(text)
        return
    try:
        write_private(filename, text)
    except OSError as exc:
        raise CLIError(f'Cannot write backup file "{filename}": {exc.strerror}') from None
    state.out(f'Backup written to file "{filename}"')


@group.command(name="restore", short_help="Restore a JSON backup to the cluster.")
@click.option("-f", "--file", "--filename", "filename", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Read the backup from this file.")
@click.option("--merge", is_flag=True, default=False,
              help="Only write the backup's data, keeping what it lacks (default: replace, so the cluster "
                   "equals the backup).")
@click.option("--force", is_flag=True, default=False,
              help="Restore even while node daemons run (refused otherwise).")
@click.option("--allow-other-cluster", is_flag=True, default=False,
              help="Restore a backup whose manifest names another cluster (refused otherwise).")
@click.option("--from-upstream", is_flag=True, default=False,
              help="FILE is upstream PVC 1.0.x's backup (`pvc cluster backup -f`, schema 15): import its "
                   "VMs, networks, storage documents and faults into this initialized cluster.")
@click.option("--dry-run", is_flag=True, default=False,
              help="With --from-upstream: show what maps, what does not and what is dropped, and why; write "
                   "nothing.")
@click.option("--partial", is_flag=True, default=False,
              help="With --from-upstream: import what maps even if some items do not (default: nothing is "
                   "written unless everything maps).")
@click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
              help="Pre-confirm this operation (no prompt).")
def restore(filename: Path, merge: bool, force: bool, allow_other_cluster: bool, from_upstream: bool,
            dry_run: bool, partial: bool, confirmed: bool) -> None:
    """Restore a JSON backup (from "pvc cluster backup") over the cluster state database.

    By default the cluster equals the backup afterwards: data the backup lacks is removed (secrets,
    sessions, locks and live-session znodes are kept). The backup's manifest (checksum, schema
    version, cluster name) is checked first; a backup without one (older, or written by upstream's
    client) is restored unverified. Refused while node daemons run unless --force: stop pvcnoded on
    every node first.

    With --from-upstream, FILE is an upstream PVC 1.0.x backup: what maps is imported, what is
    dropped is listed with the reason (--dry-run to see it first).
    """
    state = get_state()
    if (dry_run or partial) and not from_upstream:
        raise CLIError("--dry-run and --partial apply to --from-upstream imports only.")
    if merge and from_upstream:
        raise CLIError("--merge applies to restoring this PVC's own backups, not to --from-upstream.")
    data = read_backup_file(filename)
    if not dry_run and not confirmed and not state.unsafe:
        question = ("Import the upstream backup into this cluster" if from_upstream
                    else "Restore backup and overwrite all cluster data")
        try:
            answer = click.confirm(question, prompt_suffix="? ", default=False, err=True)
        except click.Abort:
            answer = False
        if not answer:
            raise CLIError("Aborted.")
    params: dict[str, Any] = {"yes-i-really-mean-it": "yes", "force": force}
    if from_upstream:
        params.update(from_upstream=True, dry_run=dry_run, partial=partial)
        response = state.api().call("POST", "/restore", params=params,
                                    data={"cluster_data": json.dumps(data)}, ok=(200, 400))
        report = decode(response)
        if not isinstance(report, dict) or (response.status_code == 400 and "mapped" not in report):
            raise CLIError(str((report or {}).get("message") if isinstance(report, dict) else report)
                           or "Unexpected answer from the API for an upstream import.")
        if response.status_code == 400:
            raise CLIError(render_import(report))
        state.out(Text(render_import(report)))
        return
    if "manifest" not in data:
        state.info(f'Note: "{filename}" has no manifest (an older backup, or one written by upstream\'s '
                  f"client): its content cannot be verified before it is restored.")
    params.update(mode="merge" if merge else "replace", allow_other_cluster=allow_other_cluster)
    state.out(state.api().message("POST", "/restore", params=params,
                                  data={"cluster_data": json.dumps(data)}))


class _TaskCommand(click.Command):
    """`task [ID]` and `task cancel ID` share one command; usage says so."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[OPTIONS]", "[ID | cancel ID]"]


@group.command(name="task", cls=_TaskCommand, short_help="Show, follow or cancel worker tasks.")
@click.argument("task_id", required=False, default=None, metavar="[ID]")
@click.argument("cancel_id", required=False, default=None, metavar="[ID]")
@wait_option(False, "Follow the task's progress until it finishes.")
@format_option(TASK_FORMATS)
def task(task_id: str | None, cancel_id: str | None, wait: bool, formatter: Any) -> None:
    """Show all active, pending and scheduled tasks, or the status of task ID.

    \b
    pvc cluster task            list the tasks of every worker
    pvc cluster task ID         show one task (with --wait, follow it to the end)
    pvc cluster task cancel ID  cancel a task (a running task stops at its next step)
    """
    state = get_state()
    api = state.api()
    if task_id == "cancel" and cancel_id:
        state.out(api.message("DELETE", f"/tasks/{cancel_id}"))
        return
    if cancel_id:
        raise click.UsageError(f"unexpected extra argument {cancel_id!r}")
    if task_id is None:
        state.emit(flatten_tasks(api.get_json("/tasks")), formatter)
        return
    if wait:
        finish_task(state, wait_for_task(state, task_id))
        return
    data = api.get_json(f"/tasks/{task_id}")
    if not isinstance(data, dict):
        raise CLIError(f"Unexpected answer from the API for task {task_id}")
    # the pretty view names the task; JSON stays exactly what the API said
    state.emit({"id": task_id, **data} if formatter is format_tasks else data, formatter)


@group.command(name="selftest", short_help="Run the cluster self-test task.")
@wait_option(True)
def selftest(wait: bool) -> None:
    """Run a self-test task on the cluster's workers (proves the task pipeline end to end)."""
    state = get_state()
    run_task(state, decode(state.api().call("POST", "/tasks/selftest", ok=(200, 202))), wait)


# -- faults ------------------------------------------------------------------------------------------

@group.group(name="fault", short_help="Manage cluster faults.")
def fault() -> None:
    """View and acknowledge or delete cluster faults (they lower cluster health until acknowledged)."""


@fault.command(name="list", short_help="List cluster faults.")
@click.argument("limit", required=False, default=None)
@click.option("--sort-key", type=click.Choice(FAULT_SORT_KEYS), default="last_reported", show_default=True,
              help="Sort faults by this key.")
@click.option("--all", "all_faults", is_flag=True, default=False,
              help="Also list resolved faults (their condition ended; kept for a while).")
@format_option(FAULT_FORMATS, default="short")
def fault_list(limit: str | None, sort_key: str, all_faults: bool, formatter: Any) -> None:
    """List the cluster's active faults, or only the fault with ID LIMIT (as upstream).

    A fault whose condition ended is resolved: it no longer lowers cluster health and is listed
    only with --all.

    \b
    Formats: short (default), long (all timestamps), json, json-pretty.
    """
    state = get_state()
    if limit is not None:
        faults = state.api().get_json(f"/faults/{quote(limit, safe='')}")
        state.emit(faults if isinstance(faults, list) else [faults], formatter)
        return
    params = {"sort_key": sort_key, **({"all": "true"} if all_faults else {})}
    state.emit(state.api().get_list("/faults", params=params), formatter)


def _fault_commands(name: str, method: str, verb: str, what_then: str) -> None:
    """`fault <name> ID...` and `fault <name>-all`: `method` (PUT acknowledges, DELETE deletes) on
    each fault named, or on /faults for all of them."""
    def call(paths: Sequence[str]) -> None:
        state = get_state()
        for path in paths:
            state.out(state.api().message(method, path))

    @fault.command(name=name, short_help=f"{verb} faults.", help=f"{verb} the faults ID... ({what_then}).")
    @click.argument("fault_ids", nargs=-1, required=True, metavar="ID...")
    def some(fault_ids: tuple[str, ...]) -> None:
        call([f"/faults/{fault_id}" for fault_id in fault_ids])

    @fault.command(name=f"{name}-all", short_help=f"{verb} all faults.", help=f"{verb} every current fault.")
    @confirm_option(f"{verb} all current cluster faults")
    def all_() -> None:
        call(["/faults"])


_fault_commands("ack", "PUT", "Acknowledge", "their health delta no longer counts")
_fault_commands("delete", "DELETE", "Delete", "they come back if the condition persists")

