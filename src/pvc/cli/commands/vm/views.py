"""`pvc vm list/info/dump/log`: looking at VMs without changing them."""

from __future__ import annotations

from typing import IO, Any

import click

from pvc.cli.commands.vm.common import fetch_vm, flag, pretty_xml
from pvc.cli.commands.vm.formats import INFO_FORMATS, LIST_FORMATS, format_list_raw
from pvc.cli.logs import show_log
from pvc.cli.state import format_option, get_state
from pvc.core.vocabulary import VM_LIST_STATES


@click.command(name="log", short_help="Show the serial console log of a VM.")
@click.argument("domain")
@click.option("-l", "--lines", type=click.IntRange(min=0), default=None,
              help="Number of lines to show.  [default: 1000; with --follow: 10]")
@click.option("-f", "--follow", is_flag=True, default=False, help="Keep printing new lines (Ctrl-C stops).")
def log(domain: str, lines: int | None, follow: bool) -> None:
    """Show the serial console log of the VM DOMAIN (kept by its node; a migration starts it afresh)."""
    count = lines if lines is not None else (10 if follow else 1000)
    show_log(get_state(), f"/vm/{domain}/console", count, follow)


@click.command(name="dump", short_help="Print the libvirt XML of a VM.")
@click.argument("domain")
@click.option("-f", "--file", "filename", type=click.File("w"), default=None,
              help="Write the XML to this file.")
def dump(domain: str, filename: IO[str] | None) -> None:
    """Print the libvirt XML definition of the VM DOMAIN (re-indented), or write it to a file."""
    state = get_state()
    xml = pretty_xml(str(fetch_vm(domain).get("xml", "")))
    if filename is not None:
        filename.write(xml + "\n")
        state.out(f'VM XML written to "{filename.name}".')
    else:
        state.out(xml)


@click.command(name="info", short_help="Show details of a VM.")
@click.argument("domain")
@format_option(INFO_FORMATS)
def info(domain: str, formatter: Any) -> None:
    """Show the details of the VM DOMAIN.

    \b
    Formats: pretty, long (adds devices with their counters and the VM's stats), json, json-pretty.
    """
    get_state().emit(fetch_vm(domain), formatter)


@click.command(name="list", short_help="List VMs.")
@click.argument("limit", required=False, default=None)
@click.option("-t", "--target", "node", default=None, help="Only VMs on this node.")
@click.option("-s", "--state", "vm_state", type=click.Choice(VM_LIST_STATES), default=None,
              help="Only VMs in this state.")
@click.option("-g", "--tag", "tag", default=None, help="Only VMs with this tag.")
@click.option("-n", "--negate", is_flag=True, default=False, help="Negate the node, state and tag filters.")
@click.option("-r", "--raw", is_flag=True, default=False, help="Only the names, one per line (= -f raw).")
@format_option(LIST_FORMATS)
def list_(limit: str | None, node: str | None, vm_state: str | None, tag: str | None, negate: bool,
          raw: bool, formatter: Any) -> None:
    """List the VMs, optionally only those whose name matches the regex LIMIT (or whose UUID is LIMIT)."""
    state = get_state()
    vms = state.api().get_list("/vm", params={"limit": limit, "node": node, "state": vm_state, "tag": tag,
                                              "negate": flag(negate)})
    state.emit(vms, format_list_raw if raw else formatter)


COMMANDS: tuple[click.Command, ...] = (log, dump, info, list_)
