"""Snapshot send throughput and sparseness (issue #15: >= 100 MiB/s of allocated data over
loopback; sparse regions cost nothing).

loopback (default): two clusters on one machine, each a ZooKeeper root and an in-memory storage
  (FakeStorage), the receiver a real pvcapid app under uvicorn on 127.0.0.1, the sender
  pvc.worker.send: the protocol, codec, HTTP and API costs of a send, without Ceph's. A 1 GiB
  volume holding ALLOCATED MiB of random data (in 4 MiB objects spread over the volume) is sent
  in full, then 64 MiB of it changed and sent as an incremental.
labs: the same on real Ceph between two labs (the running lab, default pvclab, else a private
  1-node lab 'bsenda', and a private 1-node lab 'bsend' linked to it): `mirror create` of a VM
  with a sparse 1 GiB volume (a 1-node lab's pool is small), through the API, figures from the
  task's result (includes the relay between the labs). Run it under the lab lock.

Usage: bench/send.py [--allocated MIB] | bench/send.py --labs [--lab pvclab] [--allocated MIB]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

import httpx

from _common import ZooKeeperServer, free_port, table, write_config

MIB = 1 << 20
VOLUME = 1024 * MIB     # FakeStorage keeps whole copies in memory: kept small


def loopback(allocated_mib: int) -> None:
    import pytest  # noqa: F401 - tests.integration imports it
    from tests.conftest import API_TOKEN
    from tests.integration.test_send_receive import Cluster

    from pvc.cluster import transfers
    from pvc.core import schema, secrets
    from pvc.core.zk import ZK
    from pvc.worker import send

    work = Path(tempfile.mkdtemp(prefix="pvc-bench-send-"))
    zk_server = ZooKeeperServer(work / "zk", free_port(), tick_ms=1000).start()
    try:
        key = work / "cluster.key"
        secrets.write_key_file(key)
        clusters = []
        for name in ("a",):
            zk = ZK([zk_server.address], f"/bench-{name}", session_timeout=10).start()
            schema.migrate(zk)
            (work / name).mkdir()
            config = write_config(work / name / "pvc.conf", [zk_server.address], f"/bench-{name}",
                                  cluster={"name": name, "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                           "key_file": str(key)})
            clusters.append(Cluster(zk, config))
        source = clusters[0]
        uuid = source.define("bench1", size=VOLUME)
        objects = allocated_mib // 4
        stride = VOLUME // max(1, objects)
        for i in range(objects):
            source.write("bench1", (i * stride) // (4 * MIB) * 4 * MIB, os.urandom(4 * MIB))
        source.snapshot(uuid, "s1", created=time.time() - 10)
        # the receiver in its own process (as on a real cluster: no GIL shared with the sender)
        port = free_port()
        receiver = subprocess.Popen([sys.executable, __file__, "--serve-receiver", zk_server.address,
                                     str(key), str(port)], cwd=Path(__file__).parent)
        url = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or receiver.poll() is not None:
                raise SystemExit("the receiver did not start")
            time.sleep(0.2)
        target = transfers.Destination(uri=url, key=API_TOKEN, verify_ssl=False)
        started = time.monotonic()
        full = send.send_snapshot(source.zk, source.settings, uuid, "s1", target, None, lambda _l: None,
                                  storage=source.storage)
        full_s = time.monotonic() - started
        for i in range(16):                   # 64 MiB changed
            source.write("bench1", (i * 37 * 4 * MIB) % VOLUME, os.urandom(4 * MIB))
        source.snapshot(uuid, "s2")
        started = time.monotonic()
        incr = send.send_snapshot(source.zk, source.settings, uuid, "s2", target, "s1", lambda _l: None,
                                  storage=source.storage)
        incr_s = time.monotonic() - started
        receiver.terminate()
        receiver.wait(10)
        rate = full["data_bytes"] / full_s / MIB
        rate_i = incr["data_bytes"] / incr_s / MIB
        table(f"send over loopback (FakeStorage both sides, uvicorn receiver): {VOLUME // MIB} MiB volume, "
              f"{allocated_mib} MiB allocated", [
                  ("full: allocated data sent", f"{full['data_bytes'] // MIB} MiB", f"{allocated_mib} MiB",
                   full["data_bytes"] == allocated_mib * MIB),
                  ("full: bytes on the wire", f"{full['bytes_sent'] / MIB:.1f} MiB",
                   f"< {VOLUME // MIB} MiB", full["bytes_sent"] < 2 * allocated_mib * MIB),
                  ("full: throughput", f"{rate:.0f} MiB/s", ">= 100 MiB/s", rate >= 100),
                  ("incremental (64 MiB changed): wire", f"{incr['bytes_sent'] / MIB:.1f} MiB", "< 128 MiB",
                   incr["bytes_sent"] < 128 * MIB),
                  # fixed costs (checks, config, the fake's whole-volume diff) dominate 64 MiB
                  ("incremental: throughput (info)", f"{rate_i:.0f} MiB/s", "-", True),
              ])
    finally:
        zk_server.stop()


def serve_receiver(zk_address: str, key: str, port: int) -> None:
    """The destination cluster: its own ZooKeeper root and FakeStorage, pvcapid's app on `port`."""
    import uvicorn
    from tests.integration.test_send_receive import Cluster

    from pvc.api.app import create_app
    from pvc.core import schema
    from pvc.core.zk import ZK

    zk = ZK([zk_address], "/bench-b", session_timeout=10).start()
    schema.migrate(zk)
    work = Path(tempfile.mkdtemp(prefix="pvc-bench-send-b-"))
    config = write_config(work / "pvc.conf", [zk_address], "/bench-b",
                          cluster={"name": "b", "coordinator_nodes": ["hv1", "hv2", "hv3"], "key_file": key})
    dest = Cluster(zk, config)
    uvicorn.run(create_app(dest.settings, dest.zk, storage=dest.storage), host="127.0.0.1", port=port,
                log_level="warning")


def labs(lab: str, allocated_mib: int) -> None:
    import httpx
    from tests.system.test_send import storage_in, write

    from pvc.lab import labtls, link
    from pvc.lab.main import lab_down, lab_up
    from pvc.lab.plan import LabPlan

    plan = LabPlan.load(lab)
    own = plan is None                 # no running lab: a private 1-node one, removed afterwards
    if own:
        lab_down("bsenda")
        plan = lab_up("bsenda", 1, demo=False)
    lab_down("bsend")
    other = lab_up("bsend", 1, demo=False)
    api = httpx.Client(base_url=labtls.api_base(plan), verify=labtls.api_verify(plan),
                       headers={"X-Api-Key": str(plan.extra["api_token"])}, timeout=600)
    vm, disk = "bsendvm", "bsendvm_sda"
    try:
        url = link.link(plan, other)
        dest = {"destination_api_uri": url, "destination_api_key": str(other.extra["api_token"]),
                "destination_api_verify_ssl": "false"}
        created = api.post("/storage/ceph/volume", params={"pool": "vms", "volume": disk, "size": "1G"})
        if created.status_code != 200:
            raise SystemExit(f"creating the volume: {created.text}")
        storage = storage_in(plan)
        objects = allocated_mib // 4
        for i in range(objects):          # spread over the volume, whole objects
            offset = i * (1024 * MIB // objects) // (4 * MIB) * 4 * MIB
            write(storage, f"vms/{disk}", offset, os.urandom(4 * MIB))
        xml = (f"<domain type='qemu'><name>{vm}</name><uuid>{uuidlib.uuid4()}</uuid><memory unit='MiB'>64"
               f"</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
               f"<disk type='network' device='disk'><source protocol='rbd' name='vms/{disk}'/>"
               f"<target dev='vda' bus='virtio'/></disk></devices></domain>")
        api.post("/vm", data={"xml": xml}).raise_for_status()
        accepted = api.post(f"/vm/{vm}/mirror/create", data=dest).json()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = api.get(f"/tasks/{accepted['task_id']}").json()
            if status.get("state") in ("SUCCESS", "FAILURE", "CANCELLED"):
                break
            time.sleep(0.2)
        if status.get("state") != "SUCCESS":
            raise SystemExit(f"mirror create: {status}")
        result = status["result"]
        rate = result["data_bytes"] / result["seconds"] / MIB
        table(f"mirror create between two labs (real Ceph, relay between the labs): 1024 MiB volume, "
              f"{allocated_mib} MiB allocated", [
                  ("allocated data sent", f"{result['data_bytes'] // MIB} MiB", f"{allocated_mib} MiB", True),
                  ("bytes on the wire", f"{result['bytes_sent'] / MIB:.1f} MiB", "< 1024 MiB",
                   result["bytes_sent"] < 2 * allocated_mib * MIB),
                  ("throughput (whole task)", f"{rate:.0f} MiB/s", ">= 100 MiB/s", rate >= 100),
              ])
        storage.close()
    finally:
        api.post(f"/vm/{vm}/state", params={"state": "stop", "force": "true"})
        api.delete(f"/vm/{vm}")
        from pvc.lab import ceph
        try:
            ceph.rbd(plan, "snap", "purge", f"vms/{disk}")
        except Exception:   # the volume may not exist
            pass
        api.delete(f"/storage/ceph/volume/vms/{disk}")
        link.unlink(plan, "bsend")
        lab_down("bsend")
        if own:
            lab_down("bsenda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allocated", type=int, default=512, help="MiB of data in the volume [512]")
    parser.add_argument("--labs", action="store_true", help="between two labs on real Ceph")
    parser.add_argument("--lab", default="pvclab", help="the running lab (with --labs)")
    parser.add_argument("--serve-receiver", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver[0], args.serve_receiver[1], int(args.serve_receiver[2]))
    elif args.labs:
        labs(args.lab, args.allocated)
    else:
        loopback(args.allocated)


if __name__ == "__main__":
    sys.exit(main())
