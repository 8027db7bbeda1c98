"""RBD pools: reading, listing, free space (for the volume checks) and create/resize/remove."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kazoo.exceptions import NoNodeError

from pvc.adapters.ceph import Storage, StorageError, StorageNotFound
from pvc.cluster.common import wait_until
from pvc.cluster.storage.common import (
    PoolSpace,
    ceph,
    check_name,
    check_pgs,
    check_tier,
    df_stats,
    name_filter,
    parse_replcfg,
    read_doc,
    safe_name,
    set_stats,
)
from pvc.cluster.storage.users import vm_names, volume_users
from pvc.core import schema
from pvc.core.errors import Conflict, NotFound
from pvc.core.zk import ZK

DEFAULT_RULE = "replicated_rule"
STATS_MAX_AGE = 60.0          # older pool statistics are refreshed from `ceph df` before a space check
DF_LAG_WAIT = 10.0            # seconds to wait for a new pool to appear in `ceph df`


def get_pool(zk: ZK, pool: str) -> dict[str, Any]:
    doc = read_doc(zk, schema.pool(pool)) if safe_name(pool) else None
    if doc is None:
        raise NotFound(f'No pool with name "{pool}" is present in the cluster.')
    return doc


def pool_view(doc: Mapping[str, Any], name: str, volume_count: int) -> dict[str, Any]:
    """The pool item of API v1: {name, volume_count, tier, pgs, stats} (+ copies, mincopies)."""
    return {
        "name": doc.get("name", name),
        "volume_count": volume_count,
        "tier": doc.get("tier") or "default",
        "pgs": doc.get("pgs", 0),
        "copies": doc.get("copies"),
        "mincopies": doc.get("mincopies"),
        "stats": doc.get("stats") if isinstance(doc.get("stats"), dict) else {},
    }


def list_pools(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """Pools whose name matches limit (fuzzy regex), sorted by Ceph pool ID like upstream."""
    keep = name_filter(limit)
    names = [n for n in zk.children(schema.CEPH_POOLS) if keep(n)]
    docs = zk.get_many([schema.pool(n) for n in names])
    counts = zk.children_many([schema.pool_volumes(n) for n in names])
    out = [pool_view(docs[schema.pool(n)], n, len(counts.get(schema.pool_volumes(n), [])))
           for n in names if isinstance(docs.get(schema.pool(n)), dict)]

    def pool_id(item: dict[str, Any]) -> tuple[int, str]:
        try:
            return int(item["stats"].get("id", 0)), item["name"]
        except (TypeError, ValueError):
            return 0, item["name"]

    return sorted(out, key=pool_id)


def pool_item(zk: ZK, name: str) -> dict[str, Any]:
    """One pool by exact name (GET /storage/ceph/pool/<p>)."""
    try:
        doc = get_pool(zk, name)
    except NotFound:
        raise NotFound("Pool not found.") from None
    return pool_view(doc, name, len(zk.children(schema.pool_volumes(name))))


def _stats_fresh(zk: ZK) -> bool:
    status = read_doc(zk, schema.CEPH_STATUS)
    try:
        return status is not None and time.time() - float(status.get("time", 0)) <= STATS_MAX_AGE
    except (TypeError, ValueError):
        return False


def pool_space(zk: ZK, storage: Storage, pool: str, doc: Mapping[str, Any] | None = None) -> PoolSpace:
    """The pool's space: from its statistics in ZooKeeper while the primary keeps them fresh,
    else straight from `ceph df` (and mirrored into the pool document)."""
    doc = doc if doc is not None else get_pool(zk, pool)
    stats = doc.get("stats") or {}
    if _stats_fresh(zk) and isinstance(stats, dict) and {"free_bytes", "stored_bytes"} <= set(stats):
        try:
            return PoolSpace(int(stats["stored_bytes"]), int(stats["free_bytes"]))
        except (TypeError, ValueError):
            pass
    # `ceph df` comes from the mgr, which learns of a new pool a second or two after it exists
    found: list[dict[str, Any] | None] = []

    def reported() -> bool:
        with ceph(f'read the free space of pool "{pool}"'):
            found.append(df_stats(storage.mon_command("df"), pool))
        return found[-1] is not None

    wait_until(reported, DF_LAG_WAIT, 0.5)
    stats = found[-1]
    if stats is None:
        raise Conflict(f'Ceph reports no space figures for pool "{pool}"; is it still being created?')
    set_stats(zk, schema.pool(pool), **stats)
    return PoolSpace(stats["stored_bytes"], stats["free_bytes"])


def add_pool(zk: ZK, storage: Storage, name: str, pgs: int, replcfg: str, tier: str | None = None) -> str:
    """Create a replicated RBD pool on the tier's CRUSH rule; register it in ZooKeeper."""
    check_name(name, "pool")
    check_pgs(pgs)
    copies, mincopies = parse_replcfg(replcfg)
    tier = check_tier(tier)
    if zk.exists(schema.pool(name)):
        raise Conflict(f'Pool "{name}" already exists in the cluster.')
    with ceph(f'create RBD pool "{name}" on tier "{tier}"', not_found=Conflict):
        rule = DEFAULT_RULE if tier == "default" else storage.ensure_tier_rule(tier)
        storage.create_pool(name, pgs, copies, mincopies, rule)
    try:   # first figures (the pool's ID above all, lists sort by it) until the primary's refresh
        stats = df_stats(storage.mon_command("df"), name) or {}
    except StorageError:
        stats = {}
    zk.put(schema.pool(name), {"name": name, "pgs": pgs, "tier": tier, "copies": copies,
                               "mincopies": mincopies, "stats": stats})
    zk.ensure(schema.pool_volumes(name))
    zk.ensure(f"{schema.CEPH_SNAPSHOTS}/{name}")
    return f'Created RBD pool "{name}" with {pgs} PGs'


def set_pool_pgs(zk: ZK, storage: Storage, name: str, pgs: int) -> str:
    check_pgs(pgs, power_of_two=True)
    get_pool(zk, name)
    with ceph(f'set the PG count of pool "{name}" to {pgs}'):
        storage.set_pool_pgs(name, pgs)
    try:
        zk.update(schema.pool(name), lambda doc: {**doc, "pgs": pgs})
    except NoNodeError:
        pass
    return f'Set PGs count to {pgs} for RBD pool "{name}".'


def remove_pool(zk: ZK, storage: Storage, name: str) -> str:
    """Remove a pool with all its volumes; refused while any VM uses one of them."""
    get_pool(zk, name)
    users = {ref: entries for ref, entries in volume_users(zk).items() if ref.split("/", 1)[0] == name}
    if users:
        detail = "; ".join(f"{ref} by {vm_names(entries)}" for ref, entries in sorted(users.items()))
        raise Conflict(f'Cannot remove RBD pool "{name}": VMs use its volumes ({detail}).')
    with ceph(f'remove RBD pool "{name}"'):
        try:
            storage.remove_pool(name)
        except StorageNotFound:
            pass   # already gone from Ceph: forgetting it is all that is left to do
    zk.delete(f"{schema.CEPH_SNAPSHOTS}/{name}")
    zk.delete(schema.pool_volumes(name))
    zk.delete(schema.pool(name))
    return f'Removed RBD pool "{name}" and all volumes.'
