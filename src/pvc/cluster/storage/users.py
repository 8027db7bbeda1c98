"""VMs using volumes: which VM definitions name a `pool/volume`, and the refusals that follow
(a volume a VM uses is not removed, renamed or shrunk; a running VM's volume is not rolled back)."""

from __future__ import annotations

from pvc.cluster import vms as vms_mod
from pvc.core.errors import Conflict
from pvc.core.vocabulary import VM_STOPPED_STATES
from pvc.core.zk import ZK


def volume_users(zk: ZK, fresh: bool = False) -> dict[str, list[vms_mod.VMEntry]]:
    """'pool/volume' -> the VMs (with their status) whose definition uses that volume.

    fresh=True for a check that guards a write (read from ZooKeeper, not the API's watch cache,
    which may not show a VM defined a moment ago; vms.load_entries); displays may leave it off.
    """
    out: dict[str, list[vms_mod.VMEntry]] = {}
    for entry in vms_mod.load_entries(zk, fresh=fresh):
        for ref in entry.record.rbd_volumes:
            out.setdefault(ref, []).append(entry)
    return out


def volumes_in_use(zk: ZK) -> dict[str, str]:
    """'pool/volume' -> name of a VM using it (names joined by ', ' when several share it)."""
    return {ref: ", ".join(e.record.name for e in entries) for ref, entries in volume_users(zk).items()}


def users_of(zk: ZK, pool: str, volume: str, allow_vm: str | None = None) -> list[vms_mod.VMEntry]:
    """The VMs using the volume (but allow_vm), read fresh: every caller decides a write on it."""
    return [e for e in volume_users(zk, fresh=True).get(f"{pool}/{volume}", []) if e.record.uuid != allow_vm]


def vm_names(entries: list[vms_mod.VMEntry]) -> str:
    return ", ".join(f'"{e.record.name}"' for e in entries)


def refuse_in_use(zk: ZK, pool: str, volume: str, doing: str, allow_vm: str | None = None) -> None:
    users = users_of(zk, pool, volume, allow_vm)
    if users:
        plural = "VMs" if len(users) > 1 else "VM"
        raise Conflict(f'Cannot {doing} RBD volume "{volume}" in pool "{pool}": it is used by {plural} '
                       f"{vm_names(users)}; remove it from the VM definition first.")


def vm_running(entry: vms_mod.VMEntry) -> bool:
    """Whether the VM may be using its volumes: meant to run, or reported running whatever its state."""
    return entry.record.state not in VM_STOPPED_STATES or vms_mod.is_running(entry.status)
