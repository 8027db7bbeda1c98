"""Send, mirror create and promote between two real clusters on one machine.

The shared lab (`pst`, 3 nodes) and the shared second lab (`pst2`, 1 node, tests/conftest.py),
linked both ways (`pvc-lab link`: each lab's nodes reach the other's API through a relay in the
labs' own namespaces). TLS verification stays on between them: each send carries the other lab's
CA (destination_api_ca; the CLI's --ca-file), and the labs' API certificates name the link
addresses. A VM with a sparse 512 MiB RBD disk (MiBs of random data written at known offsets by
the test through librados, while the VM is stopped):

mirror create (full: only the allocated data travels) -> change 4 MiB -> mirror create again
(incremental: bytes on the wire < 2 x changed) -> a manual snapshot sent incrementally, cancelled
after its first batch and sent again (it resumes, and the checksums agree) -> `pvc vm mirror
promote --dry-run` (nothing changes; a missing destination pool fails it) -> `pvc vm mirror
promote`: the VM runs on the second lab with the source's data; here it becomes the mirror ->
`pvc vm mirror promote --remove` from the second lab (a cross-cluster move, incremental from the
last common snapshot): it runs here again, and the second lab has neither the VM nor its disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.adapters.ceph import CephStorage
from pvc.lab import ceph, labtls, link
from pvc.lab.main import _conn_name
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, storage_in, wait, wait_task

pytestmark = pytest.mark.system
POOL = "vms"
VM = "sendvm1"
DISK = f"{VM}_sda"
MIB = 1 << 20
SIZE = 512 * MIB


def digest(storage: CephStorage, image: str, snapshot: str | None = None) -> str:
    pool, volume = image.split("/")
    hasher = hashlib.sha256()
    with storage.open_block(pool, volume, snapshot=snapshot) as handle:
        for offset in range(0, handle.size, 16 * MIB):
            hasher.update(handle.read(offset, min(16 * MIB, handle.size - offset)))
    return hasher.hexdigest()


def write(storage: CephStorage, image: str, offset: int, data: bytes) -> None:
    pool, volume = image.split("/")
    with storage.open_block(pool, volume, write=True) as handle:
        handle.write(offset, data)


@pytest.fixture(scope="module")
def api2(lab2: LabPlan) -> Iterator[httpx.Client]:
    client = labtls.api_client(lab2, timeout=240)
    yield client
    client.close()


def pvc(plan: LabPlan, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The pvc CLI against `plan`'s cluster (its CLI connection)."""
    return subprocess.run([sys.executable, "-m", "pvc.cli", "-c", _conn_name(plan), *args],
                          capture_output=True, text=True, timeout=timeout)


def secret_file(path: Path, text: str) -> Path:
    """A key file only its owner reads (the CLI's --key-file: never a key on a command line)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def cli_task(api: httpx.Client, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The task a waited-for CLI command ran (its id from the CLI's output), as the API reports it."""
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    found = re.search(r"Task ID: (\S+)", output)
    assert found, output
    status = call(api, "GET", f"/tasks/{found.group(1)}")
    assert status["state"] == "SUCCESS", status
    return dict(status)


def task(api: httpx.Client, response: httpx.Response, timeout: float = 600) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    done = wait_task(api, response.json(), timeout=timeout)
    assert done["state"] == "SUCCESS", done
    return done


def test_send_mirror_promote_between_two_labs(lab: LabPlan, api: httpx.Client, lab2: LabPlan,
                                             api2: httpx.Client) -> None:
    to_b = link.link(lab, lab2)          # lab's nodes -> lab2's API
    link.link(lab2, lab)                 # and back (a later promote from lab2)
    # verified: lab2's certificate against lab2's CA only (no verify_ssl false anywhere)
    dest = {"destination_api_uri": to_b, "destination_api_key": str(lab2.extra["api_token"]),
            "destination_api_ca": labtls.ca_file(lab2).read_text()}
    a, b = storage_in(lab), storage_in(lab2)
    call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": DISK, "size": "512M"})
    try:
        _scenario(lab, api, lab2, api2, dest, a, b)
    finally:
        for client in (api, api2):
            if client.get(f"/vm/{VM}").status_code == 200:
                client.post(f"/vm/{VM}/state", params={"state": "stop", "force": "true"})
                client.delete(f"/vm/{VM}")
        for plan in (lab, lab2):
            try:
                ceph.rbd(plan, "snap", "purge", f"{POOL}/{DISK}")
                ceph.rbd(plan, "rm", f"{POOL}/{DISK}")
            except Exception:       # best effort; lab2 goes away anyway
                pass
        for client in (api, api2):
            client.post(f"/storage/ceph/volume/{POOL}/{DISK}/scan")
        a.close()
        b.close()
        if not os.environ.get("PVC_LAB_KEEP"):
            link.unlink(lab, lab2.name)       # lab2's link back goes with lab2 (tests/conftest.py)


def _scenario(lab: LabPlan, api: httpx.Client, lab2: LabPlan, api2: httpx.Client, dest: dict[str, str],
              a: CephStorage, b: CephStorage) -> None:
    image = f"{POOL}/{DISK}"
    write(a, image, 0, os.urandom(4 * MIB))
    write(a, image, 300 * MIB, os.urandom(4 * MIB))
    uuid = str(uuidlib.uuid4())
    disk = ("<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' event_idx='off'/>"
            f"<source protocol='rbd' name='{image}'/><target dev='vda' bus='virtio'/></disk>")
    # defined stopped: the test writes into its disk between the steps (not behind a running guest)
    call(api, "POST", "/vm", data={"xml": guest_xml(lab, VM, uuid, disk), "node": "hv1"})

    # 1. mirror create: full, sparse
    first = task(api, api.post(f"/vm/{VM}/mirror/create", data=dest))
    result = first["result"]
    assert result["parent"] is None and result["volumes"][0]["verified"] is True
    print(f"full mirror of a {SIZE >> 20} MiB volume holding 8 MiB: {result['bytes_sent']} bytes on the wire")
    assert result["bytes_sent"] < 2 * 8 * MIB
    mirror = call(api2, "GET", f"/vm/{VM}")[0]
    assert mirror["state"] == "mirror"
    mr1 = result["snapshot"]
    assert digest(b, image, mr1) == digest(a, image, mr1)

    # 2. change 4 MiB; mirror create again: incremental from the newest common snapshot
    write(a, image, 100 * MIB, os.urandom(4 * MIB))
    second = task(api, api.post(f"/vm/{VM}/mirror/create", data=dest))["result"]
    assert second["parent"] == mr1
    print(f"incremental mirror, 4 MiB changed: {second['bytes_sent']} bytes on the wire")
    assert second["bytes_sent"] < 2 * 4 * MIB
    mr2 = second["snapshot"]
    assert digest(b, image, mr2) == digest(a, image, mr2)

    # 3. a manual snapshot, sent incrementally; interrupted (cancelled) after its first batch,
    #    then sent again: it resumes after the acknowledged batches
    write(a, image, 128 * MIB, os.urandom(192 * MIB))
    task(api, api.post(f"/vm/{VM}/snapshot", params={"snapshot_name": "manual1"}))
    send = {**dest, "snapshot_name": "manual1", "incremental_parent": mr2}
    accepted = api.post(f"/vm/{VM}/snapshot/send", data=send)
    assert accepted.status_code == 202, accepted.text

    def acknowledged() -> bool:
        status = call(api2, "GET", f"/vm/{VM}/snapshot/receive/status", params={"snapshot": "manual1"})
        return any(v.get("batches", 0) >= 1 for v in status.get("volumes", {}).values())

    wait("a first acknowledged batch", acknowledged, 300)
    api.delete(f"/tasks/{accepted.json()['task_id']}")
    stopped = wait_task(api, accepted.json(), timeout=300)
    assert stopped["state"] in ("CANCELLED", "FAILURE"), stopped
    again = task(api, api.post(f"/vm/{VM}/snapshot/send", data=send))["result"]
    volume = again["volumes"][0]
    print(f"resumed send: resumed after batch {volume['resumed_from']} of {volume['batches']}")
    assert volume["resumed_from"] >= 1 and volume["verified"] is True
    assert digest(b, image, "manual1") == digest(a, image, "manual1")

    # 4. `pvc vm mirror promote` of a running VM, through the CLI (DEST a URI with its key file
    #    and CA file): a dry run changes nothing (and fails for a pool lab2 lacks); then the VM
    #    is shut down here, sent a last time, started there; here it becomes the mirror
    key_b = secret_file(lab.state_dir / "send-test-key-b", str(lab2.extra["api_token"]))
    to_b_cli = [VM, dest["destination_api_uri"], "--key-file", str(key_b), "--ca-file",
                str(labtls.ca_file(lab2)), "-y"]
    call(api, "POST", f"/vm/{VM}/state", params={"state": "start"})
    wait("the guest to boot", lambda: console(api, VM).count("PVC-GUEST-BOOT-OK") >= 1, 180)
    snaps_before = [s["name"] for s in call(api2, "GET", f"/vm/{VM}")[0]["snapshots"]]
    report = cli_task(api, pvc(lab, "vm", "mirror", "promote", *to_b_cli, "--dry-run"))["result"]
    assert report["dry_run"] and report["ok"] and report["mode"] == "incremental from manual1", report
    assert call(api, "GET", f"/vm/{VM}")[0]["state"] == "start"
    assert [s["name"] for s in call(api2, "GET", f"/vm/{VM}")[0]["snapshots"]] == snaps_before
    dry = pvc(lab, "vm", "mirror", "promote", *to_b_cli, "--dry-run", "-p", "nosuchpool")
    assert dry.returncode != 0 and "nosuchpool" in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    promoted = cli_task(api, pvc(lab, "vm", "mirror", "promote", *to_b_cli))["result"]
    assert promoted["destination_state"] == "start" and promoted["source"] == "mirror"
    assert promoted["parent"] == "manual1"
    assert call(api, "GET", f"/vm/{VM}")[0]["state"] == "mirror"
    assert call(api2, "GET", f"/vm/{VM}")[0]["state"] == "start"
    wait("the VM to boot on the second lab", lambda: console(api2, VM).count("PVC-GUEST-BOOT-OK") >= 1, 240)
    last = promoted["snapshot"]
    assert digest(b, image, last) == digest(a, image, last)

    # 5. and back as a move: `pvc vm mirror promote --remove` on the second lab (incremental from
    #    the last snapshot both have); it runs here again, and lab2 keeps neither VM nor disk
    key_a = secret_file(lab.state_dir / "send-test-key-a", str(lab.extra["api_token"]))
    moved = cli_task(api2, pvc(lab2, "vm", "mirror", "promote", VM, link.link(lab2, lab), "--key-file",
                               str(key_a), "--ca-file", str(labtls.ca_file(lab)), "--remove", "-y"))["result"]
    print(f"moved back: incremental from {moved['parent']}, {moved['bytes_sent']} bytes on the wire")
    assert moved["parent"] == last and moved["destination_state"] == "start" and moved["source"] == "removed"
    assert moved["volumes"][0]["verified"] is True
    assert api2.get(f"/vm/{VM}").status_code == 404
    assert api2.get(f"/storage/ceph/volume/{POOL}/{DISK}").status_code == 404
    assert DISK not in b.list_volumes(POOL)
    item = call(api, "GET", f"/vm/{VM}")[0]
    assert item["state"] == "start" and item["snapshots"][0]["name"] == moved["snapshot"]
    wait("the VM to boot on the first lab again", lambda: "PVC-GUEST-BOOT-OK" in console(api, VM), 240)
