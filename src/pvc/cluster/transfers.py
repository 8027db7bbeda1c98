"""Send destinations kept out of task arguments (issue #15, 1.4.16; DESIGN D14).

The API that queues a send, mirror or promote stores the destination under `/transfers/<id>`:
`{uri, key (sealed with the cluster key), ca, verify_ssl, pool, vm, created}`; the task's arguments
carry only the id. The worker opens the document when the task starts and deletes it when the
task ends, so the key never appears in task arguments, `GET /tasks`, logs or error messages.
`ca` (optional, PEM text; not a secret) is the destination's CA: its certificate is then checked
against that CA only, so clusters with their own CAs talk with verification on.
"""

from __future__ import annotations

import secrets as pysecrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.core import schema, taskkinds
from pvc.core import secrets as cluster_secrets
from pvc.core.config import Settings
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import TaskRecord, VMRecord
from pvc.core.zk import ZK

STALE_AFTER = 7 * 86400.0       # a transfer no task consumed (cancelled before it ran) is pruned
RECEIVE_STALE_AFTER = 30 * 86400.0   # a receive nobody resumed (its pending document) is pruned
MAX_CA = 64 * 1024                    # bytes of PEM accepted as a destination CA


@dataclass(frozen=True)
class Destination:
    """Where a snapshot goes: the remote API (e.g. https://host:7370/api/v1), its key, whether to
    check its TLS certificate, the pool to write into (None: the source's pools) and the CA its
    certificate must be signed by (PEM text; None: the system's CAs)."""

    uri: str
    key: str = field(repr=False)
    verify_ssl: bool = True
    pool: str | None = None
    ca: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        ca = ", ca=<given>" if self.ca else ""
        return (f"Destination({self.uri!r}, key=<hidden>, verify_ssl={self.verify_ssl}, pool={self.pool!r}"
                f"{ca})")

    __str__ = __repr__


def check_uri(uri: str) -> str:
    """A destination API URI: http(s)://host[:port][/prefix], without credentials or a query.
    Upstream's form is the API base, e.g. https://pvc.example:7370/api/v1; a bare host:port
    gets /api/v1 appended."""
    text = (uri or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"destination_api_uri: {uri!r} is not an http:// or https:// URI")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput("destination_api_uri: no credentials, query or fragment in the URI (the key "
                           "goes in destination_api_key)")
    if not parts.path:
        text += "/api/v1"
    return text


def check_pool(pool: str | None) -> str | None:
    if pool in (None, ""):
        return None
    if not all(c.isalnum() or c in "._-" for c in pool) or len(pool) > 128:
        raise InvalidInput(f"destination_storage_pool: {pool!r} is not a valid pool name")
    return pool


def check_ca(ca: str | None, verify_ssl: bool = True, uri: str = "") -> str | None:
    """A destination CA: PEM text holding at least one certificate (None when not given).
    Refused with verification off or an http:// URI: a CA that would be ignored is a mistake
    worth naming."""
    if ca is None or not ca.strip():
        return None
    if uri.strip().lower().startswith("http://"):
        raise InvalidInput("destination_api_ca: given for an http:// destination (no TLS to verify)")
    if not verify_ssl:
        raise InvalidInput("destination_api_ca: given with destination_api_verify_ssl false; drop one "
                           "(the CA is only used to verify the destination's certificate)")
    if len(ca) > MAX_CA:
        raise InvalidInput(f"destination_api_ca: {len(ca)} bytes, more than {MAX_CA} (expected PEM "
                           f"certificates)")
    if "-----BEGIN CERTIFICATE-----" not in ca:
        raise InvalidInput("destination_api_ca: not PEM text (no -----BEGIN CERTIFICATE----- line)")
    try:
        ssl.create_default_context(cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidInput(f"destination_api_ca: no usable PEM certificate ({exc})") from None
    return ca.strip() + "\n"


def store(zk: ZK, settings: Settings, dest: Destination, vm_uuid: str = "") -> str:
    """Seal the key and keep the destination for one task; its id."""
    if not dest.key:
        raise InvalidInput("destination_api_key: required (the destination cluster's API key)")
    key = cluster_secrets.load_key(settings.cluster.key_file)
    try:
        prune(zk)                  # what cancelled-before-start tasks and abandoned receives left
    except Exception:              # never a reason to refuse a send
        pass
    transfer_id = pysecrets.token_hex(12)
    zk.create_doc(schema.transfer(transfer_id), {
        "uri": check_uri(dest.uri), "key": key.seal(dest.key), "verify_ssl": bool(dest.verify_ssl),
        "ca": check_ca(dest.ca, dest.verify_ssl, dest.uri), "pool": check_pool(dest.pool), "vm": vm_uuid,
        "created": time.time(),
    })
    return transfer_id


def load(zk: ZK, settings: Settings, transfer_id: str) -> Destination:
    """The destination of a task (the key opened); NotFound if it was consumed or never stored."""
    if not transfer_id or not transfer_id.isalnum():
        raise InvalidInput("destination: not a transfer id")
    doc = zk.get(schema.transfer(transfer_id), None)
    if not isinstance(doc, dict):
        raise NotFound(f"transfer {transfer_id}: not found (already used, or the task was queued "
                       f"without a destination)")
    key = cluster_secrets.load_key(settings.cluster.key_file)
    return Destination(uri=str(doc["uri"]), key=key.open(doc["key"]),
                       verify_ssl=bool(doc.get("verify_ssl", True)), pool=doc.get("pool") or None,
                       ca=doc.get("ca") or None)


def drop(zk: ZK, transfer_id: str) -> None:
    if transfer_id and transfer_id.isalnum():
        zk.delete(schema.transfer(transfer_id))


def prune(zk: ZK, older_than: float = STALE_AFTER, now: float | None = None) -> int:
    """Delete transfers no task consumed within `older_than` seconds, and pending receives
    (pvc.cluster.receive) nobody resumed within RECEIVE_STALE_AFTER; how many."""
    now = time.time() if now is None else now
    removed = 0
    children = [c for c in zk.children(schema.TRANSFERS) if not c.startswith("lk")]   # send locks
    docs = zk.get_many([schema.transfer(c) for c in children]) if children else {}
    for child in children:
        doc: Any = docs.get(schema.transfer(child))
        if not isinstance(doc, dict):
            continue
        limit = older_than if "uri" in doc else RECEIVE_STALE_AFTER if "snapshot" in doc else None
        if limit is not None and now - float(doc.get("created", now)) > limit:
            zk.delete(schema.transfer(child))
            removed += 1
    return removed


# -- queueing the tasks (checked first: bad input queues nothing) ---------------------------------------

def _vm(zk: ZK, vm: str) -> VMRecord:
    return vms_mod.get_vm(zk, vm)


def submit_send(zk: ZK, settings: Settings, vm: str, snapshot: str, dest: Destination,
                parent: str | None) -> TaskRecord:
    """Queue `vm.send_snapshot` after checking the VM, the snapshot, the parent and the destination."""
    record = _vm(zk, vm)
    check_uri(dest.uri)
    check_pool(dest.pool)
    check_ca(dest.ca, dest.verify_ssl, dest.uri)
    snap = snaps.get_snapshot(zk, record.uuid, snapshot)
    if parent:
        if parent == snapshot:
            raise InvalidInput("incremental_parent: the same as the snapshot sent")
        older = snaps.get_snapshot(zk, record.uuid, parent)
        if older.created > snap.created:
            raise InvalidInput(f'incremental_parent: "{parent}" is newer than "{snapshot}"')
    transfer_id = store(zk, settings, dest, record.uuid)
    args = taskkinds.SendArgs(uuid=record.uuid, domain=record.name, snapshot_name=snapshot,
                              destination=transfer_id, incremental_parent=parent or None)
    return _submit(zk, taskkinds.VM_SEND_SNAPSHOT, args, transfer_id)


def submit_mirror(zk: ZK, settings: Settings, vm: str, dest: Destination, promote: bool,
                  remove_on_source: bool = False, dry_run: bool = False) -> TaskRecord:
    """Queue `vm.create_mirror` or `vm.promote_mirror` after checking the VM and the destination."""
    record = _vm(zk, vm)
    check_uri(dest.uri)
    check_pool(dest.pool)
    check_ca(dest.ca, dest.verify_ssl, dest.uri)
    if record.state == "mirror":
        raise Conflict(f'VM "{record.name}" is a mirror here; mirror from the cluster it runs on.')
    transfer_id = store(zk, settings, dest, record.uuid)
    args = taskkinds.MirrorArgs(uuid=record.uuid, domain=record.name, destination=transfer_id,
                                remove_on_source=remove_on_source if promote else False,
                                dry_run=dry_run if promote else False)
    kind = taskkinds.VM_PROMOTE_MIRROR if promote else taskkinds.VM_CREATE_MIRROR
    return _submit(zk, kind, args, transfer_id)


def _submit(zk: ZK, kind: str, args: Any, transfer_id: str) -> TaskRecord:
    try:
        return tasks_mod.submit(zk, kind, args)
    except Exception:
        drop(zk, transfer_id)
        raise
