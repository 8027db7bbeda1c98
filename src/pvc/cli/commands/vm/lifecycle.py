"""`pvc vm define/rename/undefine/remove` and the state changes `start/restart/shutdown/stop/disable`."""

from __future__ import annotations

from typing import IO

import click

from pvc.cli.commands.vm.common import (
    check_xml,
    downtime_option,
    flag,
    method_option,
    selector_option,
    with_progress,
)
from pvc.cli.state import confirm_option, get_state
from pvc.core.vocabulary import SettableVMState


@click.command(name="define", short_help="Define a new VM from libvirt XML.")
@click.argument("vmconfig", type=click.File("r"))
@click.option("-t", "--target", "--node", "node", default=None, metavar="NODE",
              help="Home node of the VM; chosen by the selector if unset.")
@click.option("-l", "--limit", "--node-limit", "node_limit", default=None, metavar="NODES",
              help="Comma-separated nodes the VM may run on; saved with the VM.")
@selector_option('How to choose a target node; "none" uses the cluster default.')
@click.option("-a/-A", "--autostart/--no-autostart", "--node-autostart/--no-node-autostart",
              "node_autostart", default=False,
              help="Start the VM on the next ready of its home node; unset by the daemon once used.")
@method_option
@downtime_option
@click.option("-g", "--tag", "--user-tag", "user_tags", multiple=True, help="User tag; repeatable.")
@click.option("-G", "--protected-tag", "protected_tags", multiple=True,
              help="Protected user tag; repeatable.")
def define(vmconfig: IO[str], node: str | None, node_limit: str | None, node_selector: str | None,
           node_autostart: bool, migration_method: str | None, migration_max_downtime: int | None,
           user_tags: tuple[str, ...], protected_tags: tuple[str, ...]) -> None:
    """Define a new virtual machine from the libvirt XML file VMCONFIG ("-" reads stdin).

    \b
    Node selectors: mem (most free memory), memprov (least provisioned memory),
    vcpus (fewest allocated vCPUs), load (lowest load), vms (fewest VMs), none (cluster default).
    """
    xml = vmconfig.read()
    check_xml(xml)
    state = get_state()
    state.out(state.api().message("POST", "/vm", params={
        "node": node, "limit": node_limit, "selector": node_selector, "autostart": node_autostart,
        "migration_method": migration_method, "migration_max_downtime": migration_max_downtime,
        "user_tags": list(user_tags), "protected_tags": list(protected_tags),
    }, data={"xml": xml}))


@click.command(name="rename", short_help="Rename a VM.")
@click.argument("domain")
@click.argument("new_name")
@confirm_option("Rename virtual machine {domain} to {new_name}")
def rename(domain: str, new_name: str) -> None:
    """Rename the (stopped) VM DOMAIN, and the disk volumes named after it, to NEW_NAME."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/rename", params={"new_name": new_name}))


@click.command(name="undefine", short_help="Undefine a VM, keeping its disks.")
@click.argument("domain")
@confirm_option("Remove definition of virtual machine {domain}")
def undefine(domain: str) -> None:
    """Stop the VM DOMAIN and remove its definition; its disk volumes are kept."""
    state = get_state()
    state.out(state.api().message("DELETE", f"/vm/{domain}", params={"delete_disks": False}))


@click.command(name="remove", short_help="Remove a VM and its disks.")
@click.argument("domain")
@confirm_option("Remove virtual machine {domain} and all disks")
def remove(domain: str) -> None:
    """Stop the VM DOMAIN and remove it together with all its disk volumes."""
    state = get_state()
    state.out(state.api().message("DELETE", f"/vm/{domain}", params={"delete_disks": True}))


# -- state changes -------------------------------------------------------------------------------------------

def _set_state(domain: str, target: SettableVMState, *, force: bool = False, wait: bool = False) -> None:
    """POST /vm/<vm>/state; `wait` blocks server-side, as upstream, with progress shown here."""
    state = get_state()

    def call() -> str:
        return state.api().message("POST", f"/vm/{domain}/state",
                                   params={"state": target, "force": flag(force), "wait": flag(wait)})

    state.out(with_progress(state, domain, f"Waiting for {target} of", call) if wait else call())


@click.command(name="start", short_help="Start a VM.")
@click.argument("domain")
@click.option("--force", is_flag=True, default=False, help="Also start a mirror replica.")
def start(domain: str, force: bool) -> None:
    """Start the VM DOMAIN on its node."""
    _set_state(domain, "start", force=force)


@click.command(name="restart", short_help="Restart a running VM.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the restart to finish.")
@confirm_option("Restart virtual machine {domain}")
def restart_(domain: str, wait: bool) -> None:
    """Restart the running VM DOMAIN (shutdown, then start)."""
    _set_state(domain, "restart", wait=wait)


@click.command(name="shutdown", short_help="Gracefully shut down a VM.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the shutdown to finish.")
@confirm_option("Shut down virtual machine {domain}")
def shutdown(domain: str, wait: bool) -> None:
    """Shut down the VM DOMAIN with ACPI; it is stopped if it does not finish in time."""
    _set_state(domain, "shutdown", wait=wait)


@click.command(name="stop", short_help="Forcibly stop a VM.")
@click.argument("domain")
@confirm_option("Forcibly stop virtual machine {domain}")
def stop(domain: str) -> None:
    """Halt (destroy) the VM DOMAIN at once."""
    _set_state(domain, "stop")


@click.command(name="disable", short_help="Shut down a VM and mark it disabled.")
@click.argument("domain")
@click.option("--force", is_flag=True, default=False, help="Stop the VM instead of waiting for a shutdown.")
@confirm_option("Shut down and disable virtual machine {domain}")
def disable(domain: str, force: bool) -> None:
    """Shut down the VM DOMAIN and mark it disabled (not counted as degraded, unlike stopped VMs)."""
    _set_state(domain, "disable", force=force)


COMMANDS: tuple[click.Command, ...] = (define, rename, undefine, remove, start, restart_, shutdown, stop,
                                        disable)
