"""`pvc storage pool`: the Ceph RBD pools (add, remove, PG count) and their list."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import click
from rich.console import RenderableType

from pvc.cli.commands.storage.common import (
    BASE,
    NA,
    as_number,
    human_count,
    human_size,
    list_items,
    plain,
    say,
    stat,
)
from pvc.cli.output import json_formatters, table
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.core.vocabulary import POOL_TIERS

REPLCFG_RE = re.compile(r"^(copies=\d+,mincopies=\d+|mincopies=\d+,copies=\d+)$")


def _pool_sort_key(pool: dict[str, Any]) -> tuple[float, str]:
    pool_id = as_number(stat(pool.get("stats"), "id"))
    return (pool_id if pool_id is not None else float("inf"), str(pool.get("name", "")))


def pool_row(pool: dict[str, Any]) -> list[Any]:
    stats = pool.get("stats") if isinstance(pool.get("stats"), dict) else {}
    used = as_number(stat(stats, "used_percent"))
    stored = stat(stats, "stored_bytes")
    return [
        plain(stat(stats, "id")), pool.get("name", ""), pool.get("tier") or "default",
        plain(pool.get("pgs")), plain(pool.get("volume_count")),
        human_size(stored if stored is not None else stat(stats, "used_bytes")),
        human_size(stat(stats, "free_bytes")),
        f"{used * 100:.1f}%" if used is not None else NA,  # Ceph reports a ratio
        *(plain(stat(stats, key)) for key in ("num_objects", "num_object_clones", "num_object_copies",
                                              "num_objects_degraded", "num_objects_unfound")),
        human_count(stat(stats, "read_ops")), human_size(stat(stats, "read_bytes")),
        human_count(stat(stats, "write_ops")), human_size(stat(stats, "write_bytes")),
    ]


POOL_COLUMNS: list[str | tuple[str, str]] = [
    ("ID", "right"), "Name", "Tier", ("PGs", "right"), ("Volumes", "right"), ("Stored", "right"),
    ("Free", "right"), ("Used%", "right"), ("Objects", "right"), ("Clones", "right"), ("Copies", "right"),
    ("Degraded", "right"), ("Unfound", "right"), ("Read OPS", "right"), ("Read Data", "right"),
    ("Write OPS", "right"), ("Write Data", "right"),
]


def format_pool_list(pools: Sequence[dict[str, Any]]) -> RenderableType:
    if not pools:
        return "No pools found."
    return table(POOL_COLUMNS, (pool_row(p) for p in sorted(pools, key=_pool_sort_key)))


POOL_LIST_FORMATS = {
    "pretty": format_pool_list,
    "raw": lambda pools: "\n".join(str(p.get("name")) for p in sorted(pools, key=_pool_sort_key)),
    **json_formatters(),
}


def _replcfg_arg(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not REPLCFG_RE.match(value.replace(" ", "")):
        raise click.BadParameter(f"'{value}' is not of the form copies=N,mincopies=M")
    return value.replace(" ", "")


# -- pool --------------------------------------------------------------------------------------------

@click.group(name="pool", short_help="Manage RBD pools in the PVC storage cluster.")
def pool() -> None:
    """Manage the Ceph RBD pools of the PVC cluster."""


@pool.command(name="add", short_help="Add new RBD pool.")
@click.argument("name")
@click.argument("pgs", type=click.IntRange(min=1))
@click.option("-t", "--tier", "tier", type=click.Choice(POOL_TIERS), default="default", show_default=True,
              help="Device class of the OSDs the pool is limited to (default: all).")
@click.option("--replcfg", "replcfg", default="copies=3,mincopies=2", show_default=True,
              callback=_replcfg_arg,
              help="Replication: total copies, and the minimum of active copies to allow I/O.")
@click.option("--force", "force", is_flag=True, default=False,
              help="Create it even with more copies than hosts holding OSDs of the tier (hosts still to "
                   "be added; its data stays degraded until they exist).")
def pool_add(name: str, pgs: int, tier: str, replcfg: str, force: bool) -> None:
    """Add a new Ceph RBD pool NAME with PGS placement groups (a power of 2, e.g. 64, 128, 256).

    Refused, with the reason and the limit: PGS not a power of 2; mincopies above copies; more
    copies than hosts holding OSDs of the tier (Ceph could never place them all), unless --force.
    """
    params: dict[str, Any] = {"pool": name, "pgs": pgs, "replcfg": replcfg, "tier": tier}
    if force:
        params["force"] = "true"
    say("POST", f"{BASE}/pool", params)


@pool.command(name="remove", short_help="Remove RBD pool.")
@click.argument("name")
@confirm_option("Remove and destroy all data in RBD pool {name}")
def pool_remove(name: str) -> None:
    """Remove the Ceph RBD pool NAME and all volumes in it."""
    say("DELETE", f"{BASE}/pool/{name}", {"yes-i-really-mean-it": "yes"})


@pool.command(name="set-pgs", short_help="Set PGs of an RBD pool.")
@click.argument("name")
@click.argument("pgs", type=click.IntRange(min=1))
@confirm_option("Adjust PG count of pool {name} to {pgs}")
def pool_set_pgs(name: str, pgs: int) -> None:
    """Set the placement group count of pool NAME to PGS (a power of 2); data is remapped."""
    say("PUT", f"{BASE}/pool/{name}", {"pgs": pgs})


@pool.command(name="list", short_help="List cluster RBD pools.")
@click.argument("limit", required=False, default=None)
@format_option(POOL_LIST_FORMATS)
def pool_list(limit: str | None, formatter: Any) -> None:
    """List the Ceph RBD pools; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (names), json, json-pretty.
    """
    state = get_state()
    state.emit(list_items(f"{BASE}/pool", {"limit": limit}), formatter)


COMMANDS: tuple[click.Command, ...] = (pool,)
