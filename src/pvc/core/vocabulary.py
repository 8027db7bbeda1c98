"""PVC's vocabulary: the one place where states, selectors, methods and fault statuses are spelled.

Every other module (API enums and OpenAPI, CLI choices, worker registration, the node daemons,
the HA simulator) derives its lists from here, so a state added here is known everywhere and a
typo elsewhere is an import error rather than a silent mismatch. Pure data: imports nothing.
"""

from __future__ import annotations

from typing import Literal, get_args

# -- VMs --------------------------------------------------------------------------------------------

VMState = Literal[
    "start", "restart", "shutdown", "stop", "disable", "migrate", "migrate-live", "unmigrate",
    "provision", "fail", "delete", "mirror", "import", "restore",
]
VM_STATES: tuple[str, ...] = get_args(VMState)

# What `POST /vm/<vm>/state` may ask for.
SettableVMState = Literal["start", "shutdown", "stop", "restart", "disable"]
VM_SETTABLE_STATES: tuple[str, ...] = get_args(SettableVMState)

# What a VM list may be filtered by: upstream's list plus the states our nodes write.
ListVMState = Literal[
    "start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "migrate-live", "unmigrate",
    "provision", "mirror",
]
VM_LIST_STATES: tuple[str, ...] = get_args(ListVMState)

# States a VM may be created in (define, provisioner, OVA).
VM_INITIAL_STATES: tuple[str, ...] = ("stop", "provision", "start", "disable")

# The node must not be running the VM in these states.
VM_STOPPED_STATES: tuple[str, ...] = ("stop", "disable", "fail", "mirror")
# A VM may only be renamed in these states.
VM_RENAME_STATES: tuple[str, ...] = ("stop", "disable", "mirror")
# The VM should be running (its memory and vCPUs count as allocated).
VM_ACTIVE_STATES: tuple[str, ...] = ("start", "restart", "shutdown", "migrate", "migrate-live")
# A migration to `node` is pending.
VM_MIGRATE_STATES: tuple[str, ...] = ("migrate", "migrate-live", "unmigrate")
# A VM in one of these states on a dead node is restarted elsewhere by recovery.
VM_RECOVER_STATES: tuple[str, ...] = ("start", "restart", "migrate", "migrate-live", "unmigrate")

# migrate / move / unmigrate
NodeAction = Literal["migrate", "unmigrate", "move"]
VM_NODE_ACTIONS: tuple[str, ...] = get_args(NodeAction)

MigrationMethod = Literal["live", "shutdown", "none"]
MIGRATION_METHODS: tuple[str, ...] = get_args(MigrationMethod)

# -- placement --------------------------------------------------------------------------------------

Selector = Literal["mem", "memprov", "load", "vcpus", "vms"]
SELECTORS: tuple[str, ...] = get_args(Selector)
# What an API field or CLI option accepts: a selector, or "none" for the cluster's default.
SelectorOrNone = Literal["mem", "memprov", "load", "vcpus", "vms", "none"]
SELECTOR_CHOICES: tuple[str, ...] = get_args(SelectorOrNone)

# -- storage and disks ------------------------------------------------------------------------------

PoolTier = Literal["default", "hdd", "ssd", "nvme"]
POOL_TIERS: tuple[str, ...] = get_args(PoolTier)            # "default": any device class
DEVICE_CLASSES: tuple[str, ...] = ("hdd", "ssd", "nvme")     # Ceph device classes a tier names
ImageFormat = Literal["raw", "vmdk", "qcow2", "qed", "vdi", "vpc"]
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)      # what a volume upload may convert from
OsdFlag = Literal["noout", "noin", "noup", "nodown", "pause", "nobackfill", "norebalance", "norecover",
                  "noscrub", "nodeep-scrub", "notieragent", "nosnaptrim", "full"]
OSD_FLAGS: tuple[str, ...] = get_args(OsdFlag)
DiskBus = Literal["scsi", "virtio", "sata", "ide", "usb"]
DISK_BUSES: tuple[str, ...] = get_args(DiskBus)             # the first is the default
# upstream's eight storage benchmark tests, in its order (test format 2)
BENCHMARK_TESTS: tuple[str, ...] = (
    "seq_read", "seq_write", "rand_read_4M", "rand_write_4M", "rand_read_4K", "rand_write_4K",
    "rand_read_4K_lowdepth", "rand_write_4K_lowdepth",
)

# -- provisioner ------------------------------------------------------------------------------------

ProfileType = Literal["provisioner", "ova"]
PROFILE_TYPES: tuple[str, ...] = get_args(ProfileType)

# -- nodes ------------------------------------------------------------------------------------------

DaemonState = Literal["init", "run", "shutdown", "stop", "dead", "fenced"]
DAEMON_STATES: tuple[str, ...] = get_args(DaemonState)
# Nodes HA has declared dead or fenced: they run nothing until an administrator readies them.
NODE_OUT_OF_SERVICE: tuple[str, ...] = ("dead", "fenced")
CoordinatorState = Literal["primary", "secondary", "takeover", "relinquish", "client"]
COORDINATOR_STATES: tuple[str, ...] = get_args(CoordinatorState)
DomainState = Literal["ready", "flush", "flushed", "unflush", "fence-flush"]
DOMAIN_STATES: tuple[str, ...] = get_args(DomainState)
NodeMode = Literal["coordinator", "hypervisor"]
# What `POST /node/<node>/domain-state` and `/coordinator-state` accept.
NodeDomainAction = Literal["flush", "ready"]
NodeCoordinatorAction = Literal["primary", "secondary"]

# -- networks ---------------------------------------------------------------------------------------

NetworkType = Literal["managed", "bridged"]
NETWORK_TYPES: tuple[str, ...] = get_args(NetworkType)

# -- tasks ------------------------------------------------------------------------------------------

TaskState = Literal["PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED"]
TASK_STATES: tuple[str, ...] = get_args(TaskState)
TASK_FINISHED: tuple[str, ...] = ("SUCCESS", "FAILURE", "CANCELLED")

# -- faults -----------------------------------------------------------------------------------------

# An unacknowledged fault is "new"; the administrator's acknowledgement makes it "ack".
FaultStatus = Literal["new", "ack"]
