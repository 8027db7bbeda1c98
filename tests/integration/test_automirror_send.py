"""cluster.automirror over a real send: the task (pvc.worker.kinds.automirror) with nothing stood in
but Ceph (FakeStorage on both sides), against a receiving pvcapid served by uvicorn in this
process with its own ZooKeeper root. Its destinations come from pvc.conf's automirror section.

Three runs with keep_snapshots 2: a full, then incrementals (the data on the destination equals
each snapshot's), the remote `am…` snapshots beyond two removed there (through the destination's
API and its own worker, as on a real cluster) and the local ones once no destination holds them.
A destination that is down gets its FAILED result line, the other destinations and VMs are still
mirrored, and the snapshots it might still need are kept locally.
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc.api.app import create_app
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.core import schema, secrets
from pvc.core.config import Settings
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer, free_port
from pvc.worker import send
from pvc.worker import snapshots as worker_snapshots
from pvc.worker.kinds import automirror as task
from pvc.worker.registry import TaskContext, TaskFailed
from pvc.worker.runner import Worker
from tests.conftest import API_TOKEN, write_config
from tests.integration.test_send_receive import Cluster, serve

MIB = 1 << 20
T0 = time.mktime((2026, 3, 2, 0, 0, 0, 0, 0, -1))
HOUR = 3600.0


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "cluster.key"
    secrets.write_key_file(path)
    return str(path)


@pytest.fixture
def dest(zk_server: ZooKeeperServer, tmp_path: Path, key_file: str) -> Iterator[Cluster]:
    client = ZK([zk_server.address], f"/test-am-b-{uuidlib.uuid4().hex[:8]}", session_timeout=6).start()
    schema.migrate(client)
    (tmp_path / "b").mkdir()
    config = write_config(tmp_path / "b" / "pvc.conf", [zk_server.address], client.root, node="hv1",
                          cluster={"name": "b", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                   "key_file": key_file})
    yield Cluster(client, config)
    client.stop()


@pytest.fixture
def dest_port(dest: Cluster) -> Iterator[int]:
    served = serve(create_app(dest.settings, dest.zk, storage=dest.storage))
    url = next(served)
    yield int(url.split(":")[2].split("/")[0])
    next(served, None)


@pytest.fixture
def source(zk: ZK, config_factory: Callable[..., Path], key_file: str, dest_port: int) -> Cluster:
    nobody = free_port()          # a destination whose API does not answer
    automirror = {"destinations": {"b": {"address": "127.0.0.1", "port": dest_port, "key": API_TOKEN,
                                         "ssl": False},
                                   "down": {"address": "127.0.0.1", "port": nobody, "key": "down-key-1234567",
                                            "ssl": False}},
                  "default_destination": "b", "mirror_tags": ["mirror"], "keep_snapshots": 2}
    config = config_factory(cluster={"name": "a", "coordinator_nodes": ["hv1", "hv2", "hv3"],
                                     "key_file": key_file}, automirror=automirror)
    return Cluster(zk, config)


@pytest.fixture(autouse=True)
def storages(source: Cluster, dest: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cluster's workers use its own FakeStorage (the only stand-in)."""
    import pvc.worker.kinds  # noqa: F401  (registers the task kinds)

    def storage_for(settings: Settings) -> Any:
        return {"a": source.storage, "b": dest.storage}[settings.cluster.name]

    monkeypatch.setattr(send, "storage_for", storage_for)
    monkeypatch.setattr(worker_snapshots, "storage_for", storage_for)
    task.OVERRIDE = None


def run(cluster: Cluster, now: float) -> tuple[str, dict[str, Any]]:
    """One cluster.automirror task, claimed and run here as the worker would."""
    record = tasks_mod.submit(cluster.zk, "cluster.automirror", {"now": now})
    version = next(v for t, v in tasks_mod.load_tasks(cluster.zk) if t.id == record.id)
    claimed = tasks_mod.claim(cluster.zk, record, version, "hv1")
    assert claimed is not None
    ctx = TaskContext(cluster.zk, cluster.settings, "hv1", claimed)
    try:
        return "SUCCESS", task.automirror(ctx, now=now)
    except TaskFailed as exc:
        return "FAILURE", exc.result or {"status": str(exc)}


def run_worker(cluster: Cluster) -> list[str]:
    """The destination's worker: run its pending tasks (the snapshot removals automirror asked
    for through its API); their final states."""
    worker = Worker(cluster.zk, cluster.settings)
    states = []
    for queued, version in tasks_mod.load_tasks(cluster.zk):
        if queued.state != "PENDING":
            continue
        claimed = tasks_mod.claim(cluster.zk, queued, version, "hv1")
        assert claimed is not None
        worker._execute(claimed)
        done = tasks_mod.get_task(cluster.zk, queued.id)
        assert done.kind == "vm.remove_snapshot", done
        states.append(done.state)
    worker.pool.shutdown(wait=False)
    return states


def ams(cluster: Cluster, name: str) -> list[str]:
    record = vms_mod.get_vm(cluster.zk, name)
    return sorted(s.name for s in snaps.list_snapshots(cluster.zk, record.uuid))


def image(cluster: Cluster, volume: str, snapshot: str | None = None) -> bytes:
    with cluster.storage.open_block("vms", volume, snapshot=snapshot) as handle:
        return handle.read(0, handle.size)


def details(result: dict[str, Any]) -> dict[str, list[str]]:
    return {v["vm"]: v["details"] for v in result["vms"]}


def test_automirror_runs_send_prune_and_survive_a_dead_destination(source: Cluster, dest: Cluster) -> None:
    source.define("amweb")                    # tag "mirror": the default destination b
    source.define("amdb")                     # b and the dead one
    source.define("amskip")                   # not tagged: never mirrored
    vms_mod.modify_tag(source.zk, "amweb", "add", "mirror")
    vms_mod.modify_tag(source.zk, "amdb", "add", "mirror")
    vms_mod.modify_tag(source.zk, "amdb", "add", "mirror:down")
    source.write("amweb", 0, os.urandom(2 * MIB))
    source.write("amdb", 16 * MIB, os.urandom(MIB))

    names = []
    for hour in range(3):
        now = T0 + hour * HOUR
        source.write("amweb", (8 + 4 * hour) * MIB, os.urandom(MIB))      # each run has changes
        state, result = run(source, now)
        assert state == "FAILURE", result           # amdb's dead destination fails the run...
        lines = details(result)
        name = "am" + time.strftime("%Y%m%d%H%M%S", time.localtime(now))
        names.append(name)
        kind = "full" if hour == 0 else f"incremental from {names[-2]}"
        assert lines["amweb"][0] == f"b: sent {name} ({kind})" + (f"; removed there: {names[0]}"
                                                                  if hour == 2 else ""), lines
        # ...but only that destination: amdb still went to b, with a FAILED line for "down"
        assert any(line.startswith(f"b: sent {name} ({kind})") for line in lines["amdb"]), lines
        assert any(line.startswith("down: FAILED: cannot read VM amdb") for line in lines["amdb"]), lines
        assert "amskip" not in lines
        assert [v["ok"] for v in result["vms"]] == [False, True]         # amdb, amweb (sorted by name)
        assert "down-key-1234567" not in str(result) and API_TOKEN not in str(result)
        # the data there is this snapshot's
        for vm in ("amweb", "amdb"):
            assert image(dest, f"{vm}_sda", name) == image(source, f"{vm}_sda", name)
        assert run_worker(dest) == (["SUCCESS", "SUCCESS"] if hour == 2 else [])

    # keep_snapshots 2: the oldest is gone on the destination (record and RBD snapshot) ...
    assert ams(dest, "amweb") == ams(dest, "amdb") == names[1:]
    assert dest.storage.list_snapshots("vms", "amweb_sda") == names[1:]
    # ... and here for amweb, whose only destination no longer holds it; amdb keeps all three,
    # since the destination that is down may still hold (and need) any of them
    assert ams(source, "amweb") == names[1:]
    assert source.storage.list_snapshots("vms", "amweb_sda") == names[1:]
    assert ams(source, "amdb") == names
    assert vms_mod.get_vm(dest.zk, "amweb").state == "mirror"
    assert not dest.zk.exists(schema.vm_name("amskip"))
