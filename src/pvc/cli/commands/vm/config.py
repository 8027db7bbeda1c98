"""`pvc vm modify`, `pvc vm vcpu` and `pvc vm memory`: edits of a VM's libvirt XML (see common)."""

from __future__ import annotations

from typing import IO, Any

import click

from pvc.cli.commands.vm.common import (
    apply_xml,
    check_xml,
    decide_restart,
    edit_xml,
    fetch_vm,
    parse_memory,
    parse_topology,
    pretty_xml,
    read_for_edit,
    restart_option,
    yes_option,
)
from pvc.cli.commands.vm.formats import MEMORY_FORMATS, VCPU_FORMATS, memory_data, vcpu_data
from pvc.cli.errors import CLIError
from pvc.cli.state import format_option, get_state, review_diff
from pvc.core import domainxml

FORCE_SIZE_HELP = ("Accept memory or vCPUs beyond every node's (a bigger node still to be added); the VM "
                   "cannot start until one exists.")


@click.command(name="modify", short_help="Replace the XML of a VM.")
@click.argument("domain")
@click.argument("cfgfile", type=click.File("r"), required=False, default=None)
@click.option("-e", "--editor", is_flag=True, default=False, help="Edit the current XML in $EDITOR.")
@restart_option
@click.option("-d", "--confirm-diff", "confirm_diff", is_flag=True, default=False,
              help="Confirm the changes without asking.")
@click.option("-c", "--confirm-restart", "confirm_restart", is_flag=True, default=False,
              help="Confirm the restart without asking.")
@click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
              help="Confirm the changes and the restart without asking.")
@click.option("--force", "force", is_flag=True, default=False, help=FORCE_SIZE_HELP)
def modify(domain: str, cfgfile: IO[str] | None, editor: bool, restart: bool | None, confirm_diff: bool,
           confirm_restart: bool, confirmed: bool, force: bool) -> None:
    """Replace the libvirt XML of the VM DOMAIN with CFGFILE ("-" reads stdin) or edit it.

    The difference is shown on stderr and confirmed before anything is written (-d/--confirm-diff
    or -y skips that question); a restart is confirmed too (-c/--confirm-restart or -y skips it).
    A definition whose memory or vCPUs exceed every node's is refused unless --force.
    """
    state = get_state()
    if cfgfile is None and not editor:
        raise CLIError('Either an XML config file or the "--editor" option must be specified.')
    vm, etag = read_for_edit(domain)
    current = pretty_xml(str(vm.get("xml", "")))
    if editor:
        edited = click.edit(text=current, require_save=True, extension=".xml")
        if edited is None:
            state.info("Aborting with no modifications.")
            return
        new_xml = edited.strip()
    else:
        assert cfgfile is not None
        new_xml = cfgfile.read().strip()
    check_xml(new_xml)
    if not review_diff(current, pretty_xml(new_xml), ask=not (confirmed or confirm_diff or state.unsafe)):
        return
    apply_xml(domain, vm, etag, new_xml, decide_restart(state, vm, restart, confirmed or confirm_restart),
              force=force)


# -- vcpu / memory -----------------------------------------------------------------------------------

@click.group(name="vcpu", short_help="Manage the vCPUs of a VM.")
def vcpu_group() -> None:
    """View and change the vCPUs of VMs (by editing their XML)."""


@vcpu_group.command(name="get", short_help="Show the vCPUs of a VM.")
@click.argument("domain")
@format_option(VCPU_FORMATS)
def vcpu_get(domain: str, formatter: Any) -> None:
    """Show the vCPU count and topology of the VM DOMAIN."""
    get_state().emit(vcpu_data(fetch_vm(domain)), formatter)


@vcpu_group.command(name="set", short_help="Set the vCPUs of a VM.")
@click.argument("domain")
@click.argument("vcpus", type=click.IntRange(min=1))
@click.option("-t", "--topology", default=None, metavar="S,C,T",
              help="Sockets,cores,threads; their product must equal VCPUS [default: 1,VCPUS,1].")
@restart_option
@yes_option
@click.option("--force", "force", is_flag=True, default=False, help=FORCE_SIZE_HELP)
def vcpu_set(domain: str, vcpus: int, topology: str | None, restart: bool | None, confirmed: bool,
             force: bool) -> None:
    """Set the vCPU count of the VM DOMAIN to VCPUS; it applies at the next (re)start.

    More vCPUs than its node (or than every node) has are refused unless --force."""
    topo = parse_topology(topology, vcpus) if topology else None
    vm, etag = read_for_edit(domain)
    new_xml = edit_xml(domainxml.set_vcpus, str(vm.get("xml", "")), vcpus, topo)
    apply_xml(domain, vm, etag, new_xml, decide_restart(get_state(), vm, restart, confirmed), force=force)


@click.group(name="memory", short_help="Manage the memory of a VM.")
def memory_group() -> None:
    """View and change the memory of VMs (by editing their XML)."""


@memory_group.command(name="get", short_help="Show the memory of a VM.")
@click.argument("domain")
@format_option(MEMORY_FORMATS)
def memory_get(domain: str, formatter: Any) -> None:
    """Show the provisioned memory of the VM DOMAIN."""
    get_state().emit(memory_data(fetch_vm(domain)), formatter)


@memory_group.command(name="set", short_help="Set the memory of a VM.")
@click.argument("domain")
@click.argument("memory")
@restart_option
@yes_option
@click.option("--force", "force", is_flag=True, default=False, help=FORCE_SIZE_HELP)
def memory_set(domain: str, memory: str, restart: bool | None, confirmed: bool, force: bool) -> None:
    """Set the memory of the VM DOMAIN to MEMORY: MiB, or with a suffix (512M, 4G).

    Memory not below its node's total (or every node's) is refused unless --force."""
    mib = parse_memory(memory)
    vm, etag = read_for_edit(domain)
    new_xml = edit_xml(domainxml.set_memory, str(vm.get("xml", "")), mib)
    apply_xml(domain, vm, etag, new_xml, decide_restart(get_state(), vm, restart, confirmed), force=force)


COMMANDS: tuple[click.Command, ...] = (modify, vcpu_group, memory_group)
