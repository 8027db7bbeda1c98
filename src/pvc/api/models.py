"""Response shapes of API v1, for the OpenAPI document (pvc-facts §8.5).

Routes return plain JSON (already in PVC's shape from the cluster layer) without passing it
through these models, so serving a list costs no extra validation; the schemathesis test checks
that what is served matches what is documented here. Extra keys are allowed: clients must
ignore keys they do not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pvc.core import vocabulary


class Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(Doc):
    message: str | dict[str, str] = Field(description=(
        "A text message; for bad arguments (missing, not one of the choices, wrong type) an object "
        "mapping each argument's name to what is wrong with it, as upstream's flask-restful parser answers"))


class PrimaryNode(Doc):
    primary_node: str = Field(description="The name of the current primary node")


class NodeVCpu(Doc):
    total: int
    allocated: int


class NodeMemory(Doc):
    total: int = Field(description="MiB")
    used: int
    free: int
    allocated: int
    provisioned: int


class FenceEvent(Doc):
    time: float = Field(description="UNIX time of the event")
    phase: str | None = None
    message: str


class NodeFencing(Doc):
    phase: str | None = Field(description="dead, fencing, blocklisting, recovering or done")
    reason: str | None
    started: float | None
    by: str | None = Field(description="The primary that declared the node dead")
    fence: str | None = Field(description="success or failed (empty while the agent runs)")
    fence_message: str | None
    blocklist: str | None
    action: str | None = Field(description="migrate or none: what was done with the node's VMs")
    recovered: int | None
    stranded: int | None
    attempts: int | None
    events: list[FenceEvent]


class Node(Doc):
    name: str
    daemon_state: str
    coordinator_state: str
    domain_state: str
    pvc_version: str
    cpu_count: int
    kernel: str
    os: str
    arch: str
    health: int | str = Field(description="Health in percent, or 'N/A' when the node reports none")
    health_plugins: list[str]
    health_details: list[dict[str, Any]]
    load: float
    domains_count: int
    running_domains: list[str] = Field(description="Names of the VMs running on the node")
    vcpu: NodeVCpu
    memory: NodeMemory
    interfaces: dict[str, Any]
    keepalive: int = Field(description="UNIX time of the node's last keepalive")
    fencing: NodeFencing | None = Field(description="The node's last fencing chain (PVC extension), "
                                                    "null if it was never fenced")
    self_fence_events: list[FenceEvent] = Field(description="The node's own recent self-fence events")


class NodeDaemonState(Doc):
    name: str
    daemon_state: str


class NodeCoordinatorState(Doc):
    name: str
    coordinator_state: str


class NodeDomainState(Doc):
    name: str
    domain_state: str


class NodeLog(Doc):
    name: str
    data: str = Field(description="The last lines of the node daemon's log, newline-separated")


class Fault(Doc):
    id: str
    first_reported: str
    last_reported: str
    acknowledged_at: str = Field(description="Empty when not acknowledged")
    status: vocabulary.FaultStatus
    health_delta: int = Field(description="How much the fault lowers cluster health; 0 once acknowledged or "
                                          "resolved (it no longer counts)")
    message: str
    active: bool = Field(description="Ours: true while the condition lasts; false once it ended (resolved; "
                                     "listed only with all=true, until faults.fault_retention_days)")
    resolved_at: str = Field(description="Ours: when the fault was resolved (local YYYY-MM-DD HH:MM:SS); "
                                         "empty while active")


class TaskStatus(Doc):
    state: vocabulary.TaskState
    current: int
    total: int
    status: str
    result: Any = Field(None, description="The task's result, when it produced one")


class TaskSummary(Doc):
    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: str
    target: str
    worker: str
    current: int
    total: int
    status: str
    created: float
    started: float | None
    finished: float | None


class TaskList(Doc):
    active: dict[str, list[TaskSummary]] = Field(description="Running tasks, keyed by pvcworkerd@<node>")
    reserved: dict[str, list[TaskSummary]] = Field(description="Waiting tasks, keyed by pvcworkerd@<node>")
    scheduled: dict[str, list[TaskSummary]] = Field(description="Always empty (kept for PVC clients)")


class TaskAccepted(Doc):
    task_id: str
    task_name: str
    run_on: str = Field(description="'<node>' or '<node> (primary)'")


class TaskLog(Doc):
    id: str
    log: list[str]


class HealthMessage(Doc):
    id: str
    health_delta: int
    text: str


class ClusterHealth(Doc):
    health: int
    messages: list[HealthMessage]


class NodeHealth(Doc):
    health: int | str
    messages: list[str]


class MemoryResources(Doc):
    total: int
    used: int
    free: int
    allocated: int
    provisioned: int
    utilization: float


class CpuResources(Doc):
    total: int
    load: float
    allocated: int
    utilization: float


class DiskResources(Doc):
    total: int = Field(description="KiB: the sum of the OSDs' sizes")
    used: int = Field(description="KiB")
    free: int = Field(description="KiB")
    utilization: float = Field(description="Percent: the mean of the OSDs' utilization")


class Resources(Doc):
    memory: MemoryResources
    cpu: CpuResources
    disk: DiskResources


class StatusDetail(Doc):
    node: list[dict[str, Any]]
    vm: list[dict[str, Any]]
    osd: list[dict[str, Any]]
    faults: list[Fault]


class ClusterFencing(NodeFencing):
    node: str


class ClusterStatus(Doc):
    cluster_name: str
    cluster_health: ClusterHealth
    node_health: dict[str, NodeHealth]
    maintenance: Literal["true", "false"]
    primary_node: str | None = Field(description="null while no node is primary")
    pvc_version: str
    upstream_ip: str
    nodes: dict[str, int] = Field(description="'total' and '<daemon_state>,<domain_state>' counts")
    vms: dict[str, int]
    networks: int
    osds: dict[str, int]
    pools: int
    volumes: int
    snapshots: int
    resources: Resources
    fencing: list[ClusterFencing] = Field(description="Every node's last fencing chain, newest first "
                                                      "(PVC extension)")
    detail: StatusDetail


class VMTag(Doc):
    name: str
    type: str = Field(description="user (tags set through the API) or system")
    protected: bool


class VMNetwork(Doc):
    type: str = Field(description="The interface type; empty if none (never null: upstream's client "
                                  "formats it)")
    vni: str | None = Field(description="The PVC network (VNI) parsed from the bridge name, "
                                        "'macvtap:<dev>' or 'hostdev:<vf>'")
    mac: str
    source: str
    model: str
    rd_bytes: int
    rd_packets: int
    rd_errors: int
    rd_drops: int
    wr_bytes: int
    wr_packets: int
    wr_errors: int
    wr_drops: int


class VMDisk(Doc):
    type: str = Field(description="rbd (or another network protocol), file or block")
    name: str = Field(description="pool/volume for RBD disks")
    dev: str = Field(description="The target device; empty if none")
    bus: str = Field(description="The target bus; empty if none")
    rd_req: int
    rd_bytes: int
    wr_req: int
    wr_bytes: int


class VMController(Doc):
    type: str
    model: str | None


class VMVnc(Doc):
    listen: str | None = Field(description="The VNC listen address of the running VM; null if none")
    port: str | None = Field(description="The VNC port of the running VM; null if none")


class VM(Doc):
    name: str
    uuid: str
    state: str
    node: str
    last_node: str
    migrated: str = Field(description="'no' or 'from <last_node>'")
    failed_reason: str
    node_limit: list[str] | None = Field(description="The nodes the VM may run on; null for any")
    node_selector: str | None = Field(description="The node selector; null: the cluster's default")
    node_autostart: bool
    migration_method: str | None = Field(description="live or shutdown; null: the default (live, falling "
                                                     "back to shutdown)")
    migration_max_downtime: int = Field(description="ms")
    tags: list[VMTag]
    snapshots: list[dict[str, Any]]
    description: str | None
    profile: str
    memory: int = Field(description="MiB")
    memory_stats: dict[str, Any]
    vcpu: int
    vcpu_topology: str = Field(description="sockets/cores/threads, or 'N/A'")
    vcpu_stats: dict[str, Any]
    networks: list[VMNetwork]
    type: str | None
    arch: str | None
    machine: str | None
    console: str | None
    vnc: VMVnc
    emulator: str | None
    features: list[str]
    disks: list[VMDisk]
    controllers: list[VMController]
    xml: str = Field(description="The libvirt XML with double quotes replaced by single quotes")
    running: bool = Field(description="Whether the VM's node reports it running")
    last_migration: dict[str, Any] = Field(description="The last migration as the node recorded it")


class VMState(Doc):
    name: str
    state: str


class VMNode(Doc):
    name: str
    node: str
    last_node: str


class VMMeta(Doc):
    name: str
    node_limit: list[str] | None
    node_selector: str
    node_autostart: bool
    migration_method: str
    migration_max_downtime: int
    profile: str


class VMTags(Doc):
    name: str
    tags: list[VMTag]


class VMLog(Doc):
    name: str
    data: str = Field(description="The last lines of the VM's serial console, newline-separated")


# -- storage (pvc-facts §6, §8.3; swagger definitions osd, pool, volume, snapshot, storagebenchmark) --

class CephReport(Doc):
    type: Literal["status", "utilization"]
    primary_node: str | None = Field(description="The current primary node")
    ceph_data: str = Field(description="`ceph status` or `ceph df` text as the primary last reported it")


class OSD(Doc):
    id: str = Field(description="The Ceph ID of the OSD")
    fsid: str = Field(description="The OSD's fsid; empty if unknown")
    node: str = Field(description="The PVC node the OSD resides on")
    device: str = Field(description="The OSD data block device")
    is_split: bool = Field(description="Whether the device holds several OSDs")
    db_device: str = Field(description="The OSD database/WAL logical volume; empty if not applicable")
    stats: dict[str, Any] = Field(description=(
        "Ceph figures of the OSD: uuid, up, in (0/1), primary_affinity, utilization, var, pgs, kb, weight, "
        "reweight, node, used, avail, wr_ops, wr_data, rd_ops, rd_data, state; a single '|' per value until "
        "the first statistics"))


class OSDState(Doc):
    id: str
    in_: int = Field(alias="in", description="1 if the OSD is in, else 0")
    up: int = Field(description="1 if the OSD is up, else 0")


class PoolStats(Doc):
    id: int = Field(description="The Ceph pool ID")
    stored_bytes: int
    free_bytes: int
    used_bytes: int
    used_percent: float
    num_objects: int
    num_object_clones: int
    num_object_copies: int
    num_objects_missing_on_primary: int
    num_objects_unfound: int
    num_objects_degraded: int
    read_ops: int
    read_bytes: int
    write_ops: int
    write_bytes: int


class Pool(Doc):
    name: str
    volume_count: int = Field(description="The number of volumes in the pool")
    tier: str = Field(description="The device class/tier of the pool: default, hdd, ssd or nvme")
    pgs: int = Field(description="The number of placement groups of the pool")
    copies: int | None = Field(description="Replicas of each object")
    mincopies: int | None = Field(description="Replicas needed for I/O")
    stats: PoolStats = Field(description="Ceph figures of the pool; zeros until the first statistics")


class VolumeStats(Doc):
    """`rbd info --format json` of the volume (keys as Ceph gives them), size made human-readable."""

    size: str = Field(description="The size of the volume, human-readable (e.g. 10G); empty until read")
    objects: int = Field(description="The number of RADOS objects of the volume")
    order: int
    format: int = Field(description="The RBD image format; 0 until read")
    features: list[str]
    snapshot_count: int | None = Field(None, description="The number of snapshots of the volume")


class Volume(Doc):
    name: str
    pool: str
    stats: VolumeStats


class Snapshot(Doc):
    pool: str
    volume: str
    snapshot: str
    stats: dict[str, Any] = Field(description="`rbd info` of the snapshot")


class StorageBenchmark(Doc):
    id: str = Field(description="The ID of the test result")
    job: str = Field(description="The job name (by default the start time and the primary node)")
    pool: str = Field(description="The pool the benchmark ran on")
    test_format: int = Field(description="The PVC benchmark format of the results")
    benchmark_result: Any = Field(description="The results per test, or 'Running' while the job runs")
