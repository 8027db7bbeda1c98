"""The mon commands of FakeStorage: the answers PVC reads, in Ceph 16's JSON and plain-text shapes.

Computed from the fake cluster's pools, OSDs, CRUSH rules and flags; a companion of
pvc.adapters.ceph.fake (it reads FakeStorage's state, under FakeStorage's lock).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pvc.adapters.ceph.base import StorageError

if TYPE_CHECKING:
    from pvc.adapters.ceph.fake import FakeOsd, FakePool, FakeStorage


def _osd_used(fake: FakeStorage) -> int:
    """Raw bytes used per OSD: data spread evenly, plus bluestore's ~290 MB of metadata."""
    total = sum(p.size * sum(len(v.data) for v in p.volumes.values()) for p in fake._pools.values())
    return (290 << 20) + total // max(1, len(fake._osds))


def _totals(fake: FakeStorage) -> tuple[int, int]:
    size = sum(o.bytes for o in fake._osds.values() if o.is_in)
    used = _osd_used(fake) * sum(1 for o in fake._osds.values() if o.is_in)
    return size, min(size, used)


def _pool_stats(fake: FakeStorage, pool: FakePool) -> dict[str, Any]:
    size, used = _totals(fake)
    stored = sum(len(v.data) for v in pool.volumes.values())
    objects = sum(v.objects_used() for v in pool.volumes.values())
    max_avail = max(0, size - used) // max(1, pool.size)
    bytes_used = stored * pool.size
    return {"stored": stored, "objects": objects, "kb_used": -(-bytes_used // 1024),
            "bytes_used": bytes_used,
            "percent_used": bytes_used / (bytes_used + max_avail * pool.size) if bytes_used else 0.0,
            "max_avail": max_avail}


def _health(fake: FakeStorage) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    if fake._flags:
        flags = ",".join(sorted(fake._flags))
        checks["OSDMAP_FLAGS"] = {
            "severity": "HEALTH_WARN", "muted": False,
            "summary": {"message": f"{flags} flag(s) set", "count": len(fake._flags)}}
    down = [o for o in fake._osds.values() if not o.up]
    if down:
        checks["OSD_DOWN"] = {"severity": "HEALTH_WARN",
                              "summary": {"message": f"{len(down)} osds down", "count": len(down)},
                              "muted": False}
    return {"status": "HEALTH_WARN" if checks else "HEALTH_OK", "checks": checks, "mutes": []}


def _status(fake: FakeStorage) -> dict[str, Any]:
    size, used = _totals(fake)
    pgs = sum(p.pgs for p in fake._pools.values())
    objects = sum(v.objects_used() for p in fake._pools.values() for v in p.volumes.values())
    stored = sum(len(v.data) for p in fake._pools.values() for v in p.volumes.values())
    now = int(fake.clock())
    return {
        "fsid": fake.cluster_fsid, "health": _health(fake), "election_epoch": 4,
        "quorum": list(range(len(fake.mons))),
        "quorum_names": [f"hv{i + 1}" for i in range(len(fake.mons))], "quorum_age": 3600,
        "monmap": {"epoch": 1, "min_mon_release_name": "pacific", "num_mons": len(fake.mons)},
        "osdmap": {"epoch": fake._epoch, "num_osds": len(fake._osds),
                   "num_up_osds": sum(o.up for o in fake._osds.values()), "osd_up_since": now - 3600,
                   "num_in_osds": sum(o.is_in for o in fake._osds.values()), "osd_in_since": now - 3600,
                   "num_remapped_pgs": 0},
        "pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": pgs}] if pgs else [],
                  "num_pgs": pgs, "num_pools": len(fake._pools), "num_objects": objects,
                  "data_bytes": stored, "bytes_used": used, "bytes_avail": size - used,
                  "bytes_total": size},
        "fsmap": {"epoch": 1, "by_rank": [], "up:standby": 0},
        "mgrmap": {"available": True, "num_standbys": 0, "modules": ["iostat"], "services": {}},
        "servicemap": {"epoch": 1, "modified": "2026-01-01T00:00:00.000000+0000", "services": {}},
        "progress_events": {},
    }


def _df(fake: FakeStorage) -> dict[str, Any]:
    size, used = _totals(fake)
    by_class: dict[str, Any] = {}
    for cls in sorted({o.device_class for o in fake._osds.values()}):
        members = [o for o in fake._osds.values() if o.device_class == cls and o.is_in]
        c_size = sum(o.bytes for o in members)
        c_used = min(c_size, _osd_used(fake) * len(members))
        by_class[cls] = {"total_bytes": c_size, "total_avail_bytes": c_size - c_used,
                         "total_used_bytes": c_used, "total_used_raw_bytes": c_used,
                         "total_used_raw_ratio": c_used / c_size if c_size else 0.0}
    return {"stats": {"total_bytes": size, "total_avail_bytes": size - used, "total_used_bytes": used,
                      "total_used_raw_bytes": used, "total_used_raw_ratio": used / size if size else 0.0,
                      "num_osds": len(fake._osds), "num_per_pool_osds": len(fake._osds),
                      "num_per_pool_omap_osds": len(fake._osds)},
            "stats_by_class": by_class,
            "pools": [{"name": p.name, "id": p.id, "stats": _pool_stats(fake, p)}
                      for p in fake._pools.values()]}


def _osd_dump(fake: FakeStorage) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(fake.clock()))
    base_flags = ["sortbitwise", "recovery_deletes", "purged_snapdirs", "pglog_hardlimit"]
    flags = base_flags + sorted(fake._flags)
    rule_ids = {name: i for i, name in enumerate(fake._rules)}
    pools = [{"pool": p.id, "pool_name": p.name,
              "create_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(p.created)),
              "flags": 8193, "flags_names": "hashpspool,selfmanaged_snaps", "type": 1, "size": p.size,
              "min_size": p.min_size, "crush_rule": rule_ids[p.rule], "object_hash": 2,
              "pg_autoscale_mode": "off", "pg_num": p.pgs, "pg_placement_num": p.pgs,
              "pg_placement_num_target": p.pgs, "pg_num_target": p.pgs, "pg_num_pending": p.pgs,
              "snap_mode": "selfmanaged", "quota_max_bytes": 0, "quota_max_objects": 0,
              "erasure_code_profile": "", "application_metadata": {"rbd": {}}}
             for p in fake._pools.values()]
    osds = []
    for o in fake._osds.values():
        addr, nonce = f"10.200.0.{o.id + 1}", 4000 + o.id
        osds.append({"osd": o.id, "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, f"osd.{o.id}")),
                     "up": int(o.up), "in": int(o.is_in), "weight": 1 if o.is_in else 0,
                     "primary_affinity": 1, "up_from": 7, "up_thru": 11, "down_at": 0, "lost_at": 0,
                     "public_addrs": {"addrvec": [
                         {"type": "v2", "addr": f"{addr}:6800", "nonce": nonce},
                         {"type": "v1", "addr": f"{addr}:6801", "nonce": nonce}]},
                     "public_addr": f"{addr}:6801/{nonce}",
                     "cluster_addr": f"{addr}:6803/{nonce}",
                     "state": ["exists", "up"] if o.up else ["exists"]})
    blocklist = {a: time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(t))
                 for a, t in fake.blocklisted().items()}
    return {"epoch": fake._epoch, "fsid": fake.cluster_fsid, "created": now, "modified": now,
            "flags": ",".join(flags), "flags_set": sorted(flags), "crush_version": len(fake._rules) + 4,
            "full_ratio": 0.95, "backfillfull_ratio": 0.9, "nearfull_ratio": 0.85, "pool_max": max(
                (p.id for p in fake._pools.values()), default=0), "max_osd": len(fake._osds),
            "require_min_compat_client": "luminous", "min_compat_client": "jewel",
            "require_osd_release": "pacific", "pools": pools, "osds": osds, "blocklist": blocklist,
            "range_blocklist": {}, "erasure_code_profiles": {"default": {
                "k": "2", "m": "2", "plugin": "jerasure", "technique": "reed_sol_van"}}}


def _osd_node(fake: FakeStorage, o: FakeOsd, with_df: bool) -> dict[str, Any]:
    node: dict[str, Any] = {"id": o.id, "device_class": o.device_class, "name": f"osd.{o.id}",
                            "type": "osd", "type_id": 0, "crush_weight": o.bytes / (1 << 40), "depth": 2,
                            "pool_weights": {}, "reweight": 1 if o.is_in else 0,
                            "status": "up" if o.up else "down"}
    if with_df:
        used = min(o.bytes, _osd_used(fake)) if o.is_in else 0
        node.update({"kb": o.bytes // 1024, "kb_used": used // 1024,
                     "kb_used_data": max(0, used - (290 << 20)) // 1024, "kb_used_omap": 0,
                     "kb_used_meta": min(used, 290 << 20) // 1024,
                     "kb_avail": (o.bytes - used) // 1024, "utilization": 100.0 * used / o.bytes,
                     "var": 1, "pgs": sum(p.pgs * p.size for p in fake._pools.values()) // max(1, len(
                         fake._osds)) if o.is_in else 0})
    else:
        node.update({"exists": 1, "primary_affinity": 1})
    return node


def _osd_df(fake: FakeStorage) -> dict[str, Any]:
    nodes = [_osd_node(fake, o, True) for o in fake._osds.values()]
    total = sum(n["kb"] for n in nodes)
    used = sum(n["kb_used"] for n in nodes)
    avg = 100.0 * used / total if total else 0.0
    return {"nodes": nodes, "stray": [],
            "summary": {"total_kb": total, "total_kb_used": used,
                        "total_kb_used_data": sum(n["kb_used_data"] for n in nodes),
                        "total_kb_used_omap": 0,
                        "total_kb_used_meta": sum(n["kb_used_meta"] for n in nodes),
                        "total_kb_avail": total - used, "average_utilization": avg, "min_var": 1,
                        "max_var": 1, "dev": 0}}


def _osd_tree(fake: FakeStorage) -> dict[str, Any]:
    hosts: dict[str, list[FakeOsd]] = {}
    for o in fake._osds.values():
        hosts.setdefault(o.host, []).append(o)
    host_ids = {h: -3 - 2 * i for i, h in enumerate(hosts)}
    nodes: list[dict[str, Any]] = [{"id": -1, "name": "default", "type": "root", "type_id": 11,
                                    "children": sorted(host_ids.values())}]
    for host, members in hosts.items():
        nodes.append({"id": host_ids[host], "name": host, "type": "host", "type_id": 1,
                      "pool_weights": {}, "children": [o.id for o in members]})
        nodes.extend(_osd_node(fake, o, False) for o in members)
    return {"nodes": nodes, "stray": []}


def _mon_dump(fake: FakeStorage) -> dict[str, Any]:
    mons = [{"rank": i, "name": f"hv{i + 1}",
             "public_addrs": {"addrvec": [{"type": "v2", "addr": f"{h}:3300", "nonce": 0},
                                          {"type": "v1", "addr": f"{h}:6789", "nonce": 0}]},
             "addr": f"{h}:6789/0", "public_addr": f"{h}:6789/0", "priority": 0, "weight": 0}
            for i, h in enumerate(fake.mons)]
    return {"epoch": 1, "fsid": fake.cluster_fsid, "min_mon_release": 16,
            "min_mon_release_name": "pacific", "mons": mons, "quorum": list(range(len(fake.mons)))}


def _rule_dump(fake: FakeStorage) -> list[dict[str, Any]]:
    rules = []
    for i, (name, cls) in enumerate(fake._rules.items()):
        take: dict[str, Any] = ({"op": "take", "item": -1, "item_name": "default"} if cls is None else
                                {"op": "take", "item": -2 - i, "item_name": f"default~{cls}"})
        steps = [take, {"op": "chooseleaf_firstn", "num": 0, "type": "host"}, {"op": "emit"}]
        rules.append({"rule_id": i, "rule_name": name, "ruleset": i, "type": 1, "min_size": 1,
                      "max_size": 10, "steps": steps})
    return rules


def _status_text(fake: FakeStorage) -> str:
    st = _status(fake)
    om, pm = st["osdmap"], st["pgmap"]
    health = st["health"]["status"]
    for check in st["health"]["checks"].values():
        health += f"\n            {check['summary']['message']}"
    pgs = "\n".join(f"    pgs:     {s['count']} {s['state_name']}"
                    for s in pm["pgs_by_state"]) or "    pgs:"
    return (f"  cluster:\n    id:     {fake.cluster_fsid}\n    health: {health}\n \n  services:\n"
            f"    mon: {len(fake.mons)} daemons, quorum {','.join(st['quorum_names'])} (age 60m)\n"
            f"    mgr: hv1(active, since 60m)\n"
            f"    osd: {om['num_osds']} osds: {om['num_up_osds']} up, {om['num_in_osds']} in\n \n"
            f"  data:\n    pools:   {pm['num_pools']} pools, {pm['num_pgs']} pgs\n"
            f"    objects: {pm['num_objects']} objects, {_iec(pm['data_bytes'])}\n"
            f"    usage:   {_iec(pm['bytes_used'])} used, {_iec(pm['bytes_avail'])} / "
            f"{_iec(pm['bytes_total'])} avail\n{pgs}\n \n")


def _df_text(fake: FakeStorage) -> str:
    df = _df(fake)
    lines = ["--- RAW STORAGE ---", "CLASS  SIZE  AVAIL  USED  RAW USED  %RAW USED"]
    for cls, c in df["stats_by_class"].items():
        lines.append(f"{cls}  {_iec(c['total_bytes'])}  {_iec(c['total_avail_bytes'])}  "
                     f"{_iec(c['total_used_bytes'])}  {_iec(c['total_used_raw_bytes'])}  "
                     f"{100 * c['total_used_raw_ratio']:.2f}")
    s = df["stats"]
    lines += [f"TOTAL  {_iec(s['total_bytes'])}  {_iec(s['total_avail_bytes'])}  "
              f"{_iec(s['total_used_bytes'])}  {_iec(s['total_used_raw_bytes'])}  "
              f"{100 * s['total_used_raw_ratio']:.2f}", " ",
              "--- POOLS ---", "POOL  ID  PGS  STORED  OBJECTS  USED  %USED  MAX AVAIL"]
    for p in df["pools"]:
        st = p["stats"]
        lines.append(f"{p['name']}  {p['id']}  {fake._pools[p['name']].pgs}  {_iec(st['stored'])}  "
                     f"{st['objects']}  {_iec(st['bytes_used'])}  {100 * st['percent_used']:.2f}  "
                     f"{_iec(st['max_avail'])}")
    return "\n".join(lines) + "\n"


def _iec(n: float) -> str:
    """Ceph's human sizes: `878 MiB`, `5.1 GiB`, `0 B`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _pool_get(fake: FakeStorage, args: dict[str, Any]) -> dict[str, Any]:
    pool = fake._pool(str(args.get("pool")))
    var = str(args.get("var"))
    values = {"size": pool.size, "min_size": pool.min_size, "pg_num": pool.pgs, "pgp_num": pool.pgs,
              "crush_rule": pool.rule}
    if var not in values:
        raise StorageError(f"ceph osd pool get {pool.name} {var}: unsupported variable (fake)")
    return {"pool": pool.name, "pool_id": pool.id, var: values[var]}


_FAKE_MON_COMMANDS: dict[str, Callable[[FakeStorage, dict[str, Any]], Any]] = {
    "status": lambda f, a: _status(f),
    "health": lambda f, a: _health(f),
    "df": lambda f, a: _df(f),
    "osd dump": lambda f, a: _osd_dump(f),
    "osd df": lambda f, a: _osd_df(f),
    "osd tree": lambda f, a: _osd_tree(f),
    "mon dump": lambda f, a: _mon_dump(f),
    "fsid": lambda f, a: {"fsid": f.cluster_fsid},
    "osd pool ls": lambda f, a: list(f._pools),
    "osd pool get": _pool_get,
    "osd crush rule ls": lambda f, a: list(f._rules),
    "osd crush rule dump": lambda f, a: _rule_dump(f),
    "osd blocklist ls": lambda f, a: [{"addr": k, "until": v} for k, v in _osd_dump(f)["blocklist"].items()],
}


def mon_command(fake: FakeStorage, prefix: str, args: dict[str, Any]) -> Any:
    """The JSON answer to one mon command; StorageError for a prefix the fake does not know."""
    handler = _FAKE_MON_COMMANDS.get(prefix)
    if handler is None:
        raise StorageError(f"ceph {prefix}: unknown command (fake)")
    return handler(fake, args)


def mon_command_text(fake: FakeStorage, prefix: str) -> str:
    """The plain (human) answer to `status`, `df` or `health`."""
    if prefix == "status":
        return _status_text(fake)
    if prefix == "df":
        return _df_text(fake)
    if prefix == "health":
        return _health(fake)["status"]
    raise StorageError(f"ceph {prefix}: unknown command (fake)")
