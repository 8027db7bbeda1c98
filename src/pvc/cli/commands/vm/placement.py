"""`pvc vm move/migrate/unmigrate` (which node runs a VM) and `flush-locks` (the RBD locks a node left)."""

from __future__ import annotations

import click

from pvc.cli.client import decode
from pvc.cli.commands.vm.common import with_progress
from pvc.cli.errors import CLIError
from pvc.cli.state import get_state, wait_option
from pvc.cli.waiters import run_task
from pvc.core.vocabulary import NodeAction


def _move(domain: str, action: NodeAction, node: str | None, *, force: bool = False, wait: bool = False,
          force_live: bool = False) -> None:
    """POST /vm/<vm>/node; `wait` blocks server-side until the migration is over (progress shown)."""
    state = get_state()

    def call() -> str:
        return state.api().message("POST", f"/vm/{domain}/node", params={
            "action": action, "node": node, "force": force, "wait": wait, "force_live": force_live})

    state.out(with_progress(state, domain, f"Waiting for {action} of", call) if wait else call())


def _target(node: str | None, target: str | None) -> str | None:
    if node and target and node != target:
        raise CLIError(f"Two target nodes given: {node} and {target}.")
    return node or target


@click.command(name="move", short_help="Permanently move a VM to another node.")
@click.argument("domain")
@click.argument("node", required=False, default=None)
@click.option("-t", "--target", "target", default=None, help="Target node (same as NODE).")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def move(domain: str, node: str | None, target: str | None, wait: bool, force_live: bool) -> None:
    """Move the VM DOMAIN to NODE for good (live if it runs); without NODE the selector chooses."""
    _move(domain, "move", _target(node, target), wait=wait, force_live=force_live)


@click.command(name="migrate", short_help="Temporarily migrate a VM to another node.")
@click.argument("domain")
@click.argument("node", required=False, default=None)
@click.option("-t", "--target", "target", default=None, help="Target node (same as NODE).")
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Migrate an already migrated VM again (its original node is kept).")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def migrate(domain: str, node: str | None, target: str | None, force: bool, wait: bool,
            force_live: bool) -> None:
    """Migrate the VM DOMAIN to NODE, remembering where it came from (see unmigrate)."""
    _move(domain, "migrate", _target(node, target), force=force, wait=wait, force_live=force_live)


@click.command(name="unmigrate", short_help="Return a migrated VM to its original node.")
@click.argument("domain")
@click.option("-w", "--wait", "wait", is_flag=True, default=False, help="Wait for the migration to finish.")
@click.option("--force-live", is_flag=True, default=False,
              help="Do not fall back to a shutdown migration if live migration fails.")
def unmigrate(domain: str, wait: bool, force_live: bool) -> None:
    """Return the migrated VM DOMAIN to the node it was migrated from."""
    _move(domain, "unmigrate", None, wait=wait, force_live=force_live)


@click.command(name="flush-locks", short_help="Flush stale RBD locks of a VM.")
@click.argument("domain")
@wait_option(True)
def flush_locks(domain: str, wait: bool) -> None:
    """Remove stale RBD locks of the VM DOMAIN (which must be stopped, disabled or failed).

    A task on the VM's node: --wait (default) follows it, --no-wait prints its ID.
    """
    state = get_state()
    response = state.api().call("POST", f"/vm/{domain}/locks", ok=(200, 202))
    body = decode(response)
    if response.status_code == 202:
        run_task(state, body, wait)
    else:
        state.out(str(body.get("message", "")) if isinstance(body, dict) else str(body or ""))


COMMANDS: tuple[click.Command, ...] = (move, migrate, unmigrate, flush_locks)
