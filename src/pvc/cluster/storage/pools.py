"""RBD pools: reading, listing, free space (for the volume checks) and create/resize/remove."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
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
from pvc.core.errors import Conflict, InvalidInput, NotFound
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


# -- failure domains (pure over Ceph's answers) ---------------------------------------------------------

@dataclass(frozen=True)
class FailureDomains:
    """Where a CRUSH rule places copies: the bucket type that must differ per copy (e.g. host)
    and the buckets of that type holding an OSD the rule can use (in, of its device class)."""

    rule: str
    kind: str
    device_class: str | None
    names: tuple[str, ...]


def failure_domains(tree: Mapping[str, Any] | None, rules: Any, rule: str,
                    device_class: str | None) -> FailureDomains:
    """The failure domains of `rule` from `ceph osd tree` and `ceph osd crush rule dump`.

    A rule not created yet (a tier's rule is made with its first pool) is PVC's: root `default`,
    one copy per host, `device_class`. An OSD counts while it exists and is in (reweight > 0):
    down OSDs come back, out ones hold no data."""
    root, kind, cls = "default", "host", device_class
    found = next((r for r in rules or [] if isinstance(r, dict) and r.get("rule_name") == rule), None)
    if found is not None:
        for step in found.get("steps") or []:
            op = str(step.get("op", ""))
            if op == "take" and step.get("item_name"):
                root, _, shadow = str(step["item_name"]).partition("~")
                cls = shadow or None
            elif op.startswith(("choose", "chooseleaf")) and step.get("type"):
                kind = str(step["type"])
    nodes = {n.get("id"): n for n in (tree or {}).get("nodes") or [] if isinstance(n, dict)}

    def usable(osd: Mapping[str, Any]) -> bool:
        return (osd.get("type") == "osd" and osd.get("exists", 1) != 0
                and float(osd.get("reweight", 1) or 0) > 0
                and (cls is None or osd.get("device_class") == cls))

    def osds_below(node: Mapping[str, Any], seen: frozenset[Any] = frozenset()) -> bool:
        if node.get("type") == "osd":
            return usable(node)
        return any(osds_below(nodes[c], seen | {c}) for c in node.get("children") or []
                   if c in nodes and c not in seen)

    names: list[str] = []

    def walk(node: Mapping[str, Any], seen: frozenset[Any] = frozenset()) -> None:
        if node.get("type") == kind:
            if osds_below(node):
                names.append(str(node.get("name")))
            return
        for child in node.get("children") or []:
            if child in nodes and child not in seen:
                walk(nodes[child], seen | {child})

    for node in nodes.values():
        if node.get("type") == "root" and node.get("name") == root:
            walk(node)
    return FailureDomains(rule, kind, cls, tuple(sorted(set(names))))


def check_replication(copies: int, domains: FailureDomains, tier: str) -> None:
    """Refuse more copies than the rule has failure domains: Ceph could never place them all,
    and the pool's PGs would stay degraded (HEALTH_WARN) until enough domains exist."""
    have = len(domains.names)
    if copies <= have:
        return
    kinds = f"{domains.kind}s" if not domains.kind.endswith("s") else domains.kind
    osds = f"OSDs of device class {domains.device_class}" if domains.device_class else "OSDs"
    where = f" ({', '.join(domains.names)})" if domains.names else ""
    if not have:
        field = "tier" if domains.device_class else "replcfg"
        raise InvalidInput(f"{field}: no {domains.kind} has {osds} that are in (tier {tier}, CRUSH rule "
                           f"{domains.rule}); add OSDs first, or pass force to create the pool anyway")
    raise InvalidInput(
        f"replcfg: copies={copies} needs {copies} separate {kinds} (the failure domain of CRUSH rule "
        f"{domains.rule}), but only {have} {domains.kind if have == 1 else kinds} with {osds} exist"
        f"{where}: Ceph could never place every copy and the pool would stay degraded. Use at most "
        f"copies={have}, or add {kinds} first (force creates the pool anyway).")


def pool_failure_domains(storage: Storage, tier: str) -> FailureDomains:
    """The failure domains the tier's rule would use, as Ceph reports them now."""
    rule = DEFAULT_RULE if tier == "default" else f"{tier}_tier"
    with ceph("read the CRUSH map"):
        tree = storage.mon_command("osd tree")
        rules = storage.mon_command("osd crush rule dump")
    return failure_domains(tree, rules, rule, None if tier == "default" else tier)


def add_pool(zk: ZK, storage: Storage, name: str, pgs: int, replcfg: str, tier: str | None = None,
             force: bool = False) -> str:
    """Create a replicated RBD pool on the tier's CRUSH rule; register it in ZooKeeper.

    Refused (nothing created): a PG count that is not a power of two (Ceph warns about it
    forever), and more copies than the rule's failure domains (hosts with OSDs of the tier) unless
    `force` (hosts still to be added)."""
    check_name(name, "pool")
    check_pgs(pgs, power_of_two=True)
    copies, mincopies = parse_replcfg(replcfg)
    tier = check_tier(tier)
    if zk.exists(schema.pool(name)):
        raise Conflict(f'Pool "{name}" already exists in the cluster.')
    if not force:
        check_replication(copies, pool_failure_domains(storage, tier), tier)
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
    users = {ref: entries for ref, entries in volume_users(zk, fresh=True).items()
             if ref.split("/", 1)[0] == name}
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
