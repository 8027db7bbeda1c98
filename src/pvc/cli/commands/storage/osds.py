"""`pvc storage osd`: the Ceph OSDs (add, replace, refresh, remove, in/out, flags) and their list."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import RenderableType
from rich.text import Text

from pvc.cli.commands.storage.common import (
    BASE,
    NA,
    as_number,
    human_count,
    human_size,
    list_items,
    plain,
    say,
    size_arg,
    start_task,
    stat,
    wait_flag,
)
from pvc.cli.output import json_formatters, table
from pvc.cli.state import confirm_option, format_option, get_state

DB_RATIO = click.FloatRange(min=0, max=1, min_open=True, max_open=True)  # of the OSD size, e.g. 0.05


def _flag(value: Any) -> Text:
    """OSD up/in: 1/0 (or booleans) as Yes/No in green/red."""
    if value is None:
        return Text(NA)
    yes = str(value).lower() in ("1", "true", "yes", "up", "in")
    return Text("Yes" if yes else "No", style="green" if yes else "red")


def _osd_sort_key(osd: dict[str, Any]) -> tuple[int, str]:
    osd_id = str(osd.get("id", ""))
    return (int(osd_id), "") if osd_id.isdigit() else (sys.maxsize, osd_id)


def osd_row(osd: dict[str, Any], with_db: bool) -> list[Any]:
    stats = osd.get("stats") if isinstance(osd.get("stats"), dict) else {}
    kb = as_number(stat(stats, "kb"))
    device = str(osd.get("device") or NA) + (" [s]" if osd.get("is_split") else "")
    utilization = as_number(stat(stats, "utilization"))
    row: list[Any] = [osd.get("id", ""), osd.get("node") or stat(stats, "node") or NA, device]
    if with_db:
        row.append(osd.get("db_device") or NA)
    row += [
        _flag(stat(stats, "up")), _flag(stat(stats, "in")),
        human_size(kb * 1024 if kb is not None else None),
        plain(stat(stats, "pgs")), plain(stat(stats, "weight")), plain(stat(stats, "reweight")),
        human_size(stat(stats, "used")), human_size(stat(stats, "avail")),
        f"{utilization:.1f}%" if utilization is not None else NA,
        human_count(stat(stats, "rd_ops")), human_size(stat(stats, "rd_data")),
        human_count(stat(stats, "wr_ops")), human_size(stat(stats, "wr_data")),
    ]
    return row


def format_osd_list(osds: Sequence[dict[str, Any]]) -> RenderableType:
    if not osds:
        return "No OSDs found."
    with_db = any(o.get("db_device") for o in osds)
    columns: list[str | tuple[str, str]] = ["ID", "Node", "Device", *(["DB Device"] if with_db else []),
                                            "Up", "In", ("Size", "right"), ("PGs", "right"),
                                            ("Weight", "right"), ("Reweight", "right"), ("Used", "right"),
                                            ("Free", "right"), ("Util%", "right"), ("Read OPS", "right"),
                                            ("Read Data", "right"), ("Write OPS", "right"),
                                            ("Write Data", "right")]
    return table(columns, (osd_row(o, with_db) for o in sorted(osds, key=_osd_sort_key)))


OSD_LIST_FORMATS = {
    "pretty": format_osd_list,
    "raw": lambda osds: "\n".join(f"{o.get('id')}:{o.get('node')}:{o.get('device')}"
                                  for o in sorted(osds, key=_osd_sort_key)),
    **json_formatters(),
}


# -- osd ---------------------------------------------------------------------------------------------

@click.group(name="osd", short_help="Manage OSDs in the PVC storage cluster.")
def osd() -> None:
    """Manage the Ceph OSDs of the PVC cluster."""


@osd.command(name="create-db-vg", short_help="Create new OSD database volume group.")
@click.argument("node")
@click.argument("device")
@wait_flag
@confirm_option("Destroy all data on and create a new OSD database volume group on node {node} "
                "device {device}")
def osd_create_db_vg(node: str, device: str, wait: bool) -> None:
    """Create the OSD database volume group "osd-db" on node NODE with block device DEVICE.

    DEVICE is a block device path (e.g. /dev/nvme0n1) or a "detect:<NAME>:<HUMAN-SIZE>:<ID>" string.
    OSDs added later with --ext-db-ratio/--ext-db-size put their RocksDB/WAL on a logical volume
    there; it should be a very fast, high-endurance device, as all of those OSDs depend on it.
    """
    start_task("POST", f"{BASE}/osddb", {"node": node, "device": device}, wait)


def _ext_db(ratio: float | None, size: str | None) -> None:
    if ratio is not None and size is not None:
        raise click.UsageError("Give either -r/--ext-db-ratio or -s/--ext-db-size, not both.")


@osd.command(name="add", short_help="Add new OSD.")
@click.argument("node")
@click.argument("device")
@click.option("-w", "--weight", "weight", type=float, default=1.0, show_default=True,
              help="Weight of the OSD(s) within the CRUSH map.")
@click.option("-r", "--ext-db-ratio", "ext_db_ratio", type=DB_RATIO,
              default=None, help="Put the OSD database on an external LV of this ratio of the OSD size "
                                 "(e.g. 0.05).")
@click.option("-s", "--ext-db-size", "ext_db_size", default=None, callback=size_arg, metavar="SIZE",
              help="Put the OSD database on an external LV of this size (e.g. 20G).")
@click.option("-c", "--osd-count", "osd_count", type=click.IntRange(min=1), default=None,
              help="Split the device into this many OSDs (fast NVMe devices).")
@wait_flag
@confirm_option("Destroy all data on and create new OSD(s) on node {node} device {device}")
def osd_add(node: str, device: str, weight: float, ext_db_ratio: float | None, ext_db_size: str | None,
            osd_count: int | None, wait: bool) -> None:
    """Add a new Ceph OSD on node NODE with block device DEVICE (all data on it is destroyed).

    DEVICE is a block device path (e.g. /dev/sdb, /dev/disk/by-path/...; no partitions) or a
    "detect:<NAME>:<HUMAN-SIZE>:<ID>" string matched on the node (lsscsi, nvme list; ±3 % size).
    With -c/--osd-count the weight and any external DB size apply to each of the split OSDs.
    """
    _ext_db(ext_db_ratio, ext_db_size)
    start_task("POST", f"{BASE}/osd", {"node": node, "device": device, "weight": weight,
                                       "ext_db_ratio": ext_db_ratio, "ext_db_size": ext_db_size,
                                       "osd_count": osd_count}, wait)


@osd.command(name="replace", short_help="Replace OSD block device.")
@click.argument("osdid")
@click.argument("new_device")
@click.option("-o", "--old-device", "old_device", default=None, metavar="DEVICE",
              help="The old block device, if known and valid (it is zapped).")
@click.option("-w", "--weight", "weight", type=float, default=None,
              help="New CRUSH weight of the OSD(s) [default: the old weight].")
@click.option("-r", "--ext-db-ratio", "ext_db_ratio", type=DB_RATIO,
              default=None, help="New external DB LV with this ratio of the OSD size [default: as before].")
@click.option("-s", "--ext-db-size", "ext_db_size", default=None, callback=size_arg, metavar="SIZE",
              help="New external DB LV of this size [default: as before].")
@wait_flag
@confirm_option("Destroy all data on and replace OSD {osdid} (and peer split OSDs) with new device "
                "{new_device}")
def osd_replace(osdid: str, new_device: str, old_device: str | None, weight: float | None,
                ext_db_ratio: float | None, ext_db_size: str | None, wait: bool) -> None:
    """Replace the block device of OSD OSDID (and its split peers on the same device) with NEW_DEVICE.

    This is a removal and re-creation of the OSD(s): make sure the cluster is otherwise healthy.
    """
    _ext_db(ext_db_ratio, ext_db_size)
    start_task("POST", f"{BASE}/osd/{osdid}", {"new_device": new_device, "old_device": old_device,
                                               "weight": weight, "ext_db_ratio": ext_db_ratio,
                                               "ext_db_size": ext_db_size, "yes-i-really-mean-it": "yes"},
               wait)


@osd.command(name="refresh", short_help="Refresh (reimport) OSD device.")
@click.argument("osdid")
@click.argument("device")
@wait_flag
@confirm_option("Refresh OSD {osdid} (and peer split OSDs) on device {device}")
def osd_refresh(osdid: str, device: str, wait: bool) -> None:
    """Re-import the existing OSD OSDID from block DEVICE (e.g. into a rebuilt node); data is kept."""
    start_task("PUT", f"{BASE}/osd/{osdid}", {"device": device}, wait)


@osd.command(name="remove", short_help="Remove OSD.")
@click.argument("osdid")
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Carry on even if steps fail (e.g. the OSD is gone after a node rebuild).")
@wait_flag
@confirm_option("Remove and destroy data on OSD {osdid}")
def osd_remove(osdid: str, force: bool, wait: bool) -> None:
    """Remove the Ceph OSD OSDID from the cluster and destroy it.

    Set it out first ('pvc storage osd out') and let the cluster rebalance, or data is at risk.
    """
    start_task("DELETE", f"{BASE}/osd/{osdid}", {"force": force, "yes-i-really-mean-it": "yes"}, wait)


@osd.command(name="in", short_help="Online OSD.")
@click.argument("osdid")
def osd_in(osdid: str) -> None:
    """Set the Ceph OSD OSDID in: data is placed on it again."""
    say("POST", f"{BASE}/osd/{osdid}/state", {"state": "in"})


@osd.command(name="out", short_help="Offline OSD.")
@click.argument("osdid")
def osd_out(osdid: str) -> None:
    """Set the Ceph OSD OSDID out: its data moves to other OSDs."""
    say("POST", f"{BASE}/osd/{osdid}/state", {"state": "out"})


@osd.command(name="set", short_help="Set OSD property.")
@click.argument("option", metavar="OPTION")
def osd_set(option: str) -> None:
    """Set (enable) the cluster-wide OSD flag OPTION, e.g. noout before maintenance.

    \b
    Flags: noout, noin, noup, nodown, pause, nobackfill, norebalance, norecover, noscrub,
           nodeep-scrub, notieragent, nosnaptrim, full
    """
    say("POST", f"{BASE}/option", {"option": option, "action": "set"})


@osd.command(name="unset", short_help="Unset OSD property.")
@click.argument("option", metavar="OPTION")
def osd_unset(option: str) -> None:
    """Unset (disable) the cluster-wide OSD flag OPTION (see 'pvc storage osd set --help')."""
    say("POST", f"{BASE}/option", {"option": option, "action": "unset"})


@osd.command(name="list", short_help="List cluster OSDs.")
@click.argument("limit", required=False, default=None)
@format_option(OSD_LIST_FORMATS)
def osd_list(limit: str | None, formatter: Any) -> None:
    """List the Ceph OSDs; optionally only those whose ID matches the regex LIMIT.

    Formats: pretty, raw (id:node:device), json, json-pretty.
    """
    state = get_state()
    state.emit(list_items(f"{BASE}/osd", {"limit": limit}), formatter)


# upstream offers create-db-vg as `pvc storage create-db-vg` too
COMMANDS: tuple[click.Command, ...] = (osd, osd_create_db_vg)
