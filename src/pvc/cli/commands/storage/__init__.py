"""`pvc storage`: the Ceph cluster behind the VMs — status, benchmarks, OSDs, pools, volumes, snapshots.

One module per area (benchmark, osds, pools, volumes, snapshots); common holds the stats value
helpers and the call patterns they share. The status and utilization views live here.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group, RenderableType
from rich.text import Text

from pvc.cli.commands.storage import benchmark, osds, pools, volumes
from pvc.cli.commands.storage.benchmark import benchmark_metrics, format_benchmark_info
from pvc.cli.commands.storage.common import BASE, NA, human_count, human_latency, human_size
from pvc.cli.output import json_formatters
from pvc.cli.state import format_option, get_state

__all__ = ["benchmark_metrics", "format_benchmark_info", "group", "human_count", "human_latency",
           "human_size"]


def format_ceph_text(data: Any) -> RenderableType:
    """`storage status`/`util`: Ceph's own text (`ceph status`, `ceph df`) under a short header."""
    if not isinstance(data, dict):
        return str(data)
    header = Text.assemble((f"Ceph cluster {data.get('type', 'status')} (primary node ", "bold"),
                           (str(data.get("primary_node") or NA), "blue"), (")", "bold"))
    return Group(header, "", Text(str(data.get("ceph_data") or "").rstrip("\n")))


CEPH_TEXT_FORMATS = {"pretty": format_ceph_text, **json_formatters()}


# -- storage -----------------------------------------------------------------------------------------

@click.group(name="storage", short_help="Manage PVC storage.")
def group() -> None:
    """Manage and view the storage system (Ceph) of a PVC cluster."""


@click.command(name="status", short_help="Show storage cluster status.")
@format_option(CEPH_TEXT_FORMATS)
def status(formatter: Any) -> None:
    """Show the detailed status of the storage cluster (`ceph status` on the primary)."""
    state = get_state()
    state.emit(state.api().get_json(f"{BASE}/status"), formatter)


@click.command(name="util", short_help="Show storage cluster utilization.")
@format_option(CEPH_TEXT_FORMATS)
def util(formatter: Any) -> None:
    """Show the utilization of the storage cluster (`ceph df` on the primary)."""
    state = get_state()
    state.emit(state.api().get_json(f"{BASE}/utilization"), formatter)


group.add_command(status)
group.add_command(util)
for _module in (benchmark, osds, pools, volumes):
    for _command in _module.COMMANDS:
        group.add_command(_command)
