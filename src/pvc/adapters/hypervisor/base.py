"""The hypervisor driver interface (`Hypervisor`), its errors and the values every implementation shares.

Every domain is named by its UUID; the few errors are the ones the reconciler can act on.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Errors: a small set the reconciler can act on; every message names the operation and the cause.

class HypervisorError(Exception):
    """A hypervisor operation failed; `code` is libvirt's error code when libvirt said why."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class HypervisorUnavailable(HypervisorError):
    """libvirtd cannot be reached, or the connection broke during a call (outcome unknown)."""


class DomainNotFound(HypervisorError):
    """No such domain on this host. PVC domains are transient, so this also means "not running"."""


class DomainExists(HypervisorError):
    """start() of a UUID that already runs here, or a migration target that already runs it."""


class Unsupported(HypervisorError):
    """The driver cannot do this (libvirt's test driver cannot migrate or hot-plug, for example)."""


# --------------------------------------------------------------------------------------------
# Values shared by every implementation

# libvirt's virDomainState, in PVC's lower-case words ("shutdown" = being shut down, still alive).
DOMAIN_STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed",
                 "pmsuspended")
# States in which a QEMU process exists: the domain holds its memory and its disks' locks.
ACTIVE_STATES = frozenset({"running", "blocked", "paused", "shutdown", "pmsuspended"})
# libvirt's per-state reason codes (virDomain<State>Reason), so the reconciler can tell a pause
# for I/O errors (Ceph full) from a pause for migration.
STATE_REASONS: dict[str, tuple[str, ...]] = {
    "running": ("unknown", "booted", "migrated", "restored", "from-snapshot", "unpaused",
                "migration-canceled", "save-canceled", "wakeup", "crashed", "postcopy",
                "postcopy-failed"),
    "paused": ("unknown", "user", "migration", "save", "dump", "ioerror", "watchdog",
               "from-snapshot", "shutting-down", "snapshot", "crashed", "starting-up", "postcopy",
               "postcopy-failed", "api-error"),
    "shutoff": ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
                "from-snapshot", "daemon"),
    "shutdown": ("unknown", "user"),
    "crashed": ("unknown", "panicked"),
}
# Keys of host_resources(), identical for every implementation.
HOST_RESOURCE_KEYS = ("cpus", "memory_mib", "memory_free_mib", "arch", "cpu_mhz", "sockets", "cores",
                      "threads")


def state_name(code: int) -> str:
    return DOMAIN_STATES[code] if 0 <= code < len(DOMAIN_STATES) else "nostate"


def reason_name(state: str, code: int) -> str:
    names = STATE_REASONS.get(state, ("unknown",))
    return names[code] if 0 <= code < len(names) else "unknown"


@dataclass(frozen=True)
class DomainInfo:
    """What the reconciler needs to know about one domain on this host."""

    uuid: str
    name: str
    state: str               # one of DOMAIN_STATES
    reason: str              # STATE_REASONS entry, e.g. paused/ioerror, running/migrated
    vcpus: int               # current vCPUs
    memory_mib: int          # current (ballooned) memory
    max_memory_mib: int

    @property
    def running(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True)
class MigrationResult:
    """How a live migration went, as measured by libvirt (downtime) and by us (wall time)."""

    duration_s: float
    downtime_ms: int | None          # libvirt's completed-job "downtime"; None if it gave none
    details: dict[str, Any] = field(default_factory=dict)   # the completed job's statistics


# --------------------------------------------------------------------------------------------
# The driver interface

class Hypervisor(abc.ABC):
    """The driver interface of one node's hypervisor (DESIGN D11).

    Every domain is named by its UUID. Methods raise HypervisorError subclasses only:
    DomainNotFound when the domain is not on this host, HypervisorUnavailable when the hypervisor
    cannot be reached, Unsupported when the driver cannot do the operation at all.
    """

    @abc.abstractmethod
    def kvm_available(self) -> bool:
        """Whether hardware KVM really works here; if not, start() runs `kvm` domains under TCG."""

    @abc.abstractmethod
    def list_domains(self) -> dict[str, DomainInfo]:
        """Every domain libvirt knows on this host, by UUID (one bulk call)."""

    @abc.abstractmethod
    def start(self, xml: str) -> None:
        """Create and boot a transient domain from `xml` (which must carry a <uuid>).

        DomainExists if that UUID already runs here. The domain outlives our connection: a
        restarted node daemon finds its VMs still running.
        """

    @abc.abstractmethod
    def shutdown(self, uuid: str) -> None:
        """Press the ACPI power button and return; the caller polls is_running() with its timeout."""

    @abc.abstractmethod
    def destroy(self, uuid: str) -> None:
        """Stop the domain now (SIGTERM, then SIGKILL); a no-op for a defined domain that is off."""

    @abc.abstractmethod
    def is_running(self, uuid: str) -> bool:
        """True while a QEMU process exists for the domain (running, paused, shutting down...)."""

    @abc.abstractmethod
    def live_xml(self, uuid: str) -> str:
        """The running domain's XML as libvirt sees it now (tap names, VNC port, aliases)."""

    @abc.abstractmethod
    def migrate(self, uuid: str, dest_uri: str, dest_migration_uri: str | None = None,
                max_downtime_ms: int = 300, live: bool = True, timeout: float = 120.0,
                progress: Callable[[dict[str, int]], None] | None = None,
                encrypted: bool = False) -> MigrationResult:
        """Move the running domain to the hypervisor at `dest_uri` (one attempt; callers retry).

        `dest_migration_uri` is where QEMU's stream goes (e.g. tcp://10.0.0.2); None lets the
        destination choose. `max_downtime_ms` bounds the final pause. `encrypted` sends QEMU's
        stream (the guest's memory) over TLS; without it only libvirt's control connection is. On
        failure or after `timeout` (the job is aborted) the domain keeps running here.
        """

    @abc.abstractmethod
    def attach_device(self, uuid: str, xml: str) -> None:
        """Hot-plug a device into the running domain (not persisted: the XML in ZooKeeper is)."""

    @abc.abstractmethod
    def detach_device(self, uuid: str, xml: str) -> None:
        """Hot-unplug a device; the guest must cooperate, so removal may finish after we return."""

    @abc.abstractmethod
    def set_vcpus(self, uuid: str, count: int) -> None:
        """Change the running domain's vCPUs (up to the XML's maximum; needs guest hotplug)."""

    @abc.abstractmethod
    def set_memory(self, uuid: str, mib: int) -> None:
        """Change the running domain's memory through the balloon (up to the XML's maximum)."""

    @abc.abstractmethod
    def stats(self, uuid: str) -> dict[str, Any]:
        """One running domain's statistics in PVC's `/domains/<u>/stats` shape."""

    @abc.abstractmethod
    def all_stats(self) -> dict[str, dict[str, Any]]:
        """Statistics of every running domain at once (one call per keepalive), by UUID."""

    @abc.abstractmethod
    def host_resources(self) -> dict[str, Any]:
        """The host's CPUs and memory (keys HOST_RESOURCE_KEYS), for placement and node stats."""

    @abc.abstractmethod
    def ensure_secret(self, uuid: str, usage: str, value_b64: str) -> None:
        """Define (or update) the persistent, private ceph secret `uuid` holding the decoded key.

        VM disks name the secret by UUID, so every node defines the same UUID; the value is set
        every time, so a rotated key takes effect on the next call. Another secret already using
        `usage` is an error (libvirt allows one secret per usage), never silently replaced.
        """

    @abc.abstractmethod
    def block_resize(self, uuid: str, disk: str, size: int) -> None:
        """Tell the running domain that a disk grew to `size` bytes (after an RBD resize).

        `disk` is a target device (vda) or an rbd source name (pool/volume).
        """

    # -- snapshot consistency (VM snapshots: DESIGN D15); optional, Unsupported by default -------

    def suspend(self, uuid: str) -> None:
        """Pause the running domain's vCPUs (its disks see no new writes until resume)."""
        raise Unsupported(f"suspend {uuid}: not supported by {type(self).__name__}")

    def resume(self, uuid: str) -> None:
        """Let a suspended domain run again."""
        raise Unsupported(f"resume {uuid}: not supported by {type(self).__name__}")

    def guest_agent_ready(self, uuid: str, timeout: int = 2) -> bool:
        """Whether the domain has a QEMU guest agent channel and the agent answers now."""
        return False

    def fs_freeze(self, uuid: str, timeout: int = 5) -> int:
        """Freeze the guest's filesystems through its agent (bounded by `timeout` seconds); how many.
        Callers thaw in a `finally`."""
        raise Unsupported(f"freeze filesystems of {uuid}: not supported by {type(self).__name__}")

    def fs_thaw(self, uuid: str, timeout: int = 5) -> int:
        """Thaw the guest's filesystems; how many."""
        raise Unsupported(f"thaw filesystems of {uuid}: not supported by {type(self).__name__}")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; the object may be used again (it reconnects)."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
