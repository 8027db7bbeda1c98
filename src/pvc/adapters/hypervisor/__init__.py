"""The hypervisor driver: the only code in PVC that talks to libvirt (DESIGN D7, D11).

`Hypervisor` (base.py) is the interface the node's VM reconciler uses, in the spirit of Nova's
virt driver: a few verbs on domains named by UUID, each one checking before it acts (Ganeti style)
so the reconciler gets a clear error instead of a half-done change. `LibvirtHypervisor`
(libvirt.py, over connection.py, stats.py and migration.py) implements it with libvirt-python;
`FakeHypervisor` (fake.py) implements it in memory for the pure unit tests and the HA simulator.

Domains are *transient* (`createXML`): PVC keeps the persistent definition in ZooKeeper, like
upstream, so a node never holds a stale definition and "not running" means "not in libvirt".

`probe(uri)` (host.py) is the small read-only check used by the self-test task.
"""

from pvc.adapters.hypervisor.base import (
    ACTIVE_STATES,
    DOMAIN_STATES,
    HOST_RESOURCE_KEYS,
    STATE_REASONS,
    DomainExists,
    DomainInfo,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    MigrationResult,
    Unsupported,
    reason_name,
    state_name,
)
from pvc.adapters.hypervisor.domxml import (
    DomainFacts,
    disks_need_unsafe,
    domain_facts,
    force_tcg,
    normalize_uuid,
    rbd_target,
    secret_args,
)
from pvc.adapters.hypervisor.host import kill_local_qemu, probe
from pvc.adapters.hypervisor.kvm import KVM_ENV, hardware_virtualization, kvm_run_probe
from pvc.adapters.hypervisor.libvirt import LibvirtHypervisor

__all__ = [
    "ACTIVE_STATES", "DOMAIN_STATES", "HOST_RESOURCE_KEYS", "KVM_ENV", "STATE_REASONS", "DomainExists",
    "DomainFacts", "DomainInfo", "DomainNotFound", "Hypervisor", "HypervisorError", "HypervisorUnavailable",
    "LibvirtHypervisor", "MigrationResult", "Unsupported", "disks_need_unsafe", "domain_facts", "force_tcg",
    "hardware_virtualization", "kill_local_qemu", "kvm_run_probe", "normalize_uuid", "probe",
    "rbd_target", "reason_name", "secret_args", "state_name",
]
