"""`pvc vm`: define, change, run, move and inspect virtual machines.

One module per responsibility: lifecycle (define, remove, state changes), placement (node moves,
RBD locks), meta (PVC metadata, tags), config (XML, vCPUs, memory), devices (interfaces, disks),
views (list, info, dump, log); formats renders, common holds the shared edit round trip.
"""

from __future__ import annotations

import click

from pvc.cli.commands.vm import auto, config, devices, lifecycle, meta, placement, snapshots, views
from pvc.cli.commands.vm import backups as vm_backups  # adds snapshot export/import
from pvc.cli.commands.vm import mirror as vm_mirror  # adds snapshot send
from pvc.cli.commands.vm.common import bridge_of, parse_memory, parse_topology, pretty_xml
from pvc.cli.commands.vm.formats import format_info, format_list_pretty, vm_state_style

__all__ = ["bridge_of", "format_info", "format_list_pretty", "group", "parse_memory", "parse_topology",
           "pretty_xml", "vm_state_style"]


@click.group(name="vm", short_help="Manage PVC VMs.")
def group() -> None:
    """Manage and view the status of the virtual machines of a PVC cluster."""


for _module in (lifecycle, placement, meta, config, devices, views, snapshots, vm_backups, auto, vm_mirror):
    for _command in _module.COMMANDS:
        group.add_command(_command)
