"""Task kinds and their typed arguments (DESIGN D9, D19).

Each task kind has one pydantic model of its arguments. `pvc.cluster.tasks.submit` validates
the arguments against it when a task is queued, and the worker validates the stored document
again before it runs the kind's function (a task written by an older or foreign writer is
refused with the reason, never run with guessed arguments). The worker registers one function
per kind named here; the API and the CLI take the names from here too.

Secrets never go into task arguments: the models hold names and ids, never keys or passwords.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class TaskArgs(BaseModel):
    """Arguments of a task kind. Unknown fields are refused: a typo must not vanish silently."""

    model_config = ConfigDict(extra="forbid")


class NoArgs(TaskArgs):
    pass


class ClusterSelftestArgs(TaskArgs):
    timeout: float = 60.0


class VMTaskArgs(TaskArgs):
    uuid: str
    domain: str = ""          # the VM's name when queued (for messages; the uuid decides)


class FlushLocksArgs(VMTaskArgs):
    force_unlock: bool = False


class DeviceArgs(VMTaskArgs):
    xml: str


class BlockResizeArgs(VMTaskArgs):
    pool: str
    volume: str
    size: int


class OsdAddArgs(TaskArgs):
    node: str
    device: str
    weight: float
    ext_db_ratio: float | None = None
    ext_db_size: int | None = None
    osd_count: int | None = None


class OsdRemoveArgs(TaskArgs):
    osd_id: int
    force: bool = False


class OsdReplaceArgs(TaskArgs):
    osd_id: int
    new_device: str
    old_device: str | None = None
    weight: float | None = None
    ext_db_ratio: float | None = None
    ext_db_size: int | None = None


class OsdRefreshArgs(TaskArgs):
    osd_id: int
    device: str = ""


class DbVgArgs(TaskArgs):
    node: str
    device: str


class BenchmarkArgs(TaskArgs):
    pool: str
    name: str | None = None


class ProvisionArgs(TaskArgs):
    vm_name: str
    vm_profile: str
    define_vm: bool = True
    start_vm: bool = True
    script_run_args: list[str] = []


class SnapshotArgs(VMTaskArgs):
    snapshot_name: str


class SnapshotCreateArgs(SnapshotArgs):
    origin: str = "manual"


class SnapshotRemoveArgs(SnapshotArgs):
    force: bool = False              # tolerate missing RBD snapshots, always drop the record


class SnapshotRollbackArgs(SnapshotArgs):
    force: bool = False              # detach disks that are not in the snapshot
    with_meta: bool = False          # also restore the captured metadata


class SnapshotRenameArgs(SnapshotArgs):
    new_name: str


class SnapshotExportArgs(SnapshotArgs):
    export_path: str
    incremental_parent: str | None = None
    force: bool = False              # write even when the free-space estimate says no
    legacy: bool = False             # the deprecated backup's layout (<datestring>/pvcdisks, pvcbackup.json)
    origin: str = "export"           # the catalogue entry's origin: export, backup or autobackup


class SnapshotImportArgs(TaskArgs):
    """Import `<import_path>/<vm_name>/<snapshot_name>`; the VM does not exist yet."""

    vm_name: str
    snapshot_name: str
    import_path: str
    retain_snapshot: bool = True
    new_name: str | None = None      # import under another name (a new UUID, volumes renamed)
    start: bool = True               # upstream always starts the imported VM
    verify_only: bool = False        # check the tree's checksums, change nothing


class SendArgs(SnapshotArgs):
    """Send a snapshot to another cluster. The destination (URI, key, TLS check, pool) lives in a
    sealed /transfers/<destination> document, never in the task's arguments."""

    destination: str                 # id of the /transfers document
    incremental_parent: str | None = None


class MirrorArgs(VMTaskArgs):
    destination: str                 # id of the /transfers document
    remove_on_source: bool = False   # promote only: remove the local VM afterwards
    dry_run: bool = False            # promote only: check everything, change nothing


class AutobackupArgs(TaskArgs):
    force_full: bool = False
    email_recipients: list[str] = []
    cleanup: bool = False            # remove orphan ab... snapshots (no catalogue entry)
    scheduled: str = ""              # "normal"/"forced_full" when the built-in schedule ran it
    now: float | None = None         # the run's clock (epoch), for tests over simulated days


class AutomirrorArgs(TaskArgs):
    email_recipients: list[str] = []
    email_errors_only: bool = False
    scheduled: str = ""
    now: float | None = None         # the run's clock (epoch), for tests over simulated days


# The provisioner's stages (progress total of a provisioner.create task).
PROVISION_STAGES = 11

NODE_SELFTEST = "node.selftest"
CLUSTER_SELFTEST = "cluster.selftest"
VM_FLUSH_LOCKS = "vm.flush_locks"
VM_DEVICE_ATTACH = "vm.device_attach"
VM_DEVICE_DETACH = "vm.device_detach"
VM_BLOCK_RESIZE = "vm.block_resize"
OSD_ADD = "osd.add"
OSD_REMOVE = "osd.remove"
OSD_REPLACE = "osd.replace"
OSD_REFRESH = "osd.refresh"
OSD_ADD_DB_VG = "osd.add_db_vg"
STORAGE_BENCHMARK = "storage.benchmark"
PROVISIONER_CREATE = "provisioner.create"
VM_CREATE_SNAPSHOT = "vm.create_snapshot"
VM_REMOVE_SNAPSHOT = "vm.remove_snapshot"
VM_ROLLBACK_SNAPSHOT = "vm.rollback_snapshot"
VM_RENAME_SNAPSHOT = "vm.rename_snapshot"
VM_EXPORT_SNAPSHOT = "vm.export_snapshot"
VM_IMPORT_SNAPSHOT = "vm.import_snapshot"
VM_SEND_SNAPSHOT = "vm.send_snapshot"
VM_CREATE_MIRROR = "vm.create_mirror"
VM_PROMOTE_MIRROR = "vm.promote_mirror"
CLUSTER_AUTOBACKUP = "cluster.autobackup"
CLUSTER_AUTOMIRROR = "cluster.automirror"

TASK_KINDS: dict[str, type[TaskArgs]] = {
    NODE_SELFTEST: NoArgs,
    CLUSTER_SELFTEST: ClusterSelftestArgs,
    VM_FLUSH_LOCKS: FlushLocksArgs,
    VM_DEVICE_ATTACH: DeviceArgs,
    VM_DEVICE_DETACH: DeviceArgs,
    VM_BLOCK_RESIZE: BlockResizeArgs,
    OSD_ADD: OsdAddArgs,
    OSD_REMOVE: OsdRemoveArgs,
    OSD_REPLACE: OsdReplaceArgs,
    OSD_REFRESH: OsdRefreshArgs,
    OSD_ADD_DB_VG: DbVgArgs,
    STORAGE_BENCHMARK: BenchmarkArgs,
    PROVISIONER_CREATE: ProvisionArgs,
    VM_CREATE_SNAPSHOT: SnapshotCreateArgs,
    VM_REMOVE_SNAPSHOT: SnapshotRemoveArgs,
    VM_ROLLBACK_SNAPSHOT: SnapshotRollbackArgs,
    VM_RENAME_SNAPSHOT: SnapshotRenameArgs,
    VM_EXPORT_SNAPSHOT: SnapshotExportArgs,
    VM_IMPORT_SNAPSHOT: SnapshotImportArgs,
    VM_SEND_SNAPSHOT: SendArgs,
    VM_CREATE_MIRROR: MirrorArgs,
    VM_PROMOTE_MIRROR: MirrorArgs,
    CLUSTER_AUTOBACKUP: AutobackupArgs,
    CLUSTER_AUTOMIRROR: AutomirrorArgs,
}


class BadTaskArgs(ValueError):
    """The arguments do not fit the kind's model; the message names the kind and the fields."""


def validate_args(kind: str, args: dict[str, Any] | BaseModel | None) -> TaskArgs:
    """The typed arguments of a task of `kind`, or BadTaskArgs naming what is wrong."""
    model = TASK_KINDS.get(kind)
    if model is None:
        raise BadTaskArgs(f"unknown task kind '{kind}' (known: {', '.join(sorted(TASK_KINDS))})")
    if isinstance(args, model):
        return args
    if isinstance(args, BaseModel):
        args = args.model_dump()
    try:
        return model.model_validate(args or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'args'}: {err['msg']}" for err in exc.errors()
        )
        raise BadTaskArgs(f"task {kind}: {problems}") from None


# Kinds that finish what they started when run again, so a task of theirs whose worker died while
# running it is queued again (up to MAX_ATTEMPTS claims) instead of failed: a snapshot removal is
# marked in its document before the first RBD snapshot goes, and a repeat completes it.
RESUMABLE = frozenset({VM_REMOVE_SNAPSHOT})
MAX_ATTEMPTS = 3
