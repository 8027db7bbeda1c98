"""`pvc provisioner`: templates, userdata, scripts, profiles and OVA images for creating VMs.

Options and requests are upstream's (`pvc provisioner template system add --vcpus 1 --vram 1024
--serial ... NAME`): scalar options travel as query parameters, repeated options (`--fsarg`,
`--script-arg`) as repeated keys, documents (userdata, scripts) as the form field `data`, so this
client works against upstream PVC and upstream's client against us. The API validates everything;
its message is what the user sees.

One module per document kind, as pvc.cluster.provisioner: templates (system, network, storage),
documents (userdata, scripts), profiles, ova (OVA images); jobs (create, status, cancel);
formats renders the lists, common holds the API calls they share.
"""

from __future__ import annotations

import click

from pvc.cli.commands.provisioner import documents, jobs, ova, profiles, templates

__all__ = ["group"]


@click.group(name="provisioner", short_help="Manage PVC provisioner.")
def group() -> None:
    """Manage the PVC provisioner: templates, userdata, scripts and profiles for creating VMs."""


for _command in (templates.template, documents.userdata, documents.script, profiles.profile, ova.ova,
                 *jobs.COMMANDS):
    group.add_command(_command)
