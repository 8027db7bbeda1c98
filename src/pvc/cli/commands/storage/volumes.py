"""`pvc storage volume`: the Ceph RBD volumes (add, upload an image, resize, rename, clone, remove)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import RenderableType

from pvc.cli.client import decode, message_text
from pvc.cli.commands.storage.common import (
    BASE,
    NA,
    F,
    arguments,
    human_size,
    list_items,
    plain,
    say,
    size_arg,
    stat,
)
from pvc.cli.commands.storage.snapshots import snapshot
from pvc.cli.output import json_formatters, table
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.cli.upload import upload_file
from pvc.core.units import parse_size
from pvc.core.vocabulary import IMAGE_FORMATS


def _volume_key(volume: dict[str, Any]) -> tuple[str, str]:
    return str(volume.get("pool", "")), str(volume.get("name", ""))


def volume_row(volume: dict[str, Any]) -> list[Any]:
    stats = volume.get("stats") if isinstance(volume.get("stats"), dict) else {}
    features = stats.get("features")
    return [
        volume.get("name", ""), volume.get("pool", ""), human_size(stat(stats, "size")),
        plain(stat(stats, "objects")), plain(stat(stats, "order")), plain(stat(stats, "format")),
        ",".join(str(f) for f in features) if isinstance(features, list) and features else NA,
        plain(stats.get("snapshot_count", 0)),
    ]


def format_volume_list(volumes: Sequence[dict[str, Any]]) -> RenderableType:
    if not volumes:
        return "No volumes found."
    return table(["Name", "Pool", ("Size", "right"), ("Objects", "right"), ("Order", "right"),
                  ("Format", "right"), "Features", ("Snapshots", "right")],
                 (volume_row(v) for v in sorted(volumes, key=_volume_key)))


VOLUME_LIST_FORMATS = {
    "pretty": format_volume_list,
    "raw": lambda volumes: "\n".join(f"{v.get('pool')}/{v.get('name')}"
                                     for v in sorted(volumes, key=_volume_key)),
    **json_formatters(),
}


# -- volume ------------------------------------------------------------------------------------------

def _force_option(verb: str) -> Callable[[F], F]:
    """`-f/--force`: go on although the pool would be more than 80% full afterwards."""
    return click.option("-f", "--force", "force", is_flag=True, default=False,
                        help=f"{verb} even if the pool would be more than 80% full.")


@click.group(name="volume", short_help="Manage RBD volumes in the PVC storage cluster.")
def volume() -> None:
    """Manage the Ceph RBD volumes of the PVC cluster."""


volume.add_command(snapshot)


@volume.command(name="add", short_help="Add new RBD volume.")
@arguments("pool", "name")
@click.argument("size", callback=size_arg)
@_force_option("Create it")
def volume_add(pool: str, name: str, size: str, force: bool) -> None:
    """Add a new RBD volume NAME of size SIZE (e.g. 1024M, 20G) in pool POOL."""
    say("POST", f"{BASE}/volume", {"volume": name, "pool": pool, "size": size, "force": force})


@volume.command(name="upload", short_help="Upload a local image file to RBD volume.")
@arguments("pool", "name")
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("-f", "--format", "image_format", type=click.Choice(IMAGE_FORMATS), default="raw",
              show_default=True, help="The format of the image file.")
@click.option("--file-size", "file_size", default=None, callback=size_arg, metavar="SIZE",
              help="Size of the image data [default: the file's size, sent for non-raw formats].")
def volume_upload(pool: str, name: str, image_file: str, image_format: str, file_size: str | None) -> None:
    """Upload the disk image IMAGE_FILE into the existing RBD volume NAME in pool POOL.

    A raw image is written as is and must fit the volume; other formats are converted to raw
    with qemu-img on the cluster side. The file is streamed, never read whole into memory.
    """
    state = get_state()
    size = os.path.getsize(image_file)
    if file_size is not None:
        sent_size: int | None = parse_size(file_size)
    else:
        sent_size = size if image_format != "raw" else None
    response = upload_file(state, image_file, f"{BASE}/volume/{pool}/{name}/upload",
                           {"image_format": image_format, "file_size": sent_size})
    state.out(message_text(decode(response)))


@volume.command(name="remove", short_help="Remove RBD volume.")
@arguments("pool", "name")
@confirm_option("Remove and delete data of RBD volume {name} in pool {pool}")
def volume_remove(pool: str, name: str) -> None:
    """Remove the RBD volume NAME, with its snapshots and all data, from pool POOL."""
    say("DELETE", f"{BASE}/volume/{pool}/{name}")


@volume.command(name="resize", short_help="Resize RBD volume.")
@arguments("pool", "name")
@click.argument("size", callback=size_arg)
@_force_option("Resize")
@confirm_option("Resize volume {name} in pool {pool} to size {size}")
def volume_resize(pool: str, name: str, size: str, force: bool) -> None:
    """Resize the RBD volume NAME in pool POOL to SIZE (e.g. 20G); a running VM sees it live."""
    say("PUT", f"{BASE}/volume/{pool}/{name}", {"new_size": size, "force": force})


@volume.command(name="rename", short_help="Rename RBD volume.")
@arguments("pool", "name")
@click.argument("new_name")
@confirm_option("Rename volume {name} in pool {pool} to {new_name}")
def volume_rename(pool: str, name: str, new_name: str) -> None:
    """Rename the RBD volume NAME in pool POOL to NEW_NAME."""
    say("PUT", f"{BASE}/volume/{pool}/{name}", {"new_name": new_name})


@volume.command(name="clone", short_help="Clone RBD volume.")
@arguments("pool", "name")
@click.argument("new_name")
@_force_option("Clone")
def volume_clone(pool: str, name: str, new_name: str, force: bool) -> None:
    """Copy the RBD volume NAME in pool POOL to a new, independent volume NEW_NAME in POOL."""
    say("POST", f"{BASE}/volume/{pool}/{name}/clone", {"new_volume": new_name, "force": force})


@volume.command(name="list", short_help="List cluster RBD volumes.")
@click.argument("limit", required=False, default=None)
@click.option("-p", "--pool", "pool", default=None, help="Only volumes in this pool.")
@format_option(VOLUME_LIST_FORMATS)
def volume_list(limit: str | None, pool: str | None, formatter: Any) -> None:
    """List the RBD volumes; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (pool/name), json, json-pretty.
    """
    state = get_state()
    state.emit(list_items(f"{BASE}/volume", {"limit": limit, "pool": pool}), formatter)


COMMANDS: tuple[click.Command, ...] = (volume,)
