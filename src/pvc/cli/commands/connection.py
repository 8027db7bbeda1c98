"""`pvc connection`: the local database of clusters this client can talk to."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import click
from rich.console import RenderableType
from rich.text import Text

from pvc.cli import connections as store
from pvc.cli.client import ApiClient
from pvc.cli.errors import CLIError
from pvc.cli.output import health_style, health_text, json_formatters, table
from pvc.cli.state import format_option, get_state

DETAIL_TIMEOUT = 2.05


def format_list_pretty(items: Sequence[dict[str, Any]]) -> RenderableType:
    if not items:
        return 'No connections; add one with "pvc connection add".'
    return table(
        ["Name", "Description", "Address", ("Port", "right"), "Scheme", "API Key"],
        ([c["name"], c["description"], c["address"], c["port"], c["scheme"], c["api_key"] or "N/A"]
         for c in items),
    )


def format_list_raw(items: Sequence[dict[str, Any]]) -> str:
    return "\n".join(c["name"] for c in items)


def format_list_prometheus(items: Sequence[dict[str, Any]]) -> str:
    """Prometheus file_sd targets, one per connection, as upstream's `-f json-prometheus` writes
    them (scrape each cluster's API; the labels name the cluster)."""
    return json.dumps([{
        "targets": [f"{c['address']}:{c['port']}"],
        "labels": {"job": "pvc", "pvc_cluster_name": f"{c['name']}: {c['description']}",
                   "pvc_cluster_id": c["name"]},
    } for c in items], indent=2)


LIST_FORMATS = {"pretty": format_list_pretty, "raw": format_list_raw, **json_formatters(),
                "json-prometheus": format_list_prometheus}


def format_detail_pretty(items: Sequence[dict[str, Any]]) -> RenderableType:
    if not items:
        return 'No connections; add one with "pvc connection add".'
    rows = []
    for c in items:
        health = c["health"]
        rows.append([
            c["name"], c["description"], Text(health_text(health), style=health_style(health)),
            c["maintenance"], c["primary_node"], c["pvc_version"], c["nodes"], c["vms"], c["networks"],
            c["osds"], c["pools"], c["volumes"], c["snapshots"],
        ])
    return table(["Name", "Description", "Health", "Maintenance", "Primary", "Version",
                  ("Nodes", "right"), ("VMs", "right"), ("Networks", "right"), ("OSDs", "right"),
                  ("Pools", "right"), ("Volumes", "right"), ("Snapshots", "right")], rows)


DETAIL_FORMATS = {"pretty": format_detail_pretty, **json_formatters()}


def detail_item(conn: store.Connection, status: dict[str, Any] | None) -> dict[str, Any]:
    """One `connection detail` row from a `/status` answer (None when the cluster did not answer)."""
    status = status or {}

    def get(*path: str) -> Any:
        value: Any = status
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return "N/A" if value is None else value

    return {
        "name": conn.name, "description": conn.description,
        "health": get("cluster_health", "health"), "maintenance": get("maintenance"),
        "primary_node": get("primary_node"), "pvc_version": get("pvc_version"),
        "nodes": get("nodes", "total"), "vms": get("vms", "total"), "networks": get("networks"),
        "osds": get("osds", "total"), "pools": get("pools"), "volumes": get("volumes"),
        "snapshots": get("snapshots"),
    }


@click.group(name="connection", short_help="Manage PVC cluster connections.")
def group() -> None:
    """Manage the PVC clusters this client knows (stored in $PVC_CLIENT_DIR/pvc.json)."""


@group.command(name="add", short_help="Add or update a connection.")
@click.argument("name")
@click.option("-d", "--description", default=None, help="Description (default: the name).")
@click.option("-a", "--address", default="127.0.0.1", show_default=True,
              help="IP address or hostname of the cluster API.")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=store.DEFAULT_PORT, show_default=True,
              help="Port of the cluster API.")
@click.option("-k", "--api-key", default=None, help="API key (X-Api-Key) of the cluster.")
@click.option("--api-key-file", default=None, metavar="PATH", type=click.File("r"),
              help="Read the API key from this file ('-': standard input), so it is never on a "
                   "command line (e.g. the cluster's /etc/pvc/api-token).")
@click.option("-s/-S", "--ssl/--no-ssl", "ssl", default=None,
              help="Use HTTPS (verified unless PVC_CLIENT_VERIFY_SSL=false)  [default: --no-ssl, "
                   "--ssl with --ca-file]")
@click.option("--ca-file", default=None, metavar="PATH",
              help="CA certificate the API's certificate must be signed by (the cluster's "
                   "/etc/pvc/ssl/ca.crt); implies --ssl. Default: the system's CA store.")
def add(name: str, description: str | None, address: str, port: int, api_key: str | None,
        api_key_file: TextIO | None, ssl: bool | None, ca_file: str | None) -> None:
    """Add the connection NAME to the client database (replacing one of the same name)."""
    if ssl is False and ca_file:
        raise store.ConnectionStoreError("--ca-file is for HTTPS connections; it cannot go with --no-ssl")
    if api_key_file is not None:
        if api_key is not None:
            raise store.ConnectionStoreError("give the API key with -k/--api-key or --api-key-file, not both")
        lines = [line.strip() for line in api_key_file.read().splitlines()
                 if line.strip() and not line.startswith("#")]
        if not lines:
            raise store.ConnectionStoreError(f"--api-key-file {api_key_file.name}: holds no API key")
        api_key = lines[0]
    state = get_state()
    data = state.load_store()
    conn = store.add_connection(data, name, description, address, port, api_key, bool(ssl), ca_file)
    store.save_store(state.store_path, data)
    state.out(f'Added connection "{conn.name}" ({conn.scheme}://{conn.host}:{conn.port}) to client database')


@group.command(name="remove", short_help="Remove a connection.")
@click.argument("name")
def remove(name: str) -> None:
    """Remove the connection NAME from the client database."""
    state = get_state()
    data = state.load_store()
    store.remove_connection(data, name)
    store.save_store(state.store_path, data)
    state.out(f'Removed connection "{name}" from client database')


@group.command(name="list", short_help="List connections.")
@click.option("-k", "--show-keys", is_flag=True, default=False, help="Show API keys instead of masking them.")
@format_option(LIST_FORMATS)
def list_(show_keys: bool, formatter: Any) -> None:
    """List the connections of the client database (and the implicit "local" one).

    \b
    Formats: pretty (table), raw (names), json, json-pretty, json-prometheus (Prometheus file
    service discovery targets: each cluster's API address, job "pvc").
    """
    state = get_state()
    conns = store.all_connections(state.load_store(), state.env)
    state.emit([c.public(show_keys) for c in sorted(conns.values(), key=lambda c: c.name)], formatter)


def fetch_status(conn: store.Connection, transport: Any = None) -> dict[str, Any] | None:
    """`/status` of one cluster, or None if it cannot be had quickly (detail must not hang)."""
    try:
        with ApiClient(conn, transport=transport, retries=0, connect_timeout=DETAIL_TIMEOUT,
                       read_timeout=10.0) as api:
            body = api.get_json("/status")
    except CLIError:
        return None
    return body if isinstance(body, dict) else None


@group.command(name="detail", short_help="Show the status of every connection.")
@format_option(DETAIL_FORMATS)
def detail(formatter: Any) -> None:
    """Query the status of every cluster in the client database and show them side by side."""
    state = get_state()
    conns = sorted(store.all_connections(state.load_store(), state.env).values(), key=lambda c: c.name)
    state.info("Gathering information from all clusters... ", nl=False)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(conns)))) as pool:
        statuses = list(pool.map(lambda c: fetch_status(c, state.transport), conns))
    state.info("done.")
    state.info("")
    state.emit([detail_item(c, s) for c, s in zip(conns, statuses, strict=True)], formatter)

