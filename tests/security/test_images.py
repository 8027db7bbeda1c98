"""Disk images that point at host files (issue #13), built and inspected with the REAL qemu-img.

An upload of a qcow2 whose backing file is a secret (standing for the Ceph keyring), a VMDK whose
extent is a host file, a qcow2 with an external data file, a VMDK with a parent, or a file that is
not the format it claims, is refused by the volume upload route before any conversion, and none of
the secret lands in the volume. The conversion command itself opens no backing chain even if the
inspection were raced. OVA disks with a parent are refused at upload. OSD `file:` paths cannot
leave the OSD data directory.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pvc.adapters import images
from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.osd import OsdError
from pvc.adapters.osd.direct import DirectOsdService
from pvc.core import schema
from pvc.core.zk import ZK
from tests.integration.apihelp import ok, storage_client
from tests.ovahelp import ovf_descriptor, write_tar

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils)")

BASE = "/api/v1/storage/ceph"
MIB = 1 << 20
SECRET = b"[client.admin]\n\tkey = AQBSECRETSECRETSECRETSECRETSECRET==\n"


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def vmdk_with_parent(tmp_path: Path, secret: Path) -> Path:
    """A sparse VMDK whose parent (parentFileNameHint) reads the secret: qemu-img wants a VMDK
    parent, so the parent is a flat descriptor whose extent is the secret file."""
    wrapper = tmp_path / "wrapper.vmdk"
    wrapper.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                       f'createType="monolithicFlat"\nRW 2048 FLAT "{secret}" 0\n')
    child = tmp_path / "parent.vmdk"
    qemu_img("create", "-f", "vmdk", "-o", "subformat=monolithicSparse", "-b", str(wrapper), "-F", "vmdk",
             str(child), "1M")
    return child


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file standing for the admin keyring: a whole MiB of key material, so any read shows."""
    path = tmp_path / "ceph.client.admin.keyring"
    path.write_bytes((SECRET * (MIB // len(SECRET) + 1))[:MIB])
    path.chmod(0o600)
    return path


@pytest.fixture
def hostile(tmp_path: Path, secret: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (image, declared format, words the refusal must contain)."""
    made: dict[str, tuple[Path, str, str]] = {}
    backing = tmp_path / "backing.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(backing), "1M")
    made["qcow2 backing file"] = (backing, "qcow2", "backing file")
    relative = tmp_path / "relative.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", secret.name, "-F", "raw", str(relative), "1M")
    made["qcow2 relative backing file"] = (relative, "qcow2", "backing file")
    data_file = tmp_path / "datafile.qcow2"
    spare = tmp_path / "spare.raw"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={spare},data_file_raw=on", str(data_file), "1M")
    shutil.copyfile(secret, spare)
    made["qcow2 data-file"] = (data_file, "qcow2", "data file")
    extent = tmp_path / "extent.vmdk"
    extent.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                      f'createType="monolithicFlat"\nRW 2048 FLAT "{secret}" 0\n')
    made["vmdk extent"] = (extent, "vmdk", "extent")
    made["vmdk parent"] = (vmdk_with_parent(tmp_path, secret), "vmdk", "parent")
    made["raw file declared qcow2"] = (secret, "qcow2", "not qcow2 as declared")
    vmdk_as_qcow2 = tmp_path / "plain.vmdk"
    qemu_img("create", "-f", "vmdk", str(vmdk_as_qcow2), "1M")
    made["vmdk declared qcow2"] = (vmdk_as_qcow2, "qcow2", "is vmdk, not qcow2")
    return made


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage) -> Iterator[TestClient]:
    with storage_client(config_factory, zk, fake, pool=True) as test_client:
        ok(test_client.post(f"{BASE}/volume", params={"volume": "img", "pool": "vms", "size": "4M"}))
        yield test_client


def test_hostile_uploads_are_refused_and_nothing_lands(client: TestClient, fake: FakeStorage,
                                                        hostile: dict[str, tuple[Path, str, str]]) -> None:
    before = fake.read_volume("vms", "img")
    for name, (path, fmt, words) in hostile.items():
        response = client.post(f"{BASE}/volume/vms/img/upload", params={"image_format": fmt},
                               files={"file": (path.name, path.read_bytes())})
        assert response.status_code == 400, (name, response.text)
        text = response.json()["message"]
        assert text.startswith("file: image refused: ") and words in text, (name, text)
        assert "AQBSECRET" not in text
        assert fake.conversions == [], name                     # never handed to qemu-img convert
        assert fake.read_volume("vms", "img") == before, name


def test_a_clean_image_is_accepted(client: TestClient, fake: FakeStorage, tmp_path: Path) -> None:
    good = tmp_path / "good.qcow2"
    qemu_img("create", "-f", "qcow2", str(good), "1M")
    ok(client.post(f"{BASE}/volume/vms/img/upload", params={"image_format": "qcow2"},
                   files={"file": ("good.qcow2", good.read_bytes())}))
    assert [c[3] for c in fake.conversions] == ["qcow2"]


def test_inspection_refuses_each_with_real_qemu_img(hostile: dict[str, tuple[Path, str, str]]) -> None:
    for name, (path, fmt, words) in hostile.items():
        with pytest.raises(images.ImageRefused, match=words):
            images.inspect(str(path), fmt)
        if name.startswith("qcow2") and "declared" not in name:
            # step 2 alone (qemu-img info's answer) refuses it too
            done = subprocess.run(["qemu-img", "info", "-f", fmt, "--output", "json", str(path)],
                                  capture_output=True, text=True, check=True)
            with pytest.raises(images.ImageRefused):
                images.verdict(__import__("json").loads(done.stdout), str(path), fmt)


def test_conversion_never_opens_a_backing_chain(hostile: dict[str, tuple[Path, str, str]],
                                               tmp_path: Path) -> None:
    """Even with the inspection skipped (a raced file), `source_spec`'s backing: null holds."""
    for name in ("qcow2 backing file", "qcow2 relative backing file", "vmdk parent"):
        path, fmt, _words = hostile[name]
        out = tmp_path / "out.raw"
        out.write_bytes(b"\0" * MIB)
        spec = images.source_spec(str(path), fmt)
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", "-n", spec, str(out)], check=True,
                       capture_output=True)
        assert b"AQBSECRET" not in out.read_bytes(), name
        # what the old command line did (the attack): the secret is copied
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", "-n", str(path), str(out)], check=True,
                       capture_output=True, cwd=tmp_path)
        assert b"AQBSECRET" in out.read_bytes(), name


def test_ova_disk_with_a_parent_is_refused(config_factory: Callable[..., Path], zk: ZK, tmp_path: Path,
                                           secret: Path) -> None:
    from tests.integration.test_api_ova import OVA_SCRIPT

    vmdk = vmdk_with_parent(tmp_path, secret)
    ovf = ovf_descriptor("evil", [("evil-disk1.vmdk", vmdk.stat().st_size, MIB)])
    ova = tmp_path / "evil.ova"
    write_tar(ova, [("evil.ovf", ovf.encode()), ("evil-disk1.vmdk", vmdk)])
    fake = FakeStorage()
    with storage_client(config_factory, zk, fake, pool=True) as client:
        ok(client.post("/api/v1/provisioner/script", params={"name": "ova"}, data={"data": OVA_SCRIPT}))
        with ova.open("rb") as handle:
            response = client.post("/api/v1/provisioner/ova/evil",
                                   params={"pool": "vms", "ova_size": ova.stat().st_size},
                                   files={"file": ("evil.ova", handle, "application/octet-stream")})
        assert response.status_code == 400, response.text
        assert "parent (backing) file" in response.json()["message"]
        assert not zk.exists(schema.volume("vms", "ova_evil_sda"))
        assert not zk.exists(schema.ova("evil"))


def test_osd_file_paths_stay_in_the_data_directory(tmp_path: Path, secret: Path) -> None:
    data = tmp_path / "osd"
    data.mkdir()
    (data / "link").symlink_to(tmp_path)                     # a symlink leading out
    service = DirectOsdService("hv1", "/etc/ceph/ceph.conf", data, tmp_path / "pids", tmp_path / "log",
                               "127.0.0.1")
    before = secret.read_bytes()
    for device in (f"file:{secret}", f"file:{secret}:1G", "file:link/ceph.client.admin.keyring",
                   "file:link/new.img:1G", "file:../escape.img:1G", "file:/etc/passwd"):
        with pytest.raises(OsdError):
            service.prepare_block(service.resolve(device))
    assert secret.read_bytes() == before
    assert not (tmp_path / "new.img").exists() and not (tmp_path / "escape.img").exists()
    inside = service.resolve("file:disks/a.img:1M")
    assert service.prepare_block(inside) is True
    with pytest.raises(OsdError, match="never overwrites"):
        service.prepare_block(service.resolve("file:disks/a.img:1M"))
