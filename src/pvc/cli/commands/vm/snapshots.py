"""`pvc vm snapshot create/remove/rollback/rename`: snapshots of a whole VM (every disk at one instant,
its XML and metadata), each a task the CLI follows (--wait, the default) or only queues (--no-wait).

The `snapshot` group lives here; export/import (backups) and send (mirrors) add their commands to it
from their own modules.
"""

from __future__ import annotations

import click

from pvc.cli.state import confirm_option, wait_option
from pvc.cli.waiters import start_task


@click.group(name="snapshot", short_help="Manage snapshots of PVC VMs.")
def snapshot() -> None:
    """Manage the snapshots of PVC virtual machines: every RBD disk of the VM at one instant, together
    with its configuration (XML) and metadata."""


@snapshot.command(name="create", short_help="Take a snapshot of a VM.")
@click.argument("domain")
@click.argument("snapshot_name", required=False, default=None)
@wait_option(True)
def create(domain: str, snapshot_name: str | None, wait: bool) -> None:
    """Take a snapshot of every disk of the VM DOMAIN at one instant, with its XML and metadata, as
    SNAPSHOT_NAME (default: the date and time, YYYYMMDDHHMMSS).

    \b
    A running VM's filesystems are frozen through its QEMU guest agent when it runs one; otherwise the
    VM is paused for the few milliseconds the disk snapshots take. Without a guest agent, restoring a
    snapshot of a running VM is like a power-off at that instant (each filesystem is crash-consistent).
    Names: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters.
    """
    start_task("POST", f"/vm/{domain}/snapshot", {"snapshot_name": snapshot_name}, wait)


@snapshot.command(name="remove", short_help="Remove a snapshot of a VM.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.option("--force", "force", is_flag=True, default=False,
              help="Drop the snapshot even if some of its RBD snapshots are already gone.")
@wait_option(True)
@confirm_option("Remove snapshot {snapshot_name} of VM {domain}")
def remove(domain: str, snapshot_name: str, force: bool, wait: bool) -> None:
    """Remove the snapshot SNAPSHOT_NAME of the VM DOMAIN, with its RBD snapshots."""
    start_task("DELETE", f"/vm/{domain}/snapshot", {"snapshot_name": snapshot_name, "force": force or None},
               wait)


@snapshot.command(name="rollback", short_help="Roll a VM back to a snapshot.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.option("--force", "force", is_flag=True, default=False,
              help="Detach the VM's disks that the snapshot does not hold (otherwise refused).")
@click.option("--with-meta", "with_meta", is_flag=True, default=False,
              help="Also restore the VM's metadata (limits, selector, autostart, migration, profile, tags).")
@wait_option(True)
@confirm_option("Roll back VM {domain} to snapshot {snapshot_name}, discarding the disks' current data")
def rollback(domain: str, snapshot_name: str, force: bool, with_meta: bool, wait: bool) -> None:
    """Roll the stopped VM DOMAIN back to its snapshot SNAPSHOT_NAME: every disk and the XML.

    All data written to the disks since the snapshot is lost. The VM must be stopped (or disabled).
    """
    start_task("POST", f"/vm/{domain}/snapshot/rollback",
          {"snapshot_name": snapshot_name, "force": force or None, "with_meta": with_meta or None}, wait)


@snapshot.command(name="rename", short_help="Rename a snapshot of a VM.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.argument("new_name")
@wait_option(True)
def rename(domain: str, snapshot_name: str, new_name: str, wait: bool) -> None:
    """Rename the snapshot SNAPSHOT_NAME of the VM DOMAIN (and its RBD snapshots) to NEW_NAME.

    Snapshots of autobackup (ab...), automirror (am...) and mirrors (mr...) are not renamed: those
    features find them by name.
    """
    start_task("PUT", f"/vm/{domain}/snapshot", {"snapshot_name": snapshot_name, "new_name": new_name}, wait)


COMMANDS: tuple[click.Command, ...] = (snapshot,)
