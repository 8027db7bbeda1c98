"""Typed records stored as JSON documents in ZooKeeper.

Unknown fields are ignored on read so an older daemon can read a newer document during a
rolling upgrade; the schema module migrates stored data forward.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pvc.core.vocabulary import (
    TASK_FINISHED,
    CoordinatorState,
    DaemonState,
    DomainState,
    FaultStatus,
    MigrationMethod,
    NodeMode,
    TaskState,
    VMState,
)


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Memory(Record):
    total: int = 0
    used: int = 0
    free: int = 0
    allocated: int = 0
    provisioned: int = 0


class VCpu(Record):
    total: int = 0
    allocated: int = 0


class NodeRecord(Record):
    """What a node daemon reports about itself (plus the domain state requests of the API)."""

    name: str
    mode: NodeMode = "hypervisor"
    daemon_state: DaemonState = "init"
    coordinator_state: CoordinatorState = "client"
    domain_state: DomainState = "flushed"
    pvc_version: str = ""
    cpu_count: int = 0
    kernel: str = ""
    os: str = ""
    arch: str = ""
    keepalive: float = 0.0
    load: float = 0.0
    cpu_percent: float = 0.0
    memory: Memory = Field(default_factory=Memory)
    vcpu: VCpu = Field(default_factory=VCpu)
    domains_count: int = 0
    running_domains: list[str] = Field(default_factory=list)
    health: int | None = 100
    health_plugins: list[str] = Field(default_factory=list)
    health_details: list[dict[str, Any]] = Field(default_factory=list)
    interfaces: dict[str, Any] = Field(default_factory=dict)
    rss_bytes: int = 0
    daemon_pid: int = 0
    session_id: str = ""
    ceph_client_addresses: list[str] = Field(default_factory=list)   # what fencing blocklists
    self_fence_events: list[dict[str, Any]] = Field(default_factory=list)


class ClusterRecord(Record):
    name: str = ""
    id: str = ""                     # ours: generated once; marks the domains this cluster starts
    maintenance: bool = False
    migration_target_selector: str = "mem"
    upstream_ip: str = ""
    created: float = Field(default_factory=time.time)


class FaultRecord(Record):
    id: str
    first_reported: str
    last_reported: str
    acknowledged_at: str = ""
    status: FaultStatus = "new"
    health_delta: int = 0
    message: str = ""
    active: bool = True              # ours: false once the condition ended (it no longer counts)
    resolved_at: str = ""            # ours: when it was resolved (fault time), "" while active


class TaskRecord(Record):
    id: str
    kind: str
    args: dict[str, Any] = Field(default_factory=dict)
    target: str = "primary"          # a node name, or "primary" (resolved when a worker claims it)
    state: TaskState = "PENDING"
    current: int = 0
    total: int = 1
    status: str = "Pending job start"
    result: Any = None
    worker: str = ""                 # node whose worker claimed it
    created: float = Field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    attempts: int = 0                # claims so far (a resumable kind runs again after its worker died)

    @property
    def finished_state(self) -> bool:
        return self.state in TASK_FINISHED


class Tag(Record):
    name: str
    type: str = "user"
    protected: bool = False


class VMRecord(Record):
    """A VM's definition and desired state (`/vms/<uuid>`), written by the API and provisioner.

    `state` keeps PVC's vocabulary: the API sets start/stop/shutdown/restart/disable and the
    migrate family; the node that owns the VM moves it on (restart -> start, shutdown -> stop) or
    records `fail`. Every write is a compare-and-set on the document's version.
    """

    uuid: str
    name: str
    xml: str
    state: VMState = "stop"
    node: str = ""                    # where the VM should run
    last_node: str = ""               # origin of a temporary migration ("" if none)
    node_limit: list[str] = Field(default_factory=list)
    node_selector: str = "none"
    node_autostart: bool = False
    migration_method: MigrationMethod = "live"
    migration_max_downtime: int = 300  # ms
    profile: str = ""
    description: str = ""
    tags: list[Tag] = Field(default_factory=list)
    rbd_volumes: list[str] = Field(default_factory=list)   # pool/volume
    created: float = Field(default_factory=time.time)
    # What the API shows of the XML (pvc.core.domainxml.summary), derived when the XML is written
    # so a list of 10,000 VMs parses no XML; valid only while summary_of is the XML's digest.
    summary: dict[str, Any] = Field(default_factory=dict)
    summary_of: str = ""


class SnapshotVolume(Record):
    """One RBD snapshot of a VM snapshot: `pool/volume@snap` and the volume's size then."""

    pool: str
    volume: str
    snap: str
    size: int = 0

    @property
    def ref(self) -> str:
        return f"{self.pool}/{self.volume}@{self.snap}"


class VMSnapshotRecord(Record):
    """A VM snapshot (`/vmsnapshots/<uuid>/<name>`): the XML and metadata of the VM and one RBD
    snapshot per disk, captured at one instant (DESIGN D15).

    `meta` holds what upstream does not capture: node_limit, node_selector, node_autostart,
    migration_method, migration_max_downtime, profile, description and tags (as VMRecord spells
    them). `consistency` says how the disks were made to agree: "fs-frozen" (guest agent),
    "paused" (the domain suspended around the snapshots), "crash" (a stopped VM, or the
    others failed; the reason is in the task log). `origin` says who made it; `parent` names the
    snapshot an incremental received or imported snapshot was applied on.
    """

    name: str
    created: float = Field(default_factory=time.time)
    xml: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    volumes: list[SnapshotVolume] = Field(default_factory=list)
    consistency: Literal["fs-frozen", "paused", "crash"] = "crash"
    origin: Literal["manual", "autobackup", "automirror", "mirror", "received", "imported",
                    "backup"] = "manual"
    state: Literal["creating", "ready", "removing"] = "ready"
    parent: str | None = None
    xml_version: int = -1            # the VM document's version the XML and meta were read at

    @property
    def rbd_snapshots(self) -> list[str]:
        return [v.ref for v in self.volumes]


class BackupFile(Record):
    path: str                        # relative to the snapshot's directory, e.g. images/vms.web1_sda.rbdimg
    size: int
    sha256: str = ""


class BackupRecord(Record):
    """One export of a VM snapshot (`/backups/<uuid>/<snapshot>`), the catalogue of DESIGN D15.

    Decisions (full or incremental, retention) read only entries with `result` true; a failed
    export is kept for the report and never counts as a full or toward retention.
    """

    vm: str                          # the VM's name at the time
    snapshot: str
    type: Literal["full", "incremental"] = "full"
    parent: str | None = None        # the snapshot an incremental was diffed against
    origin: Literal["autobackup", "export", "backup"] = "export"
    result: bool = False
    message: str = ""
    started: float = Field(default_factory=time.time)
    finished: float | None = None
    bytes: int = 0
    files: list[BackupFile] = Field(default_factory=list)
    target: str = ""                 # the export root directory (backup_root_path + suffix)
    node: str = ""                   # the node that wrote it
    snapshot_retained: bool = True   # the RBD snapshots are still in Ceph (a future parent)


class ScheduleRecord(Record):
    """A built-in schedule (`/schedules/<name>`): the last run the primary started and its result,
    so a new primary neither repeats nor skips a run."""

    name: str
    last_run: float | None = None    # the scheduled instant of the last run started
    last_kind: str = ""              # "normal" or "forced_full"
    last_task: str = ""
    last_result: str = ""
    next_run: float | None = None
    plan: list[str] = Field(default_factory=list)   # "kind=expression" the next run was planned from


class VMStatus(Record):
    """What the node running the VM observes (`/vms/<uuid>/status`), written only by that node."""

    node: str = ""
    running: bool = False
    libvirt_state: str = ""
    failed_reason: str = ""
    vnc: str = ""                      # listen:port from the live XML
    stats: dict[str, Any] = Field(default_factory=dict)
    last_migration: dict[str, Any] = Field(default_factory=dict)  # {time, duration_s, downtime_ms, from, to}
    updated: float = 0.0
