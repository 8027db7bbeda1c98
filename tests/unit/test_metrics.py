"""The metric renderers, pure: a golden exposition of a small cluster (parsed back with
prometheus_client's parser), every family with its TYPE, the odd VM state and the quoted
description, the N-1 and no-division-by-zero rules, and the proxies' pure parts."""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pvc.adapters import metricsproxy
from pvc.cluster import metrics
from pvc.cluster.metrics import ClusterData, VMData, render_health, render_resource
from pvc.cluster.metrics import certificate as certificate_mod
from pvc.cluster.metrics import health as health_mod
from pvc.cluster.metrics import resource as resource_mod
from pvc.cluster.metrics.cache import Refreshing
from pvc.cluster.metrics.collect import cluster_health
from pvc.core import pki

GOLDEN = Path(__file__).parent / "golden" / "metrics" / "cluster.prom"
ODD = 'said "hi" \\ then\nleft'


def node(name: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "daemon_state": "run",
        "domain_state": "ready",
        "health": 100,
        "cpu_count": 8,
        "arch": "x86_64",
        "kernel": "6.1.0-28-amd64",
        "load": 2.0,
        "domains_count": 1,
        "vcpu": {"total": 8, "allocated": 2},
        "memory": {"total": 32000, "used": 8000, "free": 24000, "allocated": 4096, "provisioned": 8192},
        "interfaces": {
            "eth0": {
                "state": "up",
                "link_speed": 1_000_000_000,
                "rx_bps": 1000.0,
                "tx_bps": 500.0,
                "total_bps": 1500.0,
                "rx_pps": 10.0,
                "tx_pps": 5.0,
            }
        },
        "health_details": [{"name": "load", "health_delta": 0}, {"name": "disk", "health_delta": 10}],
    }
    return {**base, **extra}


def vm(name: str, state: str, description: str = "plain", **extra: Any) -> VMData:
    static = {
        "name": name,
        "uuid": f"uuid-{name}",
        "state": state,
        "node": "hv1",
        "last_node": "",
        "migrated": "no",
        "failed_reason": "",
        "node_limit": ["hv1", "hv2"],
        "node_selector": None,
        "node_autostart": True,
        "migration_method": None,
        "tags": [{"name": "web"}],
        "description": description,
        "profile": "default",
        "memory": 2048,
        "vcpu": 2,
        "vcpu_topology": "1/2/1",
        "machine": "pc-q35-7.2",
        "console": "pty",
        "vnc": {"listen": "127.0.0.1", "port": "5900"},
        "networks": [{"vni": "100", "mac": "52:54:00:00:00:01", "model": "virtio"}],
        **extra,
    }
    stats = {
        "memory_stats": {"actual": 2097152, "rss": 1048576, "swap_in": 3, "major_fault": 7},
        "vcpu_stats": {"cpu_time": 12_000_000, "user_time": 2_000_000, "system_time": 1_000_000},
        "networks": [{"mac": "52:54:00:00:00:01", "rd_bytes": 100, "wr_bytes": 50, "rd_packets": 2}],
        "disks": [{"dev": "sda", "rd_req": 4, "rd_bytes": 4096, "wr_req": 1, "wr_bytes": 512}],
    }
    return VMData(static=static, stats=stats, static_key=(1, 1), stats_key=("hv1", 1))


def cluster() -> ClusterData:
    return ClusterData(
        maintenance=False,
        primary_node="hv1",
        version="1.0.3",
        upstream_ip="10.0.0.254",
        nodes=[
            node("hv1"),
            node("hv2", cpu_count=16, memory={"total": 64000, "used": 0}),
            node("hv3", daemon_state="dead", health=None),
        ],
        vms=[vm("odd", "migrate-live", ODD), vm("web1", "start")],
        osds=[
            {
                "id": "0",
                "node": "hv1",
                "device": "/dev/sdb",
                "db_device": "",
                "stats": {
                    "up": 1,
                    "in": 1,
                    "class": "ssd",
                    "kb": 1000,
                    "kb_used": 250,
                    "kb_avail": 750,
                    "utilization": 25.0,
                    "var": 1.0,
                    "pgs": 16,
                    "weight": 0.5,
                    "reweight": 1,
                    "wr_ops": 3,
                    "wr_data": 1024,
                    "rd_ops": 1,
                    "rd_data": 512,
                },
            },
            {"id": "1", "node": "hv2", "device": "/dev/sdb", "db_device": "", "stats": {"up": 0, "in": 1}},
        ],
        pools=[
            {
                "name": "vms",
                "tier": "default",
                "pgs": 16,
                "volume_count": 2,
                "stats": {
                    "stored_bytes": 100,
                    "free_bytes": 900,
                    "used_bytes": 300,
                    "used_percent": 0.25,
                    "num_objects": 4,
                    "read_ops": 10,
                    "read_bytes": 2048,
                    "write_ops": 5,
                    "write_bytes": 1024,
                },
            }
        ],
        faults=[
            {"id": "DEAD_NODE_HV3", "status": "new", "health_delta": 50, "active": True},
            {"id": "VM_FAILED_OLD", "status": "new", "health_delta": 10, "active": False},
        ],
        cluster_health=50,
        networks=2,
        volumes=2,
        snapshots=3,
        tasks_running={"vm.create_snapshot": 1},
        vm_snapshots={"web1": 2},
        backups={"web1": (1764979200.0, 123456)},
    )


def parsed(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(text: str, name: str, label: str) -> dict[str, float]:
    return {
        s.labels[label]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_golden_exposition() -> None:
    text = render_health(cluster()) + render_resource(cluster())
    if os.environ.get("PVC_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "exposition changed; PVC_UPDATE_GOLDEN=1 rewrites the golden file"


def test_every_family_present_once_with_its_type() -> None:
    text = render_health(cluster()) + render_resource(cluster())
    types = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE ")]
    names = [n for n, _t in types]
    assert len(names) == len(set(names)), "a family appears twice"
    assert set(names) == set(metrics.FAMILIES) - metrics.API_FAMILIES
    assert {"pvc_api_request_duration_seconds", certificate_mod.NAME, certificate_mod.PENDING} == (
        metrics.API_FAMILIES
    )
    declared = dict(types)
    for family in (*health_mod.FAMILIES, *resource_mod.FAMILIES):
        assert declared[family.name] == family.type
    # every sample belongs to the family declared right above it (upstream's eight did not)
    current = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0] == current, line
    assert len(health_mod.UPSTREAM_FAMILIES) == 17
    for name in (
        "pvc_node_load_average",
        "pvc_vm_autostart",
        "pvc_vm_memory_stats_swap_in",
        "pvc_vm_memory_stats_hugetlb_pgfail",
    ):
        assert name in declared


def test_odd_state_and_quoted_description() -> None:
    text = render_resource(cluster())
    state = {
        s.labels["vm"]: (s.value, s.labels["state"])
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "pvc_vm_state"
    }
    assert state == {"odd": (-1, "migrate-live"), "web1": (0, "start")}
    assert values(text, "pvc_vm_description", "vm")["odd"] == 1
    descriptions = {
        s.labels["vm"]: s.labels["description"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "pvc_vm_description"
    }
    assert descriptions["odd"] == ODD
    weird = cluster()
    weird.vms = [vm('a"b\\c\nd', "whatever-state", ODD, tags=[{"name": 'x"y'}], node_limit=None, vnc=None)]
    text = render_health(weird) + render_resource(weird)
    found = parsed(text)
    assert values(text, "pvc_vm_states", "state")["whatever-state"] == 1
    assert {s.labels["vm"] for s in found["pvc_vm_tags"].samples} == {'a"b\\c\nd'}


def test_health_values() -> None:
    text = render_health(cluster())
    assert values(text, "pvc_node_health", "node") == {"hv1": 100, "hv2": 100}  # hv3 N/A: absent
    assert values(text, "pvc_node_daemon_states", "state")["dead"] == 1
    assert values(text, "pvc_cluster_faults", "status") == {"new": 1, "ack": 0}  # resolved ones not
    assert values(text, "pvc_fault_active", "id") == {"DEAD_NODE_HV3": 1, "VM_FAILED_OLD": 0}
    assert values(text, "pvc_ceph_osd_up_states", "state") == {"up": 1, "down": 1}
    assert values(text, "pvc_task_running", "kind") == {"vm.create_snapshot": 1}
    deltas = {
        (s.labels["node"], s.labels["plugin"]): s.value
        for s in parsed(text)["pvc_node_health_plugin_delta"].samples
    }
    assert deltas[("hv1", "disk")] == 10
    assert "pvc_cluster_health 50\n" in text and "pvc_nodes 3\n" in text


def test_cluster_health_counts_active_unacknowledged_faults() -> None:
    assert (
        cluster_health(
            [
                {"status": "new", "health_delta": 50, "active": True},
                {"status": "ack", "health_delta": 50, "active": True},
                {"status": "new", "health_delta": 50, "active": False},
                {"status": "new", "health_delta": 60},
            ]
        )
        == 0
    )
    assert cluster_health([{"status": "new", "health_delta": 10, "active": True}]) == 90


def test_n_minus_1_and_no_division_by_zero() -> None:
    text = render_resource(cluster())
    # CPU: load 6 over the CPUs of all nodes but the largest (8 + 8)
    assert parsed(text)["pvc_cluster_cpu_utilization"].samples[0].value == pytest.approx(37.5)
    assert values(text, "pvc_node_network_utilization", "node")["hv1"] == pytest.approx(
        1500 / 2e9 * 100, abs=0.01
    )
    assert values(text, "pvc_ceph_osd_used", "osd") == {"0": 250 * 1024}
    assert parsed(text)["pvc_cluster_disk_utilization"].samples[0].value == 25.0
    assert values(text, "pvc_ceph_pool_used_percent", "pool") == {"vms": 25.0}
    lone = ClusterData(
        nodes=[
            node(
                "hv1",
                cpu_count=0,
                memory={},
                interfaces={
                    "eth0": {"state": "up", "link_speed": -1, "total_bps": 5},
                    "lo": {"state": "unknown"},
                },
            )
        ]
    )
    text = render_health(lone) + render_resource(lone)
    for name in (
        "pvc_cluster_cpu_utilization",
        "pvc_cluster_memory_real_utilization",
        "pvc_cluster_disk_utilization",
        "pvc_cluster_network_utilization",
    ):
        assert parsed(text)[name].samples[0].value == 0
    one = ClusterData(nodes=[node("hv1")])
    text = render_resource(one)
    assert parsed(text)["pvc_cluster_cpu_utilization"].samples[0].value == 25.0  # one node: itself
    assert "pvc_osds" not in text and "pvc_ceph_osd_util" in text  # header, no samples


def test_unchanged_vms_reuse_their_lines() -> None:
    memo: resource_mod.VMMemo = {}
    data = cluster()
    first = render_resource(data, memo)
    kept = memo["uuid-web1"]
    data.vms[1].stats = {**data.vms[1].stats, "memory_stats": {"rss": 1}}  # same stats key: not re-read
    assert render_resource(data, memo) == first
    assert memo["uuid-web1"][3] is kept[3]
    data.vms[1].stats_key = ("hv1", 2)
    assert 'pvc_vm_memory_stats_rss{vm="web1"} 1.0\n' in render_resource(data, memo)


def test_refreshing_serves_the_last_value_and_remakes_it_once() -> None:
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return len(made)

    value = Refreshing(make, ttl=3600, max_stale=7200, background=False)
    assert value.get() == 1 and value.get() == 1
    value = Refreshing(make, ttl=0, max_stale=0, background=False)
    assert value.get() == 2 and value.get() == 3


def test_ceph_mgr_url_from_mgr_dump() -> None:
    assert (
        metricsproxy.ceph_mgr_url({"services": {"prometheus": "http://10.0.0.1:9283/"}})
        == "http://10.0.0.1:9283/metrics"
    )
    dump = {
        "available": True,
        "active_addrs": {
            "addrvec": [{"type": "v2", "addr": "10.0.0.2:6800"}, {"type": "v1", "addr": "10.0.0.2:6801"}]
        },
        "active_addr": "10.0.0.2:6801/123",
        "services": {},
    }
    assert metricsproxy.ceph_mgr_url(dump) == "http://10.0.0.2:9283/metrics"
    assert metricsproxy.ceph_mgr_url({"available": False, "active_addr": ""}) is None
    failed = metricsproxy.ceph_metrics(lambda: (_ for _ in ()).throw(RuntimeError("no cluster")))
    assert not failed.ok and failed.text.startswith("# PVC: Ceph") and failed.text.count("\n") == 1


def test_mntr_becomes_zk_gauges() -> None:
    text = metricsproxy.mntr_exposition(
        {
            "hv1": "zk_version\t3.8.0-1, built on 2022\nzk_avg_latency\t0\nzk_znode_count\t1523\n"
            "zk_server_state\tleader\nzk_followers\t2\n",
            "hv2": "zk_znode_count\t1523\nzk_server_state\tfollower\n",
        }
    )
    found = parsed(text)
    assert {s.labels["server"]: s.value for s in found["zk_znode_count"].samples} == {
        "hv1": 1523,
        "hv2": 1523,
    }
    assert {s.labels["server"]: s.labels["state"] for s in found["zk_server_state"].samples} == {
        "hv1": "leader",
        "hv2": "follower",
    }
    assert found["zk_version"].samples[0].labels["value"].startswith("3.8.0")


def _certificate(days: int) -> bytes:
    return pki.issue_server(pki.make_ca("test CA"), "pvcapid test", ["127.0.0.1"], days=days).certificate


def test_certificate_expiry_absent_when_ssl_is_off() -> None:
    assert certificate_mod.CertificateExpiry(None).render() == b""


def _expiry_and_pending(expiry: certificate_mod.CertificateExpiry) -> tuple[list[float], list[float]]:
    found = parsed(expiry.render().decode())
    assert found[certificate_mod.NAME].type == "gauge" and found[certificate_mod.PENDING].type == "gauge"
    return ([s.value for s in found[certificate_mod.NAME].samples],
            [s.value for s in found[certificate_mod.PENDING].samples])


def _when(pem: bytes) -> int:
    return int(pki.load_certificate(pem).not_valid_after.replace(tzinfo=UTC).timestamp())


def test_certificate_expiry_is_the_served_certificate_until_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn loads the certificate once, at start: a renewal on disk does not move the expiry
    (the old certificate is still served, its alert must stay) but raises the pending flag; a
    new process (a restarted pvcapid) serves and reports the renewed one."""
    path = tmp_path / "api.crt"
    first = _certificate(30)
    path.write_bytes(first)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    parses: list[bytes] = []
    real = certificate_mod.parse

    def counting(pem: bytes) -> certificate_mod.Certificate:
        parses.append(pem)
        return real(pem)

    monkeypatch.setattr(certificate_mod, "parse", counting)
    monkeypatch.setattr(certificate_mod, "_process", lambda: 1001)
    expiry = certificate_mod.CertificateExpiry(path)
    text = expiry.render().decode()
    assert _expiry_and_pending(expiry) == ([_when(first)], [0])
    assert parsed(text)[certificate_mod.NAME].samples[0].labels == {}
    assert expiry.render().decode() == text and len(parses) == 1  # unchanged file: one stat, no parse
    # renewed on disk (same size, new mtime): still the served one's expiry, pending restart
    renewed = _certificate(90)
    path.write_bytes(renewed)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert _expiry_and_pending(expiry) == ([_when(first)], [1])
    assert len(parses) == 2 and _when(renewed) - _when(first) == pytest.approx(60 * 86400, abs=120)
    # another renderer in the same process (metrics re-made) still knows what the process serves
    assert _expiry_and_pending(certificate_mod.CertificateExpiry(path)) == ([_when(first)], [1])
    # the file put back as served: nothing pending
    path.write_bytes(first)
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    assert _expiry_and_pending(expiry) == ([_when(first)], [0])
    # renewed again, then pvcapid restarts (a new process): the new certificate, nothing pending
    path.write_bytes(renewed)
    os.utime(path, ns=(4_000_000_000, 4_000_000_000))
    assert _expiry_and_pending(expiry) == ([_when(first)], [1])
    monkeypatch.setattr(certificate_mod, "_process", lambda: 1002)
    assert _expiry_and_pending(certificate_mod.CertificateExpiry(path)) == ([_when(renewed)], [0])


def test_certificate_expiry_unreadable_file_keeps_the_scrape(tmp_path: Path) -> None:
    path = tmp_path / "api.crt"
    expiry = certificate_mod.CertificateExpiry(path)
    for content, problem in ((None, "No such file"), (b"not a certificate", "not a PEM certificate")):
        if content is not None:
            path.write_bytes(content)
        text = expiry.render().decode()
        assert f"# PVC: cannot read the API certificate {path}: {problem}" in text
        assert _expiry_and_pending(expiry) == ([], [])  # the headers, no sample
    served = _certificate(10)
    path.write_bytes(served)  # fixed: back at the next scrape (nothing was read yet: it is the served one)
    assert _expiry_and_pending(expiry) == ([_when(served)], [0])
    # broken on disk after that: the served certificate's expiry stays, the pending flag is unknown
    path.write_bytes(b"half a certifi")
    text = expiry.render().decode()
    assert f"# PVC: cannot read the API certificate {path} on disk: not a PEM certificate" in text
    assert _expiry_and_pending(expiry) == ([_when(served)], [])
    path.unlink()
    assert _expiry_and_pending(expiry) == ([_when(served)], [])
    path.write_bytes(served)
    assert _expiry_and_pending(expiry) == ([_when(served)], [0])
