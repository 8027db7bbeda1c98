"""The HA monitor's real side effects: ZooKeeper (`ZKHAStore`) and Ceph (`CephFence`).

`pvc.node.fencing` holds the logic; these two classes are what it runs against on a real node
(the simulator in tests/sim gives it in-memory ones).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.protocol.states import ZnodeStat

from pvc.adapters.ceph import Storage, StorageNotFound
from pvc.cluster import faults
from pvc.cluster.clusterinfo import get_cluster
from pvc.cluster.nodes import load_fencing, load_nodes
from pvc.cluster.vms.transitions import recover
from pvc.core import schema
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.zk import ZK, TxOp, op_check, op_create, op_delete, op_set
from pvc.node.election import PRIMARY_LEASE
from pvc.node.storage import address_ip
from pvc.node.vms import PeerNode, ZKStore

log = logging.getLogger("pvcnoded.fencing")


class ZKHAStore:
    """HAStore over ZooKeeper. Writes are compare-and-set (`ZK.update`), so a node daemon writing
    its own document at the same moment is re-applied on top, never overwritten.

    `hosts` are the configured ZooKeeper members (for the quorum guard); with `lock_guard` every
    write of the primary lease also checks, in the same transaction, that this session's entry on
    the primary lock still exists (a daemon whose session expired, or that was deposed, cannot
    renew nor claim)."""

    def __init__(self, zk: ZK, hosts: Sequence[str] = (), lock_guard: bool = False,
                 probe: Callable[[str, int], bool] | None = None) -> None:
        self.zk = zk
        self.vm_store = ZKStore(zk)
        self.hosts = list(hosts)
        self.lock_guard = lock_guard
        self.probe = probe or serves
        self._entry: str | None = None

    def nodes(self) -> dict[str, NodeRecord]:
        return {n.name: n for n in load_nodes(self.zk)}

    def alive(self) -> set[str]:
        return self.vm_store.alive_nodes()

    def maintenance(self) -> bool:
        return get_cluster(self.zk).maintenance

    def fence_records(self) -> dict[str, dict[str, Any]]:
        return load_fencing(self.zk)

    def put_fence_record(self, node: str, record: dict[str, Any]) -> None:
        self.zk.update(schema.node_fencing(node), lambda _old: record, create=True)

    def update_node(self, node: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.zk.update(schema.node(node), lambda doc: fn(doc) if isinstance(doc, dict) else doc)

    def fence_info(self, node: str) -> dict[str, Any]:
        info = self.zk.get(schema.node_fence_info(node), None)
        return info if isinstance(info, dict) else {"agent": "none"}

    def node_addresses(self, node: str) -> list[str]:
        """The node's Ceph client addresses as it published them; else its known addresses."""
        doc = self.zk.get(schema.node(node), None)
        try:
            peer = PeerNode.model_validate(doc)
        except ValueError:
            return []
        published = [a for a in peer.ceph_client_addresses if a]
        if published:
            return published
        return sorted({a for a in (peer.migration_address, peer.cluster_address) if a})

    def vms(self) -> dict[str, VMRecord]:
        return self.vm_store.load_vms()

    def recover_vm(self, uuid: str, dead: str, target: str | None) -> bool:
        if not self.vm_store.update_vm(uuid, recover(dead, target)):
            return False
        self._release(uuid, dead)
        return True

    def _release(self, uuid: str, dead: str) -> None:
        def clear(status: dict[str, Any]) -> dict[str, Any]:
            if status.get("node") == dead and status.get("running"):
                return {**status, "running": False, "libvirt_state": "shutoff", "vnc": ""}
            return status

        self.vm_store.update_status(uuid, clear)

    def claimed_by(self, node: str) -> set[str]:
        uuids = self.zk.children(schema.VMS)
        statuses = self.vm_store.load_statuses(uuids)
        return {u for u, s in statuses.items() if s.node == node and s.running}

    def release_claims(self, node: str) -> int:
        claims = self.claimed_by(node)
        for uuid in claims:
            self._release(uuid, node)
        return len(claims)

    def running_on(self, uuids: list[str]) -> dict[str, str]:
        statuses = self.vm_store.load_statuses(uuids) if uuids else {}
        return {u: s.node for u, s in statuses.items() if s.running and s.node}

    def raise_fault(self, key: str, delta: int, message: str) -> None:
        faults.raise_fault(self.zk, key, delta, message)

    def clear_fault(self, key: str) -> None:
        faults.clear_fault(self.zk, key)

    def fault_state(self, key: str) -> str | None:
        doc = self.zk.get(schema.fault(faults.fault_id(key)), None)
        if not isinstance(doc, dict) or doc.get("active") is False:
            return None
        return "ack" if doc.get("status") == "ack" else "new"

    def active_faults(self, prefixes: tuple[str, ...]) -> list[str]:
        ids = [i for i in self.zk.children(schema.FAULTS) if i.startswith(prefixes)]
        docs = self.zk.get_many([schema.fault(i) for i in ids]) if ids else {}
        return [i for i in ids
                if isinstance(d := docs.get(schema.fault(i)), dict) and d.get("active") is not False]

    # -- the primary lease and lock (pvc.node.fencing, pvc.node.election) ---------------------------

    def lease(self) -> tuple[dict[str, Any] | None, int]:
        doc = self.zk.get_doc(PRIMARY_LEASE)
        if doc is None:
            return None, -1
        return (doc.data if isinstance(doc.data, dict) else None), doc.version

    def _entries(self) -> list[str]:
        """The primary lock's entries, first in line first (kazoo: <id>__lock__<sequence>)."""
        names = [c for c in self.zk.children(schema.PRIMARY_ELECTION) if "__lock__" in c]
        return sorted(names, key=lambda c: c.rsplit("__lock__", 1)[1])

    def _own_entry(self, fresh: bool = False) -> str | None:
        if self._entry is None or fresh:
            self._entry = None
            session = self.zk.session_id
            for name in self._entries():
                stat = self.zk.stat(f"{schema.PRIMARY_ELECTION}/{name}")
                if stat is not None and session is not None and stat.ephemeralOwner == session:
                    self._entry = name
                    break
        return self._entry

    def write_lease(self, doc: dict[str, Any], version: int, guarded: bool = True) -> int | None:
        if version < 0:
            self.zk.ensure(schema.LOCKS)       # (a cluster whose tree is not initialised yet)
        guarded = guarded and self.lock_guard
        for fresh in (False, True):
            ops: list[TxOp] = []
            if guarded:
                entry = self._own_entry(fresh)
                if entry is None:
                    continue
                ops.append(op_check(f"{schema.PRIMARY_ELECTION}/{entry}", -1))
            ops.append(op_create(PRIMARY_LEASE, doc) if version < 0 else op_set(PRIMARY_LEASE, doc, version))
            written = self._commit(ops)
            if written is not None:
                return written
            if not guarded:
                return None
            # the lease moved on, or our cached lock entry is stale: look for it once more
        return None

    def _commit(self, ops: list[TxOp]) -> int | None:
        """Commit; the lease's new version, None when a check or a version did not hold."""
        def once() -> list[Any]:
            tx = self.zk.transaction()
            for op in ops:
                op(tx)
            return list(tx.commit())

        results = self.zk.retry(once)
        last = results[-1] if results else None
        if any(isinstance(r, Exception) for r in results):
            return None
        if isinstance(last, ZnodeStat):
            return int(last.version)
        return 0                               # created

    def lock_holder(self) -> tuple[str, str] | None:
        entries = self._entries()
        if not entries:
            return None
        raw = self.zk.get_raw(f"{schema.PRIMARY_ELECTION}/{entries[0]}")
        if raw is None:
            return None
        return entries[0], raw[0].decode(errors="replace")

    def depose(self, entry: str, doc: dict[str, Any], version: int) -> bool:
        lease = op_create(PRIMARY_LEASE, doc) if version < 0 else op_set(PRIMARY_LEASE, doc, version)
        return self._commit([lease, op_delete(f"{schema.PRIMARY_ELECTION}/{entry}")]) is not None

    def zk_members(self, node: str) -> list[tuple[str | None, bool]]:
        """Each configured member with the node whose name or published address it names, and
        whether it answers `srvr` as leader, follower or standalone (asked in parallel; not the
        members on `node`, whose state the guard does not need: a dead host would only make the
        answer wait for the timeout)."""
        if not self.hosts:
            return []
        peers = self.vm_store.node_docs()
        owners: dict[str, str] = {}
        for name, peer in peers.items():
            for address in (name, peer.cluster_address, peer.migration_address, *peer.ceph_client_addresses):
                if address:
                    owners.setdefault(address, name)
        members = []
        for entry in self.hosts:
            host, _, port = entry.rpartition(":")
            host = (host or entry).strip("[]")
            members.append((host, int(port) if port.isdigit() else 2181))
        placed = [owners.get(host) or owners.get(host.split(".")[0]) for host, _port in members]
        if node not in placed:
            return [(owner, True) for owner in placed]         # the guard is not about a member node
        ask = [m for m, owner in zip(members, placed, strict=True) if owner != node]
        with ThreadPoolExecutor(max_workers=max(1, len(ask))) as pool:
            answers = dict(zip(ask, pool.map(lambda m: self.probe(m[0], m[1]), ask), strict=True))
        return [(owner, answers.get(m, False)) for m, owner in zip(members, placed, strict=True)]


def serves(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether the ZooKeeper member at host:port serves clients (is in a quorum): `srvr` answers
    with a Mode line; a member without a quorum answers that it is not serving requests."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"srvr")
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    return b"Mode:" in reply


def blocklist_address(ip: str) -> str:
    """Every client from this IP, whatever its port and nonce (Ceph matches ip:0/0 that way)."""
    return f"[{ip}]:0/0" if ":" in ip else f"{ip}:0/0"


class CephFence:
    """StorageFence over the Ceph adapter."""

    def __init__(self, storage: Callable[[], Storage], zk: ZK, expire: int) -> None:
        self._storage, self.zk, self.expire = storage, zk, expire

    def blocklist(self, addresses: list[str]) -> list[str]:
        added = []
        for ip in addresses:
            entry = blocklist_address(ip)
            self._storage().blocklist(entry, self.expire)
            added.append(entry)
        return added

    def unblocklist(self, addresses: list[str]) -> None:
        for ip in addresses:
            self._storage().unblocklist(blocklist_address(ip))

    def mark_osds_down(self, node: str) -> list[int]:
        ids = self.zk.children(schema.CEPH_OSDS)
        docs = self.zk.get_many([schema.osd(i) for i in ids]) if ids else {}
        mine = sorted(int(i) for i in ids if i.isdigit() and isinstance(d := docs.get(schema.osd(i)), dict)
                      and d.get("node") == node)
        if mine:
            self._storage().mark_osds_down(mine)
            # Our own client must see them down before recovery reads the VMs' locks: with the
            # older map, reads of objects that sat on them wait for timeouts (~14 s on the lab).
            self._storage().refresh_maps()
        return mine

    def release_locks(self, volumes: list[str], addresses: list[str]) -> int:
        storage, broken = self._storage(), 0
        wanted = set(addresses)
        for volume in volumes:
            pool, _, name = volume.partition("/")
            try:
                for locker in storage.lockers(pool, name):
                    if address_ip(locker.address) in wanted:
                        storage.break_lock(pool, name, locker)
                        broken += 1
            except StorageNotFound:
                continue
        return broken
