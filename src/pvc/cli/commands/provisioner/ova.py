"""`pvc provisioner ova`: OVA images uploaded to the cluster (the seed's "Uploading an OVA").

`upload` sends the image as upstream's client does: `POST /provisioner/ova/<name>` with pool and
ova_size in the query string and the file streamed as the multipart part `file` (never read whole
into memory), with a progress bar on a terminal.
"""

from __future__ import annotations

import os

import click

from pvc.cli.client import decode, message_text
from pvc.cli.commands.provisioner.common import list_command, quoted, remove_command
from pvc.cli.commands.provisioner.formats import OVA_FORMATS
from pvc.cli.state import get_state
from pvc.cli.upload import upload_file


@click.group(name="ova", short_help="Manage PVC provisioner OVA images.")
def ova() -> None:
    """Manage OVA images uploaded to the cluster (each with its profile and system template)."""


remove_command(ova, "/provisioner/ova", "Remove OVA image.", "Remove OVA image {name}",
               "Remove the OVA image NAME with its volumes, profile and system template.")
list_command(ova, "/provisioner/ova", OVA_FORMATS, "List all OVA images.", "the OVA images and their volumes")


@ova.command(name="upload", short_help="Upload OVA file.")
@click.argument("name")
@click.argument("filename", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("-p", "--pool", "pool", required=True,
              help="The storage pool for the OVA's disk volumes (ova_NAME_sdX).")
def ova_upload(name: str, filename: str, pool: str) -> None:
    """Upload the OVA image FILENAME to the cluster as NAME: its disks become volumes in POOL, and a
    system template and a profile of type ova named NAME are created (the OVA provisioner script
    must be stored as script 'ova' first)."""
    state = get_state()
    size = os.path.getsize(filename)
    response = upload_file(state, filename, f"/provisioner/ova/{quoted(name)}",
                           {"pool": pool, "ova_size": size})
    state.out(message_text(decode(response)))
