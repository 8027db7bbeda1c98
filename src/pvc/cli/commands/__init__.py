"""One module per command area; each exposes a Click group named `group`.

Adding an area (vm, network, storage, provisioner) = one module here plus one line in AREAS.
"""

from __future__ import annotations

import click

from pvc.cli.commands import cluster, connection, network, node, provisioner, storage, vm

AREAS: tuple[click.Group, ...] = (node.group, vm.group, network.group, storage.group, provisioner.group,
                                  cluster.group, connection.group)
