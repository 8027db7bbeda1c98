"""Send and receive between two clusters (two ZooKeeper roots, two FakeStorages, real HTTP).

- Our receiver (the API app under uvicorn) driven by a client speaking upstream 1.0.3's SENDER
  protocol byte for byte: receive/config with the VM item, a raw full stream (POST), a multipart
  incremental as `requests` encodes upstream's `files=` (PUT), then PATCH.
- Our sender (pvc.worker.send) against our receiver: full, incremental, discards, the destination
  pool, checksums, resume after an interruption, refusals.
- Our sender against a fake upstream RECEIVER (a small HTTP server implementing the documented
  receive protocol and nothing more, strictly: a full only as one streamed POST of the whole
  image, a PUT only for an incremental whose source_snapshot it holds): no extension is used,
  the data arrives intact.
- The send/mirror routes: checked before queueing, the key sealed in /transfers and never in the
  task or GET /tasks.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import uvicorn
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.cluster import receive, transfers
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.cluster.storage.docs import volume_info, write_volume
from pvc.core import blockstream as bs
from pvc.core import schema, secrets
from pvc.core import vmsnapshots as core_snaps
from pvc.core.config import load_config
from pvc.core.errors import InvalidInput
from pvc.core.records import SnapshotVolume, VMSnapshotRecord
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer, free_port
from pvc.worker import send
from tests.conftest import API_TOKEN, wait_for
from tests.integration.apihelp import standard_cluster

MIB = 1 << 20
SIZE = 64 * MIB
HEADERS = {"X-Api-Key": API_TOKEN}


def vm_xml(name: str, uuid: str, pool: str = "vms", disks: int = 1, vcpus: int = 1) -> str:
    disk = "".join(f"<disk type='network' device='disk'><source protocol='rbd' name='{pool}/{name}_sd{c}'>"
                   f"<host name='10.9.9.{i}' port='6789'/></source><auth username='admin'>"
                   f"<secret type='ceph' uuid='00000000-1111-2222-3333-444444444444'/></auth>"
                   f"<target dev='sd{c}' bus='scsi'/></disk>\n    " for i, c in enumerate("abc"[:disks], 1))
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk}<serial type='pty'/>
  </devices>
</domain>"""


# -- two clusters ---------------------------------------------------------------------------------

class Cluster:
    """One cluster: a ZooKeeper root, a FakeStorage with pool `vms` (and `fast`), its settings."""

    def __init__(self, zk: ZK, config: Path) -> None:
        self.zk, self.storage = zk, FakeStorage()
        self.settings = load_config(str(config))
        for pool in ("vms", "fast"):
            self.storage.create_pool(pool, 32, 3, 2)
            zk.put(schema.pool(pool), {"name": pool, "pgs": 32, "tier": "default",
                                      "stats": {"free_bytes": 1 << 40}})
        standard_cluster(zk, None)

    def define(self, name: str, disks: int = 1, size: int = SIZE) -> str:
        uuid = str(uuidlib.uuid4())
        for c in "abc"[:disks]:
            self.storage.create_volume("vms", f"{name}_sd{c}", size)
            write_volume(self.zk, "vms", f"{name}_sd{c}", volume_info(self.storage, "vms", f"{name}_sd{c}"))
        vms_mod.define(self.zk, vm_xml(name, uuid, disks=disks), node="hv1")
        return uuid

    def write(self, name: str, offset: int, data: bytes, disk: str = "a") -> None:
        with self.storage.open_block("vms", f"{name}_sd{disk}", write=True) as handle:
            handle.write(offset, data)

    def snapshot(self, uuid: str, snap: str, created: float | None = None) -> VMSnapshotRecord:
        record = vms_mod.get_vm(self.zk, uuid)
        volumes = []
        for ref in record.rbd_volumes:
            pool, volume = ref.split("/")
            self.storage.create_snapshot(pool, volume, snap)
            volumes.append(SnapshotVolume(pool=pool, volume=volume, snap=snap, size=SIZE))
        made = snaps.new_record(record, snap, volumes, "crash", "manual", -1, created=created)
        snaps.write_snapshot(self.zk, uuid, made, None)
        return made


def serve(app: Any, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve `app` on a free port (HTTPS with `tls` = (certificate, key) files); its API base."""
    port = free_port()
    extra: dict[str, Any] = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", **extra))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, 0.02, "uvicorn to start")
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/api/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "cluster.key"
    secrets.write_key_file(path)
    return str(path)


@pytest.fixture
def source(zk: ZK, config_factory: Callable[..., Path], key_file: str) -> Cluster:
    return Cluster(zk, config_factory(cluster={"name": "a", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                               "key_file": key_file}))


@pytest.fixture
def dest_zk(zk_server: ZooKeeperServer) -> Iterator[ZK]:
    client = ZK([zk_server.address], f"/test-b-{uuidlib.uuid4().hex[:8]}", session_timeout=6).start()
    schema.migrate(client)
    yield client
    client.stop()


@pytest.fixture
def dest(dest_zk: ZK, tmp_path: Path, zk_server: ZooKeeperServer, key_file: str) -> Cluster:
    from tests.conftest import write_config
    (tmp_path / "b").mkdir()
    config = write_config(tmp_path / "b" / "pvc.conf", [zk_server.address], dest_zk.root, node="hv1",
                          cluster={"name": "b", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                   "key_file": key_file})
    return Cluster(dest_zk, config)


@pytest.fixture
def dest_url(dest: Cluster) -> Iterator[str]:
    app = create_app(dest.settings, dest.zk, storage=dest.storage)
    yield from serve(app)


def destination(url: str, pool: str | None = None) -> transfers.Destination:
    return transfers.Destination(uri=url, key=API_TOKEN, verify_ssl=False, pool=pool)


def read(cluster: Cluster, pool: str, volume: str, snap: str | None = None) -> bytes:
    with cluster.storage.open_block(pool, volume, snapshot=snap) as handle:
        return handle.read(0, handle.size)


def allocated(cluster: Cluster, pool: str, volume: str) -> int:
    with cluster.storage.open_block(pool, volume) as handle:
        return sum(n for _o, n, e in handle.extents() if e)


def do_send(source: Cluster, uuid: str, snap: str, url: str, parent: str | None = None,
            pool: str | None = None, **kw: Any) -> dict[str, Any]:
    lines: list[str] = []
    result = send.send_snapshot(source.zk, source.settings, uuid, snap, destination(url, pool), parent,
                                lines.append, storage=source.storage, **kw)
    assert API_TOKEN not in json.dumps(result) + "\n".join(lines)
    return result


# -- our sender -> our receiver -------------------------------------------------------------------------

def test_full_then_incremental_sparse_with_discards(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("web1")
    source.write("web1", 0, b"boot" * 1024)
    source.write("web1", 40 * MIB, os.urandom(3 * MIB))
    first = source.snapshot(uuid, "s1", created=time.time() - 100)
    result = do_send(source, uuid, "s1", dest_url)
    volume = result["volumes"][0]
    assert volume["mode"] == "full" and volume["verified"] is True
    # sparse: two 4 MiB objects hold data; the 64 MiB volume costs about their size on the wire
    assert result["bytes_sent"] < 2 * 8 * MIB
    assert read(dest, "vms", "web1_sda") == read(source, "vms", "web1_sda", "s1")
    assert allocated(dest, "vms", "web1_sda") <= 8 * MIB
    mirror = vms_mod.get_vm(dest.zk, "web1")
    assert mirror.state == "mirror" and mirror.node_limit == []
    got = snaps.get_snapshot(dest.zk, mirror.uuid, "s1")
    assert got.created == int(first.created) and got.origin == "received"   # upstream: whole seconds
    assert "10.9.9.1" not in mirror.xml        # their monitors replaced by ours

    # change 1 MiB, discard (zero) another region: the incremental carries about that much
    source.write("web1", 8 * MIB, os.urandom(MIB))
    source.write("web1", 40 * MIB, bytes(3 * MIB))
    source.snapshot(uuid, "s2")
    result = do_send(source, uuid, "s2", dest_url, parent="s1")
    assert result["volumes"][0]["mode"] == "incremental"
    assert result["bytes_sent"] < 2 * 4 * MIB + 64 * 1024
    assert read(dest, "vms", "web1_sda") == read(source, "vms", "web1_sda", "s2")
    assert [s.name for s in snaps.list_snapshots(dest.zk, mirror.uuid)] == ["s2", "s1"]
    assert dest.storage.list_snapshots("vms", "web1_sda") == ["s1", "s2"]

    # tags follow the source (an automirror tag never does: it would mirror back)
    vms_mod.modify_tag(source.zk, "web1", "add", "blue")
    vms_mod.modify_tag(source.zk, "web1", "add", "automirror")
    source.snapshot(uuid, "s3")
    do_send(source, uuid, "s3", dest_url, parent="s2")
    assert [t.name for t in vms_mod.get_vm(dest.zk, "web1").tags] == ["blue"]
    vms_mod.modify_tag(source.zk, "web1", "remove", "blue")
    source.snapshot(uuid, "s4")
    do_send(source, uuid, "s4", dest_url, parent="s3")
    assert vms_mod.get_vm(dest.zk, "web1").tags == []


def auto_sections(backup_tags: list[str], mirror_tags: list[str]) -> dict[str, Any]:
    """autobackup/automirror sections selecting by these tags (the rest is never used here)."""
    return {"autobackup": {"backup_root_path": "/srv/backups", "backup_tags": backup_tags,
                           "backup_schedule": {"full_interval": 2, "full_retention": 1}},
            "automirror": {"destinations": {"x": {"address": "127.0.0.1", "key": "k" * 16, "ssl": False}},
                           "default_destination": "x", "mirror_tags": mirror_tags, "keep_snapshots": 2}}


@pytest.fixture
def tagged(zk: ZK, dest_zk: ZK, config_factory: Callable[..., Path], tmp_path: Path,
           zk_server: ZooKeeperServer, key_file: str) -> Iterator[tuple[Cluster, Cluster, str]]:
    """Two clusters whose autobackup and automirror select by different tags (source: nightly and
    offsite[:dest], destination: local-backup and dr[:dest]), and the destination's API."""
    from tests.conftest import write_config
    a = Cluster(zk, config_factory(cluster={"name": "a", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                            "key_file": key_file}, **auto_sections(["nightly"], ["offsite"])))
    (tmp_path / "b").mkdir()
    cluster_b = {"name": "b", "coordinator_nodes": ["hv1", "hv2", "hv3"], "key_file": key_file}
    b = Cluster(dest_zk, write_config(tmp_path / "b" / "pvc.conf", [zk_server.address], dest_zk.root,
                                      node="hv1", cluster=cluster_b,
                                      **auto_sections(["local-backup"], ["dr"])))
    for url in serve(create_app(b.settings, b.zk, storage=b.storage)):
        yield a, b, url


def tag_names(cluster: Cluster, vm: str) -> list[str]:
    return sorted(t.name for t in vms_mod.get_vm(cluster.zk, vm).tags)


def test_configured_backup_and_mirror_tags_never_cross_a_send(tagged: tuple[Cluster, Cluster, str]) -> None:
    a, b, url = tagged
    uuid = a.define("tag1")
    for tag in ("blue", "nightly", "nightly:x", "offsite", "offsite:b", "autobackup", "local-backup",
                "dr:site2"):
        vms_mod.modify_tag(a.zk, "tag1", "add", tag)
    a.snapshot(uuid, "s1", created=time.time() - 20)
    # the sender strips what its own autobackup (whole name) and automirror (before ':') select by
    stays = receive.no_sync_tag(a.settings)
    sent = send.vm_detail(a.zk, vms_mod.get_vm(a.zk, uuid), [], None, stays)["tags"]
    assert sorted(t["name"] for t in sent) == ["blue", "dr:site2", "local-backup", "nightly:x"]
    do_send(a, uuid, "s1", url)
    # the receiver drops what its own configuration selects by
    assert tag_names(b, "tag1") == ["blue", "nightly:x"]
    # the destination's own autobackup/automirror tags on the mirror survive the next send;
    # the sender's other tags follow it exactly
    vms_mod.modify_tag(b.zk, "tag1", "add", "local-backup")
    vms_mod.modify_tag(b.zk, "tag1", "add", "dr")
    vms_mod.modify_tag(a.zk, "tag1", "remove", "blue")
    vms_mod.modify_tag(a.zk, "tag1", "add", "green")
    a.snapshot(uuid, "s2")
    do_send(a, uuid, "s2", url, parent="s1")
    assert tag_names(b, "tag1") == ["dr", "green", "local-backup", "nightly:x"]


def test_receiver_keeps_its_selection_tags_against_an_upstream_sender(tagged: tuple[Cluster, Cluster, str]
                                                                      ) -> None:
    a, b, url = tagged
    uuid = a.define("tag2")
    for tag in ("blue", "local-backup", "dr", "dr:site2", "automirror:x", "nightly"):
        vms_mod.modify_tag(a.zk, "tag2", "add", tag)
    a.snapshot(uuid, "s1")
    # upstream's sender posts every tag of its GET /vm item (it strips nothing of ours)
    r = requests.post(f"{url}/vm/tag2/snapshot/receive/config", headers=HEADERS, params={"snapshot": "s1"},
                      json=upstream_detail(a, uuid))
    assert r.status_code == 200, r.text
    assert tag_names(b, "tag2") == ["blue", "nightly"]     # "nightly" selects nothing here
    vms_mod.modify_tag(b.zk, "tag2", "add", "dr:elsewhere")
    a.snapshot(uuid, "s2")
    r = requests.post(f"{url}/vm/tag2/snapshot/receive/config", headers=HEADERS, params={"snapshot": "s2"},
                      json=upstream_detail(a, uuid))       # the mirror is updated
    assert r.status_code == 200, r.text
    assert tag_names(b, "tag2") == ["blue", "dr:elsewhere", "nightly"]


def test_refusals(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("db1")
    source.write("db1", 0, b"x" * 100)
    source.snapshot(uuid, "s1", created=time.time() - 50)
    source.snapshot(uuid, "s2", created=time.time() - 10)
    with pytest.raises(send.SendFailed, match="not on the destination"):
        do_send(source, uuid, "s2", dest_url, parent="s1")
    do_send(source, uuid, "s2", dest_url)
    with pytest.raises(send.SendFailed, match="already on the destination"):
        do_send(source, uuid, "s2", dest_url)
    with pytest.raises(send.SendFailed, match="older than"):
        do_send(source, uuid, "s1", dest_url)
    other = dest.define("app9")
    assert other
    uuid9 = source.define("app9")
    source.snapshot(uuid9, "s1")
    with pytest.raises(send.SendFailed, match="not a mirror"):
        do_send(source, uuid9, "s1", dest_url)
    with pytest.raises(send.SendFailed, match=r"not a PVC API|no answer"):
        do_send(source, uuid9, "s1", "http://127.0.0.1:9/api/v1")


def test_resume_after_interruption(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("big1")
    for i in range(12):
        source.write("big1", i * 4 * MIB, os.urandom(MIB))
    source.snapshot(uuid, "s1")

    class Cut(Exception):
        pass

    def cut(ref: str, batch: int) -> None:
        if batch == 1:
            raise Cut("connection lost")

    with pytest.raises(Cut):
        do_send(source, uuid, "s1", dest_url, after_batch=cut)
    assert not snaps.list_snapshots(dest.zk, vms_mod.get_vm(dest.zk, "big1").uuid)   # nothing claimed
    result = do_send(source, uuid, "s1", dest_url)
    volume = result["volumes"][0]
    assert volume["resumed_from"] == 1 and volume["verified"] is True
    assert volume["batches"] == 2          # 12 objects in batches of 8
    assert read(dest, "vms", "big1_sda") == read(source, "vms", "big1_sda", "s1")


def test_checksum_mismatch_is_detected(source: Cluster, dest: Cluster, dest_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    uuid = source.define("chk1")
    source.write("chk1", 0, b"a" * MIB)
    source.snapshot(uuid, "s1")
    real = receive.BatchReceiver.part

    def corrupt(self: receive.BatchReceiver, name: str, body: bytes) -> None:   # a bit flips on the way
        real(self, name, body[:100] + bytes([body[100] ^ 1]) + body[101:])

    monkeypatch.setattr(receive.BatchReceiver, "part", corrupt)
    with pytest.raises(send.SendFailed, match="checksum mismatch"):
        do_send(source, uuid, "s1", dest_url)
    mirror = vms_mod.get_vm(dest.zk, "chk1")
    assert snaps.list_snapshots(dest.zk, mirror.uuid) == []


def test_destination_pool(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("web2", disks=2)
    source.write("web2", 0, b"q" * 4096, disk="b")
    source.snapshot(uuid, "s1")
    do_send(source, uuid, "s1", dest_url, pool="fast")
    mirror = vms_mod.get_vm(dest.zk, "web2")
    assert sorted(mirror.rbd_volumes) == ["fast/web2_sda", "fast/web2_sdb"]
    assert "vms/" not in mirror.xml
    got = snaps.get_snapshot(dest.zk, mirror.uuid, "s1")
    assert got.rbd_snapshots == ["fast/web2_sda@s1", "fast/web2_sdb@s1"]
    assert read(dest, "fast", "web2_sdb")[:4096] == b"q" * 4096


def test_mirror_create_picks_newest_common(source: Cluster, dest: Cluster, dest_url: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    uuid = source.define("mir1")
    source.write("mir1", 0, os.urandom(MIB))
    taken: list[str] = []

    def fake_create(zk: ZK, settings: Any, node: str, uuid_: str, name: str, origin: str, log: Any) -> Any:
        taken.append(name)
        return source.snapshot(uuid_, name)

    monkeypatch.setattr("pvc.worker.snapshots.create_snapshot", fake_create)
    first = send.create_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url),
                               lambda _l: None,
                               storage=source.storage)
    assert first["parent"] is None and taken[0].startswith("mr")
    source.write("mir1", 20 * MIB, os.urandom(MIB))
    time.sleep(1.1)
    second = send.create_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url),
                                lambda _l: None, storage=source.storage)
    assert second["parent"] == taken[0]
    assert second["bytes_sent"] < 2 * 4 * MIB
    assert read(dest, "vms", "mir1_sda") == read(source, "vms", "mir1_sda", taken[1])


# -- upstream's sender, byte for byte, against our receiver ----------------------------------------------

def upstream_detail(source: Cluster, uuid: str) -> dict[str, Any]:
    """The VM item an upstream sender posts: GET /vm's item (its snapshots with xml_diff_lines)."""
    record = vms_mod.get_vm(source.zk, uuid)
    detail = json.loads(vms_mod.item_json(source.zk, vms_mod.get_entry(source.zk, uuid)))
    detail["xml"] = core_snaps.wire_xml(record.xml)
    detail["snapshots"] = [core_snaps.snapshot_item(s.name, s.created, s.rbd_snapshots,
                                                    core_snaps.xml_diff_lines(record.xml, s.xml), time.time())
                           for s in snaps.list_snapshots(source.zk, uuid)]
    return detail


def test_upstream_sender_protocol(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("up1")
    data = os.urandom(2 * MIB)
    source.write("up1", 4 * MIB, data)
    source.snapshot(uuid, "s1", created=time.time() - 30)
    # the VM changed after the snapshot: the receiver must rebuild s1's XML from the diff
    vms_mod.modify(source.zk, "up1", vm_xml("up1", uuid, vcpus=4))
    session = requests.Session()
    session.headers.update(HEADERS)
    base = dest_url
    assert "PVC API" in session.get(f"{base}/").json()["message"]
    assert send.parse_version(session.get(f"{base}/status").json()["pvc_version"]) >= (0, 9, 101)
    assert session.get(f"{base}/vm/up1").status_code == 404
    r = session.post(f"{base}/vm/up1/snapshot/receive/config", headers={"Content-Type": "application/json"},
                     params={"snapshot": "s1", "source_snapshot": None}, json=upstream_detail(source, uuid))
    assert r.status_code == 200, r.text

    def full_chunker() -> Iterator[bytes]:         # upstream: the whole virtual size, zeros included
        with source.storage.open_block("vms", "up1_sda", snapshot="s1") as handle:
            for offset in range(0, handle.size, 16 * MIB):
                yield handle.read(offset, 16 * MIB)

    r = session.post(f"{base}/vm/up1/snapshot/receive/block",
                     headers={"Content-Type": "application/octet-stream"},
                     params={"pool": "vms", "volume": "up1_sda", "snapshot": "s1", "size": SIZE},
                     data=full_chunker())
    assert r.status_code == 200, r.text
    r = session.patch(f"{base}/vm/up1/snapshot/receive/block",
                      params={"pool": "vms", "volume": "up1_sda", "snapshot": "s1"})
    assert r.status_code == 200, r.text
    assert read(dest, "vms", "up1_sda") == read(source, "vms", "up1_sda", "s1")
    assert allocated(dest, "vms", "up1_sda") == 4 * MIB         # thin: the zero objects were not written
    mirror = vms_mod.get_vm(dest.zk, "up1")
    assert mirror.state == "mirror" and "<vcpu>1</vcpu>" in mirror.xml   # s1's XML, not the current one

    # incremental: changed objects packed as upstream does (requests' files=, object_<i> parts)
    source.write("up1", 12 * MIB, os.urandom(MIB))
    source.snapshot(uuid, "s2")
    with source.storage.open_block("vms", "up1_sda", snapshot="s2") as handle:
        extents = [(o, n) for o, n, e in handle.extents("s1") if e]
        parts = [struct.pack(">QQ", o, n) + handle.read(o, n) for o, n in extents]
    files = {f"object_{i}": (f"object_{i}", part, "application/octet-stream") for i, part in enumerate(parts)}
    r = session.post(f"{base}/vm/up1/snapshot/receive/config", headers={"Content-Type": "application/json"},
                     params={"snapshot": "s2", "source_snapshot": "s1"}, json=upstream_detail(source, uuid))
    assert r.status_code == 200, r.text
    r = session.put(f"{base}/vm/up1/snapshot/receive/block", files=files, stream=True,
                    params={"pool": "vms", "volume": "up1_sda", "snapshot": "s2", "source_snapshot": "s1"})
    assert r.status_code == 200, r.text
    r = session.patch(f"{base}/vm/up1/snapshot/receive/block",
                      params={"pool": "vms", "volume": "up1_sda", "snapshot": "s2"})
    assert r.status_code == 200, r.text
    assert read(dest, "vms", "up1_sda") == read(source, "vms", "up1_sda", "s2")
    listed = session.get(f"{base}/vm/up1").json()[0]
    assert [s["name"] for s in listed["snapshots"]] == ["s2", "s1"]
    assert "<vcpu>4</vcpu>" in vms_mod.get_vm(dest.zk, "up1").xml
    # refusals as upstream: the same snapshot again, an older one, over a VM that is not a mirror
    r = session.post(f"{base}/vm/up1/snapshot/receive/config", params={"snapshot": "s2"},
                     json=upstream_detail(source, uuid))
    assert r.status_code == 400 and "already present" in r.json()["message"]
    vms_mod.set_state(dest.zk, "up1", "stop", force=True)
    r = session.post(f"{base}/vm/up1/snapshot/receive/config", params={"snapshot": "s2"},
                     json=upstream_detail(source, uuid))
    assert r.status_code == 400 and "not a mirror" in r.json()["message"]


def test_a_new_mirror_never_takes_over_existing_volumes(source: Cluster, dest: Cluster,
                                                        dest_url: str) -> None:
    uuid = source.define("up9", disks=2)
    source.write("up9", 0, b"new" * 1000)
    source.snapshot(uuid, "s1")
    # on the destination: a leftover image with the new VM's first volume name (no volume
    # document, used by no VM) and another VM using a volume with its second volume name
    dest.storage.create_volume("vms", "up9_sda", SIZE)
    with dest.storage.open_block("vms", "up9_sda", write=True) as handle:
        handle.write(0, b"precious" * 512)
    dest.storage.create_volume("vms", "up9_sdb", SIZE)
    write_volume(dest.zk, "vms", "up9_sdb", volume_info(dest.storage, "vms", "up9_sdb"))
    other = str(uuidlib.uuid4())
    vms_mod.define(dest.zk, vm_xml("other", other).replace("vms/other_sda", "vms/up9_sdb"), node="hv1")
    transfers_before = sorted(dest.zk.children(schema.TRANSFERS))
    # upstream's sender protocol: receive/config answers 400 naming both volumes and writes nothing
    r = requests.post(f"{dest_url}/vm/up9/snapshot/receive/config", headers=HEADERS,
                      params={"snapshot": "s1"}, json=upstream_detail(source, uuid))
    assert r.status_code == 400, r.text
    text = r.json()["message"]
    assert "vms/up9_sda (used by no VM)" in text and "vms/up9_sdb (used by VM other)" in text
    assert "refusing to define the new mirror" in text
    assert dest.zk.get(schema.vm_name("up9"), None) is None and dest.zk.get(schema.vm(uuid), None) is None
    assert sorted(dest.zk.children(schema.TRANSFERS)) == transfers_before
    r = requests.post(f"{dest_url}/vm/up9/snapshot/receive/block", headers=HEADERS,
                      params={"pool": "vms", "volume": "up9_sda", "snapshot": "s1", "size": SIZE},
                      data=b"x" * 10)
    assert r.status_code == 404, r.text                      # the blocks have no VM to go to
    assert read(dest, "vms", "up9_sda")[:4096] == b"precious" * 512
    assert not dest.zk.exists(schema.volume("vms", "up9_sda"))
    # our sender gets the same refusal
    with pytest.raises(send.SendFailed, match=r"vms/up9_sda \(used by no VM\)"):
        do_send(source, uuid, "s1", dest_url)
    assert read(dest, "vms", "up9_sda")[:4096] == b"precious" * 512
    # into another pool, where nothing is in the way, the same VM is received
    do_send(source, uuid, "s1", dest_url, pool="fast")
    assert vms_mod.get_vm(dest.zk, "up9").state == "mirror"


def test_receive_routes_write_only_the_snapshots_volumes(dest: Cluster, dest_url: str) -> None:
    dest.define("other")
    r = httpx.put(f"{dest_url}/vm/other/snapshot/receive/block", headers=HEADERS,
                  params={"pool": "vms", "volume": "other_sda", "snapshot": "x"},
                  files={"object_0": ("object_0", b"\0" * 16 + b"", "application/octet-stream")})
    assert r.status_code == 400 and "not a mirror" in r.json()["message"]
    r = httpx.put(f"{dest_url}/vm/other/snapshot/receive/block",
                  params={"pool": "vms", "volume": "other_sda", "snapshot": "x"})
    assert r.status_code == 401


# -- our sender against a fake upstream receiver --------------------------------------------------------

class UpstreamReceiver(ThreadingHTTPServer):
    """The documented receive protocol of PVC 1.0.3 and nothing more (no extension routes), held
    strictly to it: a full volume arrives only as POST receive/block with the whole image as an
    application/octet-stream body (written at increasing offsets); PUT receive/block carries the
    `object_<i>` parts of an incremental, whose source_snapshot must be a snapshot it holds."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.images: dict[str, bytearray] = {}
        self.snapshots: dict[str, list[str]] = {}
        self.vm: dict[str, Any] | None = None
        self.requests: list[tuple[str, str, dict[str, str], int]] = []
        self.part_names: list[str] = []
        self.chunked: list[bool] = []          # per POST receive/block: sent as a chunked stream


class _Handler(BaseHTTPRequestHandler):
    server: UpstreamReceiver

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = bytearray()
        while True:            # a streamed body (what requests makes of a generator)
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body() if method in ("POST", "PUT", "PATCH") else b""
        self.server.requests.append((method, url.path, q, len(body)))
        if self.headers.get("X-Api-Key") != "upstream-key":
            return self._answer(401, {"message": "Authentication required"})
        path = url.path.removeprefix("/api/v1")
        if method == "GET" and path == "/":
            return self._answer(200, {"message": "PVC API version 1.0"})
        if method == "GET" and path == "/status":
            return self._answer(200, {"pvc_version": "1.0.3"})
        if method == "GET" and path.startswith("/vm/") and path.count("/") == 2:
            return self._answer(200, [self.server.vm]) if self.server.vm else \
                self._answer(404, {"message": "VM not found."})
        if method == "GET" and path.startswith("/storage/ceph/volume/"):
            ref = path.removeprefix("/storage/ceph/volume/")
            if ref in self.server.images:
                return self._answer(200, [{"name": ref, "stats": {"size": len(self.server.images[ref])}}])
            return self._answer(404, {"message": "Volume not found."})
        if path.endswith("/snapshot/receive/config") and method == "POST":
            detail = json.loads(body)
            self.server.vm = {"name": detail["name"], "state": "mirror", "snapshots": []}
            return self._answer(200, {"message": "ok"})
        if path.endswith("/snapshot/receive/block"):
            ref = f"{q['pool']}/{q['volume']}"
            if method == "POST":
                if self.headers.get("Content-Type") != "application/octet-stream" or "source_snapshot" in q:
                    return self._answer(400, {"message": "a full volume is an octet-stream POST"})
                size = int(q["size"])
                if len(body) != size:        # the whole image, zeros included, nothing more
                    return self._answer(400, {"message": f"got {len(body)} bytes of a {size}-byte image"})
                self.server.chunked.append("chunked" in (self.headers.get("Transfer-Encoding") or ""))
                image = self.server.images.setdefault(ref, bytearray(size))
                image[0:len(body)] = body
                return self._answer(200, {"message": "Successfully received RBD block device"})
            if method == "PUT":
                parent = q.get("source_snapshot")
                if not parent or parent not in self.server.snapshots.get(ref, []):
                    why = f"source_snapshot {parent!r}: not a snapshot of {ref}"
                    return self._answer(400, {"message": why})
                if ref not in self.server.images:
                    return self._answer(404, {"message": f"volume {ref} not found"})
                reader = bs.MultipartReader(bs.boundary_of(self.headers["Content-Type"]))
                parts = dict(reader.feed(body))
                reader.finish()
                self.server.part_names += list(parts)
                for i in range(len(parts)):
                    raw = parts[f"object_{i}"]      # upstream reads object_0..n-1, nothing else
                    offset = int.from_bytes(raw[:8], "big")
                    length = int.from_bytes(raw[8:16], "big")
                    self.server.images[ref][offset:offset + length] = raw[16:16 + length]
                return self._answer(200, {"message": "ok"})
            if method == "PATCH":
                self.server.snapshots.setdefault(ref, []).append(q["snapshot"])
                assert self.server.vm is not None
                stamp = str(int(time.time()))
                self.server.vm["snapshots"].append({"name": q["snapshot"], "timestamp": stamp})
                return self._answer(200, {"message": "ok"})
        return self._answer(404, {"message": "The requested URL was not found on the server."})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")


@pytest.fixture
def upstream() -> Iterator[UpstreamReceiver]:
    server = UpstreamReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_our_sender_satisfies_an_upstream_receiver(source: Cluster, upstream: UpstreamReceiver,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pvc.adapters.ceph import fake as fake_mod

    reads: list[int] = []
    real_read = fake_mod._FakeBlock.read

    def counted_read(self: Any, offset: int, length: int) -> bytes:
        reads.append(length)
        return real_read(self, offset, length)

    monkeypatch.setattr(fake_mod._FakeBlock, "read", counted_read)
    uuid = source.define("web3", disks=2)
    source.write("web3", 0, os.urandom(MIB))
    source.write("web3", 30 * MIB, os.urandom(MIB))
    source.snapshot(uuid, "s1", created=time.time() - 20)
    url = f"http://127.0.0.1:{upstream.server_address[1]}/api/v1"
    dest = transfers.Destination(uri=url, key="upstream-key", verify_ssl=False)
    reads.clear()
    result = send.send_snapshot(source.zk, source.settings, uuid, "s1", dest, None, lambda _l: None,
                                storage=source.storage)
    sender_reads = list(reads)
    for disk in ("a", "b"):
        assert bytes(upstream.images[f"vms/web3_sd{disk}"]) == read(source, "vms", f"web3_sd{disk}", "s1")
    assert result["volumes"][0]["verified"] is None          # no extension there: nothing to compare
    # a full, as upstream sends it: per volume one streamed POST of the whole image (zeros
    # included), read in bounded chunks, no PUT; the unallocated regions were not even read
    methods = [(m, p.rsplit("/", 2)[-1] if "receive" in p else p) for m, p, _q, _n in upstream.requests]
    assert ("POST", "config") in methods and ("PATCH", "block") in methods
    assert ("PUT", "block") not in methods
    posts = [n for m, p, _q, n in upstream.requests if m == "POST" and p.endswith("/receive/block")]
    assert posts == [SIZE, SIZE] and upstream.chunked == [True, True]
    assert result["bytes_sent"] >= 2 * SIZE and result["volumes"][0]["data_bytes"] < SIZE
    assert sender_reads and max(sender_reads) <= send.STREAM_CHUNK <= 16 * MIB
    assert sum(sender_reads) == 2 * send.STREAM_CHUNK        # the two chunks holding data, not 2 x 64 MiB
    upstream.requests.clear()
    # zeroes and a discard: an upstream receiver gets zero data, never a discard part
    source.write("web3", 30 * MIB, bytes(MIB))
    source.write("web3", 50 * MIB, os.urandom(1000))
    source.snapshot(uuid, "s2")
    send.send_snapshot(source.zk, source.settings, uuid, "s2", dest, "s1", lambda _l: None,
                       storage=source.storage)
    assert bytes(upstream.images["vms/web3_sda"]) == read(source, "vms", "web3_sda", "s2")
    assert upstream.part_names and all(n.startswith("object_") for n in upstream.part_names)
    puts = [q for m, p, q, _n in upstream.requests if m == "PUT"]
    assert puts and all(q.get("source_snapshot") == "s1" for q in puts)
    assert all("batch" not in q and "size" not in q for q in puts)
    assert not any(m == "POST" and p.endswith("/receive/block") for m, p, _q, _n in upstream.requests)
    assert not any(p.endswith("/receive/status") and m != "GET" for m, p, _q, _n in upstream.requests)
    # the receiver is strict: a PUT without a snapshot it holds is refused, and so is a short POST
    url_block = f"{url}/vm/web3/snapshot/receive/block"
    key = {"X-Api-Key": "upstream-key"}
    refused = httpx.put(url_block, headers=key, files={"object_0": b"x" * 16},
                        params={"pool": "vms", "volume": "web3_sda", "snapshot": "s3",
                                "source_snapshot": "zz"})
    assert refused.status_code == 400
    refused = httpx.post(url_block, headers={**key, "Content-Type": "application/octet-stream"},
                         content=b"\0" * 10,
                         params={"pool": "vms", "volume": "new", "snapshot": "s3", "size": 20})
    assert refused.status_code == 400


# -- TLS between clusters: verified against the destination's own CA ---------------------------------------

def test_send_verifies_the_destination_against_its_ca(source: Cluster, dest: Cluster, tmp_path: Path) -> None:
    from pvc.core import pki

    ca = pki.make_ca("dest cluster CA")
    other = pki.make_ca("some other CA")
    pair = pki.issue_server(ca, "dest API", ["127.0.0.1"])
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    cert.write_bytes(pair.certificate)
    pki.write_private(key, pair.key)
    uuid = source.define("tls1")
    source.write("tls1", 0, b"t" * 4096)
    source.snapshot(uuid, "s1")
    served = serve(create_app(dest.settings, dest.zk, storage=dest.storage), tls=(cert, key))
    url = next(served)
    try:
        def attempt(**kw: Any) -> dict[str, Any]:
            target = transfers.Destination(uri=url, key=API_TOKEN, **kw)
            return send.send_snapshot(source.zk, source.settings, uuid, "s1", target, None, lambda _l: None,
                                      storage=source.storage)

        for wrong in ({}, {"ca": other.certificate.decode()}):       # the system's CAs, another CA
            with pytest.raises(send.SendFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                attempt(**wrong)
        result = attempt(ca=ca.certificate.decode())
        assert result["volumes"][0]["verified"] is True
        assert read(dest, "vms", "tls1_sda") == read(source, "vms", "tls1_sda", "s1")
    finally:
        next(served, None)
    # the CA is checked before anything is queued, and kept with the transfer (not a secret)
    pem = ca.certificate.decode()
    stored = transfers.load(source.zk, source.settings, transfers.store(
        source.zk, source.settings, transfers.Destination(uri=url, key="k", ca=pem)))
    assert stored.ca and stored.ca.strip() == pem.strip() and "BEGIN" not in repr(stored)
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    for bad, words in (("not a pem", "not PEM"), (broken, "no usable PEM")):
        with pytest.raises(InvalidInput, match=words):
            transfers.submit_send(source.zk, source.settings, "tls1", "s1",
                                  transfers.Destination(uri=url, key="k", ca=bad), None)
    with pytest.raises(InvalidInput, match="verify_ssl false"):
        transfers.check_ca(pem, verify_ssl=False, uri=url)
    with pytest.raises(InvalidInput, match="http://"):
        transfers.check_ca(pem, uri="http://x:7370/api/v1")


# -- the routes ------------------------------------------------------------------------------------------

def test_send_routes_keep_the_key_out_of_tasks(source: Cluster, dest_url: str) -> None:
    uuid = source.define("r1")
    source.snapshot(uuid, "s1")
    app = create_app(source.settings, source.zk, storage=source.storage)
    with TestClient(app, headers=HEADERS) as client:
        form = {"snapshot_name": "s1", "destination_api_uri": dest_url, "destination_api_key": "k-SECRET-1",
                "destination_api_verify_ssl": "false"}
        r = client.post("/api/v1/vm/r1/snapshot/send", data=form)
        assert r.status_code == 202, r.text
        assert r.json()["task_name"] == "vm.send_snapshot"
        task_id = r.json()["task_id"]
        mirror_form = {k: v for k, v in form.items() if k != "snapshot_name"}
        r = client.post("/api/v1/vm/r1/mirror/create", data=mirror_form)
        assert r.status_code == 202 and r.json()["task_name"] == "vm.create_mirror"
        r = client.post("/api/v1/vm/r1/mirror/promote", data={**form, "dry_run": "true"})
        assert r.status_code == 202 and r.json()["task_name"] == "vm.promote_mirror"
        everything = json.dumps(client.get("/api/v1/tasks").json())
        everything += json.dumps(client.get(f"/api/v1/tasks/{task_id}").json())
        assert "k-SECRET-1" not in everything
        raw = "".join(data.decode(errors="replace") for data, _e in source.zk.walk("/").values())
        assert "k-SECRET-1" not in raw
        task = source.zk.get(schema.task(task_id))
        stored = transfers.load(source.zk, source.settings, task["args"]["destination"])
        assert stored.key == "k-SECRET-1" and "k-SECRET-1" not in repr(stored)
        # refusals before queueing
        r = client.post("/api/v1/vm/r1/snapshot/send", data={**form, "snapshot_name": "nope"})
        assert r.status_code == 404
        r = client.post("/api/v1/vm/r1/snapshot/send", data={**form, "destination_api_uri": "ftp://x"})
        assert r.status_code == 400 and "destination_api_uri" in json.dumps(r.json())
        assert client.post("/api/v1/vm/nope/mirror/create", data=form).status_code == 404


# -- promote -----------------------------------------------------------------------------------------------

def _fake_snapshots(monkeypatch: pytest.MonkeyPatch, source: Cluster) -> list[str]:
    taken: list[str] = []

    def fake_create(zk: ZK, settings: Any, node: str, uuid_: str, name: str, origin: str, log: Any) -> Any:
        taken.append(name)
        return source.snapshot(uuid_, name)

    monkeypatch.setattr("pvc.worker.snapshots.create_snapshot", fake_create)
    return taken


def test_promote_dry_run_then_move(source: Cluster, dest: Cluster, dest_url: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_snapshots(monkeypatch, source)
    uuid = source.define("pro1")
    source.write("pro1", 0, os.urandom(MIB))
    report = send.promote_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url), False,
                                 lambda _l: None, is_dry_run=True, storage=source.storage)
    assert report["ok"] and report["mode"] == "full" and report["dry_run"]
    assert not dest.zk.exists(schema.vm_name("pro1"))        # nothing changed there
    report = send.promote_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url, "nopool"),
                                 False, lambda _l: None, is_dry_run=True, storage=source.storage)
    assert not report["ok"] and "nopool" in report["problems"][0]
    result = send.promote_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url), False,
                                 lambda _l: None, storage=source.storage)
    assert result["source"] == "mirror" and result["destination_state"] == "stop"
    assert vms_mod.get_vm(source.zk, uuid).state == "mirror"          # the roles swapped
    assert vms_mod.get_vm(dest.zk, "pro1").state == "stop"
    assert read(dest, "vms", "pro1_sda")[:MIB] == read(source, "vms", "pro1_sda")[:MIB]


def test_promote_backout_restarts_the_vm(source: Cluster, dest_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_snapshots(monkeypatch, source)
    uuid = source.define("pro2")
    vms_mod.set_state(source.zk, uuid, "start")
    source.zk.put(schema.vm_status(uuid), {"node": "hv1", "running": True})
    lines: list[str] = []
    with pytest.raises(send.SendFailed, match="did not shut down"):
        send.promote_mirror(source.zk, source.settings, "hv1", uuid, destination(dest_url), False,
                            lines.append, storage=source.storage, shutdown_timeout=0.5)
    assert vms_mod.get_vm(source.zk, uuid).state == "start"
    assert any("starting VM" in line for line in lines)


# -- the CLI ------------------------------------------------------------------------------------------------

def test_cli_send_resolves_a_connection_name(source: Cluster, dest_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    uuid = source.define("cli1")
    source.snapshot(uuid, "s1")
    app = create_app(source.settings, source.zk, storage=source.storage)
    served = serve(app)
    source_url = next(served)
    try:
        client = tmp_path / "client"
        client.mkdir()
        env = {**os.environ, "PVC_CLIENT_DIR": str(client), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}
        for name in ("PVC_CONNECTION", "PVC_UNSAFE"):
            env.pop(name, None)

        def pvc(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "pvc.cli", *args], env=env, capture_output=True,
                                  text=True, timeout=60)

        for name, url, key in (("srcA", source_url, API_TOKEN), ("dstB", dest_url, "dest-key-XYZ")):
            port = urlsplit(url).port
            assert port
            done = subprocess.run([sys.executable, "-m", "pvc.cli", "connection", "add", "-a", "127.0.0.1",
                                   "-p", str(port), "--api-key-file", "-", name], env=env, input=key,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "snapshot", "send", "cli1", "s1", "dstB", "--no-wait")
        assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "mirror", "promote", "cli1", "dstB", "--dry-run", "-y", "--no-wait")
        assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "mirror", "create", "cli1", "nosuch", "--no-wait")
        assert done.returncode != 0 and "no connection named" in done.stderr
        # the CA of a connection (its --ca-file) or given with a URI goes along as PEM text
        from pvc.core import pki
        ca_pem = pki.make_ca("dest CA").certificate
        (tmp_path / "ca.pem").write_bytes(ca_pem)
        (tmp_path / "dest.key").write_text("dest-key-XYZ")
        done = subprocess.run([sys.executable, "-m", "pvc.cli", "connection", "add", "-a", "127.0.0.1", "-p",
                               "7370", "--ca-file", str(tmp_path / "ca.pem"), "--api-key-file", "-", "dstC"],
                              env=env, input="dest-key-XYZ", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "mirror", "create", "cli1", "dstC", "--no-wait")
        assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "snapshot", "send", "cli1", "s1", "https://127.0.0.1:7371/api/v1",
                   "--key-file", str(tmp_path / "dest.key"), "--ca-file", str(tmp_path / "ca.pem"),
                   "--no-wait")
        assert done.returncode == 0, done.stderr
        done = pvc("-c", "srcA", "vm", "mirror", "create", "cli1", "dstC", "--no-verify-ssl",
                   "--ca-file", str(tmp_path / "ca.pem"), "--no-wait")
        assert done.returncode != 0 and "--ca-file with TLS verification off" in done.stderr
        tasks = [source.zk.get(schema.task(t)) for t in source.zk.children(schema.TASKS)]
        kinds = sorted(t["kind"] for t in tasks if isinstance(t, dict) and "kind" in t)
        assert kinds == ["vm.create_mirror", "vm.promote_mirror", "vm.send_snapshot", "vm.send_snapshot"]
        uris = []
        for task in tasks:
            if isinstance(task, dict) and "args" in task:
                assert "dest-key-XYZ" not in json.dumps(task)
                stored = transfers.load(source.zk, source.settings, task["args"]["destination"])
                assert stored.key == "dest-key-XYZ"
                assert stored.ca == (ca_pem.decode() if stored.uri.startswith("https") else None)
                uris.append(stored.uri)
        assert sorted(uris) == sorted([dest_url, dest_url, "https://127.0.0.1:7370/api/v1",
                                       "https://127.0.0.1:7371/api/v1"])
    finally:
        next(served, None)


# -- the task kinds ------------------------------------------------------------------------------------------

def test_task_kind_consumes_its_transfer(source: Cluster, dest: Cluster, dest_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pvc.cluster import tasks as tasks_mod
    from pvc.worker.kinds import send as send_kinds
    from pvc.worker.registry import TaskContext, TaskFailed

    monkeypatch.setattr(send, "storage_for", lambda _settings: source.storage)
    uuid = source.define("kind1")
    source.write("kind1", 0, b"k" * 4096)
    source.snapshot(uuid, "s1")
    secret_dest = transfers.Destination(uri=dest_url, key=API_TOKEN, verify_ssl=False)
    for target, ok in ((secret_dest, True),
                       (transfers.Destination(uri="http://127.0.0.1:9/api/v1", key="k-NEVER-SHOWN"), False)):
        task = transfers.submit_send(source.zk, source.settings, "kind1", "s1", target, None)
        claimed = tasks_mod.claim(source.zk, task, source.zk.get_doc(schema.task(task.id)).version, "hv1")
        assert claimed is not None
        ctx = TaskContext(source.zk, source.settings, "hv1", claimed)
        if ok:
            result = send_kinds.send_snapshot(ctx, **claimed.args)
            assert result["volumes"][0]["verified"] is True
        else:
            with pytest.raises(TaskFailed) as failed:
                send_kinds.send_snapshot(ctx, **claimed.args)
            shown = str(failed.value) + json.dumps(tasks_mod.task_log(source.zk, task.id))
            assert "k-NEVER-SHOWN" not in shown
        assert not source.zk.exists(schema.transfer(claimed.args["destination"]))   # consumed either way


def test_grown_volume_is_resized_on_the_mirror(source: Cluster, dest: Cluster, dest_url: str) -> None:
    uuid = source.define("grow1")
    source.write("grow1", 0, b"g" * 4096)
    source.snapshot(uuid, "s1", created=time.time() - 10)
    do_send(source, uuid, "s1", dest_url)
    source.storage.resize_volume("vms", "grow1_sda", 2 * SIZE)
    source.write("grow1", SIZE + 4096, b"h" * 4096)
    source.snapshot(uuid, "s2")
    do_send(source, uuid, "s2", dest_url, parent="s1")
    assert dest.storage.volume_info("vms", "grow1_sda")["size"] == 2 * SIZE
    assert read(dest, "vms", "grow1_sda") == read(source, "vms", "grow1_sda", "s2")


def test_prune_stale_transfers(source: Cluster) -> None:
    old = time.time() - 40 * 86400
    source.zk.put(schema.transfer("abc1"), {"uri": "http://x/api/v1", "key": "sealed", "created": old})
    source.zk.put(schema.transfer("rxdef2"), {"snapshot": "s", "vm": "u", "created": old})
    now = time.time()
    source.zk.put(schema.transfer("abc3"), {"uri": "http://x/api/v1", "key": "sealed", "created": now})
    assert transfers.prune(source.zk) == 2
    assert source.zk.children(schema.TRANSFERS) == ["abc3"]
