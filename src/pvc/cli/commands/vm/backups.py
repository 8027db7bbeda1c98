"""`pvc vm snapshot export/import` (upstream's commands, added to the `snapshot` group) and
`pvc vm backup`: the deprecated create/restore/remove (aliases the API runs over the snapshot
tasks) plus our `list` (the backup catalogue) and `verify` (check an export tree, change nothing).
"""

from __future__ import annotations

import time
from typing import Any

import click

from pvc.cli.commands.vm.snapshots import snapshot
from pvc.cli.errors import CLIError
from pvc.cli.output import table, to_json
from pvc.cli.state import confirm_option, get_state, wait_option
from pvc.cli.waiters import start_task

NODE_HELP = "Run on this node, whose filesystem holds PATH (default: the primary coordinator)."


def _message(method: str, path: str, params: dict[str, Any]) -> None:
    state = get_state()
    state.out(state.api().message(method, path, params=params))


# -- pvc vm snapshot export / import -------------------------------------------------------------------

@snapshot.command(name="export", short_help="Export a snapshot of a VM to a directory.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.argument("export_path")
@click.option("-i", "--incremental", "incremental_parent", default=None, metavar="PARENT",
              help="Export only the changes since the snapshot PARENT of the VM. PARENT's own export "
                   "should be under EXPORT_PATH too (an import needs it); if it is not, the task "
                   "logs a warning and exports anyway.")
@click.option("--force", "force", is_flag=True, default=False,
              help="Export even if the free space at EXPORT_PATH is below the estimate.")
@click.option("--node", "node", default=None, help=NODE_HELP)
@wait_option(True)
def export(domain: str, snapshot_name: str, export_path: str, incremental_parent: str | None, force: bool,
           node: str | None, wait: bool) -> None:
    """Export the snapshot SNAPSHOT_NAME of the VM DOMAIN to EXPORT_PATH/DOMAIN/SNAPSHOT_NAME/.

    \b
    The layout is upstream PVC's (images/<pool>.<volume>.rbdimg or .rbddiff and snapshot.json);
    a sha256 of each file is recorded too. PVC 1.0 can import a full export, or an incremental
    whose PARENT is a full export; a deeper chain (an incremental of an incremental) imports only
    here. EXPORT_PATH is an absolute directory on the primary coordinator (or --node), under one
    of the cluster's allowed export roots (storage.export_roots in pvc.conf). A full export is
    sparse and carries the image's earlier snapshots; an incremental one (-i) holds only the
    changes since PARENT, whose export an import reads from the same EXPORT_PATH (a missing one
    is a warning in the task log, not a refusal).
    """
    start_task("POST", f"/vm/{domain}/snapshot/export",
          {"snapshot_name": snapshot_name, "export_path": export_path,
           "incremental_parent": incremental_parent, "force": force or None, "node": node}, wait)


@snapshot.command(name="import", short_help="Import a VM from an exported snapshot.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.argument("import_path")
@click.option("-r/-R", "--retain-snapshot/--remove-snapshot", "retain_snapshot", default=True,
              show_default="--retain-snapshot",
              help="Keep the imported snapshots as snapshots of the VM, or remove them afterwards.")
@click.option("--as", "new_name", default=None, metavar="NAME",
              help="Import under the name NAME, with a new UUID, new NIC MACs and its volumes renamed.")
@click.option("--no-start", "no_start", is_flag=True, default=False,
              help="Leave the imported VM stopped (upstream always starts it).")
@click.option("--verify", "verify", is_flag=True, default=False,
              help="Only check the export's files (sizes, and checksums where recorded); import nothing.")
@click.option("--node", "node", default=None, help=NODE_HELP)
@wait_option(True)
def import_(domain: str, snapshot_name: str, import_path: str, retain_snapshot: bool, new_name: str | None,
            no_start: bool, verify: bool, node: str | None, wait: bool) -> None:
    """Import the VM DOMAIN from IMPORT_PATH/DOMAIN/SNAPSHOT_NAME/ (and the exports it is an
    incremental of, back to the full one).

    \b
    The VM's name and UUID must be free in the cluster (or use --as). The files are verified
    before anything is created (an export by upstream PVC has no checksums; only sizes are
    checked then); a failure part way removes everything the import created. Every file is read
    as a regular file below IMPORT_PATH: a symbolic link inside the tree is refused.
    """
    start_task("POST", f"/vm/{domain}/snapshot/import",
          {"snapshot_name": snapshot_name, "import_path": import_path,
           "retain_snapshot": "true" if retain_snapshot else "false", "new_name": new_name,
           "start": "false" if no_start else None, "verify": verify or None, "node": node}, wait)


# -- pvc vm backup ---------------------------------------------------------------------------------------

@click.group(name="backup", short_help="Manage backups of PVC VMs (create/restore/remove deprecated).")
def backup() -> None:
    """Back up and restore VMs to and from a directory (deprecated: use 'pvc vm snapshot export' and
    'import'), list the backup catalogue, and verify an export tree."""


@backup.command(name="create", short_help="Back up a VM.", deprecated=True)
@click.argument("domain")
@click.argument("backup_path")
@click.option("-i", "--incremental", "incremental_parent", default=None, metavar="DATESTRING",
              help="Back up only the changes since the retained backup DATESTRING.")
@click.option("-r", "--retain-snapshot", "retain_snapshot", is_flag=True, default=False,
              help="Keep the backup's snapshot (needed to make incrementals from it later).")
def backup_create(domain: str, backup_path: str, incremental_parent: str | None,
                  retain_snapshot: bool) -> None:
    """Back up the VM DOMAIN to BACKUP_PATH/DOMAIN/<datestring>/ (upstream's legacy layout).

    Deprecated: use 'pvc vm snapshot export' (and autobackup); kept for existing scripts.
    """
    _message("POST", f"/vm/{domain}/backup", {"backup_path": backup_path,
                                               "incremental_parent": incremental_parent,
                                               "retain_snapshot": retain_snapshot or None})


@backup.command(name="restore", short_help="Restore a VM from a backup.", deprecated=True)
@click.argument("domain")
@click.argument("backup_datestring")
@click.argument("backup_path")
@click.option("-r/-R", "--retain-snapshot/--remove-snapshot", "retain_snapshot", default=True,
              show_default="--retain-snapshot", help="Keep the restored snapshot, or remove it afterwards.")
def backup_restore(domain: str, backup_datestring: str, backup_path: str, retain_snapshot: bool) -> None:
    """Restore the VM DOMAIN from its backup BACKUP_DATESTRING in BACKUP_PATH (the VM must not exist).

    Deprecated: use 'pvc vm snapshot import'; kept for existing scripts.
    """
    _message("POST", f"/vm/{domain}/restore", {"backup_path": backup_path,
                                                "backup_datestring": backup_datestring,
                                                "retain_snapshot": "true" if retain_snapshot else "false"})


@backup.command(name="remove", short_help="Remove a backup of a VM.", deprecated=True)
@click.argument("domain")
@click.argument("backup_datestring")
@click.argument("backup_path")
@confirm_option("Remove backup {backup_datestring} of VM {domain} from {backup_path}")
def backup_remove(domain: str, backup_datestring: str, backup_path: str) -> None:
    """Remove the backup BACKUP_DATESTRING of the VM DOMAIN: its retained snapshot and its directory.

    Deprecated: remove snapshots with 'pvc vm snapshot remove'; kept for existing scripts.
    """
    _message("DELETE", f"/vm/{domain}/backup", {"backup_path": backup_path,
                                                 "backup_datestring": backup_datestring})


def _age(started: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started)))
    except (TypeError, ValueError):
        return ""


@backup.command(name="list", short_help="List the backup catalogue.")
@click.argument("domain", required=False, default=None)
@click.option("-f", "--format", "output_format", type=click.Choice(["pretty", "json", "json-pretty"]),
              default="pretty", show_default=True, help="Output format.")
def backup_list(domain: str | None, output_format: str) -> None:
    """List every export recorded for the VM DOMAIN (or for all VMs): snapshot, type, parent, result,
    size, target. Failed exports are listed too; they never count as a backup."""
    state = get_state()
    api = state.api()
    names = [domain] if domain else [str(vm.get("name")) for vm in api.get_list("/vm")]
    rows: list[dict[str, Any]] = []
    for name in names:
        for entry in api.get_json(f"/vm/{name}/backup") or []:
            rows.append({"vm_name": name, **entry})
    if output_format != "pretty":
        state.out(to_json(rows, pretty=output_format == "json-pretty"))
        return
    if not rows:
        state.out("No backups recorded.")
        return
    state.out(table(["VM", "Snapshot", "Type", "Parent", "Result", ("Size", "right"), "Started", "Target",
                     "Message"],
                    [[r["vm_name"], r.get("snapshot"), r.get("type"), r.get("parent") or "",
                      "ok" if r.get("result") else "FAILED", r.get("bytes", 0), _age(r.get("started")),
                      r.get("target", ""), r.get("message", "")] for r in rows]))


@backup.command(name="verify", short_help="Verify an export tree (changes nothing).")
@click.argument("domain")
@click.argument("snapshot_name")
@click.argument("path")
@click.option("--node", "node", default=None, help=NODE_HELP)
@wait_option(True)
def backup_verify(domain: str, snapshot_name: str, path: str, node: str | None, wait: bool) -> None:
    """Check PATH/DOMAIN/SNAPSHOT_NAME/ and the exports it needs: every file present, of its recorded
    size, with its recorded sha256. Nothing is imported or changed."""
    if not path.startswith("/"):
        raise CLIError(f"Error: PATH '{path}' must be absolute (a directory on the cluster's node).")
    start_task("POST", f"/vm/{domain}/snapshot/import",
          {"snapshot_name": snapshot_name, "import_path": path, "verify": "true", "node": node}, wait)


COMMANDS: tuple[click.Command, ...] = (backup,)
