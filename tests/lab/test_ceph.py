"""The lab's Ceph cluster across three node namespaces: bootstrap, RBD, an OSD outage, stop."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvc.lab import ceph, proc
from pvc.lab.plan import LabPlan

from .labnet import lab_network, processes_mentioning, rss_mb, temp_plan

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(bool(ceph.tools_missing()), reason="needs the Ceph packages"),
]


@pytest.fixture
def lab() -> Iterator[LabPlan]:
    with lab_network(temp_plan("cp", 3)) as plan:
        yield plan


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _roundtrip(lab: LabPlan, name: str, size: int) -> float:
    """Import a raw file as vms/<name>, export it again, compare; returns seconds taken."""
    t0 = time.monotonic()
    raw = lab.state_dir / f"{name}.raw"
    raw.write_bytes(os.urandom(size // 2) + b"\0" * (size // 2))
    info = ceph.import_image(lab, raw, "vms", name)
    assert info["size"] == size
    back = lab.state_dir / f"{name}.back"
    ceph.rbd(lab, "export", "--no-progress", f"vms/{name}", str(back))
    assert _md5(back) == _md5(raw)
    raw.unlink()
    back.unlink()
    return time.monotonic() - t0


def test_ceph_cluster_in_namespaces(lab: LabPlan) -> None:
    t0 = time.monotonic()
    result = ceph.bootstrap(lab, timeout=240)
    print(f"\nCeph HEALTH_OK with pool vms after {time.monotonic() - t0:.2f}s: {result['seconds']}")
    pids = ceph.daemon_pids(lab)
    assert sorted(pids) == ["hv1-ceph-mgr", "hv1-ceph-mon", "hv1-ceph-osd.0", "hv2-ceph-mon",
                            "hv2-ceph-osd.1", "hv3-ceph-mon", "hv3-ceph-osd.2"]
    print("RSS MB:", {name: round(rss_mb(pid), 1) for name, pid in pids.items()})

    st = ceph.status(lab)
    assert st["health"] == "HEALTH_OK"
    assert all(m["in_quorum"] for m in st["mons"].values())
    assert st["mgr"]["hv1"]["available"]
    assert {o["node"] for o in st["osds"].values() if o["up"] and o["in"]} == {"hv1", "hv2", "hv3"}

    # Each OSD under its own host bucket; the CLI works inside a namespace with JSON output.
    tree = ceph.ceph(lab, "osd", "tree")
    hosts = {n["name"] for n in tree["nodes"] if n["type"] == "host"}
    assert hosts == {"hv1", "hv2", "hv3"}
    assert "vms" in ceph.ceph(lab, "osd", "pool", "ls")
    assert "rbd" in ceph.ceph(lab, "osd", "pool", "application", "get", "vms")
    assert ceph.ceph(lab, "osd", "pool", "get", "vms", "size")["size"] == 3
    info = ceph.client_info(lab)
    assert info["fsid"] == ceph.ceph(lab, "fsid")["fsid"]
    assert info["key"] and [m["address"] for m in info["mon_hosts"]] == [
        "10.200.0.1", "10.200.0.2", "10.200.0.3"]
    assert lab.extra["ceph"]["fsid"] == info["fsid"] and "key" not in lab.extra["ceph"]

    ceph.rbd(lab, "create", "vms/t1", "--size", "64M", netns=lab.node("hv2").netns)
    assert ceph.rbd(lab, "info", "vms/t1", json_out=True)["size"] == 64 << 20
    ceph.rbd(lab, "rm", "--no-progress", "vms/t1")
    assert ceph.rbd(lab, "ls", "vms", json_out=True) == []
    _roundtrip(lab, "base", 8 << 20)

    # One node's OSD goes away: degraded but writable (size 3, min_size 2).
    victim = lab.node("hv3")
    t1 = time.monotonic()
    ceph.stop_osd(lab, victim)
    degraded = proc.wait_until(
        lambda: (s := ceph.status(lab))["health"] == "HEALTH_WARN" and not s["osds"]["2"]["up"] and s,
        60, "HEALTH_WARN with osd.2 down")
    print(f"osd.2 stopped: {degraded['health']} {degraded['checks']} after {time.monotonic() - t1:.2f}s")
    assert not degraded["osds"]["2"]["running"]
    print(f"import+export while degraded: {_roundtrip(lab, 'degraded', 4 << 20):.2f}s")

    t2 = time.monotonic()
    ceph.start_osd(lab, victim)
    ceph.wait_healthy(lab, timeout=120)
    print(f"osd.2 restarted: HEALTH_OK again after {time.monotonic() - t2:.2f}s")
    assert ceph.status(lab)["osds"]["2"]["up"]
    assert sorted(ceph.rbd(lab, "ls", "vms", json_out=True)) == ["base", "degraded"]

    t3 = time.monotonic()
    ceph.stop_all(lab)
    print(f"stop_all: {time.monotonic() - t3:.2f}s")
    assert ceph.daemon_pids(lab) == {}
    assert ceph.status(lab)["health"] == "DOWN"
    assert processes_mentioning(str(lab.state_dir)) == []
    assert str(lab.state_dir) not in Path("/proc/self/mountinfo").read_text()
    assert str(lab.state_dir) not in Path("/proc/1/mountinfo").read_text()
