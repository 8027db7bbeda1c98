"""`pvc vm meta` and `pvc vm tag`: PVC's own data about a VM (placement rules, profile, tags)."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.commands.vm.common import downtime_option, method_option, selector_option
from pvc.cli.commands.vm.formats import TAG_FORMATS
from pvc.cli.errors import CLIError
from pvc.cli.state import format_option, get_state


@click.command(name="meta", short_help="Change the PVC metadata of a VM.")
@click.argument("domain")
@click.option("-l", "--limit", "--node-limit", "node_limit", default=None, metavar="NODES",
              help='Comma-separated nodes the VM may run on; "" removes the limit.')
@selector_option("How to choose a target node.")
@click.option("-a/-A", "--autostart/--no-autostart", "--node-autostart/--no-node-autostart",
              "node_autostart", default=None, help="Start the VM on the next ready of its home node.")
@method_option()
@downtime_option
@click.option("-p", "--profile", "profile", default=None, help="Provisioner profile of the VM.")
@click.option("--force", "force", is_flag=True, default=False,
              help="Accept a node limit naming nodes not registered yet (nodes still to be added).")
def meta(domain: str, node_limit: str | None, node_selector: str | None, node_autostart: bool | None,
         migration_method: str | None, migration_max_downtime: int | None, profile: str | None,
         force: bool) -> None:
    """Change the PVC metadata of the VM DOMAIN (name or UUID); only the given options change.

    A node limit naming nodes the cluster does not have is refused unless --force."""
    params = {"limit": node_limit, "selector": node_selector, "autostart": node_autostart,
              "migration_method": migration_method, "migration_max_downtime": migration_max_downtime,
              "profile": profile}
    if all(value is None for value in params.values()):
        raise CLIError("At least one metadata option must be specified to update.")
    if force:
        params["force"] = True
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/meta", params=params))


# -- tags --------------------------------------------------------------------------------------------

@click.group(name="tag", short_help="Manage the tags of a VM.")
def tag_group() -> None:
    """View and change the tags of VMs."""


@tag_group.command(name="get", short_help="Show the tags of a VM.")
@click.argument("domain")
@format_option(TAG_FORMATS)
def tag_get(domain: str, formatter: Any) -> None:
    """Show the tags of the VM DOMAIN."""
    state = get_state()
    body = state.api().get_json(f"/vm/{domain}/tags")
    if isinstance(body, list):  # tolerate a bare list of tags
        body = {"name": domain, "tags": body}
    state.emit(body if isinstance(body, dict) else {"name": domain, "tags": []}, formatter)


@tag_group.command(name="add", short_help="Add a tag to a VM.")
@click.argument("domain")
@click.argument("tag")
@click.option("-p", "--protected", is_flag=True, default=False, help="Protect the tag from removal.")
def tag_add(domain: str, tag: str, protected: bool) -> None:
    """Add TAG to the VM DOMAIN."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/tags",
                                  params={"action": "add", "tag": tag, "protected": protected}))


@tag_group.command(name="remove", short_help="Remove a tag from a VM.")
@click.argument("domain")
@click.argument("tag")
def tag_remove(domain: str, tag: str) -> None:
    """Remove TAG from the VM DOMAIN (protected tags cannot be removed)."""
    state = get_state()
    state.out(state.api().message("POST", f"/vm/{domain}/tags", params={"action": "remove", "tag": tag}))


COMMANDS: tuple[click.Command, ...] = (meta, tag_group)
