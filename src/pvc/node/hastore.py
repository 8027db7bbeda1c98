"""The HA monitor's real side effects: ZooKeeper (`ZKHAStore`) and Ceph (`CephFence`).

`pvc.node.fencing` holds the logic; these two classes are what it runs against on a real node
(the simulator in tests/sim gives it in-memory ones).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pvc.adapters.ceph import Storage, StorageNotFound
from pvc.cluster import faults
from pvc.cluster.clusterinfo import get_cluster
from pvc.cluster.nodes import load_fencing, load_nodes
from pvc.cluster.vms.transitions import recover
from pvc.core import schema
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.zk import ZK
from pvc.node.storage import address_ip
from pvc.node.vms import PeerNode, ZKStore

log = logging.getLogger("pvcnoded.fencing")


class ZKHAStore:
    """HAStore over ZooKeeper. Writes are compare-and-set (`ZK.update`), so a node daemon writing
    its own document at the same moment is re-applied on top, never overwritten."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self.vm_store = ZKStore(zk)

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

    def raise_fault(self, key: str, delta: int, message: str) -> None:
        faults.raise_fault(self.zk, key, delta, message)

    def clear_fault(self, key: str) -> None:
        faults.clear_fault(self.zk, key)


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
