"""PVC's own OSDs on a real lab Ceph: the worker's osd.add/osd.remove in direct mode (a bluestore
OSD on a sparse file, run by PVC), the lab starting/stopping it with its node, a failed add that
leaves nothing behind, and the storage benchmark with fio's rbd engine.

The task functions run inside node hv3's namespace with the settings `pvc-lab up` gives that node
(pvc.lab.pvcnodes.node_config), a ZooKeeper stand-in and a recording task context.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters import ceph as ceph_adapter
from pvc.core import schema
from pvc.core.config import Settings
from pvc.lab import ceph, proc, pvcnodes
from pvc.lab.plan import LabPlan
from pvc.worker.kinds import storage as storage_kinds  # noqa: F401 - registers the OSD kinds
from pvc.worker.registry import KINDS, TaskFailed
from tests.unit.test_storage_tasks import FakeContext

from .labnet import lab_network, temp_plan

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(bool(ceph.tools_missing()), reason="needs the Ceph packages"),
]

NODE = "hv3"


@pytest.fixture(scope="module")
def lab() -> Iterator[LabPlan]:
    with lab_network(temp_plan("od", 3)) as plan:
        ceph.bootstrap(plan, timeout=240)
        try:
            yield plan
        finally:
            ceph_adapter.close_shared()
            ceph.stop_all(plan, kill=True)


def _settings(lab: LabPlan, **storage: Any) -> Settings:
    config = pvcnodes.node_config(lab, lab.node(NODE))
    config["storage"].update(storage)
    return Settings.model_validate(config)


def _run(lab: LabPlan, ctx: FakeContext, kind: str, timeout: float = 300, **args: Any) -> Any:
    """Run a task function in the node's namespace, as its pvcworkerd would."""
    return proc.netns_call(lab.node(NODE).netns, KINDS[kind], ctx, timeout=timeout, **args)


def _osd_states(lab: LabPlan) -> dict[int, tuple[str | None, bool, bool]]:
    """id -> (host bucket, up, in)."""
    tree = ceph.ceph(lab, "osd", "tree")
    hosts = {child: n["name"] for n in tree["nodes"] if n["type"] == "host"
             for child in n.get("children", [])}
    dump = ceph.mon_command(lab, "osd dump")
    return {o["osd"]: (hosts.get(o["osd"]), bool(o["up"]), bool(o["in"])) for o in dump["osds"]}


def test_lab_nodes_run_pvc_osds_directly(lab: LabPlan) -> None:
    settings = _settings(lab)
    node = lab.node(NODE)
    assert settings.storage.osd_service == "direct"
    assert Path(settings.storage.osd_data_directory) == ceph.pvc_osd_root(node)
    assert Path(settings.storage.osd_pid_directory or "") == lab.pid_dir
    assert settings.storage.benchmark_size == "256M" and settings.storage.benchmark_runtime == 2


def test_add_a_file_backed_osd(lab: LabPlan) -> None:
    ctx = FakeContext(_settings(lab), NODE)
    block = ceph.pvc_osd_root(lab.node(NODE)) / "osd-extra.img"   # inside osd_data_directory
    t0 = time.monotonic()
    result = _run(lab, ctx, "osd.add", node=NODE, device=f"file:{block}:1G", weight=0.001)
    print(f"\nosd.add: {time.monotonic() - t0:.1f}s; {result['status']}")
    (osd_id,) = result["osds"]
    assert osd_id == 3
    assert _osd_states(lab)[3] == (NODE, True, True)
    doc = ctx.zk.get(schema.osd(3))
    assert doc["node"] == NODE and doc["device"] == str(block) and doc["service"] == "direct"
    assert block.stat().st_size == 1 << 30
    # the lab knows it: its pid file, its launch file, its place in status and health checks
    assert "hv3-ceph-osd.3" in ceph.daemon_pids(lab)
    assert [o.id for o, _info in ceph.pvc_added_osds(lab)] == [3]
    assert ceph.status(lab)["osds"]["3"] == {"node": NODE, "running": True, "up": True, "in": True}
    ceph.wait_healthy(lab, timeout=120)


def test_the_lab_stops_and_starts_pvc_osds_with_their_node(lab: LabPlan) -> None:
    node = lab.node(NODE)
    ceph.stop_osd(lab, node)
    assert not any(name.startswith("hv3-ceph-osd") for name in ceph.daemon_pids(lab))
    proc.wait_until(lambda: not _osd_states(lab)[3][1], 60, "osd.3 down")
    ceph.start_osd(lab, node)
    assert {"hv3-ceph-osd.2", "hv3-ceph-osd.3"} <= set(ceph.daemon_pids(lab))
    ceph.wait_healthy(lab, timeout=120)
    assert _osd_states(lab)[3] == (NODE, True, True)


def test_benchmark_with_fio_rbd(lab: LabPlan, tmp_path: Path) -> None:
    if shutil.which("fio") is None:
        pytest.skip("needs fio")
    # fio must find the key through the environment, not through ceph.conf's [client] section
    conf = tmp_path / "ceph.conf"
    conf.write_text(lab.ceph_conf.read_text().replace(f"keyring = {ceph.admin_keyring(lab)}", ""))
    assert "client.admin.keyring" not in conf.read_text()
    ctx = FakeContext(_settings(lab, ceph_config_file=str(conf), benchmark_size="128M", benchmark_runtime=1),
                      NODE)
    t0 = time.monotonic()
    result = _run(lab, ctx, "storage.benchmark", timeout=600, pool=ceph.POOL, name="labbench")
    print(f"\nbenchmark: {time.monotonic() - t0:.1f}s; {result['status']}")
    doc = ctx.zk.get(schema.benchmark("labbench"))
    assert doc["test_format"] == 2 and set(doc["benchmark_result"]) == {
        "seq_read", "seq_write", "rand_read_4M", "rand_write_4M", "rand_read_4K", "rand_write_4K",
        "rand_read_4K_lowdepth", "rand_write_4K_lowdepth"}
    for test, report in doc["benchmark_result"].items():
        job = report["jobs"][0]
        assert job["jobname"] == test and job["error"] == 0
        direction = "read" if "read" in test else "write"
        assert job[direction]["io_bytes"] > 0, test
        assert set(report["avg_cpu_util_percent"]) == {"total", "ceph-mon", "ceph-osd"}
    print({t: round(r["jobs"][0]["read" if "read" in t else "write"]["iops"])
           for t, r in doc["benchmark_result"].items()})
    assert "pvcbenchmark" not in ceph.rbd(lab, "ls", ceph.POOL, json_out=True)


def test_remove_the_osd(lab: LabPlan) -> None:
    ctx = FakeContext(_settings(lab), NODE)
    ctx.zk.put(schema.osd(3), {"id": 3, "node": NODE, "device": "x"})
    t0 = time.monotonic()
    result = _run(lab, ctx, "osd.remove", osd_id=3, force=False)
    print(f"\nosd.remove: {time.monotonic() - t0:.1f}s; {result['status']}")
    assert 3 not in _osd_states(lab)
    assert not ctx.zk.exists(schema.osd(3))
    assert not (ceph.pvc_osd_root(lab.node(NODE)) / "ceph-3").exists()
    assert not (ceph.pvc_osd_root(lab.node(NODE)) / "osd-extra.img").exists()
    assert "hv3-ceph-osd.3" not in ceph.daemon_pids(lab) and ceph.pvc_added_osds(lab) == []
    assert "osd.3" not in {e["entity"] for e in ceph.ceph(lab, "auth", "ls")["auth_dump"]}
    ceph.wait_healthy(lab, timeout=120)


def test_a_failed_add_leaves_nothing_behind(lab: LabPlan) -> None:
    ctx = FakeContext(_settings(lab), NODE)
    before = set(_osd_states(lab))
    tiny = ceph.pvc_osd_root(lab.node(NODE)) / "tiny.img"
    with pytest.raises(TaskFailed, match="ceph-osd --mkfs for OSD 3 failed"):
        _run(lab, ctx, "osd.add", node=NODE, device=f"file:{tiny}:16M", weight=0.001)
    assert set(_osd_states(lab)) == before
    assert not tiny.exists() and not (ceph.pvc_osd_root(lab.node(NODE)) / "ceph-3").exists()
    assert any(line.startswith("reverted: purge OSD 3") for line in ctx.lines)
    assert ctx.zk.data == {}
