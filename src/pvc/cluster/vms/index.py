"""Reading VMs: one VM fresh from ZooKeeper, or every VM from the API's watch caches.

The list path is what makes `GET /vm` fast at 10,000 VMs: parsed records, statuses and rendered
items are memoised per session on znode mzxids, and the whole sorted list is kept per generation
of the /vms and /vmstats TreeCaches, so a stats change re-renders only the VMs it touched.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pvc.cluster.nodes import get_node
from pvc.cluster.vms.rules import VM_NAME_RE, canonical_uuid
from pvc.cluster.vms.view import (
    dump,
    encode_stats,
    record_summary,
    snapshots_view,
    splice_snapshots,
    static_view,
    stats_prefixes,
    vm_filter,
    vm_view,
)
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.records import VMRecord, VMSnapshotRecord, VMStatus
from pvc.core.vocabulary import VM_ACTIVE_STATES, VM_LIST_STATES
from pvc.core.zk import ZK, decode
from pvc.core.zkcache import TreeMirror

Doc = TypeVar("Doc", VMRecord, VMStatus, VMSnapshotRecord)
# A list right after pvcapid starts waits this long for the cache's bulk snapshot (under a second
# at 10,000 VMs) rather than read every VM directly.
SNAPSHOT_WAIT = 5.0

# -- reading ------------------------------------------------------------------------------------------

@dataclass
class VMEntry:
    """One VM as read: its record, the node's status, and a key that changes when either does."""

    record: VMRecord
    status: VMStatus | None
    key: tuple[int, int] | None = None   # (record mzxid, status mzxid) when read from the cache
    stats: dict[str, Any] | None = None  # from the stats shards, when read from the server
    version: int | None = None           # the record's znode version, when read from the server


# {node: {uuid: (mzxid of the shard, stats)}}: every VM's stats as its nodes last wrote them
StatsIndex = dict[str, dict[str, tuple[int, dict[str, Any]]]]


class _Memo:
    """Per-session memo of parsed documents and rendered items, keyed on znode mzxid.

    While the /vms mirror's generation stands still, the last sorted snapshot and its encoded
    list are served as they are; the same for the /vmstats mirror and the stats index.
    """

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, VMRecord | None]] = {}
        self.statuses: dict[str, tuple[int, VMStatus | None]] = {}
        self.entries: dict[str, VMEntry] = {}
        self.items: dict[str, tuple[tuple[int, int, int], bytes]] = {}
        # uuid -> ((record mzxid, status mzxid), summary, encoded static half of the item, the
        # pre-encoded NIC and disk facts of its stats half)
        self.statics: dict[str, tuple[tuple[int, int] | None, dict[str, Any], bytes,
                                      tuple[list[bytes], list[bytes]]]] = {}
        self.snapshot: tuple[int, list[VMEntry]] | None = None
        self.full_json: tuple[tuple[int, int], bytes] | None = None
        self.shards: dict[str, tuple[int, dict[str, Any]]] = {}   # path -> (mzxid, decoded shard)
        self.stats_index: tuple[int, StatsIndex] | None = None
        # The whole list as parts: (snapshot generation, encoded items in list order, uuid -> place),
        # and the VMs whose stats shard changed since it was assembled: a keepalive that rewrites
        # a node's shards re-renders those items only, not a walk of every VM.
        self.parts: tuple[int, list[bytes], dict[str, int]] | None = None
        self.stats_dirty: set[str] = set()
        self.render_lock = threading.Lock()
        self.walk_lock = threading.Lock()
        self.stats_lock = threading.Lock()


_MEMOS: weakref.WeakKeyDictionary[ZK, _Memo] = weakref.WeakKeyDictionary()


def _memo(zk: ZK) -> _Memo:
    memo = _MEMOS.get(zk)
    if memo is None:
        memo = _MEMOS.setdefault(zk, _Memo())
    return memo


def _tree(zk: ZK, path: str = schema.VMS) -> TreeMirror | None:
    """The API's live mirror of /vms (zk.cache(schema.VMS, depth=2)) or /vmstats, or None.

    ZK.cached_children_docs only serves direct children; the VM list also needs each VM's
    status child (and each node's stats shards), which the same mirror holds, so it is read
    here directly.
    """
    return zk.live_cache(path)


def _parse(model: type[Doc], raw: bytes | None) -> Doc | None:
    """A stored document, or None when empty or unreadable (left out of lists, never fatal)."""
    if not raw:
        return None
    try:
        return model.model_validate_json(raw)
    except ValueError:
        return None


def _cached_entries(zk: ZK, tree: TreeMirror) -> list[VMEntry]:
    """Entries from the mirror's nodes, walked directly.

    `list(dict.items())` copies atomically under the GIL while kazoo's thread updates the mirror.
    """
    memo = _memo(zk)
    out: list[VMEntry] = []
    for uuid, node in list(tree.root.children.items()):
        if node.stat is None:
            continue
        mzxid = node.stat.mzxid
        known = memo.records.get(uuid)
        if known is None or known[0] != mzxid:
            known = (mzxid, _parse(VMRecord, node.data))
            memo.records[uuid] = known
        record = known[1]
        if record is None:
            continue
        status: VMStatus | None = None
        smzxid = 0
        snode = node.children.get("status")
        if snode is not None and snode.stat is not None:
            smzxid = snode.stat.mzxid
            sknown = memo.statuses.get(uuid)
            if sknown is None or sknown[0] != smzxid:
                sknown = (smzxid, _parse(VMStatus, snode.data))
                memo.statuses[uuid] = sknown
            status = sknown[1]
        key = (mzxid, smzxid)
        entry = memo.entries.get(uuid)
        if entry is None or entry.key != key:
            entry = VMEntry(record, status, key)
            memo.entries[uuid] = entry
        out.append(entry)
    if len(memo.records) > len(out) + 1000:
        alive = {e.record.uuid for e in out}
        for gone in set(memo.records) - alive:
            memo.records.pop(gone, None)
            memo.statuses.pop(gone, None)
            memo.entries.pop(gone, None)
            memo.items.pop(gone, None)
            memo.statics.pop(gone, None)
    return out


def _sorted_snapshot(zk: ZK) -> list[VMEntry] | None:
    """Every VM sorted by name from the watch cache; the same list object while nothing changed."""
    tree = zk.live_cache(schema.VMS, wait=SNAPSHOT_WAIT)
    if tree is None:
        return None
    memo = _memo(zk)
    snapshot = memo.snapshot
    if snapshot is not None and snapshot[0] == tree.generation:
        return snapshot[1]
    with memo.walk_lock:           # one walk at a time (the first list after a start is 10,000 parses)
        generation = tree.generation   # read before walking: a change during the walk bumps it again
        if memo.snapshot is not None and memo.snapshot[0] == generation:
            return memo.snapshot[1]
        entries = _cached_entries(zk, tree)
        entries.sort(key=lambda e: e.record.name)
        memo.snapshot = (generation, entries)
        return entries


def _cached_stats(zk: ZK) -> tuple[int, StatsIndex] | None:
    """(generation, index) from the /vmstats watch cache; the same index while nothing changed."""
    tree = _tree(zk, schema.VM_STATS)
    if tree is None:
        return None
    memo = _memo(zk)
    with memo.stats_lock:
        return _stats_index(memo, tree)


def _stats_index(memo: _Memo, tree: TreeMirror) -> tuple[int, StatsIndex]:
    """Rebuild the index if the mirror moved on (under memo.stats_lock), marking the VMs of every
    changed shard dirty for the whole list."""
    generation = tree.generation
    if memo.stats_index is not None and memo.stats_index[0] == generation:
        return memo.stats_index
    nodes = tree.root.children
    index: StatsIndex = {}
    seen = set()
    for node_name, node in list(nodes.items()):
        per_node = index.setdefault(node_name, {})
        for shard_name, shard in list(node.children.items()):
            if shard.stat is None:
                continue
            path = f"{node_name}/{shard_name}"
            seen.add(path)
            known = memo.shards.get(path)
            if known is None or known[0] != shard.stat.mzxid:
                if known is not None:
                    memo.stats_dirty.update(known[1])
                doc = decode(shard.data)
                known = (shard.stat.mzxid, doc if isinstance(doc, dict) else {})
                memo.shards[path] = known
                memo.stats_dirty.update(known[1])
            mzxid, doc = known
            for uuid, stats in doc.items():
                if isinstance(stats, dict):
                    per_node[uuid] = (mzxid, stats)
    for gone in set(memo.shards) - seen:
        memo.stats_dirty.update(memo.shards.pop(gone)[1])
    memo.stats_index = (generation, index)
    return memo.stats_index


def read_stats(zk: ZK, nodes: Iterable[str]) -> StatsIndex:
    """The stats index of these nodes, from the watch cache when live, else read (pipelined)."""
    cached = _cached_stats(zk)
    if cached is not None:
        return cached[1]
    names = sorted({n for n in nodes if n})
    if not names:
        return {}
    kids = zk.children_many([schema.vm_stats_node(n) for n in names])
    paths = [schema.vm_stats(n, k) for n in names for k in kids.get(schema.vm_stats_node(n), [])]
    docs = zk.get_many(paths) if paths else {}
    index: StatsIndex = {n: {} for n in names}
    for path, doc in docs.items():
        node_name = path.split("/")[-2]
        if isinstance(doc, dict):
            index[node_name].update({u: (0, s) for u, s in doc.items() if isinstance(s, dict)})
    return index


def _stats_of(index: StatsIndex, status: VMStatus | None, uuid: str) -> tuple[int, dict[str, Any] | None]:
    """(shard mzxid, stats) of the VM from its node's shards; (0, None) when it has none there."""
    if status is None or not status.node:
        return 0, None
    return index.get(status.node, {}).get(uuid, (0, None))


def load_entries(zk: ZK, fresh: bool = False) -> list[VMEntry]:
    """Every VM with its status: from the API's watch cache when live, else pipelined reads.

    fresh: read from ZooKeeper now (one listing, one pipelined read), never from the watch cache,
    which may lag the server: for every check that allows or refuses a write (a VM defined a
    moment ago must stop the removal of its network or volume); displays may use the cache.
    Cached entries carry no stats (item_json looks them up in the /vmstats cache, so a stats
    change re-renders the item without touching the sorted snapshot); read entries do.
    """
    cached = None if fresh else _sorted_snapshot(zk)
    if cached is not None:
        return cached
    uuids = zk.children(schema.VMS)
    paths = [schema.vm(u) for u in uuids] + [schema.vm_status(u) for u in uuids]
    docs = zk.get_many(paths)
    out = []
    for uuid in uuids:
        data = docs.get(schema.vm(uuid))
        if not isinstance(data, dict):
            continue
        try:
            record = VMRecord.model_validate(data)
        except ValueError:
            continue
        sdata = docs.get(schema.vm_status(uuid))
        status = VMStatus.model_validate(sdata) if isinstance(sdata, dict) else None
        out.append(VMEntry(record, status))
    index = read_stats(zk, {e.status.node for e in out if e.status is not None})
    for entry in out:
        entry.stats = _stats_of(index, entry.status, entry.record.uuid)[1]
    return out


def list_vms(zk: ZK, limit: str | None = None, node: str | None = None, state: str | None = None,
             tag: str | None = None, negate: bool = False) -> list[VMEntry]:
    """VMs matching PVC's list filters, sorted by name."""
    if state is not None and state not in VM_LIST_STATES:
        raise InvalidInput(f"state: '{state}' is not one of {', '.join(VM_LIST_STATES)}")
    if node is not None:
        try:
            get_node(zk, node)
        except NotFound:
            raise InvalidInput(f"node: Specified node '{node}' is invalid.") from None
    entries = load_entries(zk)
    if not (limit or node is not None or state is not None or tag is not None):
        return entries if _memo(zk).snapshot is not None and entries is _memo(zk).snapshot[1] else \
            sorted(entries, key=lambda e: e.record.name)
    keep = vm_filter(limit, node, state, tag, negate)
    return sorted((e for e in entries if keep(e.record)), key=lambda e: e.record.name)


def item_json(zk: ZK, entry: VMEntry, index: StatsIndex | None = None, snapshots: bool = True) -> bytes:
    """The encoded VM item with its snapshots (read now, two small reads; `snapshots=False` leaves
    them out for a list, which adds them in bulk).

    The rest is re-rendered only when the VM, its status or its stats shard changed. Cached
    entries (entry.key set) take their stats from index (or the stats cache); read ones carry them
    in entry.stats.
    """
    data = _item_json(zk, entry, index)
    if not snapshots:
        return data
    found = load_snapshots(zk, [entry.record.uuid]).get(entry.record.uuid)
    return splice_snapshots(data, _snapshots_json(entry.record, found, time.time())) if found else data


def load_snapshots(zk: ZK, uuids: list[str] | None = None) -> dict[str, list[VMSnapshotRecord]]:
    """The VMs' snapshot records, read in bulk (pvc.cluster.vmsnapshots owns them)."""
    from pvc.cluster.vmsnapshots import load_many  # it reads VMs through this module
    return load_many(zk, uuids)


# Parsed snapshot records of the /vmsnapshots mirror, by path: (mzxid, record).
_SNAPSHOT_MEMO: weakref.WeakKeyDictionary[ZK, dict[str, tuple[int, VMSnapshotRecord | None]]] = \
    weakref.WeakKeyDictionary()


def listed_snapshots(zk: ZK, uuids: list[str] | None = None) -> dict[str, list[VMSnapshotRecord]]:
    """The snapshots for a list: from a watch cache of /vmsnapshots where the process keeps the VM
    list's caches (the API), started on first use, so a list transfers no snapshot XML; read in
    bulk otherwise (and until the cache has loaded)."""
    mirror = zk.live_cache(schema.VM_SNAPSHOTS)
    if mirror is None:
        if zk.mirror(schema.VMS) is not None:
            zk.cache(schema.VM_SNAPSHOTS, depth=2)
        return load_snapshots(zk, uuids)
    memo = _SNAPSHOT_MEMO.setdefault(zk, {})
    wanted = None if uuids is None else set(uuids)
    out: dict[str, list[VMSnapshotRecord]] = {}
    seen = set()
    for uuid, node in list(mirror.root.children.items()):
        if wanted is not None and uuid not in wanted:
            continue
        records = []
        for name, child in list(node.children.items()):
            if child.stat is None:
                continue
            path = f"{uuid}/{name}"
            seen.add(path)
            known = memo.get(path)
            if known is None or known[0] != child.stat.mzxid:
                known = (child.stat.mzxid, _parse(VMSnapshotRecord, child.data))
                memo[path] = known
            if known[1] is not None:
                records.append(known[1])
        if records:
            out[uuid] = sorted(records, key=lambda r: (-r.created, r.name))
    if wanted is None:
        for gone in set(memo) - seen:
            memo.pop(gone, None)
    return out


def _snapshots_json(record: VMRecord, snapshots: list[VMSnapshotRecord], now: float) -> bytes:
    return dump(snapshots_view(record, snapshots, now))


def _with_snapshots(data: bytes, entries: Sequence[VMEntry],
                    found: dict[str, list[VMSnapshotRecord]]) -> bytes:
    """The encoded list with each VM's snapshots spliced into its item, in one pass over the list
    (items are in `entries` order; the uuid comes before the snapshots key in each)."""
    now = time.time()
    parts: list[bytes] = []
    position = 0
    for entry in entries:
        snaps = found.get(entry.record.uuid)
        if not snaps:
            continue
        at = data.find(b'"uuid":"%s"' % entry.record.uuid.encode(), position)
        key = data.find(b'"snapshots":[]', at) if at >= 0 else -1
        if key < 0:
            continue
        parts += [data[position:key], b'"snapshots":', _snapshots_json(entry.record, snaps, now)]
        position = key + len(b'"snapshots":[]')
    if not parts:
        return data
    parts.append(data[position:])
    return b"".join(parts)


def _item_json(zk: ZK, entry: VMEntry, index: StatsIndex | None = None) -> bytes:
    if entry.key is None:
        item = vm_view(entry.record, entry.status, stats=entry.stats)
        return dump(item)
    if index is None:
        index = read_stats(zk, [entry.status.node] if entry.status is not None else [])
    mzxid, stats = _stats_of(index, entry.status, entry.record.uuid)
    uuid = entry.record.uuid
    memo = _memo(zk)
    # Two cached halves: a keepalive rewrites every VM's stats, and re-rendering only the small
    # stats half (not the XML and the rest) is what keeps a 10,000-VM list fast under churn.
    static = memo.statics.get(uuid)
    if static is None or static[0] != entry.key:
        summary = record_summary(entry.record)
        static = (entry.key, summary, dump(static_view(entry.record, entry.status, summary)),
                  stats_prefixes(summary))
        memo.statics[uuid] = static
    known = memo.items.get(uuid)
    key = (*entry.key, mzxid)
    if known is not None and known[0] == key:
        return known[1]
    if stats is None:
        stats = entry.status.stats if entry.status is not None and entry.status.stats else {}
    data = static[2][:-1] + b"," + encode_stats(static[1], static[3], stats)[1:]
    memo.items[uuid] = (key, data)
    return data


def list_json(zk: ZK, entries: Sequence[VMEntry]) -> bytes:
    """The encoded list with the VMs' snapshots (read in bulk: one read when no VM has any)."""
    data = _list_json(zk, entries)
    if not entries:
        return data
    found = listed_snapshots(zk, None if len(entries) > 50 else [e.record.uuid for e in entries])
    return _with_snapshots(data, entries, found) if found else data


def _list_json(zk: ZK, entries: Sequence[VMEntry]) -> bytes:
    """The encoded list without snapshots; the whole unfiltered list is kept per generation of both
    caches."""
    memo = _memo(zk)
    snapshot = memo.snapshot
    whole = snapshot is not None and entries is snapshot[1]
    cached_stats = _cached_stats(zk)
    generations = (snapshot[0] if snapshot is not None else -1, cached_stats[0] if cached_stats else -1)
    if whole and cached_stats is not None and memo.full_json is not None and memo.full_json[0] == generations:
        return memo.full_json[1]
    index = cached_stats[1] if cached_stats is not None else None
    if index is None and any(e.key is not None for e in entries):
        index = read_stats(zk, {e.status.node for e in entries if e.status is not None})
    if not (whole and cached_stats is not None):
        return _join([_item_json(zk, e, index) for e in entries])
    tree = _tree(zk, schema.VM_STATS)
    with memo.render_lock:         # one renderer at a time; the others take what it made
        if memo.full_json is not None and memo.full_json[0] == generations:
            return memo.full_json[1]
        if tree is None:
            return _join([_item_json(zk, e, index) for e in entries])
        with memo.stats_lock:      # the index and the VMs marked dirty for it, taken together
            stats_generation, index = _stats_index(memo, tree)
            dirty, memo.stats_dirty = memo.stats_dirty, set()
        return _render_whole(zk, memo, entries, index, (generations[0], stats_generation), dirty)


def _render_whole(zk: ZK, memo: _Memo, entries: Sequence[VMEntry], index: StatsIndex,
                  generations: tuple[int, int], dirty: set[str]) -> bytes:
    parts = memo.parts
    if parts is not None and parts[0] == generations[0]:
        items, places = parts[1], parts[2]
        for uuid in dirty:                      # only the VMs whose stats changed
            place = places.get(uuid)
            if place is not None:
                items[place] = _item_json(zk, entries[place], index)
    else:
        items = [_item_json(zk, e, index) for e in entries]
        memo.parts = (generations[0], items, {e.record.uuid: i for i, e in enumerate(entries)})
    data = _join(items)
    memo.full_json = (generations, data)
    return data


def _join(items: list[bytes]) -> bytes:
    """[item,item,...] in one copy (a 10,000-VM list is ~30 MiB: each extra copy costs)."""
    if not items:
        return b"[]"
    if len(items) == 1:
        return b"[" + items[0] + b"]"
    return b",".join([b"[" + items[0], *items[1:-1], items[-1] + b"]"])


def resolve_uuid(zk: ZK, vm: str) -> str:
    """The UUID of the VM named or identified (exactly) by vm; NotFound otherwise."""
    as_uuid = canonical_uuid(vm)
    if as_uuid is not None and zk.exists(schema.vm(as_uuid)):
        return as_uuid
    if VM_NAME_RE.match(vm or ""):
        found = zk.get(schema.vm_name(vm), None)
        if isinstance(found, str) and found:
            return found
    raise NotFound("VM not found.")


def get_vm(zk: ZK, vm: str) -> VMRecord:
    """The VM named or identified by vm (exact match, fresh from the server)."""
    uuid = resolve_uuid(zk, vm)
    data = zk.get(schema.vm(uuid), None)
    if not isinstance(data, dict):
        raise NotFound("VM not found.")
    return VMRecord.model_validate(data)


def get_status(zk: ZK, uuid: str) -> VMStatus | None:
    data = zk.get(schema.vm_status(uuid), None)
    return VMStatus.model_validate(data) if isinstance(data, dict) else None


def get_entry(zk: ZK, vm: str) -> VMEntry:
    """One VM, its status and the record's version, fresh from the server in two pipelined round
    trips at most."""
    as_uuid = canonical_uuid(vm)
    uuid = as_uuid
    if uuid is None:
        if not VM_NAME_RE.match(vm or ""):
            raise NotFound("VM not found.")
        found = zk.get(schema.vm_name(vm), None)
        if not isinstance(found, str) or not found:
            raise NotFound("VM not found.")
        uuid = found
    docs = zk.get_many_docs([schema.vm(uuid), schema.vm_status(uuid)])
    doc = docs.get(schema.vm(uuid))
    if doc is None or not isinstance(doc.data, dict):
        if as_uuid is not None and VM_NAME_RE.match(vm):
            named = zk.get(schema.vm_name(vm), None)       # a VM may be named like a UUID
            if isinstance(named, str) and named and named != uuid:
                return get_entry(zk, named)
        raise NotFound("VM not found.")
    sdoc = docs.get(schema.vm_status(uuid))
    status = VMStatus.model_validate(sdoc.data) if sdoc is not None and isinstance(sdoc.data, dict) else None
    index = read_stats(zk, [status.node] if status is not None else [])
    return VMEntry(VMRecord.model_validate(doc.data), status, stats=_stats_of(index, status, uuid)[1],
                   version=doc.version)


def is_running(status: VMStatus | None) -> bool:
    return bool(status and status.running)




def uuid_names(zk: ZK) -> dict[str, str]:
    """{uuid: name} of every VM (for showing node running lists by name)."""
    return {e.record.uuid: e.record.name for e in load_entries(zk)}


def allocation(entries: Iterable[VMEntry]) -> dict[str, dict[str, int]]:
    """Per node: VMs assigned, vCPUs and MiB allocated (running VMs) and provisioned (all VMs)."""
    out: dict[str, dict[str, int]] = {}
    for entry in entries:
        summary = record_summary(entry.record)
        figures = out.setdefault(entry.record.node, {"domains": 0, "vcpu_allocated": 0,
                                                     "memory_allocated": 0, "memory_provisioned": 0})
        figures["domains"] += 1
        figures["memory_provisioned"] += int(summary.get("memory", 0) or 0)
        if entry.record.state in VM_ACTIVE_STATES:
            figures["vcpu_allocated"] += int(summary.get("vcpu", 0) or 0)
            figures["memory_allocated"] += int(summary.get("memory", 0) or 0)
    return out
