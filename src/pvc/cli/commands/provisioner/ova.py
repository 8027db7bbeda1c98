"""`pvc provisioner ova upload NAME FILE --pool POOL`: upload an OVA image (the seed's "Uploading an OVA").

Sent as upstream's client sends it: `POST /provisioner/ova/<name>` with pool and ova_size in the
query string and the file streamed as the multipart part `file` (never read whole into memory),
with a progress bar on a terminal. Added to the `pvc provisioner ova` group by provisioner_jobs.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import click

from pvc.cli.client import decode
from pvc.cli.commands.storage import _message, upload_file
from pvc.cli.state import get_state


@click.command(name="upload", short_help="Upload OVA file.")
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
    response = upload_file(state, filename, f"/provisioner/ova/{quote(name, safe='')}",
                           {"pool": pool, "ova_size": size})
    state.out(_message(decode(response)))
