"""`pvc network sriov`: a node's SR-IOV PFs and VFs, and a VF's settings (upstream's commands).

`pf list NODE`, `vf list NODE [PF]`, `vf info NODE VF` and `vf set NODE VF --vlan-id ...` call the
`/sriov` routes; the API validates and its message is what the user sees. (`pvc vm network add
--sriov` is in pvc.cli.commands.vm.devices; the API claims the VF when the VM's XML is saved.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import click
from rich.console import RenderableType

from pvc.cli.errors import CLIError
from pvc.cli.output import json_formatters, key_values, table
from pvc.cli.state import format_option, get_state

LINK_STATES = ("auto", "enable", "disable")


def _p(value: str) -> str:
    return quote(str(value), safe="")


# -- formatters --------------------------------------------------------------------------------------

def format_pf_list(pfs: Sequence[dict[str, Any]]) -> RenderableType:
    if not pfs:
        return "No SR-IOV PFs found."
    return table(["Device", ("MTU", "right"), "VFs"],
                 ([pf.get("phy", ""), pf.get("mtu", ""), ", ".join(pf.get("vfs") or []) or "None"]
                  for pf in pfs))


def _usage(vf: dict[str, Any]) -> str:
    usage = vf.get("usage") or {}
    return str(usage.get("domain") or "") if usage.get("used") else "No"


def format_vf_list(vfs: Sequence[dict[str, Any]]) -> RenderableType:
    if not vfs:
        return "No SR-IOV VFs found."
    rows = []
    for vf in vfs:
        config = vf.get("config") or {}
        rows.append([vf.get("phy", ""), vf.get("pf", ""), vf.get("mtu", ""), vf.get("mac", ""),
                     config.get("vlan_id", ""), config.get("vlan_qos", ""),
                     f"{config.get('tx_rate_min', '')}/{config.get('tx_rate_max', '')}",
                     config.get("link_state", ""), config.get("spoof_check", ""), config.get("trust", ""),
                     config.get("query_rss", ""), _usage(vf)])
    return table(["Device", "PF", ("MTU", "right"), "MAC Address", ("VLAN", "right"), ("QoS", "right"),
                  "TX min/max", "Link", "Spoof check", "Trust", "Query RSS", "Used by"], rows)


def format_vf_info(vf: dict[str, Any]) -> RenderableType:
    config = vf.get("config") or {}
    pci = vf.get("pci") or {}
    usage = vf.get("usage") or {}
    items: list[tuple[str, Any]] = [
        ("PHY:", vf.get("phy", "")), ("PF:", vf.get("pf", "")), ("MTU:", vf.get("mtu", "")),
        ("MAC Address:", vf.get("mac", "")), ("", ""),
        ("vLAN ID:", config.get("vlan_id", "")), ("vLAN QOS priority:", config.get("vlan_qos", "")),
        ("Minimum TX Rate:", config.get("tx_rate_min", "")),
        ("Maximum TX Rate:", config.get("tx_rate_max", "")),
        ("Link State:", config.get("link_state", "")), ("Spoof Checking:", config.get("spoof_check", "")),
        ("VF User Trust:", config.get("trust", "")), ("Query RSS Config:", config.get("query_rss", "")),
        ("", ""),
    ]
    if pci:
        items += [("PCI Domain:", pci.get("domain", "")), ("PCI Bus:", pci.get("bus", "")),
                  ("PCI Slot:", pci.get("slot", "")), ("PCI Function:", pci.get("function", "")), ("", "")]
    items += [("In Use:", bool(usage.get("used"))), ("VM Domain:", usage.get("domain") or "N/A")]
    return key_values(items)


PF_FORMATS = {"pretty": format_pf_list, "raw": lambda pfs: "\n".join(p.get("phy", "") for p in pfs),
              **json_formatters()}
VF_FORMATS = {"pretty": format_vf_list, "raw": lambda vfs: "\n".join(v.get("phy", "") for v in vfs),
              **json_formatters()}
VF_INFO_FORMATS = {"pretty": format_vf_info, **json_formatters()}


# -- commands ----------------------------------------------------------------------------------------

@click.group(name="sriov", short_help="Manage SR-IOV network resources.")
def group() -> None:
    """Manage the SR-IOV physical functions (PFs) and virtual functions (VFs) of the nodes."""


@group.group(name="pf", short_help="Manage SR-IOV PF devices.")
def pf() -> None:
    """View the SR-IOV physical functions of a node."""


@pf.command(name="list", short_help="List SR-IOV PFs on a node.")
@click.argument("node")
@format_option(PF_FORMATS)
def pf_list(node: str, formatter: Any) -> None:
    """List the SR-IOV PFs of NODE."""
    get_state().emit(get_state().api().get_list(f"/sriov/pf/{_p(node)}"), formatter)


@group.group(name="vf", short_help="Manage SR-IOV VF devices.")
def vf() -> None:
    """View and configure the SR-IOV virtual functions of a node."""


@vf.command(name="list", short_help="List SR-IOV VFs on a node.")
@click.argument("node")
@click.argument("pf", required=False, default=None)
@format_option(VF_FORMATS)
def vf_list(node: str, pf: str | None, formatter: Any) -> None:
    """List the SR-IOV VFs of NODE, optionally only those of the PF named PF."""
    get_state().emit(get_state().api().get_list(f"/sriov/vf/{_p(node)}", params={"pf": pf}), formatter)


@vf.command(name="info", short_help="Show details of an SR-IOV VF on a node.")
@click.argument("node")
@click.argument("vf")
@format_option(VF_INFO_FORMATS)
def vf_info(node: str, vf: str, formatter: Any) -> None:
    """Show the settings and usage of the SR-IOV VF named VF on NODE."""
    get_state().emit(get_state().api().get_one(f"/sriov/vf/{_p(node)}/{_p(vf)}", what="SR-IOV VF"), formatter)


@vf.command(name="set", short_help="Set the settings of an SR-IOV VF.")
@click.argument("node")
@click.argument("vf")
@click.option("--vlan-id", "vlan_id", type=int, default=None,
              help="The vLAN ID for vLAN tagging (0 disables).")
@click.option("--qos-prio", "vlan_qos", type=int, default=None,
              help="The vLAN QoS priority (0 disables).")
@click.option("--tx-min", "tx_rate_min", type=int, default=None,
              help="The minimum TX rate in Mbit/s (0 disables).")
@click.option("--tx-max", "tx_rate_max", type=int, default=None,
              help="The maximum TX rate in Mbit/s (0 disables).")
@click.option("--link-state", "link_state", type=click.Choice(LINK_STATES), default=None,
              help="The administrative link state.")
@click.option("--spoof-check/--no-spoof-check", "spoof_check", default=None, help="Spoof checking on or off.")
@click.option("--trust/--no-trust", "trust", default=None, help="VF user trust on or off.")
@click.option("--query-rss/--no-query-rss", "query_rss", default=None, help="Query RSS support on or off.")
def vf_set(node: str, vf: str, **settings: Any) -> None:
    """Set the settings of the SR-IOV VF named VF on NODE; only those given change. The node applies
    them through the PF."""
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in settings.items() if v is not None}
    if not params:
        raise CLIError("Give at least one setting to change (see --help).")
    state = get_state()
    state.out(state.api().message("PUT", f"/sriov/vf/{_p(node)}/{_p(vf)}", params=params))
