"""Every ZooKeeper path PVC uses, the schema version and its forward migrations (DESIGN D3).

Paths are relative to the configured root (a kazoo chroot, `/pvc` by default). One znode holds
one object as a JSON document; high-churn data (logs, task logs) has its own znode.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoAuthError, NodeExistsError, NoNodeError

from pvc.core.errors import ConfigError
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

SCHEMA_VERSION = 8

SCHEMA = "/schema"
SCHEMA_VERSION_PATH = "/schema/version"
SCHEMA_LOCK = "/locks/schema"
# Written once every znode of the tree carries the digest ACL of these credentials (protect()).
ACL_MARKER = "/schema/acl"

CONFIG = "/config"
CLUSTER = "/config/cluster"              # {name, maintenance, migration_target_selector, ...}
PRIMARY_NODE = "/config/primary_node"    # name of the current primary (written by it), or "none"
PRIMARY_REQUEST = "/config/primary_request"  # hand-over request {node, exclude, time}
API_TOKEN = "/config/api_token"          # the generated API token, sealed with the cluster key
PRIMARY_ELECTION = "/locks/primary"      # kazoo Lock: its holder is the primary coordinator

NODES = "/nodes"
LOGS = "/logs"
FAULTS = "/faults"
TASKS = "/tasks"
TASK_LOGS = "/tasklogs"
LOCKS = "/locks"
VMS = "/vms"
VM_NAMES = "/vmnames"
VM_CONSOLES = "/vmconsole"
VM_STATS = "/vmstats"
VM_STATS_SHARD = 50                      # VMs per stats document (see vm_stats)
CEPH = "/ceph"
CEPH_STATUS = "/ceph/status"        # {node, time, status, health, util, status_text, util_text}
CEPH_OSDS = "/ceph/osds"
CEPH_POOLS = "/ceph/pools"
CEPH_VOLUMES = "/ceph/volumes"
CEPH_SNAPSHOTS = "/ceph/snapshots"
CEPH_BENCHMARKS = "/ceph/benchmarks"
CEPH_TREES = (CEPH, CEPH_OSDS, CEPH_POOLS, CEPH_VOLUMES, CEPH_SNAPSHOTS, CEPH_BENCHMARKS)
NETWORKS = "/networks"
NET_ACLS = "/netacls"
NET_RESERVATIONS = "/netreservations"
NET_LEASES = "/netleases"
PROVISIONER = "/provisioner"
USERDATA = "/provisioner/userdata"
PROFILES = "/provisioner/profiles"
SYSTEM_TEMPLATES = "/provisioner/templates/system"
NETWORK_TEMPLATES = "/provisioner/templates/network"
STORAGE_TEMPLATES = "/provisioner/templates/storage"
SCRIPTS = "/provisioner/scripts"
OVAS = "/provisioner/ova"
PROVISIONER_IDS = "/provisioner/ids"      # sequence znodes: the integer ids upstream's API shows
FENCING = "/fencing"                      # per node: the last fencing chain and its events
FENCE_INFO = "/fenceinfo"                 # per node: how to fence it (agent, BMC), secrets inside
SESSIONS = "/sessions"                    # API login sessions, by SHA-256 of the session id
VM_SNAPSHOTS = "/vmsnapshots"             # per VM uuid: one VMSnapshotRecord per snapshot name
BACKUPS = "/backups"                      # per VM uuid: one BackupRecord per exported snapshot
SCHEDULES = "/schedules"                  # built-in schedules (autobackup, automirror): last/next run
TRANSFERS = "/transfers"                  # one-time send destinations (sealed key), by id
NETWORK_TREES = (NETWORKS, NET_ACLS, NET_RESERVATIONS, NET_LEASES)
PROVISIONER_TREES = (PROVISIONER, USERDATA, PROFILES, SYSTEM_TEMPLATES, NETWORK_TEMPLATES,
                     STORAGE_TEMPLATES, SCRIPTS, OVAS, PROVISIONER_IDS)

# Trees a fresh cluster starts with; backup/restore covers everything under the root.
BASE_PATHS = (SCHEMA, CONFIG, NODES, LOGS, FAULTS, TASKS, TASK_LOGS, LOCKS, VMS, VM_NAMES,
              VM_CONSOLES, VM_STATS, *CEPH_TREES, *NETWORK_TREES, *PROVISIONER_TREES, FENCING,
              FENCE_INFO, SESSIONS, VM_SNAPSHOTS, BACKUPS, SCHEDULES, TRANSFERS)


def session(key: str) -> str:
    """One API session: `key` is the hex SHA-256 of its id (the cookie value is never stored)."""
    return f"{SESSIONS}/{key}"


def node(name: str) -> str:
    """Node document: static facts, daemon/coordinator/domain state, keepalive figures."""
    return f"{NODES}/{name}"


def node_alive(name: str) -> str:
    """Ephemeral: exists while the node daemon's ZooKeeper session is alive."""
    return f"{NODES}/{name}/alive"


def node_fencing(name: str) -> str:
    """The node's fencing record: the current (or last) chain with its timestamped events."""
    return f"{FENCING}/{name}"


def node_fence_info(name: str) -> str:
    """Written by the node itself: the agent that fences it and that agent's parameters."""
    return f"{FENCE_INFO}/{name}"


def node_sriov_pfs(name: str) -> str:
    """Parent of the node's SR-IOV PF documents (upstream's `/nodes/<n>/sriov/pf`)."""
    return f"{NODES}/{name}/sriov/pf"


def node_sriov_pf(name: str, phy: str) -> str:
    """SR-IOV PF document {phy, mtu, vfcount, totalvfs, vfs}, written by the node itself."""
    return f"{NODES}/{name}/sriov/pf/{phy}"


def node_sriov_vfs(name: str) -> str:
    """Parent of the node's SR-IOV VF documents (upstream's `/nodes/<n>/sriov/vf`)."""
    return f"{NODES}/{name}/sriov/vf"


def node_sriov_vf(name: str, vf: str) -> str:
    """SR-IOV VF document: observed {phy, pf, index, mtu, mac, phy_mac, pci} by the node; desired
    `config` (PUT /sriov/vf) and the claim `used`/`used_by`/`mode` by the API, all CAS writes."""
    return f"{NODES}/{name}/sriov/vf/{vf}"


def node_log(name: str) -> str:
    return f"{LOGS}/{name}"


def fault(fault_id: str) -> str:
    return f"{FAULTS}/{fault_id}"


def task(task_id: str) -> str:
    return f"{TASKS}/{task_id}"


def task_owner(task_id: str) -> str:
    """Ephemeral: created atomically with the RUNNING state by the worker that runs the task."""
    return f"{TASKS}/{task_id}/owner"


def task_log(task_id: str) -> str:
    return f"{TASK_LOGS}/{task_id}"


def vm(uuid: str) -> str:
    """VM document (VMRecord): definition, desired state, placement and metadata."""
    return f"{VMS}/{uuid}"


def vm_snapshots(uuid: str) -> str:
    """The VM's snapshots (children: snapshot names), outside /vms so snapshot churn does not
    wake the VM list cache."""
    return f"{VM_SNAPSHOTS}/{uuid}"


def vm_snapshot(uuid: str, name: str) -> str:
    """VMSnapshotRecord: XML, metadata and RBD snapshots captured at one instant."""
    return f"{VM_SNAPSHOTS}/{uuid}/{name}"


def vm_backups(uuid: str) -> str:
    """The VM's backup catalogue (children: snapshot names)."""
    return f"{BACKUPS}/{uuid}"


def vm_backup(uuid: str, name: str) -> str:
    """BackupRecord: one export of snapshot `name` (type, parent, result, files and checksums)."""
    return f"{BACKUPS}/{uuid}/{name}"


def schedule(name: str) -> str:
    """ScheduleRecord of a built-in schedule (autobackup, automirror)."""
    return f"{SCHEDULES}/{name}"


def transfer(transfer_id: str) -> str:
    """A send destination for one task: URI, options and the API key sealed with the cluster key."""
    return f"{TRANSFERS}/{transfer_id}"


def vm_status(uuid: str) -> str:
    """VMStatus, written by the node that runs the VM (state, failure reason, migration).

    Only rewritten when one of those changes; the per-keepalive stats live in vm_stats.
    """
    return f"{VMS}/{uuid}/status"


def vm_stats_node(node_name: str) -> str:
    """Parent of one node's stats shards."""
    return f"{VM_STATS}/{node_name}"


def vm_stats(node_name: str, shard: int | str) -> str:
    """{uuid: stats} for up to VM_STATS_SHARD of the VMs running on node_name, by the node.

    Outside /vms for the reason vm_console is: stats change every keepalive, and one status write
    per VM every 5 s made the API's watch cache of /vms refetch thousands of znodes a second.
    Shard n holds the VMs at positions [n * VM_STATS_SHARD, (n + 1) * VM_STATS_SHARD) of the
    node's sorted uuids, so each znode stays far below ZooKeeper's 1 MB limit. Small shards
    (~20 KB) also keep the server's memory down: it holds its last 500 transactions in memory,
    and with 200-VM shards (~80 KB) a 128 MB ZooKeeper ran out of heap at 10,000 VMs.
    """
    return f"{VM_STATS}/{node_name}/{shard}"


def vm_console(uuid: str) -> str:
    """Last lines of the VM's serial console, kept by the node that runs it.

    Outside /vms on purpose: the API keeps a watch cache of /vms for fast lists, and console
    text (rewritten every keepalive for every chatty VM) would make it refetch constantly.
    """
    return f"{VM_CONSOLES}/{uuid}"


def vm_name(name: str) -> str:
    """Name index: holds the VM's uuid; created in the same transaction as the VM, so unique."""
    return f"{VM_NAMES}/{name}"


def osd(osd_id: int | str) -> str:
    """OSD document: {id, node, device, db_device, service, stats} (stats by the primary)."""
    return f"{CEPH_OSDS}/{osd_id}"


def pool(name: str) -> str:
    """Pool document: {name, pgs, tier, copies, mincopies, stats} (stats by the primary)."""
    return f"{CEPH_POOLS}/{name}"


def pool_volumes(pool_name: str) -> str:
    return f"{CEPH_VOLUMES}/{pool_name}"


def volume(pool_name: str, name: str) -> str:
    """Volume document: {name, pool, stats} with stats in `rbd info --format json` shape."""
    return f"{CEPH_VOLUMES}/{pool_name}/{name}"


def volume_snapshots(pool_name: str, volume_name: str) -> str:
    return f"{CEPH_SNAPSHOTS}/{pool_name}/{volume_name}"


def snapshot(pool_name: str, volume_name: str, name: str) -> str:
    """Snapshot document: {pool, volume, snapshot, stats}."""
    return f"{CEPH_SNAPSHOTS}/{pool_name}/{volume_name}/{name}"


def benchmark(job: str) -> str:
    """Storage benchmark result: {id, job, pool, test_format, benchmark_result} ("Running" until done)."""
    return f"{CEPH_BENCHMARKS}/{job}"


def network(vni: int | str) -> str:
    """Network document (the API's network item): {vni, description, type, mtu, domain,
    name_servers, ip4 {network, gateway, dhcp_flag, dhcp_start, dhcp_end}, ip6 {network, gateway,
    dhcp_flag}}."""
    return f"{NETWORKS}/{vni}"


def network_acls(vni: int | str) -> str:
    """{"in": [{description, rule}, ...], "out": [...]}: list position is the rule's order, so a
    reorder is one compare-and-set write."""
    return f"{NET_ACLS}/{vni}"


def network_reservations(vni: int | str) -> str:
    return f"{NET_RESERVATIONS}/{vni}"


def network_reservation(vni: int | str, mac: str) -> str:
    """DHCP reservation {mac_address, ip4_address, hostname}; mac lowercase with colons."""
    return f"{NET_RESERVATIONS}/{vni}/{mac}"


def network_leases(vni: int | str) -> str:
    return f"{NET_LEASES}/{vni}"


def network_lease(vni: int | str, mac: str) -> str:
    """Dynamic lease {mac_address, ip4_address, hostname, clientid, expiry, timestamp}, written by
    the primary's dnsmasq hook; kept apart from /networks so lease churn wakes no network watch."""
    return f"{NET_LEASES}/{vni}/{mac}"


def userdata(name: str) -> str:
    """Provisioner userdata document {name, userdata}."""
    return f"{USERDATA}/{name}"


def profile(name: str) -> str:
    """Provisioner profile document; `userdata` names the userdata document served to its VMs."""
    return f"{PROFILES}/{name}"


def system_template(name: str) -> str:
    return f"{SYSTEM_TEMPLATES}/{name}"


def network_template(name: str) -> str:
    return f"{NETWORK_TEMPLATES}/{name}"


def storage_template(name: str) -> str:
    return f"{STORAGE_TEMPLATES}/{name}"


def script(name: str) -> str:
    return f"{SCRIPTS}/{name}"


def ova(name: str) -> str:
    return f"{OVAS}/{name}"


# -- migrations ---------------------------------------------------------------------------------

Migration = Callable[[ZK], None]


def _v1(zk: ZK) -> None:
    for path in BASE_PATHS:
        zk.ensure(path)
    if not zk.exists(PRIMARY_NODE):
        zk.create(PRIMARY_NODE, "none")


def _v2(zk: ZK) -> None:
    zk.ensure(VMS)
    zk.ensure(VM_NAMES)


def _v3(zk: ZK) -> None:
    """Consoles move out of /vms (see vm_console); the old copies are only a log tail."""
    zk.ensure(VM_CONSOLES)
    for uuid in zk.children(VMS):
        zk.delete(f"{VMS}/{uuid}/console")


def _v4(zk: ZK) -> None:
    """The storage subsystem's trees."""
    for path in CEPH_TREES:
        zk.ensure(path)


def _v5(zk: ZK) -> None:
    """Stats move out of the status documents into per-node shards (see vm_stats)."""
    zk.ensure(VM_STATS)

    def strip(doc: Any) -> Any:
        if isinstance(doc, dict) and "stats" in doc:
            return {k: v for k, v in doc.items() if k != "stats"}
        return doc

    for uuid in zk.children(VMS):
        with contextlib.suppress(NoNodeError):
            zk.update(vm_status(uuid), strip)


def _v6(zk: ZK) -> None:
    """The network subsystem's trees, and the provisioner's (its profiles name a VM's userdata)."""
    for path in (*NETWORK_TREES, *PROVISIONER_TREES):
        zk.ensure(path)


# MIGRATIONS[n] upgrades a tree at version n to version n+1.
def _v7(zk: ZK) -> None:
    """v7: fencing records and per-node fence parameters (high availability)."""
    for path in (FENCING, FENCE_INFO):
        zk.ensure(path)


def _v8(zk: ZK) -> None:
    """v8: VM snapshots, the backup catalogue, schedules and send destinations."""
    for path in (VM_SNAPSHOTS, BACKUPS, SCHEDULES, TRANSFERS):
        zk.ensure(path)


MIGRATIONS: dict[int, Migration] = {0: _v1, 1: _v2, 2: _v3, 3: _v4, 4: _v5, 5: _v6, 6: _v7, 7: _v8}


def current_version(zk: ZK) -> int:
    value = zk.get(SCHEMA_VERSION_PATH, None)
    return int(value) if value is not None else 0


def migrate(zk: ZK, target: int = SCHEMA_VERSION) -> int:
    """Bring the tree up to `target` once, under a lock, whoever calls first, then protect it
    (digest ACLs, when this session has credentials); return the version."""
    try:
        version = _migrate(zk, target)
        protect(zk)
    except NoAuthError:
        raise ConfigError(f"ZooKeeper refused access to the cluster root {zk.root}: it is protected by "
                          "digest ACLs and zookeeper.auth is missing or not the cluster's "
                          "credentials") from None
    return version


def _migrate(zk: ZK, target: int) -> int:
    if current_version(zk) >= target:
        return current_version(zk)
    zk.ensure(LOCKS)
    lock = zk.lock(SCHEMA_LOCK, "schema")
    with lock:
        version = current_version(zk)
        while version < target:
            log.info("migrating ZooKeeper schema %d -> %d", version, version + 1)
            MIGRATIONS[version](zk)
            version += 1
            try:
                zk.put(SCHEMA_VERSION_PATH, version)
            except NodeExistsError:
                zk.put(SCHEMA_VERSION_PATH, version)
    if version > target:
        raise RuntimeError(f"ZooKeeper schema {version} is newer than this PVC ({target}); upgrade PVC")
    return version


# -- ZooKeeper ACLs (DESIGN D14) -----------------------------------------------------------------------


def protect(zk: ZK, force: bool = False) -> int:
    """Give every znode of the tree that anyone may open (created before ACLs were turned on) the
    session's digest ACL, the cluster root itself included, so an unauthenticated client can
    neither read, list nor change anything. Idempotent; a no-op for a session without
    credentials. The walk runs once per credentials (ACL_MARKER): every znode created after it
    inherits the ACL from its creator's session, and a client without the credentials cannot
    create one. `force` walks again anyway. Returns how many znodes it changed."""
    acl = zk.default_acl
    if not acl:
        return 0
    ident = {"scheme": acl[0].id.scheme, "id": acl[0].id.id}
    if not force and zk.get(ACL_MARKER, None) == ident:
        return 0
    zk.ensure(LOCKS)
    with zk.lock(SCHEMA_LOCK, "acl"):
        marked = zk.get(ACL_MARKER, None) == ident
        if marked and not force:
            return 0
        changed = zk.protect_tree(acl)
        if not marked:
            zk.put(ACL_MARKER, ident)
    if changed:
        log.info("ZooKeeper ACLs: %d world-open znode(s) under %s protected", changed, zk.root)
    return changed
