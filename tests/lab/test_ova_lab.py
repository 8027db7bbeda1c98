"""The OVA deploy-time conversion against a real Ceph: a streamOptimized VMDK written as-is into an
exact-size volume (what the upload does) converts RBD to RBD back into the original disk. The
shipped OVA script (examples/4-ova.py) converts between the two volumes mapped by the worker inside
its sandbox (tests/system/test_provisioner.py runs it); here qemu-img reads and writes them through
`rbd:` specs, which is the same conversion without the sandbox.

One throwaway 3-node Ceph lab (pvc.lab.ceph.bootstrap in network namespaces); qemu-img runs inside
a node's namespace, as the provisioner script does on the primary.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pvc.adapters.ceph import CephStorage
from pvc.lab import ceph, proc
from pvc.lab.plan import LabPlan
from tests.ovahelp import to_vmdk

from .labnet import lab_network, temp_plan

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(bool(ceph.tools_missing()), reason="needs the Ceph packages"),
]

POOL = "tstova"
MiB = 1 << 20


def rbd_spec(pool: str, name: str, cfg: Any) -> str:
    """qemu's rbd: filename with the Ceph user, config and keyring as file paths (no secret on the
    command line)."""
    return ":".join(["rbd", f"{pool}/{name}", f"id={cfg.client_user}", f"conf={cfg.ceph_config_file}",
                     f"keyring={cfg.ceph_keyring_file}"])


@pytest.fixture(scope="module")
def lab() -> Iterator[LabPlan]:
    with lab_network(temp_plan("ov", 3)) as plan:
        ceph.bootstrap(plan, timeout=240)
        yield plan
        ceph.stop_all(plan, kill=True)


def test_vmdk_volume_converts_rbd_to_rbd(lab: LabPlan, tmp_path: Path) -> None:
    netns = lab.node("hv2").netns
    storage = CephStorage(str(lab.ceph_conf), str(ceph.admin_keyring(lab)), timeout=10, op_timeout=60)
    data = os.urandom(MiB) + b"\0" * (2 * MiB) + os.urandom(MiB // 2) + b"\0" * (MiB // 2)
    raw, vmdk = tmp_path / "disk.raw", tmp_path / "disk.vmdk"
    raw.write_bytes(data)
    to_vmdk(raw, vmdk)
    size = vmdk.stat().st_size
    cfg = SimpleNamespace(client_user="admin", ceph_config_file=str(lab.ceph_conf),
                          ceph_keyring_file=str(ceph.admin_keyring(lab)))
    rbd = rbd_spec

    def convert() -> subprocess.CompletedProcess[str]:
        storage.create_pool(POOL, 8, 3, 2)
        storage.create_volume(POOL, "ova_t_sda", size)
        with vmdk.open("rb") as handle:
            assert storage.write_volume(POOL, "ova_t_sda", handle) == size
        storage.create_volume(POOL, "vm_sda", 1 << 30)
        storage.write_volume(POOL, "vm_sda", io.BytesIO(b"\xee" * (4 * MiB)))   # stale bytes
        return subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", "-n",
                               rbd(POOL, "ova_t_sda", cfg), rbd(POOL, "vm_sda", cfg)],
                              capture_output=True, text=True, timeout=120)

    def read_back() -> bytes:
        import rados
        import rbd as rbdlib

        cluster = rados.Rados(conffile=str(lab.ceph_conf), conf={"keyring": str(ceph.admin_keyring(lab))})
        cluster.connect(timeout=10)
        try:
            ioctx = cluster.open_ioctx(POOL)
            with rbdlib.Image(ioctx, "vm_sda", read_only=True) as image:
                out = image.read(0, len(data))
            ioctx.close()
            return bytes(out)
        finally:
            cluster.shutdown()

    try:
        done = proc.netns_call(netns, convert, timeout=180)
        assert done.returncode == 0, done.stderr
        assert proc.netns_call(netns, read_back, timeout=60) == data
    finally:
        proc.netns_call(netns, lambda: storage.remove_pool(POOL), timeout=120)
        proc.netns_call(netns, storage.close)
