"""OVA upload: `POST /provisioner/ova[/<name>]` against a real ZooKeeper and a FakeStorage.

Test OVAs are built here (qemu-img streamOptimized VMDKs, an OVF 1.0 descriptor, a tar with the
.ovf first). An upload makes volumes ova_<name>_sdX holding the VMDK bytes as they are (which
qemu-img converts back to the original disk), the OVA document, a system template and an ova
profile; every broken archive is a 400 that leaves ZooKeeper and Ceph as they were.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.cluster import ova as ova_mod
from pvc.cluster import provisioner as prov
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.zk import ZK
from pvc.worker.provisioner import vmdata
from tests.integration.apihelp import ok, refused, storage_client
from tests.ovahelp import make_test_ova, ovf_descriptor, to_vmdk, write_tar
from tests.unit.test_cli_flows import FakeApi, pvc

BASE = "/api/v1/provisioner"
OVA_SCRIPT = (Path(vmdata.__file__).parent / "examples" / "4-ova.py").read_text()
MIB = 1 << 20


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage) -> Iterator[TestClient]:
    with storage_client(config_factory, zk, fake, pool=True) as test_client:
        fresh_stats(zk, 100 << 30)
        prov.ensure_empty_userdata(zk)
        yield test_client


def fresh_stats(zk: ZK, free: int) -> None:
    """Pool statistics the primary keeps fresh (so a space check reads them, writing nothing)."""
    zk.put(schema.CEPH_STATUS, {"time": time.time() + 3600})
    zk.update(schema.pool("vms"), lambda doc: {**doc, "stats": {**doc.get("stats", {}), "free_bytes": free,
                                                                "stored_bytes": 0}})


def dump(zk: ZK) -> dict[str, bytes]:
    return {path: raw for path, (raw, _e) in zk.walk("/").items()}


def raw_disk(path: Path, size: int, seed: int) -> Path:
    data = bytearray(size)
    for offset in range(0, size, 64 * 1024):               # some data, some holes
        data[offset:offset + 4096] = bytes([(seed + offset // 4096) % 251 + 1]) * 4096
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def ovas(tmp_path: Path) -> dict[str, Any]:
    """guest.ova (one 4 MiB disk, serial), twin.ova (two disks, VNC, 2 NICs) and their raw disks."""
    one = raw_disk(tmp_path / "one.raw", 4 * MIB, 1)
    guest = make_test_ova(tmp_path / "guest.ova", one, "guest", vcpus=2, memory_mb=512)
    a, b = raw_disk(tmp_path / "a.raw", 3 * MIB, 2), raw_disk(tmp_path / "b.raw", 2 * MIB, 3)
    to_vmdk(a, tmp_path / "a.vmdk")
    to_vmdk(b, tmp_path / "b.vmdk")
    vmdks = [("twin-1.vmdk", tmp_path / "a.vmdk", a), ("twin-2.vmdk", tmp_path / "b.vmdk", b)]
    ovf = ovf_descriptor("twin", [(h, v.stat().st_size, r.stat().st_size) for h, v, r in vmdks], vcpus=1,
                         memory_mb=1024, nics=2, graphics=True)
    twin = tmp_path / "twin.ova"
    write_tar(twin, [("twin.ovf", ovf.encode()), *((h, v) for h, v, _r in vmdks)])
    return {"guest": guest, "one": one, "twin": twin, "twin_vmdks": vmdks, "tmp": tmp_path,
            "guest_ovf": tmp_path / "guest.ovf"}


def upload(client: TestClient, path: Path, name: str | None = "guest", pool: str = "vms",
           named_route: bool = True, **extra: Any) -> httpx.Response:
    params: dict[str, Any] = {"pool": pool, "ova_size": path.stat().st_size, **extra}
    url = f"{BASE}/ova/{name}" if named_route else f"{BASE}/ova"
    if not named_route and name is not None:
        params["name"] = name
    with path.open("rb") as handle:
        files = {"file": (path.name, handle, "application/octet-stream")}
        return client.post(url, params=params, files=files)


def add_script(client: TestClient) -> None:
    ok(client.post(f"{BASE}/script", params={"name": "ova"}, data={"data": OVA_SCRIPT}))


def converted(fake: FakeStorage, volume: str, tmp: Path) -> bytes:
    """The volume's VMDK bytes converted to raw by qemu-img (as the OVA script does at deploy time)."""
    vmdk, out = tmp / f"{volume}.vmdk", tmp / f"{volume}.raw"
    vmdk.write_bytes(fake.read_volume("vms", volume))
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(vmdk), str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


def test_openapi_documents_the_upload(client: TestClient) -> None:
    paths = ok(client.get("/api/v1/openapi.json"))["paths"]
    for path in ("/api/v1/provisioner/ova", "/api/v1/provisioner/ova/{ova}"):
        post = paths[path]["post"]
        assert "file" not in {p["name"] for p in post["parameters"]}
        assert list(post["requestBody"]["content"]) == ["multipart/form-data"]
        assert {"pool", "ova_size"} <= set(post["x-pvc-required-inputs"])
    assert "name" in paths["/api/v1/provisioner/ova"]["post"]["x-pvc-required-inputs"]


def test_upload_creates_volumes_ova_template_and_profile(client: TestClient, zk: ZK, fake: FakeStorage,
                                                         ovas: dict[str, Any]) -> None:
    before = dump(zk)
    refused(upload(client, ovas["guest"]), 400, "script 'ova'")          # the OVA script comes first
    assert dump(zk) == before
    add_script(client)
    answer = ok(upload(client, ovas["guest"]))["message"]
    assert "Imported OVA image 'guest'" in answer and "2 vCPUs, 512 MB, 1 disk, 1 NIC" in answer
    with tarfile.open(ovas["guest"]) as tar:
        vmdk = tar.extractfile("guest-disk1.vmdk").read()  # type: ignore[union-attr]
        ovf_text = tar.extractfile("guest.ovf").read().decode()  # type: ignore[union-attr]
    # the volume holds exactly the VMDK file, and qemu-img turns it back into the disk
    assert fake.volume_info("vms", "ova_guest_sda")["size"] == len(vmdk)
    assert fake.read_volume("vms", "ova_guest_sda") == vmdk
    assert converted(fake, "ova_guest_sda", ovas["tmp"]) == ovas["one"].read_bytes()
    assert zk.exists(schema.volume("vms", "ova_guest_sda"))
    [item] = ok(client.get(f"{BASE}/ova/guest"))
    assert item["name"] == "guest" and isinstance(item["id"], int)
    assert item["volumes"] == [{"pool": "vms", "volume_name": "ova_guest_sda", "volume_format": "vmdk",
                                "disk_id": "sda", "disk_size_gb": 1}]
    assert zk.get(schema.ova("guest"))["ovf"] == ovf_text
    [system] = ok(client.get(f"{BASE}/template/system/guest"))
    assert {k: system[k] for k in ("vcpu_count", "vram_mb", "serial", "vnc", "ova")} == {
        "vcpu_count": 2, "vram_mb": 512, "serial": True, "vnc": False, "ova": "guest"}
    [profile] = ok(client.get(f"{BASE}/profile/guest"))
    assert profile | {"id": 0} == {"id": 0, "name": "guest", "type": "ova", "system_template": "guest",
                                   "network_template": "N/A", "storage_template": "N/A", "userdata": "N/A",
                                   "script": "ova", "ova": "guest", "arguments": []}
    # the job runner's view of the profile: the OVA's volumes for the OVA script
    docs = prov.load_profile(zk, "guest")
    data = vmdata.build_vm_data(docs, architecture="x86_64")
    assert data["ova_details"]["name"] == "guest"
    assert [(v["pool"], v["volume_name"], v["volume_format"], v["disk_id"], v["disk_size_gb"])
            for v in data["volumes"]] == [("vms", "ova_guest_sda", "vmdk", "sda", 1)]

    # the same name again: refused, nothing changes
    before = dump(zk)
    refused(upload(client, ovas["guest"]), 400, "'guest' already exists")
    assert dump(zk) == before and fake.list_volumes("vms") == ["ova_guest_sda"]

    # two disks, VNC, through POST /provisioner/ova with name in the query
    answer = ok(upload(client, ovas["twin"], name="twin", named_route=False))["message"]
    assert "1 vCPU, 1024 MB, 2 disks, 2 NICs" in answer
    for disk_id, (_href, vmdk_path, raw) in zip(("sda", "sdb"), ovas["twin_vmdks"], strict=True):
        assert fake.read_volume("vms", f"ova_twin_{disk_id}") == vmdk_path.read_bytes()
        assert converted(fake, f"ova_twin_{disk_id}", ovas["tmp"]) == raw.read_bytes()
    [system] = ok(client.get(f"{BASE}/template/system/twin"))
    assert (system["serial"], system["vnc"], system["vram_mb"]) == (False, True, 1024)
    assert [o["name"] for o in ok(client.get(f"{BASE}/ova"))] == ["guest", "twin"]

    # removal takes the volumes, the profile and the system template
    ok(client.delete(f"{BASE}/ova/twin"))
    assert sorted(fake.list_volumes("vms")) == ["ova_guest_sda"]
    for path in (schema.ova("twin"), schema.profile("twin"), schema.system_template("twin"),
                 schema.volume("vms", "ova_twin_sda"), schema.volume("vms", "ova_twin_sdb")):
        assert not zk.exists(path), path
    refused(client.get(f"{BASE}/ova/twin"), 404)


def test_bad_uploads_leave_nothing(client: TestClient, zk: ZK, fake: FakeStorage,
                                   ovas: dict[str, Any]) -> None:
    add_script(client)
    tmp: Path = ovas["tmp"]
    vmdks = ovas["twin_vmdks"]
    ovf = ovf_descriptor("bad", [(h, v.stat().st_size, r.stat().st_size) for h, v, r in vmdks]).encode()

    def archive(name: str, members: list[tuple[str, Any]]) -> Path:
        path = tmp / name
        write_tar(path, members)
        return path

    not_tar = tmp / "not.ova"
    not_tar.write_bytes(b"just some bytes, not a tar archive" * 100)
    qcow = tmp / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow), "1M"], check=True, capture_output=True)
    cases: list[tuple[Path, str]] = [
        (not_tar, "not an OVA"),
        (archive("noovf.ova", [(h, v) for h, v, _r in vmdks]), "no .ovf descriptor"),
        (archive("badxml.ova", [("bad.ovf", b"<Envelope><oops>"), *((h, v) for h, v, _r in vmdks)]),
         "not well-formed XML"),
        (archive("missing.ova", [("bad.ovf", ovf), (vmdks[0][0], vmdks[0][1])]),
         "'twin-2.vmdk' named in the OVF is not in the archive"),
        (archive("qcow.ova", [("bad.ovf", ovf), (vmdks[0][0], vmdks[0][1]), (vmdks[1][0], qcow)]),
         "'twin-2.vmdk' is not a VMDK image"),
        (archive("entity.ova", [("bad.ovf", b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                                            b"<Envelope>&e;</Envelope>")]), "DOCTYPE"),
    ]
    before, volumes = dump(zk), fake.list_volumes("vms")
    for path, words in cases:
        refused(upload(client, path, name="bad"), 400, words)
        assert dump(zk) == before, path
        assert fake.list_volumes("vms") == volumes, path
    # bad requests
    refused(upload(client, ovas["guest"], pool="nopool"), 400, "pool", "'nopool' does not exist")
    refused(upload(client, ovas["guest"], name="bad/name"), 404)
    refused(upload(client, ovas["guest"], name="-x"), 400, "name")
    refused(client.post(f"{BASE}/ova/guest", params={"pool": "vms", "ova_size": 1}), 400, "file")
    refused(client.post(f"{BASE}/ova/guest", params={"pool": "vms"}, files={"file": ("x", b"x")}), 400,
            "ova_size")
    # too little space in the pool
    fresh_stats(zk, 4096)
    before = dump(zk)
    refused(upload(client, ovas["twin"], name="bad"), 400, "free space")
    assert dump(zk) == before and fake.list_volumes("vms") == volumes
    fresh_stats(zk, 100 << 30)
    # Ceph fails writing the second disk: the first volume is removed again
    before = dump(zk)
    fake.fail_next("write_volume", target="vms/ova_bad_sdb")
    refused(upload(client, ovas["twin"], name="bad"), 400, "ova_bad_sdb")
    assert dump(zk) == before and fake.list_volumes("vms") == volumes


def test_failure_storing_documents_removes_volumes(client: TestClient, zk: ZK, fake: FakeStorage,
                                                   ovas: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    add_script(client)
    before = dump(zk)

    def broken(*_args: Any) -> str:
        raise Conflict("Too many concurrent changes to the provisioner; try again.")

    monkeypatch.setattr(ova_mod, "_store", broken)
    refused(upload(client, ovas["twin"], name="twin"), 400, "concurrent")
    assert dump(zk) == before and fake.list_volumes("vms") == []


def test_cli_upload_streams_the_file(tmp_path: Path, ovas: dict[str, Any]) -> None:
    api = FakeApi()
    seen: dict[str, Any] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen["params"] = dict(request.url.params)
        seen["body"] = request.read()
        seen["type"] = request.headers["content-type"]
        return httpx.Response(200, json={"message": "Imported OVA image 'guest'"})

    api.on("POST", "/provisioner/ova/guest", answer)
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "pvc.json").write_text(json.dumps({"c1": {
        "description": "test", "host": "pvc.example", "port": 7370, "scheme": "http", "api_key": "KEY"}}))
    env = {"PVC_CLIENT_DIR": str(tmp_path / "cli"), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}
    result = pvc(api, env, "provisioner", "ova", "upload", "guest", str(ovas["guest"]), "--pool", "vms")
    assert result.exit_code == 0, result.output
    assert "Imported OVA image 'guest'" in result.stdout
    size = ovas["guest"].stat().st_size
    assert seen["params"] == {"pool": "vms", "ova_size": str(size)}
    assert seen["type"].startswith("multipart/form-data") and ovas["guest"].read_bytes() in seen["body"]
    missing = pvc(api, env, "provisioner", "ova", "upload", "guest", str(ovas["guest"]))
    assert missing.exit_code != 0 and "--pool" in missing.output
