"""`pvc vm snapshot send` (added to the `snapshot` group) and `pvc vm mirror create|promote`.

DEST is a CLI connection name (its scheme, address, port and API key are used, and its TLS
verification setting and CA file) or a URI containing `http` (then the key comes from -k/--key or
--key-file, the CA from --ca-file). The destination key goes to the source cluster in a form field
of the request body, never in the query string; the cluster seals it and keeps it out of the
task's arguments. The CA's PEM text goes along (destination_api_ca): the source cluster checks
the destination's certificate against it, so verification stays on between clusters with their
own CAs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pvc.cli import connections as store
from pvc.cli.client import decode
from pvc.cli.commands.vm.snapshots import snapshot
from pvc.cli.errors import CLIError
from pvc.cli.state import confirm_option, get_state, wait_option
from pvc.cli.waiters import run_task

DEST_HELP = ("DEST: a CLI connection name (see `pvc connection list`) or the destination API's URI, "
             "e.g. https://pvc2.example:7370/api/v1")


def _read_ca(path: str) -> str:
    """The PEM text of a CA file (checked: it must hold a certificate)."""
    try:
        absolute = store.check_ca_file(path)
        return Path(absolute).read_text()
    except store.ConnectionStoreError as exc:
        raise CLIError(f"Error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"Error: cannot read the CA file {path}: {exc}") from None


def _destination(dest: str, key: str | None, key_file: str | None, pool: str | None,
                 verify: bool | None, ca_file: str | None = None) -> dict[str, Any]:
    """The destination form fields for DEST (connection name or URI)."""
    if key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise CLIError(f"Error: cannot read the key file {key_file}: {exc.strerror}") from None
    state = get_state()
    if "http" in dest:
        if not key:
            raise CLIError("Error: a destination given as a URI needs its API key (-k/--key or --key-file).")
        uri, verify_ssl = dest.rstrip("/"), True if verify is None else verify
    else:
        found = store.all_connections(state.load_store(), state.env)
        conn = found.get(dest)
        if conn is None:
            raise CLIError(f'Error: no connection named "{dest}" (and it is not a URI); known: '
                           f"{', '.join(sorted(found)) or 'none'}")
        uri, verify_ssl = conn.base_url, conn.verify_ssl if verify is None else verify
        key = key or conn.api_key
        if not key:
            raise CLIError(f'Error: connection "{dest}" has no API key; give one with -k/--key.')
        if ca_file is None and conn.scheme == "https" and verify_ssl:
            ca_file = conn.ca_file
    fields: dict[str, Any] = {"destination_api_uri": uri, "destination_api_key": key,
                              "destination_api_verify_ssl": "true" if verify_ssl else "false"}
    if ca_file:
        if not verify_ssl:
            raise CLIError("Error: --ca-file with TLS verification off (--no-verify-ssl or the connection's "
                           "setting): the CA is only used to verify the destination's certificate.")
        fields["destination_api_ca"] = _read_ca(ca_file)
    if pool:
        fields["destination_storage_pool"] = pool
    if state.connection.scheme != "https":
        state.info(f'Warning: connection "{state.connection.name}" is not TLS; the destination key travels '
                   f"unencrypted to it.")
    return fields


def _promote_question(kw: dict[str, Any]) -> str:
    where = f"VM \"{kw['domain']}\" on \"{kw['dest']}\""
    return f"Dry run: check promoting {where}" if kw.get("dry_run") else f"Shut down and promote {where}"


def _post(path: str, fields: dict[str, Any], wait: bool) -> None:
    state = get_state()
    response = state.api().call("POST", path, data=fields, ok=(200, 202))
    body = decode(response)
    if response.status_code == 202:
        run_task(state, body, wait)
    else:
        state.out(str(body.get("message", "")) if isinstance(body, dict) else str(body or ""))


def _dest_options(function: Any) -> Any:
    function = click.option("--ca-file", "ca_file", default=None, type=click.Path(dir_okay=False),
                            help="Verify the destination's TLS certificate against this CA (PEM); default: "
                                 "the connection's CA file, or the system's CAs for a URI.")(function)
    function = click.option("--verify-ssl/--no-verify-ssl", "verify", default=None,
                            help="Check the destination's TLS certificate (default: the connection's "
                                 "setting, or yes for a URI).")(function)
    function = click.option("-p", "--destination-pool", "pool", default=None,
                            help="Write the volumes into this pool on the destination (the XML "
                                 "follows).")(function)
    function = click.option("--key-file", "key_file", default=None, type=click.Path(dir_okay=False),
                            help="Read the destination API key from this file.")(function)
    return click.option("-k", "--key", "key", default=None,
                        help="The destination API key (prefer --key-file: a command line is visible "
                             "to other users).")(function)


@snapshot.command(name="send", short_help="Send a snapshot of a VM to another PVC cluster.")
@click.argument("domain")
@click.argument("snapshot_name")
@click.argument("dest")
@click.option("-i", "--incremental", "incremental_parent", default=None,
              help="Send only the changes since the snapshot PARENT (which the destination must have).")
@_dest_options
@wait_option(True)
def send(domain: str, snapshot_name: str, dest: str, incremental_parent: str | None, key: str | None,
         key_file: str | None, pool: str | None, verify: bool | None, ca_file: str | None,
         wait: bool) -> None:
    """Send the snapshot SNAPSHOT_NAME of the VM DOMAIN to another PVC cluster, DEST.

    \b
    DEST: a CLI connection name or the destination API's URI (with -k/--key-file).
    The VM appears there in state "mirror" (new, or updated when it is already a mirror there).
    Only allocated data is sent; an interrupted send resumes where it stopped when sent again
    (to a cluster running this PVC; a PVC 1.0.x destination starts again).
    """
    fields = _destination(dest, key, key_file, pool, verify, ca_file)
    fields["snapshot_name"] = snapshot_name
    if incremental_parent:
        fields["incremental_parent"] = incremental_parent
    _post(f"/vm/{domain}/snapshot/send", fields, wait)


@click.group(name="mirror", short_help="Mirror PVC VMs to another cluster.")
def mirror() -> None:
    """Keep copies of VMs on another PVC cluster (in state "mirror") and move VMs there."""


@mirror.command(name="create", short_help="Mirror a VM to another PVC cluster.")
@click.argument("domain")
@click.argument("dest")
@_dest_options
@wait_option(True)
def create(domain: str, dest: str, key: str | None, key_file: str | None, pool: str | None,
           verify: bool | None, ca_file: str | None, wait: bool) -> None:
    """Take a snapshot ("mr" + date) of the VM DOMAIN and send it to DEST: incremental from the newest
    snapshot both clusters have, else in full. The copy there is in state "mirror".

    DEST: a CLI connection name or the destination API's URI (with -k/--key-file).
    """
    _post(f"/vm/{domain}/mirror/create", _destination(dest, key, key_file, pool, verify, ca_file), wait)


@mirror.command(name="promote", short_help="Move a VM to its mirror on another PVC cluster.")
@click.argument("domain")
@click.argument("dest")
@click.option("--remove", "remove_on_source", is_flag=True, default=False,
              help="Remove the VM (and its disks) from this cluster afterwards; else it becomes the "
                   "mirror here.")
@click.option("--dry-run", "dry_run", is_flag=True, default=False,
              help="Check the destination (version, pools, space) and change nothing.")
@_dest_options
@wait_option(True)
@confirm_option(lambda kw: _promote_question(kw))
def promote(domain: str, dest: str, remove_on_source: bool, dry_run: bool, key: str | None,
            key_file: str | None, pool: str | None, verify: bool | None, ca_file: str | None,
            wait: bool) -> None:
    """Move the VM DOMAIN to DEST: shut it down, send a last snapshot, start it there in its previous
    state, then make it the mirror here (or remove it with --remove). If anything fails before it
    starts there, it is started here again.

    DEST: a CLI connection name or the destination API's URI (with -k/--key-file).
    """
    fields = _destination(dest, key, key_file, pool, verify, ca_file)
    fields.update({"remove_on_source": "true" if remove_on_source else "false",
                   "dry_run": "true" if dry_run else "false"})
    _post(f"/vm/{domain}/mirror/promote", fields, wait)


COMMANDS: tuple[click.Command, ...] = (mirror,)
