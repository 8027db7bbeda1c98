"""Typed records stored as JSON documents in ZooKeeper.

Unknown fields are ignored on read so an older daemon can read a newer document during a
rolling upgrade; the schema module migrates stored data forward.
"""

from __future__ import annotations

import time
from typing import Any

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
