"""VM operations that also touch the VM's RBD volumes: remove with disks, rename with volumes.

They sit between pvc.cluster.vms (definitions) and pvc.cluster.storage (volumes), which stay
independent of each other. Both check everything first (volumes known, not shared with another
VM, new names free) and only then act, so a refusal changes nothing.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from pvc.adapters.ceph import Storage
from pvc.cluster import storage as storage_mod
from pvc.cluster import vms as vms_mod
from pvc.core import domainxml, schema
from pvc.core.errors import Conflict, NotFound, PVCError
from pvc.core.revert import Reverter
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

RELEASE_WAIT = 40.0     # s: Ceph's watch timeout (osd_client_watch_timeout, 30 s) and a margin
RELEASE_POLL = 1.0


def _split(ref: str) -> tuple[str, str]:
    pool, _, name = ref.partition("/")
    return pool, name


def _shared(zk: ZK, uuid: str, refs: list[str]) -> dict[str, list[str]]:
    """ref -> names of the other VMs that use it too (read fresh: it guards the removal)."""
    users = storage_mod.volume_users(zk, fresh=True)
    return {ref: names for ref in refs
            if (names := [e.record.name for e in users.get(ref, []) if e.record.uuid != uuid])}


def remove_with_disks(zk: ZK, storage: Storage, vm: str, timeout: float = vms_mod.STOP_TIMEOUT) -> str:
    """Stop and undefine the VM, then remove each of its volumes with their snapshots.

    Refused up front when another VM uses one of the volumes. Volumes PVC does not know (never
    created or already gone) are skipped; a Ceph failure after the undefine is reported by name.
    """
    record = vms_mod.get_vm(zk, vm)
    shared = _shared(zk, record.uuid, record.rbd_volumes)
    if shared:
        detail = "; ".join(f'{ref} by {", ".join(names)}' for ref, names in shared.items())
        raise Conflict(f'VM "{record.name}" shares volumes with other VMs ({detail}); nothing was changed. '
                       f"Remove the volumes from those VMs first, or undefine without delete_disks.")
    vms_mod.undefine(zk, vm, timeout)
    failed, unknown = [], []
    # The VM's domains are gone, but a QEMU may still be closing its images (a migration target
    # torn down by the stop), or one that died holds its watch until Ceph's watch timeout
    # (30 s): an image in use is tried again until then, not reported at once.
    deadline = time.monotonic() + RELEASE_WAIT
    for ref in record.rbd_volumes:
        pool, name = _split(ref)
        while True:
            try:
                storage_mod.remove_volume(zk, storage, pool, name, allow_vm=record.uuid)
            except storage_mod.VolumeInUse as exc:
                if time.monotonic() < deadline:
                    time.sleep(RELEASE_POLL)
                    continue
                failed.append(f"{ref}: {exc.message}")
            except NotFound:
                unknown.append(ref)
            except PVCError as exc:
                failed.append(f"{ref}: {exc.message}")
            break
    if failed:
        raise Conflict(f'VM "{record.name}" was undefined, but removing its volumes failed: '
                       f'{"; ".join(failed)}')
    text = f'Removed VM "{record.name}" and its disks from the cluster.'
    if unknown:
        text += f' Volumes unknown to PVC were left alone: {", ".join(unknown)}.'
    return text


def renamed_volumes(xml: str, new_name: str) -> dict[str, str]:
    """old ref -> new ref of the volumes a rename changes (upstream: `<vm>_<disk>` follow the VM)."""
    old = domainxml.parse(xml).rbd_volumes
    new = domainxml.parse(domainxml.rename(xml, new_name)).rbd_volumes
    return {a: b for a, b in zip(old, new, strict=True) if a != b}


def rename(zk: ZK, storage: Storage, vm: str, new_name: str) -> str:
    """Rename a stopped VM and its volumes named `<old>_*`; undo the volume renames on failure."""
    record = vms_mod.get_vm(zk, vm)
    vms_mod.check_rename(zk, record, new_name)
    # only volumes PVC knows are renamed; a disk on an unknown image keeps its source
    changes = {old: new for old, new in renamed_volumes(record.xml, new_name).items()
               if zk.exists(schema.volume(*_split(old)))}
    shared = _shared(zk, record.uuid, list(changes))
    if shared:
        raise Conflict(f'VM "{record.name}" shares volumes {", ".join(shared)} with other VMs; nothing was '
                       f"changed.")
    for old_ref, new_ref in changes.items():
        pool, old = _split(old_ref)
        _, new = _split(new_ref)
        if zk.exists(schema.volume(pool, new)):
            raise Conflict(f'Cannot rename VM "{record.name}": volume "{new}" already exists in pool '
                           f'"{pool}"; nothing was changed.')
    with Reverter(log.warning) as revert:
        for old_ref, new_ref in changes.items():
            pool, old = _split(old_ref)
            _, new = _split(new_ref)
            storage_mod.rename_volume(zk, storage, pool, old, new, allow_vm=record.uuid)
            revert.add(f"volume {pool}/{old} renamed to {new}",
                       partial(storage_mod.rename_volume, zk, storage, pool, new, old, allow_vm=record.uuid))
        text = vms_mod.rename(zk, vm, new_name, volume_renames=changes)
        revert.commit()
    if changes:
        text = text.rstrip(".") + f' and its volumes ({", ".join(changes.values())}).'
    return text
