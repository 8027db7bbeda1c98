"""The node's storage side, pure parts: shaping Ceph 16's answers into PVC's /ceph documents, the
RBD lock decision before a VM starts, the secret UUID, and NodeCeph over FakeStorage.

The samples are Ceph 16.2 (pacific) output, trimmed of keys PVC never reads, from a three-node
cluster whose osd.2 (on hv3) is down and out, with an ssd-tier pool and mgr's own pool.
"""

from __future__ import annotations

import base64
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.ceph import Locker, StorageError
from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.hypervisor import HypervisorError
from pvc.adapters.hypervisor.fake import FakeHypervisor
from pvc.core.config import parse_config
from pvc.node.daemon import NodeDaemon
from pvc.node.storage import (
    NodeCeph,
    address_ip,
    format_bytes,
    lock_decision,
    osd_hosts,
    parse_osd_status,
    parse_units,
    rule_tier,
    secret_uuid,
    shape_osds,
    shape_pools,
)

FSID = "9e6fb2ed-1a88-4607-b893-7d1fab58be43"


def _addrs(ip: str, port: int, nonce: int) -> dict[str, Any]:
    return {"addrvec": [{"type": "v2", "addr": f"{ip}:{port}", "nonce": nonce},
                        {"type": "v1", "addr": f"{ip}:{port + 1}", "nonce": nonce}]}


def _osd(n: int, up: int, is_in: int, uuid: str) -> dict[str, Any]:
    ip, nonce = f"10.200.0.{n + 1}", 4079 + n
    return {"osd": n, "uuid": uuid, "up": up, "in": is_in, "weight": float(is_in), "primary_affinity": 1,
            "last_clean_begin": 0, "last_clean_end": 0, "up_from": 7, "up_thru": 11,
            "down_at": 0 if up else 31, "lost_at": 0, "public_addrs": _addrs(ip, 6802, nonce),
            "cluster_addrs": _addrs(ip, 6804, nonce),
            "public_addr": f"{ip}:6803/{nonce}", "cluster_addr": f"{ip}:6805/{nonce}",
            "state": ["exists", "up"] if up else ["autoout", "exists"]}


def _pool(pid: int, name: str, size: int, pgs: int, rule: int, app: str) -> dict[str, Any]:
    return {"pool": pid, "pool_name": name, "create_time": "2026-11-22T15:31:48.827693+0000", "flags": 8193,
            "flags_names": "hashpspool,selfmanaged_snaps", "type": 1, "size": size, "min_size": size - 1,
            "crush_rule": rule, "object_hash": 2, "pg_autoscale_mode": "off", "pg_num": pgs,
            "pg_placement_num": pgs, "pg_placement_num_target": pgs, "pg_num_target": pgs,
            "pg_num_pending": pgs,
            "last_change": "15", "snap_mode": "selfmanaged", "snap_seq": 3, "quota_max_bytes": 0,
            "quota_max_objects": 0, "erasure_code_profile": "", "application_metadata": {app: {}}}


OSD_DUMP = {
    "epoch": 33, "fsid": FSID, "created": "2026-11-22T15:31:44.867940+0000",
    "modified": "2026-11-22T16:02:10.113840+0000",
    "flags": "sortbitwise,recovery_deletes,purged_snapdirs,pglog_hardlimit", "flags_num": 5799936,
    "crush_version": 7, "full_ratio": 0.95, "backfillfull_ratio": 0.9, "nearfull_ratio": 0.85,
    "pool_max": 3, "max_osd": 3, "require_min_compat_client": "luminous", "require_osd_release": "pacific",
    "pools": [_pool(1, "device_health_metrics", 3, 1, 0, "mgr_devicehealth"),
              _pool(2, "vms", 3, 16, 0, "rbd"), _pool(3, "fast", 2, 32, 1, "rbd")],
    "osds": [_osd(0, 1, 1, "c09c186e-a60f-4dc0-bdf9-bcdca076b073"),
             _osd(1, 1, 1, "a706007d-955d-44e7-abe1-d3cd61dfc6c2"),
             _osd(2, 0, 0, "5e3b1f0a-8d42-4c6e-9a71-2f0c3d4b5a69")],
    "blocklist": {"10.200.0.3:0/3355920913": "2026-11-22T17:02:10.113840+0000"},
}


def _df_node(n: int, cls: str, kb_used: int, pgs: int, reweight: float, status: str) -> dict[str, Any]:
    kb = 2097152
    return {"id": n, "device_class": cls, "name": f"osd.{n}", "type": "osd", "type_id": 0,
            "crush_weight": 0.0019989013671875, "depth": 2, "pool_weights": {}, "reweight": reweight,
            "kb": kb, "kb_used": kb_used, "kb_used_data": kb_used - 297088, "kb_used_omap": 0,
            "kb_used_meta": 297088, "kb_avail": kb - kb_used, "utilization": 100.0 * kb_used / kb, "var": 1.0,
            "pgs": pgs, "status": status}


OSD_DF = {
    "nodes": [_df_node(0, "hdd", 299536, 49, 1, "up"), _df_node(1, "ssd", 301184, 49, 1, "up"),
              {**_df_node(2, "hdd", 0, 0, 0, "down"), "kb": 0, "kb_avail": 0, "kb_used_data": 0,
               "kb_used_meta": 0, "utilization": 0, "var": 0}],
    "stray": [],
    "summary": {"total_kb": 4194304, "total_kb_used": 600720, "total_kb_avail": 3593584,
                "average_utilization": 14.32, "min_var": 0.99, "max_var": 1.01, "dev": 0.04},
}

OSD_TREE = {
    "nodes": [
        {"id": -1, "name": "default", "type": "root", "type_id": 11, "children": [-7, -5, -3]},
        {"id": -3, "name": "hv1", "type": "host", "type_id": 1, "pool_weights": {}, "children": [0]},
        {"id": 0, "device_class": "hdd", "name": "osd.0", "type": "osd", "type_id": 0, "crush_weight": 0.002,
         "depth": 2, "pool_weights": {}, "exists": 1, "status": "up", "reweight": 1, "primary_affinity": 1},
        {"id": -5, "name": "hv2", "type": "host", "type_id": 1, "pool_weights": {}, "children": [1]},
        {"id": 1, "device_class": "ssd", "name": "osd.1", "type": "osd", "type_id": 0, "crush_weight": 0.002,
         "depth": 2, "pool_weights": {}, "exists": 1, "status": "up", "reweight": 1, "primary_affinity": 1},
        {"id": -7, "name": "hv3", "type": "host", "type_id": 1, "pool_weights": {}, "children": [2]},
        {"id": 2, "device_class": "hdd", "name": "osd.2", "type": "osd", "type_id": 0, "crush_weight": 0.002,
         "depth": 2, "pool_weights": {}, "exists": 1, "status": "down", "reweight": 0, "primary_affinity": 1},
    ],
    "stray": [],
}


def _df_pool(pid: int, name: str, stored: int, objects: int, used: int, pct: float, avail: int, rd: int,
             wr: int) -> dict[str, Any]:
    return {"name": name, "id": pid, "stats": {
        "stored": stored, "stored_data": stored, "stored_omap": 0, "objects": objects,
        "kb_used": used // 1024, "bytes_used": used, "data_bytes_used": used, "omap_bytes_used": 0,
        "percent_used": pct,
        "max_avail": avail, "quota_objects": 0, "quota_bytes": 0, "dirty": 0, "rd": rd, "rd_bytes": rd * 836,
        "wr": wr, "wr_bytes": wr * 73472, "compress_bytes_used": 0, "compress_under_bytes": 0,
        "stored_raw": stored * 3, "avail_raw": avail * 3}}


DF_DETAIL = {
    "stats": {"total_bytes": 6442450944, "total_avail_bytes": 5522276352, "total_used_bytes": 920174592,
              "total_used_raw_bytes": 920174592, "total_used_raw_ratio": 0.14282989501953125, "num_osds": 3,
              "num_per_pool_osds": 3, "num_per_pool_omap_osds": 3},
    "stats_by_class": {"hdd": {"total_bytes": 4294967296, "total_avail_bytes": 3681517568,
                               "total_used_bytes": 613449728, "total_used_raw_bytes": 613449728,
                               "total_used_raw_ratio": 0.14282989501953125}},
    "pools": [_df_pool(1, "device_health_metrics", 0, 0, 0, 0.0, 1733384576, 0, 0),
              _df_pool(2, "vms", 2330697, 12, 7028736, 0.001349815633147955, 1733384576, 174, 32),
              _df_pool(3, "fast", 0, 0, 0, 0.0, 2600076864, 0, 0)],
}

PG_DUMP_POOLS = {"pg_ready": True, "pool_stats": [
    {"poolid": 2, "num_pg": 16, "stat_sum": {
        "num_bytes": 2613321, "num_objects": 12, "num_object_clones": 1, "num_object_copies": 36,
        "num_objects_missing_on_primary": 0, "num_objects_missing": 0, "num_objects_degraded": 12,
        "num_objects_misplaced": 0, "num_objects_unfound": 0, "num_objects_dirty": 12, "num_read": 174,
        "num_read_kb": 142, "num_write": 32, "num_write_kb": 2296, "num_scrub_errors": 0},
     "store_stats": {"allocated": 7028736, "data_stored": 6992091}, "log_size": 27, "up": 48, "acting": 48},
    {"poolid": 3, "num_pg": 32, "stat_sum": {
        "num_bytes": 0, "num_objects": 0, "num_object_clones": 0, "num_object_copies": 0,
        "num_objects_missing_on_primary": 0, "num_objects_degraded": 0, "num_objects_unfound": 0,
        "num_read": 0, "num_read_kb": 0, "num_write": 0, "num_write_kb": 0}},
]}

# `ceph osd status` in Ceph 16 (its JSON mode prints this table too); HOST is the machine's hostname,
# not the CRUSH host, which is why the node comes from `osd tree`.
OSD_STATUS_16 = """\
ID  HOST   USED  AVAIL  WR OPS  WR DATA  RD OPS  RD DATA  STATE
 0  vm     292M  1755M     12     1.2M    1.5k     4096k  exists,up
 1  vm     294M  1753M      0        0       0        0   exists,up
 2  vm       0      0       0        0       0        0   autoout,exists
"""
OSD_STATUS_14 = """\
+----+------+-------+-------+--------+---------+--------+---------+-----------+
| id | host |  used | avail | wr ops | wr data | rd ops | rd data |   state   |
+----+------+-------+-------+--------+---------+--------+---------+-----------+
| 0  | hv1  |  292M | 1755M |    3   |  12.0k  |    0   |     0   | exists,up |
+----+------+-------+-------+--------+---------+--------+---------+-----------+
"""


# -- shaping ----------------------------------------------------------------------------------------

def test_osd_documents_have_pvc_stats_keys_and_crush_hosts() -> None:
    osds = shape_osds(OSD_DUMP, OSD_DF, OSD_TREE, parse_osd_status(OSD_STATUS_16))
    assert sorted(osds) == ["0", "1", "2"]
    assert [osds[i]["node"] for i in ("0", "1", "2")] == ["hv1", "hv2", "hv3"]
    stats = osds["0"]["stats"]
    assert set(stats) == {"uuid", "up", "in", "primary_affinity", "utilization", "var", "pgs", "kb",
                          "kb_used", "kb_used_data", "kb_used_omap", "kb_used_meta", "kb_avail", "weight",
                          "reweight", "class", "node", "used", "avail", "wr_ops", "wr_data", "rd_ops",
                          "rd_data", "state"}
    assert stats["uuid"] == "c09c186e-a60f-4dc0-bdf9-bcdca076b073"
    assert (stats["up"], stats["in"], stats["pgs"], stats["class"], stats["node"]) == (1, 1, 49, "hdd", "hv1")
    assert (stats["kb"], stats["kb_used"], stats["kb_avail"]) == (2097152, 299536, 2097152 - 299536)
    assert (stats["used"], stats["avail"]) == ("292M", "1755M")       # as `ceph osd status` prints them
    assert stats["weight"] == 0.0019989013671875 and stats["reweight"] == 1
    rates = (stats["wr_ops"], stats["wr_data"], stats["rd_ops"], stats["rd_data"])
    assert rates == (12, 1258291, 1500, 4194304)
    assert stats["state"] == "exists,up"
    down = osds["2"]["stats"]
    assert (down["up"], down["in"], down["state"], down["reweight"], down["used"]) == (
        0, 0, "autoout,exists", 0, "0")


def test_osd_without_usage_or_rates_gets_zeros() -> None:
    dump = {**OSD_DUMP, "osds": [*OSD_DUMP["osds"], _osd(3, 0, 0, "0f9a4c5e-7b7d-4c1e-8f9a-1b2c3d4e5f60")]}
    osds = shape_osds(dump, OSD_DF, OSD_TREE)
    assert osds["3"]["node"] == "" and osds["3"]["stats"]["kb"] == 0 and osds["3"]["stats"]["wr_ops"] == 0


def test_pool_documents_from_df_detail_osd_map_and_pg_dump() -> None:
    pools = shape_pools(DF_DETAIL, OSD_DUMP, PG_DUMP_POOLS)
    assert sorted(pools) == ["fast", "vms"]                              # mgr's pool is not PVC's
    vms = pools["vms"]
    assert (vms["id"], vms["pgs"], vms["copies"], vms["mincopies"], vms["rbd"], vms["rule"]) == (
        2, 16, 3, 2, True, 0)
    assert vms["stats"] == {
        "id": 2, "stored_bytes": 2330697, "free_bytes": 1733384576, "used_bytes": 7028736,
        "used_percent": 0.001349815633147955, "num_objects": 12, "num_object_clones": 1,
        "num_object_copies": 36,
        "num_objects_missing_on_primary": 0, "num_objects_unfound": 0, "num_objects_degraded": 12,
        "read_ops": 174, "read_bytes": 142 * 1024, "write_ops": 32, "write_bytes": 2296 * 1024}
    assert (pools["fast"]["copies"], pools["fast"]["rule"], pools["fast"]["pgs"]) == (2, 1, 32)


def test_pool_io_falls_back_to_df_detail_without_pg_dump() -> None:
    stats = shape_pools(DF_DETAIL, OSD_DUMP)["vms"]["stats"]
    assert (stats["read_ops"], stats["read_bytes"], stats["write_ops"], stats["write_bytes"]) == (
        174, 174 * 836, 32, 32 * 73472)
    assert stats["num_object_copies"] == 36 and stats["num_objects_degraded"] == 0


def test_pool_pgs_follow_the_target_while_ceph_changes_them() -> None:
    dump = {**OSD_DUMP, "pools": [{**OSD_DUMP["pools"][1], "pg_num": 20, "pg_num_target": 32}]}
    assert shape_pools(DF_DETAIL, dump)["vms"]["pgs"] == 32


@pytest.mark.parametrize(("text", "expected"), [(OSD_STATUS_16, {"0", "1", "2"}), (OSD_STATUS_14, {"0"})])
def test_osd_status_both_layouts(text: str, expected: set[str]) -> None:
    rates = parse_osd_status(text)
    assert set(rates) == expected
    if text is OSD_STATUS_14:
        assert rates["0"] == {"wr_ops": 3, "wr_data": 12288, "rd_ops": 0, "rd_data": 0}


def test_osd_hosts_and_tiers() -> None:
    assert osd_hosts(OSD_TREE) == {"0": "hv1", "1": "hv2", "2": "hv3"}
    rules = ("ssd_tier", "nvme_tier", "hdd_tier", "replicated_rule", "foo_tier", None)
    assert [rule_tier(r) for r in rules] == ["ssd", "nvme", "hdd", "default", "default", "default"]


@pytest.mark.parametrize(("n", "text"), [(0, "0"), (999, "999"), (4096, "4096"), (306184192, "292M"),
                                         (1840758784, "1755M"), (1288490188, "1228M"),
                                         (5 * 1024 ** 4, "5120G"), (int(1.5 * 1024 ** 3), "1536M")])
def test_format_bytes_like_ceph(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_parse_units() -> None:
    texts = ("0", "12", "1.5k", "2M", "junk", "")
    assert [parse_units(t, 1000) for t in texts] == [0, 12, 1500, 2000000, 0, 0]
    assert parse_units("4096k", 1024) == 4194304


# -- locks --------------------------------------------------------------------------------------------

OWN = {"10.200.0.1", "127.0.0.1"}
MINE = Locker("client.4123", "auto 140234", "10.200.0.1:0/3355920913")
THEIRS = Locker("client.4467", "auto 139871", "10.200.0.2:0/1186524571")


def test_no_locks_nothing_to_do() -> None:
    assert lock_decision("vms/a", [], [], OWN) == lock_decision("vms/a", [], ["10.200.0.2:0/1"], OWN)
    assert lock_decision("vms/a", [], [], OWN).refuse == ""


def test_own_locks_are_stale_and_broken() -> None:
    decision = lock_decision("vms/a", [MINE], [], OWN)
    assert decision.stale == (MINE,) and decision.refuse == ""
    # even if our dead QEMU's watch has not timed out yet
    assert lock_decision("vms/a", [MINE], [MINE.address], OWN).stale == (MINE,)


def test_foreign_lock_of_a_client_that_still_has_it_open_refuses() -> None:
    watchers = ["v1:10.200.0.2:0/1186524571"]
    decision = lock_decision("vms/a", [MINE, THEIRS], watchers, OWN, {"10.200.0.2": "hv2"})
    assert decision.stale == ()
    assert "vms/a" in decision.refuse and "client.4467" in decision.refuse and "10.200.0.2" in decision.refuse
    assert "(node hv2)" in decision.refuse and "still has it open" in decision.refuse


def test_foreign_lock_of_a_gone_client_refuses_with_the_way_out() -> None:
    decision = lock_decision("vms/a", [THEIRS], ["10.200.0.2:0/999"], OWN)      # another client watches
    assert decision.stale == ()
    assert "pvc vm flush-locks" in decision.refuse and "known dead" in decision.refuse


@pytest.mark.parametrize(("address", "ip"), [
    ("10.0.0.1:0/123", "10.0.0.1"), ("v1:10.0.0.1:6789/0", "10.0.0.1"), ("[fd00::1]:0/77", "fd00::1"),
    ("10.0.0.1", "10.0.0.1")])
def test_address_ip(address: str, ip: str) -> None:
    assert address_ip(address) == ip


# -- secret and NodeCeph ---------------------------------------------------------------------------------

def test_secret_uuid_is_derived_from_the_fsid_or_configured() -> None:
    derived = secret_uuid(FSID)
    assert derived == secret_uuid(FSID) == str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"pvc-ceph-{FSID}"))
    assert derived != secret_uuid("6bd1c4c4-1cf7-4b7e-9b33-6f2d6d1b7a10")
    configured = "96721723-8650-4A72-B8F6-A93CD1A20F0C"
    assert secret_uuid(FSID, configured) == configured.lower()


KEY = base64.b64encode(b"0123456789abcdef").decode()


@pytest.fixture
def keyring(tmp_path: Path) -> str:
    path = tmp_path / "ceph.client.admin.keyring"
    path.write_text(f'[client.admin]\n\tkey = {KEY}\n\tcaps mon = "allow *"\n')
    return str(path)


def test_node_ceph_defines_the_secret_once_and_caches_monitors(keyring: str) -> None:
    storage, hv = FakeStorage(), FakeHypervisor()
    created = []
    ceph = NodeCeph(lambda: created.append(1) or storage, hv, keyring=keyring)
    access = ceph.disk_access()
    uuid = secret_uuid(storage.cluster_fsid)
    assert access.secret_uuid == uuid and access.username == "admin"
    assert access.hosts == (("10.200.0.1", 6789), ("10.200.0.2", 6789), ("10.200.0.3", 6789))
    assert hv.secrets == {uuid: ("client.admin secret", b"0123456789abcdef")}
    ceph.disk_access()
    assert created == [1]                                     # one long-lived Storage
    assert [op for op, _ in hv.calls].count("ensure_secret") == 1
    assert [op for op, _ in storage.calls].count("mon_addresses") == 1


def test_node_ceph_reports_a_missing_key_and_libvirt_refusals(keyring: str, tmp_path: Path) -> None:
    hv = FakeHypervisor()
    with pytest.raises(StorageError, match=r"client\.libvirt"):
        NodeCeph(FakeStorage(), hv, client_user="libvirt", keyring=keyring).ensure_secret()
    with pytest.raises(StorageError, match="cannot read"):
        NodeCeph(FakeStorage(), hv, keyring=str(tmp_path / "none")).ensure_secret()
    hv.secrets["0b5c6c4e-1111-4222-8333-944444444444"] = ("client.admin secret", b"x")   # usage taken
    ceph = NodeCeph(FakeStorage(), hv, keyring=keyring)
    with pytest.raises(HypervisorError, match="already uses"):
        ceph.ensure_secret()
    assert not ceph.secret_ready


def test_node_ceph_own_addresses_include_the_configured_one() -> None:
    ceph = NodeCeph(FakeStorage(), None, extra_addresses=["10.0.0.5", ""], addresses=lambda: {"10.200.0.1"})
    assert ceph.own_addresses() == {"10.200.0.1", "10.0.0.5"}


def test_fake_hypervisor_block_resize_by_target_or_rbd_source() -> None:
    hv = FakeHypervisor()
    uuid = "3f1c2b7e-5a4d-4c3b-9e8f-7a6b5c4d3e2f"
    hv.start(f"""<domain type='kvm'><name>r1</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>
  <devices><disk type='network' device='disk'><source protocol='rbd' name='vms/r1_vda'/>
  <target dev='vda' bus='virtio'/></disk></devices></domain>""")
    hv.block_resize(uuid, "vms/r1_vda", 2 << 30)
    hv.block_resize(uuid, "vda", 3 << 30)
    assert hv.disk_sizes == {(uuid, "vda"): 3 << 30}
    with pytest.raises(HypervisorError, match="no such disk"):
        hv.block_resize(uuid, "vms/other", 1 << 30)


# -- the node daemon: storage work never holds up its keepalive ---------------------------------------

class HungStorage(FakeStorage):
    """Ceph that does not answer (a partitioned monitor quorum)."""

    def fsid(self) -> str:
        time.sleep(2)
        return super().fsid()


def test_a_hung_ceph_never_delays_the_keepalive(keyring: str) -> None:
    settings = parse_config("""
cluster: {name: c1, coordinator_nodes: [hv1]}
zookeeper: {hosts: ["127.0.0.1:1"], acl: false}
node: {name: hv1}
hypervisor: {libvirt_uri: "test:///default"}
subsystem: {enable_api: false, enable_networking: false}
logging: {zookeeper: false}
""")
    daemon = NodeDaemon(settings)
    assert daemon.ceph is not None and daemon.storage_monitor is not None and daemon.vms is not None
    assert daemon.vms.ceph is daemon.ceph                  # VM starts use the same connection and secret
    assert daemon.storage.ceph is daemon.ceph
    hv = FakeHypervisor()
    storage = daemon.storage
    storage.ceph = NodeCeph(HungStorage(), hv, keyring=keyring)
    started = time.monotonic()
    storage.keepalive()
    storage.keepalive()                                    # the first still hangs: not started twice
    assert time.monotonic() - started < 0.5
    assert storage.worker is not None
    storage.worker.join(10)
    assert storage.ceph.secret_ready and len(hv.secrets) == 1
    storage.keepalive()                                    # secondary with its secret: nothing to do
    assert not storage.worker.is_alive()


def test_health_faults_one_per_check_named_as_upstream() -> None:
    from pvc.node.storage import health_faults

    assert health_faults({"status": "HEALTH_OK", "checks": {}}) == []
    assert health_faults({"status": "HEALTH_WARN", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down"}},
        "PG_DAMAGED": {"severity": "HEALTH_ERR", "summary": {"message": "1 pg inconsistent"}},
        "PG_DEGRADED": {"summary": {"message": "Degraded data redundancy: 5 pgs degraded"}}}}) == [
        ("CEPH_WARN_OSD_DOWN", 10, "HEALTH_WARN OSD_DOWN: 1 osds down"),
        ("CEPH_ERR_PG_DAMAGED", 50, "HEALTH_ERR PG_DAMAGED: 1 pg inconsistent"),
        ("CEPH_WARN_PG_DEGRADED", 10, "HEALTH_WARN PG_DEGRADED: Degraded data redundancy: 5 pgs degraded")]
    assert health_faults({"status": "HEALTH_ERR"}) == [("CEPH_ERR_HEALTH", 50,
                                                       "Ceph cluster health is HEALTH_ERR")]
