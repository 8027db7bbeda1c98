"""`pvc storage volume snapshot`: snapshots of RBD volumes (add, rename, remove, roll back, list)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import RenderableType

from pvc.cli.commands.storage.common import BASE, arguments, list_items, say
from pvc.cli.output import json_formatters, table
from pvc.cli.state import confirm_option, format_option, get_state


def _snapshot_key(snapshot: dict[str, Any]) -> tuple[str, str, str]:
    return str(snapshot.get("pool", "")), str(snapshot.get("volume", "")), str(snapshot.get("snapshot", ""))


def format_snapshot_list(snapshots: Sequence[dict[str, Any]]) -> RenderableType:
    if not snapshots:
        return "No snapshots found."
    return table(["Name", "Volume", "Pool"],
                 ([s.get("snapshot", ""), s.get("volume", ""), s.get("pool", "")]
                  for s in sorted(snapshots, key=_snapshot_key)))


SNAPSHOT_LIST_FORMATS = {
    "pretty": format_snapshot_list,
    "raw": lambda snapshots: "\n".join(f"{s.get('pool')}/{s.get('volume')}@{s.get('snapshot')}"
                                       for s in sorted(snapshots, key=_snapshot_key)),
    **json_formatters(),
}


# -- volume snapshot ---------------------------------------------------------------------------------

@click.group(name="snapshot", short_help="Manage RBD volume snapshots in the PVC storage cluster.")
def snapshot() -> None:
    """Manage the Ceph RBD volume snapshots of the PVC cluster."""


def _snapshot_question(verb: str) -> Callable[[dict[str, Any]], str]:
    return lambda kw: f'{verb} snapshot "{kw["name"]}" of volume "{kw["pool"]}/{kw["volume"]}"'


@snapshot.command(name="add", short_help="Add new RBD volume snapshot.")
@arguments("pool", "volume", "name")
def snapshot_add(pool: str, volume: str, name: str) -> None:
    """Take a snapshot NAME of the RBD volume VOLUME in pool POOL.

    RBD snapshots are crash-consistent, not filesystem-aware: rolling back to a snapshot of a
    running VM's disk is like having pulled its power at that moment.
    """
    say("POST", f"{BASE}/snapshot", {"snapshot": name, "volume": volume, "pool": pool})


@snapshot.command(name="rename", short_help="Rename RBD volume snapshot.")
@arguments("pool", "volume", "name")
@click.argument("new_name")
def snapshot_rename(pool: str, volume: str, name: str, new_name: str) -> None:
    """Rename the snapshot NAME of RBD volume VOLUME in pool POOL to NEW_NAME."""
    say("PUT", f"{BASE}/snapshot/{pool}/{volume}/{name}", {"new_name": new_name})


@snapshot.command(name="remove", short_help="Remove RBD volume snapshot.")
@arguments("pool", "volume", "name")
@confirm_option(_snapshot_question("Remove"))
def snapshot_remove(pool: str, volume: str, name: str) -> None:
    """Remove the snapshot NAME of RBD volume VOLUME in pool POOL."""
    say("DELETE", f"{BASE}/snapshot/{pool}/{volume}/{name}")


@snapshot.command(name="rollback", short_help="Roll back RBD volume to snapshot.")
@arguments("pool", "volume", "name")
@confirm_option(_snapshot_question("Roll back to"))
def snapshot_rollback(pool: str, volume: str, name: str) -> None:
    """Roll the RBD volume VOLUME in pool POOL back to its snapshot NAME.

    Everything written since the snapshot is lost. Stop the VMs using the volume first: a rollback
    under active I/O corrupts it.
    """
    say("POST", f"{BASE}/snapshot/{pool}/{volume}/{name}/rollback")


@snapshot.command(name="list", short_help="List cluster RBD volume snapshots.")
@click.argument("limit", required=False, default=None)
@click.option("-p", "--pool", "pool", default=None, help="Only snapshots of volumes in this pool.")
@click.option("-o", "--volume", "volume", default=None, help="Only snapshots of this volume.")
@format_option(SNAPSHOT_LIST_FORMATS)
def snapshot_list(limit: str | None, pool: str | None, volume: str | None, formatter: Any) -> None:
    """List the RBD volume snapshots; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (pool/volume@snapshot), json, json-pretty.
    """
    state = get_state()
    state.emit(list_items(f"{BASE}/snapshot", {"limit": limit, "pool": pool, "volume": volume}), formatter)
