"""Checks that decide a write read ZooKeeper, not pvcapid's watch caches.

pvcapid keeps watch-driven copies of /vms and /nodes for its lists (ZK.cache); a copy may lag
the server. A check that allows or refuses a write must not trust it: here a copy is frozen (its
updates held back, then let through), so a VM defined through the API is not in it yet, and the
removals of the network, volume and pool that VM uses must still be refused, changing nothing;
the same for node states that placement and a coordinator hand-over decide on.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import vms as vms_mod
from pvc.core import schema
from pvc.core.zk import ZK
from pvc.core.zkcache import TreeMirror
from tests.conftest import wait_for
from tests.integration.apihelp import ok, refused, storage_client

BASE = "/api/v1/storage/ceph"
NETWORK = {"vni": 1001, "description": "testing", "nettype": "bridged"}


class FrozenCache:
    """One of the API's watch caches (as pvcapid starts it) with its updates held back until
    release()."""

    def __init__(self, zk: ZK, monkeypatch: pytest.MonkeyPatch, path: str = schema.VMS,
                 depth: int = 2) -> None:
        zk.cache(path, depth=depth)
        mirror = zk.mirror(path)
        assert mirror is not None
        wait_for(mirror.watching.is_set, message=f"the {path} cache to watch")
        self.mirror = mirror
        self.held: list[tuple[Any, ...]] = []
        self._monkeypatch = monkeypatch

    def hold(self) -> None:
        # Every new or changed znode reaches the mirror's tree through _store: keep them back,
        # so the cache shows the cluster as it was.
        self._monkeypatch.setattr(self.mirror, "_store", lambda *args: self.held.append(args))

    def release(self) -> None:
        self._monkeypatch.delattr(self.mirror, "_store")
        for args in self.held:
            TreeMirror._store(self.mirror, *args)
        self.held.clear()


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage) -> Iterator[TestClient]:
    with storage_client(config_factory, zk, fake, pool=True) as test_client:
        yield test_client


@pytest.fixture
def frozen(zk: ZK, monkeypatch: pytest.MonkeyPatch) -> FrozenCache:
    return FrozenCache(zk, monkeypatch)


def define(client: TestClient, name: str, volume: str, bridge: str) -> None:
    """A VM with one RBD disk and one interface, defined through the API."""
    xml = (f"<domain type='kvm'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
           f"<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>"
           f"</os><devices><disk type='network' device='disk'><source protocol='rbd' name='{volume}'/>"
           f"<target dev='vda' bus='virtio'/></disk><interface type='bridge'>"
           f"<mac address='52:54:00:00:00:01'/><source bridge='{bridge}'/><model type='virtio'/>"
           f"</interface></devices></domain>")
    ok(client.post("/api/v1/vm", data={"xml": xml, "node": "hv1"}))


def cached_names(zk: ZK) -> list[str]:
    """The VM names a display sees (the watch cache)."""
    return [e.record.name for e in vms_mod.list_vms(zk)]


def test_removals_are_refused_for_a_vm_the_cache_does_not_show_yet(client: TestClient, zk: ZK,
                                                                     fake: FakeStorage,
                                                                     frozen: FrozenCache) -> None:
    ok(client.post("/api/v1/network", params=NETWORK))
    ok(client.post(f"{BASE}/volume", params={"volume": "web1_sda", "pool": "vms", "size": "1G"}))
    frozen.hold()
    define(client, "web1", "vms/web1_sda", "vmbr1001")
    assert cached_names(zk) == []          # the cache lags: a list does not show web1 yet

    refused(client.delete("/api/v1/network/1001"), 400, "Cannot remove network 1001", "'web1'")
    refused(client.delete(f"{BASE}/volume/vms/web1_sda"), 400, "used by VM 'web1'")
    refused(client.put(f"{BASE}/volume/vms/web1_sda", params={"new_name": "other"}), 400,
            "used by VM 'web1'")
    refused(client.put(f"{BASE}/volume/vms/web1_sda", params={"new_size": "512M", "force": "true"}), 400,
            "shrink", "web1")
    refused(client.delete(f"{BASE}/pool/vms", params={"yes-i-really-mean-it": "yes"}), 400,
            "Cannot remove RBD pool", "vms/web1_sda by 'web1'")
    assert zk.exists(schema.network(1001)) and zk.exists(schema.volume("vms", "web1_sda"))
    assert fake.list_pools() == ["vms"] and fake.list_volumes("vms") == ["web1_sda"]

    frozen.release()
    assert cached_names(zk) == ["web1"]    # the same display, once the cache has caught up


def test_remove_with_disks_is_refused_for_a_sharer_the_cache_does_not_show_yet(
        client: TestClient, zk: ZK, fake: FakeStorage, frozen: FrozenCache) -> None:
    ok(client.post(f"{BASE}/volume", params={"volume": "web1_sda", "pool": "vms", "size": "1G"}))
    define(client, "web1", "vms/web1_sda", "vmbr100")
    wait_for(lambda: cached_names(zk) == ["web1"], message="the cache to show web1")
    frozen.hold()
    define(client, "web2", "vms/web1_sda", "vmbr100")
    assert cached_names(zk) == ["web1"]

    refused(client.delete("/api/v1/vm/web1", params={"delete_disks": "true"}), 400,
            "shares volumes", "vms/web1_sda by web2")
    assert zk.get(schema.vm_name("web1"), None) is not None
    assert fake.list_volumes("vms") == ["web1_sda"]


# -- node states ---------------------------------------------------------------------------------------

def set_node(zk: ZK, name: str, **fields: str) -> None:
    zk.update(schema.node(name), lambda doc: {**doc, **fields})


def cached_node_states(zk: ZK) -> dict[str, str]:
    """Each node's daemon/domain state as a display sees it (the watch cache)."""
    return {n.name: f"{n.daemon_state}/{n.domain_state}" for n in nodes_mod.load_nodes(zk)}


def test_handover_and_placement_judge_node_states_the_cache_does_not_show_yet(
        client: TestClient, zk: ZK, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = FrozenCache(zk, monkeypatch, schema.NODES, depth=1)
    frozen.hold()
    for name in ("hv2", "hv3"):
        set_node(zk, name, daemon_state="dead", domain_state="flushed")
    set_node(zk, "hv1", domain_state="flushed")
    assert cached_node_states(zk)["hv2"] == "run/ready"     # the cache lags

    # no node is ready for a new VM now; the cache still shows hv1..hv3 ready
    xml = (f"<domain type='kvm'><name>late</name><uuid>{uuidlib.uuid4()}</uuid><memory unit='MiB'>128"
           f"</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>")
    refused(client.post("/api/v1/vm", data={"xml": xml}), 400,
            "No node can take VM late: no node is in run state and ready")
    assert zk.get(schema.vm_name("late"), None) is None
    refused(client.post("/api/v1/node/hv1/coordinator-state", params={"state": "secondary"}), 400,
            "Node hv1 is the only running coordinator")
    assert not zk.exists(schema.PRIMARY_REQUEST)

    frozen.release()
    assert cached_node_states(zk)["hv2"] == "dead/flushed"
