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
@selector_option('How to choose a target node; "none" uses the cluster default.', default="none")
@click.option("-a/-A", "--autostart/--no-autostart", "--node-autostart/--no-node-autostart",
              "node_autostart", default=False,
              help="Start the VM on the next ready of its home node; unset by the daemon once used.")
@method_option(default="none")
@downtime_option
@click.option("-g", "--tag", "--user-tag", "user_tags", multiple=True, help="User tag; repeatable.")
@click.option("-G", "--protected-tag", "protected_tags", multiple=True,
              help="Protected user tag; repeatable.")
@click.option("--force", "force", is_flag=True, default=False,
              help="Define it even if its memory or vCPUs exceed every node's, or its node limit names "
                   "nodes not registered yet (nodes still to be added).")
def define(vmconfig: IO[str], node: str | None, node_limit: str | None, node_selector: str,
           node_autostart: bool, migration_method: str, migration_max_downtime: int | None,
           user_tags: tuple[str, ...], protected_tags: tuple[str, ...], force: bool) -> None:
    """Define a new virtual machine from the libvirt XML file VMCONFIG ("-" reads stdin).

    As upstream, the selector and the migration method are sent as "none" (the cluster's
    defaults) unless given. Refused unless --force: a VM whose memory or vCPUs exceed every
    node's, and a node limit naming nodes the cluster does not have.

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
        "force": True if force else None,
    }, data={"xml": xml}))


@click.command(name="rename", short_help="Rename a VM.")
@click.argument("domain")
@click.argument("new_name")
@confirm_option("Rename virtual machine {domain} to {new_name}")
def rename(domain: str, new_name: str) -> None:
    """Rename the (stopped) VM DOMAIN, and the disk volumes named after it, to NEW_NAME."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/rename", params={"new_name": new_name}))


def _delete_command(name: str, delete_disks: bool, short_help: str, question: str,
                    help_text: str) -> click.Command:
    """`pvc vm undefine|remove DOMAIN`: DELETE /vm/<vm>, keeping or deleting its disk volumes."""
    @click.command(name=name, short_help=short_help, help=help_text)
    @click.argument("domain")
    @confirm_option(question)
    def command(domain: str) -> None:
        state = get_state()
        state.out(state.api().message("DELETE", f"/vm/{domain}", params={"delete_disks": delete_disks}))

    return command


undefine = _delete_command("undefine", False, "Undefine a VM, keeping its disks.",
                           "Remove definition of virtual machine {domain}",
                           "Stop the VM DOMAIN and remove its definition; its disk volumes are kept.")
remove = _delete_command("remove", True, "Remove a VM and its disks.",
                         "Remove virtual machine {domain} and all disks",
                         "Stop the VM DOMAIN and remove it together with all its disk volumes.")


# -- state changes -------------------------------------------------------------------------------------------

def _set_state(domain: str, target: SettableVMState, *, force: bool = False, wait: bool = False) -> None:
    """POST /vm/<vm>/state; `wait` blocks server-side, as upstream, with progress shown here."""
    state = get_state()

    def call() -> str:
        return state.api().message("POST", f"/vm/{domain}/state",
                                   params={"state": target, "force": flag(force), "wait": flag(wait)})

    state.out(with_progress(state, domain, f"Waiting for {target} of", call) if wait else call())


def _state_command(target: SettableVMState, short_help: str, help_text: str, *, force: str | None = None,
                   wait: bool = False, confirm: str | None = None) -> click.Command:
    """`pvc vm <target> DOMAIN`, with `--force` (its help), `--wait` and a confirmation (its
    question) where given."""
    def command(domain: str, force: bool = False, wait: bool = False) -> None:
        _set_state(domain, target, force=force, wait=wait)

    if confirm:
        command = confirm_option(confirm)(command)
    if wait:
        command = click.option("-w", "--wait", "wait", is_flag=True, default=False,
                               help=f"Wait for the {target} to finish.")(command)
    if force:
        command = click.option("--force", is_flag=True, default=False, help=force)(command)
    command = click.argument("domain")(command)
    return click.command(name=target, short_help=short_help, help=help_text)(command)


start = _state_command("start", "Start a VM.", "Start the VM DOMAIN on its node.",
                       force="Also start a mirror replica.")
restart_ = _state_command("restart", "Restart a running VM.",
                          "Restart the running VM DOMAIN (shutdown, then start).",
                          wait=True, confirm="Restart virtual machine {domain}")
shutdown = _state_command("shutdown", "Gracefully shut down a VM.",
                          "Shut down the VM DOMAIN with ACPI; it is stopped if it does not finish in time.",
                          wait=True, confirm="Shut down virtual machine {domain}")
stop = _state_command("stop", "Forcibly stop a VM.", "Halt (destroy) the VM DOMAIN at once.",
                      force="Also stop a snapshot mirror.", confirm="Forcibly stop virtual machine {domain}")
disable = _state_command("disable", "Shut down a VM and mark it disabled.",
                         "Shut down the VM DOMAIN and mark it disabled (not counted as degraded, unlike "
                         "stopped VMs).", force="Stop the VM instead of waiting for a shutdown.",
                         confirm="Shut down and disable virtual machine {domain}")


COMMANDS: tuple[click.Command, ...] = (define, rename, undefine, remove, start, restart_, shutdown, stop,
                                        disable)
