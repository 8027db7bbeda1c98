"""CephStorage against a real Ceph 16 cluster: the shared Storage contract, then what only a real
cluster can show (qcow2 conversion by qemu-img, unreachable mons, reconnection, concurrency).

One throwaway 3-node Ceph lab per module (pvc.lab.ceph.bootstrap in network namespaces). The
root namespace cannot reach the mons, so every adapter call runs in a thread inside a node
namespace (`InNetns`); librados starts its messenger threads from there and they stay in it.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from pvc.adapters.ceph import CephStorage, Storage, StorageError, StorageNotFound, StorageUnavailable
from pvc.lab import ceph, proc
from pvc.lab.plan import LabPlan
from tests.unit.test_storage_fake import MiB, Reader, StorageContract, unique

from .labnet import lab_network, temp_plan

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(bool(ceph.tools_missing()), reason="needs the Ceph packages"),
]

POOL = "tstadapter"
_LEAKED: list[Any] = []   # librados objects deliberately never freed (see Client.release)


class InNetns:
    """A proxy running every method of an object in a fresh thread inside a network namespace."""

    def __init__(self, target: Any, netns: str, timeout: float = 300) -> None:
        self._target, self._netns, self._timeout = target, netns, timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return proc.netns_call(self._netns, attr, *args, timeout=self._timeout, **kwargs)

        return call


class Client:
    """A second, independent librados client (another node's QEMU, say), used inside `netns`."""

    def __init__(self, plan: LabPlan, netns: str) -> None:
        self.plan, self.netns = plan, netns
        self.clusters: list[Any] = []
        self.ioctxs: list[Any] = []
        self.images: list[Any] = []

    def _in_netns(self, fn: Callable[[], Any]) -> Any:
        return proc.netns_call(self.netns, fn, timeout=120)

    def _cluster(self) -> Any:
        import rados

        cluster = rados.Rados(conffile=str(self.plan.ceph_conf), rados_id="admin",
                              conf={"keyring": str(ceph.admin_keyring(self.plan))})
        cluster.connect(timeout=10)
        self.clusters.append(cluster)
        return cluster

    def _open(self, pool: str, volume: str) -> Any:
        import rbd

        ioctx = self._cluster().open_ioctx(pool)
        self.ioctxs.append(ioctx)
        image = rbd.Image(ioctx, volume)
        self.images.append(image)
        return image

    def lock(self, pool: str, volume: str, cookie: str) -> None:
        self._in_netns(lambda: self._open(pool, volume).lock_exclusive(cookie))

    def watch(self, pool: str, volume: str) -> None:
        self._in_netns(lambda: self._open(pool, volume))

    def read(self, pool: str, volume: str, length: int) -> bytes:
        import rbd

        def read() -> bytes:
            cluster = self._cluster()
            try:
                with cluster.open_ioctx(pool) as ioctx, rbd.Image(ioctx, volume, read_only=True) as image:
                    return bytes(image.read(0, length))
            finally:
                self.clusters.remove(cluster)
                cluster.shutdown()

        return cast(bytes, self._in_netns(read))

    def release(self) -> None:
        """Close images, then ioctxs, then clients: librados crashes on anything used after its
        client's shutdown. If an image will not close (its client was blocklisted by break_lock),
        keep all of this client's objects alive rather than risk that."""

        def release() -> None:
            try:
                for image in self.images:
                    image.close()
            except Exception:
                _LEAKED.append((self.images[:], self.ioctxs[:], self.clusters[:]))
                return
            for ioctx in self.ioctxs:
                ioctx.close()
            for cluster in self.clusters:
                cluster.shutdown()

        try:
            self._in_netns(release)
        finally:
            self.images.clear()
            self.ioctxs.clear()
            self.clusters.clear()


@pytest.fixture(scope="module")
def lab() -> Iterator[LabPlan]:
    with lab_network(temp_plan("ca", 3)) as plan:
        t0 = time.monotonic()
        ceph.bootstrap(plan, timeout=240)
        print(f"\nCeph lab ready after {time.monotonic() - t0:.1f}s")
        yield plan
        ceph.stop_all(plan, kill=True)


@pytest.fixture(scope="module")
def ceph_storage(lab: LabPlan) -> Iterator[CephStorage]:
    storage = CephStorage(str(lab.ceph_conf), str(ceph.admin_keyring(lab)), timeout=10, op_timeout=60)
    yield storage
    proc.netns_call(lab.node("hv2").netns, storage.close)


@pytest.fixture(scope="module")
def module_storage(lab: LabPlan, ceph_storage: CephStorage) -> Storage:
    # hv2, not hv1: the adapter is a client like any other node's, not the CLI's namespace
    return cast(Storage, InNetns(ceph_storage, lab.node("hv2").netns))


@pytest.fixture(scope="module")
def module_pool(module_storage: Storage) -> Iterator[str]:
    module_storage.create_pool(POOL, 8, 3, 2)
    yield POOL
    module_storage.remove_pool(POOL)


class TestCephStorage(StorageContract):
    @pytest.fixture
    def storage(self, module_storage: Storage) -> Storage:
        return module_storage

    @pytest.fixture
    def pool(self, module_pool: str) -> str:
        return module_pool

    @pytest.fixture
    def peer(self, lab: LabPlan) -> Iterator[Client]:
        client = Client(lab, lab.node("hv3").netns)
        yield client
        client.release()

    @pytest.fixture
    def read(self, lab: LabPlan) -> Iterator[Reader]:
        client = Client(lab, lab.node("hv1").netns)
        yield client.read
        client.release()

    @pytest.fixture
    def osd_id(self) -> int:
        return 2


# ---- what only the real cluster shows ----------------------------------------------------------

def test_convert_qcow2_into_volume(module_storage: Storage, module_pool: str, lab: LabPlan,
                                   tmp_path: Path) -> None:
    raw, qcow2 = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
    data = os.urandom(MiB) + b"\0" * MiB + os.urandom(MiB // 2)
    raw.write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    name = unique("qcow")
    module_storage.create_volume(module_pool, name, 4 * MiB)
    # stale bytes where the image has zeroes must not survive: -n writes the whole image
    module_storage.write_volume(module_pool, name, io.BytesIO(b"\xee" * (3 * MiB)))
    module_storage.convert_into_volume(module_pool, name, str(qcow2), "qcow2")
    client = Client(lab, lab.node("hv1").netns)
    try:
        assert client.read(module_pool, name, len(data)) == data
    finally:
        client.release()

    # too large: the virtual size counts, not the (small) file size
    sparse = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(sparse), "64M"], check=True)
    with pytest.raises(StorageError, match=f"{64 * MiB} > {4 * MiB}"):
        module_storage.convert_into_volume(module_pool, name, str(sparse), "qcow2")
    # not what it claims to be: refused by the inspection, before qemu-img converts anything
    with pytest.raises(StorageError, match="image refused: the file is raw, not qcow2 as declared"):
        module_storage.convert_into_volume(module_pool, name, str(raw), "qcow2")
    module_storage.remove_volume(module_pool, name)


def test_protected_snapshots_are_purged_with_the_volume(module_storage: Storage, module_pool: str,
                                                        lab: LabPlan) -> None:
    name = unique("prot")
    module_storage.create_volume(module_pool, name, MiB)
    module_storage.create_snapshot(module_pool, name, "keep")

    def protect() -> None:
        import rados
        import rbd

        cluster = rados.Rados(conffile=str(lab.ceph_conf), rados_id="admin",
                              conf={"keyring": str(ceph.admin_keyring(lab))})
        cluster.connect(timeout=10)
        try:
            with cluster.open_ioctx(module_pool) as ioctx, rbd.Image(ioctx, name) as image:
                image.protect_snap("keep")
        finally:
            cluster.shutdown()

    proc.netns_call(lab.node("hv1").netns, protect)
    module_storage.remove_volume(module_pool, name)
    assert name not in module_storage.list_volumes(module_pool)


def test_removed_volumes_wait_in_the_trash_until_purged(module_storage: Storage, module_pool: str,
                                                       lab: LabPlan) -> None:
    """remove_volume frees the name at once; purge_trash (the primary's stats pass) deletes the data."""
    name = unique("trash")
    module_storage.create_volume(module_pool, name, MiB)
    module_storage.remove_volume(module_pool, name)
    assert name not in module_storage.list_volumes(module_pool)
    module_storage.create_volume(module_pool, name, 2 * MiB)      # the name is free again
    assert module_storage.volume_info(module_pool, name)["size"] == 2 * MiB
    module_storage.remove_volume(module_pool, name)
    assert module_storage.purge_trash(module_pool) >= 2
    assert module_storage.purge_trash(module_pool) == 0
    assert ceph.rbd(lab, "trash", "ls", module_pool, json_out=True) == []


def test_concurrent_calls_share_one_connection(ceph_storage: CephStorage, module_storage: Storage,
                                               module_pool: str) -> None:
    names = [unique("conc") for _ in range(8)]
    module_storage.list_pools()
    first = ceph_storage._cluster
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: module_storage.create_volume(module_pool, n, MiB), names))
        infos = list(pool.map(lambda n: module_storage.volume_info(module_pool, n), names))
        assert [i["name"] for i in infos] == names
        list(pool.map(lambda n: module_storage.remove_volume(module_pool, n), names))
    assert ceph_storage._cluster is first
    assert not set(names) & set(module_storage.list_volumes(module_pool))


def test_reconnects_after_close_and_after_being_blocklisted(lab: LabPlan, module_pool: str) -> None:
    storage = CephStorage(str(lab.ceph_conf), str(ceph.admin_keyring(lab)), timeout=10, op_timeout=15)
    proxy = cast(CephStorage, InNetns(storage, lab.node("hv1").netns))
    try:
        assert module_pool in proxy.list_pools()
        proxy.close()
        assert module_pool in proxy.list_pools()

        # HA fencing blocklists a node's client; that node's adapter must recover by itself
        name = unique("bl")
        proxy.create_volume(module_pool, name, MiB)
        addrs = proc.netns_call(lab.node("hv1").netns, lambda: str(storage._cluster.get_addrs()))
        match = re.search(r"\d+\.\d+\.\d+\.\d+:\d+/\d+", addrs)
        assert match, addrs
        proxy.blocklist(match.group(0), 60)
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable) as err:
            for _ in range(20):   # the client learns of the new osdmap within a moment
                proxy.write_volume(module_pool, name, io.BytesIO(b"x" * 4096))
                time.sleep(0.5)
        print(f"\nblocklisted {match.group(0)}: {err.value} after {time.monotonic() - t0:.1f}s")
        assert storage._cluster is None
        assert proxy.volume_info(module_pool, name)["size"] == MiB
        assert storage._cluster is not None
        proxy.remove_volume(module_pool, name)
    finally:
        proc.netns_call(lab.node("hv1").netns, storage.close)


def test_unreachable_and_unconfigured(lab: LabPlan, tmp_path: Path) -> None:
    # from the root namespace the mons (10.200.0.x) cannot be reached
    storage = CephStorage(str(lab.ceph_conf), str(ceph.admin_keyring(lab)), timeout=2)
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable, match="cannot reach the Ceph cluster"):
        storage.list_pools()
    assert time.monotonic() - t0 < 15
    missing = CephStorage(str(tmp_path / "ceph.conf"), str(tmp_path / "keyring"))
    with pytest.raises(StorageUnavailable, match="not configured"):
        missing.fsid()


def test_rbd_info_matches_the_cli(module_storage: Storage, module_pool: str, lab: LabPlan) -> None:
    name = unique("cli")
    module_storage.create_volume(module_pool, name, 12 * MiB)
    module_storage.create_snapshot(module_pool, name, "s")
    cli = ceph.rbd(lab, "info", f"{module_pool}/{name}", json_out=True)
    assert module_storage.volume_info(module_pool, name) == cli
    module_storage.remove_volume(module_pool, name)
    with pytest.raises(StorageNotFound):
        module_storage.volume_info(module_pool, name)
