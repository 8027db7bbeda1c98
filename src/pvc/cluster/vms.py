"""VM operations on desired state (pvc-facts §4.4), shared by the API, workers and tests.

The API only writes a VM's desired state into `/vms/<uuid>` (DESIGN D2); the node named in
`node` carries it out and reports what it sees in `/vms/<uuid>/status`. Each operation is split
into a pure decision (`plan_*`, `check_*`, `vm_view`: unit-tested without ZooKeeper) and the
ZooKeeper write, which is a compare-and-set (`zk.update`) or one multi-op transaction, so two
concurrent writers can never both win and bad input changes nothing.

Fixed upstream defects (pvc-facts §13): a comma-separated `limit` on define is stored as a list
(§13.5); the state and meta GETs cannot fail (§13.4); rename updates the name index and keeps
the volume list consistent (§13.8).

Operations that also change RBD volumes (remove with disks, rename with volumes) are in
pvc.cluster.vm_storage, which joins this module and pvc.cluster.storage.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid as uuidlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError
from lxml import etree

from pvc.cluster import placement
from pvc.cluster import tasks as tasks_mod
from pvc.cluster.common import limit_matcher
from pvc.cluster.nodes import get_node, load_nodes
from pvc.core import domainxml, schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import NodeRecord, Tag, TaskRecord, VMRecord, VMStatus
from pvc.core.vocabulary import MIGRATION_METHODS
from pvc.core.zk import ZK, decode, encode

# States a VM list may be filtered by (upstream's list, plus the states our nodes write).
LIST_STATES: tuple[str, ...] = (
    "start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "migrate-live",
    "unmigrate", "provision", "mirror",
)
STOPPED_STATES = ("stop", "disable", "fail", "mirror")
RENAME_STATES = ("stop", "disable", "mirror")
NODE_ACTIONS = ("migrate", "unmigrate", "move")

# Bounds on waits that upstream leaves unbounded: a node that never acts must not hang a request.
WAIT_TIMEOUT = 600.0
STOP_TIMEOUT = 60.0
POLL_INTERVAL = 0.2

VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:@-]{0,254}$")
TAG_RE = re.compile(r"^[^\x00-\x1f\x7f/]{1,128}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
DEVICE_TAGS = ("disk", "interface", "hostdev", "controller", "filesystem", "input", "sound", "video",
               "watchdog", "rng", "redirdev", "smartcard", "serial", "channel", "console", "memballoon",
               "tpm", "shmem", "memory", "vsock", "graphics")


# -- validation of inputs (pure) ----------------------------------------------------------------

def check_vm_name(name: str, field: str = "name") -> str:
    """VM names become ZooKeeper path components and CLI arguments: keep them plain."""
    if not VM_NAME_RE.match(name or ""):
        raise InvalidInput(
            f"{field}: '{name}' is not a valid VM name (start with a letter or digit; then letters, "
            f"digits and . _ + : @ -; at most 255 characters)"
        )
    return name


def canonical_uuid(value: str) -> str | None:
    """The lower-case dashed form of value if it is a UUID, else None."""
    if not UUID_RE.match(value or ""):
        return None
    return str(uuidlib.UUID(hex=value.replace("-", "")))


def parse_limit(limit: str | Sequence[str] | None, field: str = "limit") -> list[str]:
    """A node limit as a list, from a list (repeated keys) or one comma-separated string (§13.5)."""
    if limit is None:
        return []
    items = [limit] if isinstance(limit, str) else list(limit)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", part):
                raise InvalidInput(f"{field}: '{part}' is not a valid node name")
            if part not in out:
                out.append(part)
    return out


def check_method(method: str | None, field: str = "migration_method") -> str:
    value = (method or "").strip().lower()
    if value not in MIGRATION_METHODS:
        raise InvalidInput(f"{field}: '{method}' is not one of {', '.join(MIGRATION_METHODS)}")
    return value


def check_downtime(value: Any, field: str = "migration_max_downtime") -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field}: '{value}' is not an integer") from None
    if number <= 0:
        raise InvalidInput(f"{field}: must be a positive number of milliseconds (got {value})")
    return number


def check_tag(tag: str, field: str = "tag") -> str:
    if not TAG_RE.match(tag or ""):
        raise InvalidInput(f"{field}: '{tag}' is not a valid tag (1-128 characters, no '/' or control "
                           f"characters)")
    return tag


def make_tags(user_tags: Iterable[str] = (), protected_tags: Iterable[str] = ()) -> list[Tag]:
    tags: dict[str, Tag] = {}
    for name in user_tags:
        tags[check_tag(name, "user_tags")] = Tag(name=name, type="user", protected=False)
    for name in protected_tags:
        tags[check_tag(name, "protected_tags")] = Tag(name=name, type="user", protected=True)
    return list(tags.values())


def parse_xml(xml: str | bytes | None, field: str = "xml") -> domainxml.Domain:
    if xml is None or (isinstance(xml, str | bytes) and not xml.strip()):
        raise InvalidInput(f"{field}: required (the libvirt XML of the VM)")
    try:
        return domainxml.parse(xml)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc.message}") from None


def check_device_xml(xml: str | None) -> str:
    """Well-formed XML of one libvirt device; the node's libvirt validates the rest."""
    if not xml or not xml.strip():
        raise InvalidInput("xml: required (the libvirt XML of the device)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(xml.strip().encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"xml: not well-formed XML: {exc}") from None
    if root.tag not in DEVICE_TAGS:
        raise InvalidInput(f"xml: <{root.tag}> is not a libvirt device element")
    return xml


# -- capacity and placement (pure) ----------------------------------------------------------------

def demand_of(domain: domainxml.Domain) -> placement.Demand:
    return placement.Demand(memory_mib=domain.memory_mib, vcpus=domain.vcpus)


def check_fits(node: NodeRecord, domain: domainxml.Domain) -> None:
    why = placement.fits(node, demand_of(domain))
    if why:
        raise InvalidInput(f"VM {domain.name}: {why}")


def choose_node(nodes: Sequence[NodeRecord], domain: domainxml.Domain, selector: str | None,
                default_selector: str, limit: Sequence[str]) -> NodeRecord:
    """The node a new VM goes to when none is given; an error says why none qualifies."""
    demand = demand_of(domain)
    target = placement.find_target(nodes, selector, default_selector, None, limit, demand)
    if target is not None:
        return target
    eligible = placement.candidates(nodes, None, limit)
    if not eligible:
        where = f" within its node limit ({','.join(limit)})" if limit else ""
        raise Conflict(f"No node can take VM {domain.name}: no node{where} is in run state and ready.")
    reasons = "; ".join(placement.fits(n, demand) or "" for n in eligible)
    raise InvalidInput(f"VM {domain.name} does not fit on any eligible node: {reasons}")


# -- state transitions (pure) ---------------------------------------------------------------------

@dataclass(frozen=True)
class StatePlan:
    """What set_state writes: `first` now; with `then`, wait until the VM is down, then `then`."""

    first: str | None
    then: str | None = None
    message: str = ""
    wait_while: str | None = None   # with wait=true, the transitional state to wait out


def plan_state(name: str, current: str, target: str, force: bool = False) -> StatePlan:
    """PVC's rules for an API state change (§4.4); raises Conflict when not allowed now."""
    if target not in ("start", "shutdown", "stop", "restart", "disable"):
        raise InvalidInput(f"state: '{target}' is not one of start, shutdown, stop, restart, disable")
    if current == "mirror" and target in ("start", "stop", "disable") and not force:
        raise Conflict(f'VM "{name}" is a snapshot mirror; use force to change its state.')
    if target == "start":
        return StatePlan("start", message=f'Starting VM "{name}".')
    if target in ("restart", "shutdown"):
        if current != "start":
            raise Conflict(f'VM "{name}" is not in "start" state!')
        if target == "restart":
            return StatePlan("restart", message=f'Restarting VM "{name}".', wait_while="restart")
        return StatePlan("shutdown", message=f'Shutting down VM "{name}".', wait_while="shutdown")
    if target == "stop":
        return StatePlan("stop", message=f'Forcibly stopping VM "{name}".')
    # disable
    if current in ("start", "restart", "shutdown", "migrate", "migrate-live"):
        first = "stop" if force else "shutdown"
        return StatePlan(first, then="disable", message=f'Disabled VM "{name}".')
    if current == "disable":
        return StatePlan(None, message=f'VM "{name}" is already disabled.')
    return StatePlan("disable", message=f'Disabled VM "{name}".')


def wait_message(plan: StatePlan, name: str) -> str:
    return {"restart": f'Restarted VM "{name}".', "shutdown": f'Shut down VM "{name}".'}.get(
        plan.wait_while or "", plan.message)


# -- node changes (pure) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeChange:
    """The new state/node/last_node of a migrate, move or unmigrate (None: leave as is)."""

    state: str
    node: str
    last_node: str
    message: str
    wait_while: str | None          # the transitional state `wait` waits out (None: nothing to wait)


def plan_node_change(record: VMRecord, action: str, nodes: Sequence[NodeRecord], target: str | None = None,
                     force: bool = False, force_live: bool = False,
                     default_selector: str = "mem") -> NodeChange:
    """PVC's migrate/move/unmigrate rules (§4.4), decided from the VM and the node list alone."""
    name = record.name
    if action not in NODE_ACTIONS:
        raise InvalidInput(f"action: '{action}' is not one of {', '.join(NODE_ACTIONS)}")
    moving_live = record.state == "start"
    new_state = ("migrate-live" if force_live else "migrate") if moving_live else record.state
    wait_while = new_state if moving_live else None
    if action == "unmigrate":
        if not record.last_node:
            raise Conflict(f'VM "{name}" has not been previously migrated.')
        return NodeChange(new_state, record.last_node, "",
                          f'Unmigrating VM "{name}" back to node "{record.last_node}".', wait_while)
    if action == "migrate" and record.last_node and not force:
        raise Conflict(f'VM "{name}" has been previously migrated.')
    if target:
        known = {n.name: n for n in nodes}
        if target not in known:
            raise NotFound(f"Node not found: {target}")
        if record.node_limit and target not in record.node_limit:
            raise Conflict(f'Specified node "{target}" is not in the allowed list of nodes for VM "{name}".')
        if target == record.node:
            if action == "move" and record.last_node:
                return NodeChange(record.state, record.node, "",
                                  f'Making temporary migration permanent for VM "{name}".', None)
            raise Conflict(f'VM "{name}" is already running on node "{record.node}".')
        chosen = target
    else:
        found = placement.find_target(nodes, record.node_selector, default_selector, record.node,
                                      record.node_limit)
        if found is None:
            raise Conflict(f'Could not find a valid migration target for VM "{name}".')
        chosen = found.name
    if action == "move":
        return NodeChange(new_state, chosen, "", f'Permanently migrating VM "{name}" to node "{chosen}".',
                          wait_while)
    # A forced re-migration keeps the original origin, so unmigrate still goes home.
    origin = record.last_node if record.last_node else record.node
    return NodeChange(new_state, chosen, origin, f'Migrating VM "{name}" to node "{chosen}".', wait_while)


def node_change_done_message(action: str, name: str, node: str) -> str:
    return {"migrate": f'Migrated VM "{name}" to node "{node}".',
            "move": f'Permanently migrated VM "{name}" to node "{node}".',
            "unmigrate": f'Unmigrated VM "{name}" back to node "{node}".'}[action]


# -- list filters (pure) ------------------------------------------------------------------------------

def vm_filter(limit: str | None = None, node: str | None = None, state: str | None = None,
              tag: str | None = None, negate: bool = False) -> Callable[[VMRecord], bool]:
    """PVC's list filter: fuzzy name regex or exact UUID; negate inverts node/state/tag (§13.14)."""
    matcher = limit_matcher(limit)
    limit_uuid = canonical_uuid(limit) if limit else None

    def keep(record: VMRecord) -> bool:
        if limit:
            by_uuid = limit_uuid is not None and record.uuid == limit_uuid
            if not by_uuid and not (matcher is not None and matcher.fullmatch(record.name)):
                return False
        if node is not None and (record.node == node) == negate:
            return False
        if state is not None and (record.state == state) == negate:
            return False
        return tag is None or any(t.name == tag for t in record.tags) != negate

    return keep


# -- the VM item (pure) --------------------------------------------------------------------------

_SUMMARIES: dict[str, dict[str, Any]] = {}
_SUMMARY_LOCK = threading.Lock()
MAX_SUMMARIES = 50_000


def domain_summary(xml: str) -> dict[str, Any]:
    """summary(parse(xml)), memoised on the XML text: a list re-renders only changed VMs."""
    found = _SUMMARIES.get(xml)
    if found is not None:
        return found
    try:
        found = domainxml.summary(domainxml.parse(xml))
    except InvalidInput:
        found = {}
    with _SUMMARY_LOCK:
        if len(_SUMMARIES) >= MAX_SUMMARIES:
            _SUMMARIES.clear()
        _SUMMARIES[xml] = found
    return found


NET_COUNTERS = ("rd_bytes", "rd_packets", "rd_errors", "rd_drops",
                "wr_bytes", "wr_packets", "wr_errors", "wr_drops")
DISK_COUNTERS = ("rd_req", "rd_bytes", "wr_req", "wr_bytes")


def _find_stats(items: Any, *keys: tuple[str, Any]) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    for key, value in keys:
        if value is None:
            continue
        for item in items:
            if isinstance(item, dict) and item.get(key) == value:
                return item
    return {}


def vm_view(record: VMRecord, status: VMStatus | None = None,
            summary: dict[str, Any] | None = None, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The VM item of API v1 (pvc-facts §8.5): desired state, XML facts and the node's stats.

    stats come from the node's stats shards (schema.vm_stats); without them, from a status
    document written before schema 5.
    """
    status = status or VMStatus()
    summary = summary if summary is not None else domain_summary(record.xml)
    stats = stats if stats is not None else (status.stats or {})
    networks = []
    for net in summary.get("networks", []):
        found = _find_stats(stats.get("net_stats"), ("mac", net.get("mac")), ("bridge", net.get("source")))
        networks.append({**net, **{k: int(found.get(k, 0) or 0) for k in NET_COUNTERS}})
    disks = []
    for disk in summary.get("disks", []):
        found = _find_stats(stats.get("disk_stats"), ("name", disk.get("name")), ("dev", disk.get("dev")))
        disks.append({**disk, **{k: int(found.get(k, 0) or 0) for k in DISK_COUNTERS}})
    vnc = summary.get("vnc") or {"listen": "None", "port": "None"}
    if status.vnc and ":" in status.vnc:
        listen, _, port = status.vnc.rpartition(":")
        vnc = {"listen": listen, "port": port}
    return {
        "name": record.name,
        "uuid": record.uuid,
        "state": record.state,
        "node": record.node,
        "last_node": record.last_node,
        "migrated": f"from {record.last_node}" if record.last_node else "no",
        "failed_reason": status.failed_reason,
        "node_limit": list(record.node_limit) or None,
        "node_selector": record.node_selector or "none",
        "node_autostart": record.node_autostart,
        "migration_method": record.migration_method,
        "migration_max_downtime": record.migration_max_downtime,
        "tags": [t.doc() for t in record.tags],
        "snapshots": [],
        "description": summary.get("description", record.description or "N/A"),
        "profile": record.profile,
        "memory": summary.get("memory", 0),
        "memory_stats": stats.get("mem_stats") or {},
        "vcpu": summary.get("vcpu", 0),
        "vcpu_topology": summary.get("vcpu_topology", "N/A"),
        "vcpu_stats": stats.get("cpu_stats") or {},
        "networks": networks,
        "type": summary.get("type"),
        "arch": summary.get("arch"),
        "machine": summary.get("machine"),
        "console": summary.get("console", "none"),
        "vnc": vnc,
        "emulator": summary.get("emulator"),
        "features": summary.get("features", []),
        "disks": disks,
        "controllers": summary.get("controllers", []),
        "xml": record.xml.replace('"', "'"),
        "running": status.running,
        "last_migration": status.last_migration,
    }


# -- reading ------------------------------------------------------------------------------------------

@dataclass
class VMEntry:
    """One VM as read: its record, the node's status, and a key that changes when either does."""

    record: VMRecord
    status: VMStatus | None
    key: tuple[int, int] | None = None   # (record mzxid, status mzxid) when read from the cache
    stats: dict[str, Any] | None = None  # from the stats shards, when read from the server


# {node: {uuid: (mzxid of the shard, stats)}}: every VM's stats as its nodes last wrote them
StatsIndex = dict[str, dict[str, tuple[int, dict[str, Any]]]]


class _Memo:
    """Per-session memo of parsed documents and rendered items, keyed on znode mzxid.

    `generation` counts the /vms TreeCache's change events (a listener registered on first use);
    while it stands still, the last sorted snapshot and its encoded list are served as they are.
    """

    def __init__(self) -> None:
        self.records: dict[str, tuple[int, VMRecord | None]] = {}
        self.statuses: dict[str, tuple[int, VMStatus | None]] = {}
        self.entries: dict[str, VMEntry] = {}
        self.items: dict[str, tuple[tuple[int, int, int], bytes]] = {}
        self.generation = 0
        self.listening: Any = None
        self.snapshot: tuple[int, list[VMEntry]] | None = None
        self.full_json: tuple[tuple[int, int], bytes] | None = None
        # the same for the /vmstats TreeCache
        self.stats_generation = 0
        self.stats_listening: Any = None
        self.shards: dict[str, tuple[int, dict[str, Any]]] = {}   # path -> (mzxid, decoded shard)
        self.stats_index: tuple[int, StatsIndex] | None = None

    def changed(self, _event: Any = None) -> None:
        self.generation += 1

    def stats_changed(self, _event: Any = None) -> None:
        self.stats_generation += 1


_MEMOS: weakref.WeakKeyDictionary[ZK, _Memo] = weakref.WeakKeyDictionary()


def _memo(zk: ZK) -> _Memo:
    memo = _MEMOS.get(zk)
    if memo is None:
        memo = _MEMOS.setdefault(zk, _Memo())
    return memo


def _tree(zk: ZK, path: str = schema.VMS) -> Any:
    """The API's live TreeCache of /vms (zk.cache(schema.VMS)) or /vmstats, or None.

    ZK.cached_children_docs only serves direct children; the VM list also needs each VM's
    status child (and each node's stats shards), which the same TreeCache holds, so it is read
    here directly.
    """
    return zk.live_cache(path)


def _parse_record(raw: bytes | None) -> VMRecord | None:
    if not raw:
        return None
    try:
        return VMRecord.model_validate_json(raw)
    except ValueError:
        return None


def _parse_status(raw: bytes | None) -> VMStatus | None:
    if not raw:
        return None
    try:
        return VMStatus.model_validate_json(raw)
    except ValueError:
        return None


def _cached_entries(zk: ZK, tree: Any) -> list[VMEntry] | None:
    """Entries from the TreeCache's nodes, walked directly.

    TreeCache.get_data() splits the path on every call, which was half the cost of a 10,000-VM
    list; its node objects (kazoo 2.x TreeNode: `_children`, `_data`) are read directly instead.
    `list(dict.items())` copies atomically under the GIL while the cache thread updates it.
    """
    root = getattr(tree, "_root", None)
    children = getattr(root, "_children", None)
    if not isinstance(children, dict):
        return None
    memo = _memo(zk)
    out: list[VMEntry] = []
    for uuid, node in list(children.items()):
        data = node._data
        if data is None:
            continue
        mzxid = data.stat.mzxid
        known = memo.records.get(uuid)
        if known is None or known[0] != mzxid:
            known = (mzxid, _parse_record(data.data))
            memo.records[uuid] = known
        record = known[1]
        if record is None:
            continue
        status: VMStatus | None = None
        smzxid = 0
        snode = node._children.get("status")
        sdata = snode._data if snode is not None else None
        if sdata is not None:
            smzxid = sdata.stat.mzxid
            sknown = memo.statuses.get(uuid)
            if sknown is None or sknown[0] != smzxid:
                sknown = (smzxid, _parse_status(sdata.data))
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
    return out


def _sorted_snapshot(zk: ZK) -> list[VMEntry] | None:
    """Every VM sorted by name from the watch cache; the same list object while nothing changed."""
    tree = _tree(zk)
    if tree is None:
        return None
    memo = _memo(zk)
    if memo.listening is not tree:
        tree.listen(memo.changed)
        memo.listening = tree
        memo.changed()
    generation = memo.generation   # read before walking: a change during the walk bumps it again
    if memo.snapshot is not None and memo.snapshot[0] == generation:
        return memo.snapshot[1]
    entries = _cached_entries(zk, tree)
    if entries is None:
        return None
    entries.sort(key=lambda e: e.record.name)
    memo.snapshot = (generation, entries)
    return entries


def _cached_stats(zk: ZK) -> tuple[int, StatsIndex] | None:
    """(generation, index) from the /vmstats watch cache; the same index while nothing changed."""
    tree = _tree(zk, schema.VM_STATS)
    if tree is None:
        return None
    memo = _memo(zk)
    if memo.stats_listening is not tree:
        tree.listen(memo.stats_changed)
        memo.stats_listening = tree
        memo.stats_changed()
    generation = memo.stats_generation
    if memo.stats_index is not None and memo.stats_index[0] == generation:
        return memo.stats_index
    root = getattr(tree, "_root", None)
    nodes = getattr(root, "_children", None)
    if not isinstance(nodes, dict):
        return None
    index: StatsIndex = {}
    seen = set()
    for node_name, node in list(nodes.items()):
        per_node = index.setdefault(node_name, {})
        for shard_name, shard in list(node._children.items()):
            data = shard._data
            if data is None:
                continue
            path = f"{node_name}/{shard_name}"
            seen.add(path)
            known = memo.shards.get(path)
            if known is None or known[0] != data.stat.mzxid:
                doc = decode(data.data)
                known = (data.stat.mzxid, doc if isinstance(doc, dict) else {})
                memo.shards[path] = known
            mzxid, doc = known
            for uuid, stats in doc.items():
                if isinstance(stats, dict):
                    per_node[uuid] = (mzxid, stats)
    for gone in set(memo.shards) - seen:
        memo.shards.pop(gone, None)
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


def load_entries(zk: ZK) -> list[VMEntry]:
    """Every VM with its status: from the API's watch cache when live, else pipelined reads.

    Cached entries carry no stats (item_json looks them up in the /vmstats cache, so a stats
    change re-renders the item without touching the sorted snapshot); read entries do.
    """
    cached = _sorted_snapshot(zk)
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
    if state is not None and state not in LIST_STATES:
        raise InvalidInput(f"state: '{state}' is not one of {', '.join(LIST_STATES)}")
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


def item_json(zk: ZK, entry: VMEntry, index: StatsIndex | None = None) -> bytes:
    """The encoded VM item, re-rendered only when the VM, its status or its stats shard changed.

    Cached entries (entry.key set) take their stats from index (or the stats cache); read ones
    carry them in entry.stats.
    """
    if entry.key is None:
        item = vm_view(entry.record, entry.status, stats=entry.stats)
        return json.dumps(item, separators=(",", ":")).encode()
    if index is None:
        index = read_stats(zk, [entry.status.node] if entry.status is not None else [])
    mzxid, stats = _stats_of(index, entry.status, entry.record.uuid)
    key = (*entry.key, mzxid)
    memo = _memo(zk)
    known = memo.items.get(entry.record.uuid)
    if known is not None and known[0] == key:
        return known[1]
    data = json.dumps(vm_view(entry.record, entry.status, stats=stats), separators=(",", ":")).encode()
    memo.items[entry.record.uuid] = (key, data)
    return data


def list_json(zk: ZK, entries: Sequence[VMEntry]) -> bytes:
    """The encoded list; the whole unfiltered list is kept per generation of both caches."""
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
    data = b"[" + b",".join(item_json(zk, e, index) for e in entries) + b"]"
    if whole and cached_stats is not None:
        memo.full_json = (generations, data)
    return data


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
    """One VM and its status, fresh from the server in two pipelined round trips at most."""
    as_uuid = canonical_uuid(vm)
    uuid = as_uuid
    if uuid is None:
        if not VM_NAME_RE.match(vm or ""):
            raise NotFound("VM not found.")
        found = zk.get(schema.vm_name(vm), None)
        if not isinstance(found, str) or not found:
            raise NotFound("VM not found.")
        uuid = found
    docs = zk.get_many([schema.vm(uuid), schema.vm_status(uuid)])
    data = docs.get(schema.vm(uuid))
    if not isinstance(data, dict):
        if as_uuid is not None and VM_NAME_RE.match(vm):
            return VMEntry(get_vm(zk, vm), None)  # a VM may be named like a UUID
        raise NotFound("VM not found.")
    sdata = docs.get(schema.vm_status(uuid))
    status = VMStatus.model_validate(sdata) if isinstance(sdata, dict) else None
    index = read_stats(zk, [status.node] if status is not None else [])
    return VMEntry(VMRecord.model_validate(data), status, stats=_stats_of(index, status, uuid)[1])


def is_running(status: VMStatus | None) -> bool:
    return bool(status and status.running)


# -- writing ----------------------------------------------------------------------------------------

def _update(zk: ZK, record: VMRecord, fn: Callable[[VMRecord], VMRecord]) -> VMRecord:
    """CAS on the VM document; fn decides again on every attempt from the fresh record."""
    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            raise NotFound("VM not found.")
        return fn(VMRecord.model_validate(doc)).doc()

    try:
        return VMRecord.model_validate(zk.update(schema.vm(record.uuid), change))
    except NoNodeError:
        raise NotFound("VM not found.") from None


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def define(zk: ZK, xml: str, node: str | None = None, limit: str | Sequence[str] | None = None,
           selector: str | None = None, autostart: bool = False, migration_method: str = "live",
           migration_max_downtime: int = 300, user_tags: Iterable[str] = (),
           protected_tags: Iterable[str] = (), profile: str = "",
           initial_state: str = "stop") -> VMRecord:
    """Add a VM; its name and UUID are claimed in one transaction, so only one define wins."""
    domain = parse_xml(xml)
    check_vm_name(domain.name, "xml: <name>")
    node_limit = parse_limit(limit)
    chosen_selector = placement.check_selector(selector) or "none"
    method = check_method(migration_method)
    downtime = check_downtime(migration_max_downtime)
    tags = make_tags(user_tags, protected_tags)
    if initial_state not in ("stop", "provision", "start", "disable"):
        raise InvalidInput(f"initial_state: '{initial_state}' is not one of stop, provision, start, disable")
    if zk.exists(schema.vm_name(domain.name)):
        raise Conflict(f'A VM named "{domain.name}" already exists in the cluster.')
    if zk.exists(schema.vm(domain.uuid)):
        raise Conflict(f'A VM with UUID "{domain.uuid}" already exists in the cluster.')
    if node:
        target = get_node(zk, node)
        if node_limit and target.name not in node_limit:
            raise InvalidInput(f"node: '{node}' is not in the VM's node limit ({','.join(node_limit)})")
        check_fits(target, domain)
    else:
        from pvc.cluster.state import get_cluster  # state imports nodes; keep the import graph flat
        default = get_cluster(zk).migration_target_selector
        target = choose_node(load_nodes(zk), domain, selector, default, node_limit)
    record = VMRecord(
        uuid=domain.uuid, name=domain.name, xml=xml if isinstance(xml, str) else xml.decode(),
        state=initial_state, node=target.name, node_limit=node_limit, node_selector=chosen_selector,
        node_autostart=autostart, migration_method=method, migration_max_downtime=downtime,
        profile=profile or "", description=domain.description or "", tags=tags,
        rbd_volumes=domain.rbd_volumes,
    )
    _create(zk, record)
    return record


def _create(zk: ZK, record: VMRecord) -> None:
    doc = encode(record.doc())

    def once() -> list[Any]:
        tx = zk.transaction()
        tx.create(schema.vm(record.uuid), doc)
        tx.create(schema.vm_name(record.name), encode(record.uuid))
        return list(tx.commit())

    results = zk.retry(once)
    errors = [r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"]
    if not errors:
        return
    # A retry after a lost reply finds its own first attempt: that is success, not a duplicate.
    raw = zk.get_raw(schema.vm(record.uuid))
    if raw is not None and raw[0] == doc and zk.get(schema.vm_name(record.name), None) == record.uuid:
        return
    if isinstance(results[0], NodeExistsError):
        raise Conflict(f'A VM with UUID "{record.uuid}" already exists in the cluster.')
    if isinstance(results[1], NodeExistsError):
        raise Conflict(f'A VM named "{record.name}" already exists in the cluster.')
    raise errors[0]


def modify(zk: ZK, vm: str, xml: str, restart: bool = False) -> str:
    """Replace a VM's XML; a new name in it renames the VM (index swapped atomically)."""
    record = get_vm(zk, vm)
    domain = parse_xml(xml)
    check_vm_name(domain.name, "xml: <name>")
    if domain.uuid != record.uuid:
        raise InvalidInput(f"xml: the UUID {domain.uuid} differs from VM {record.name}'s ({record.uuid}); "
                           f"a VM's UUID cannot change")
    try:
        node = get_node(zk, record.node) if record.node else None
    except NotFound:
        node = None
    if node is not None:
        check_fits(node, domain)
    text = xml if isinstance(xml, str) else xml.decode()

    def apply(current: VMRecord) -> VMRecord:
        return current.model_copy(update={
            "name": domain.name, "xml": text, "rbd_volumes": domain.rbd_volumes,
            "description": domain.description or "",
        })

    if domain.name != record.name:
        if zk.exists(schema.vm_name(domain.name)):
            raise Conflict(f'A VM named "{domain.name}" already exists in the cluster.')
        _swap_name(zk, record.uuid, apply)
    else:
        _update(zk, record, apply)
    message = f'Successfully modified configuration of VM "{record.name}".'
    if restart:
        updated = get_vm(zk, record.uuid)
        if updated.state == "start":
            _update(zk, updated,
                    lambda r: r.model_copy(update={"state": "restart"}) if r.state == "start" else r)
            message += " Restarting it to apply the change."
        else:
            message += f" It is in {updated.state} state, so there is nothing to restart."
    return message


def _swap_name(zk: ZK, uuid: str, fn: Callable[[VMRecord], VMRecord], attempts: int = 20) -> VMRecord:
    """Write a renamed record and move its name index entry in one transaction (CAS-checked)."""
    for _ in range(attempts):
        found = zk.get_doc(schema.vm(uuid))
        if found is None or not isinstance(found.data, dict):
            raise NotFound("VM not found.")
        old = VMRecord.model_validate(found.data)
        new = fn(old)
        check_vm_name(new.name)

        def once(old: VMRecord = old, new: VMRecord = new, version: int = found.version) -> list[Any]:
            tx = zk.transaction()
            tx.set_data(schema.vm(uuid), encode(new.doc()), version=version)
            tx.delete(schema.vm_name(old.name))
            tx.create(schema.vm_name(new.name), encode(uuid))
            return list(tx.commit())

        results = zk.retry(once)
        if not any(isinstance(r, Exception) for r in results):
            zk.delete(schema.vm_console(uuid))
            return new
        if isinstance(results[0], BadVersionError):
            continue
        if isinstance(results[2], NodeExistsError):
            raise Conflict(f'A VM named "{new.name}" already exists in the cluster.')
        if isinstance(results[1], NoNodeError):
            # The old index entry is missing (an interrupted older write); recreate just the new one.
            zk.put(schema.vm_name(old.name), uuid)
            continue
        raise next(r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError")
    raise Conflict(f"VM {uuid}: too many concurrent updates, try again")


def check_rename(zk: ZK, record: VMRecord, new_name: str) -> None:
    check_vm_name(new_name, "new_name")
    if record.state not in RENAME_STATES:
        raise Conflict(f'VM "{record.name}" is not in stopped state; VMs cannot be renamed while running.')
    if new_name == record.name:
        raise InvalidInput(f"new_name: VM is already named '{new_name}'")
    if zk.exists(schema.vm_name(new_name)):
        raise Conflict(f'A VM named "{new_name}" already exists in the cluster.')


def rename(zk: ZK, vm: str, new_name: str, volume_renames: dict[str, str] | None = None) -> str:
    """Rename a stopped VM; the console log path follows the new name.

    Disks whose volumes are named `<old>_*` follow the new name in the XML only where
    volume_renames ("pool/old" -> "pool/new") says their RBD image was renamed too
    (pvc.cluster.vm_storage.rename does both); the other disks stay as they are.
    """
    renames = volume_renames or {}
    record = get_vm(zk, vm)
    check_rename(zk, record, new_name)

    def apply(current: VMRecord) -> VMRecord:
        if current.state not in RENAME_STATES:
            raise Conflict(f'VM "{current.name}" is not in stopped state; VMs cannot be renamed while '
                           f"running.")
        xml = domainxml.rename(current.xml, new_name)
        old_domain = domainxml.parse(current.xml)
        new_domain = domainxml.parse(xml)
        if new_domain.rbd_volumes != old_domain.rbd_volumes:
            disks = tuple(new if _renamed(old, new, renames) else old
                          for old, new in zip(old_domain.disks, new_domain.disks, strict=True))
            xml = domainxml.render(dataclasses.replace(new_domain, disks=disks))
        return current.model_copy(update={"name": new_name, "xml": xml,
                                          "rbd_volumes": domainxml.parse(xml).rbd_volumes})

    _swap_name(zk, record.uuid, apply)
    return f'Successfully renamed VM "{record.name}" to "{new_name}".'


def _renamed(old: domainxml.Disk, new: domainxml.Disk, renames: dict[str, str]) -> bool:
    if old.source is None or new.source is None or old.source.name == new.source.name:
        return True
    return renames.get(str(old.source.name)) == new.source.name


def _stop_and_wait(zk: ZK, record: VMRecord, timeout: float) -> VMRecord:
    """Make sure the VM is not running: write stop if it should run, wait for its node."""
    if record.state not in STOPPED_STATES:
        record = _update(zk, record, lambda r: r if r.state in STOPPED_STATES else
                         r.model_copy(update={"state": "stop"}))
    if not _wait(lambda: not is_running(get_status(zk, record.uuid)), timeout):
        raise Conflict(f'VM "{record.name}" did not stop within {int(timeout)} s (node {record.node}); '
                       f"it is left in stop state and was not removed.")
    return record


def undefine(zk: ZK, vm: str, timeout: float = STOP_TIMEOUT) -> str:
    """Stop the VM (bounded wait for its node), then delete it and its name in one transaction."""
    record = _stop_and_wait(zk, get_vm(zk, vm), timeout)
    _delete(zk, record.uuid)
    return f'Undefined VM "{record.name}" from the cluster.'


def _subtree(zk: ZK, path: str) -> list[str]:
    """path and every znode below it, deepest first (the order a transaction deletes them in)."""
    out: list[str] = []
    for child in zk.children(path):
        out.extend(_subtree(zk, f"{path}/{child}"))
    out.append(path)
    return out


def _delete(zk: ZK, uuid: str, attempts: int = 20) -> None:
    for _ in range(attempts):
        found = zk.get_doc(schema.vm(uuid))
        if found is None or not isinstance(found.data, dict):
            return
        name = found.data.get("name", "")
        paths = _subtree(zk, schema.vm(uuid))

        def once(paths: list[str] = paths, version: int = found.version, name: str = name) -> list[Any]:
            tx = zk.transaction()
            for path in paths[:-1]:
                tx.delete(path)
            tx.delete(paths[-1], version=version)
            if name and zk.client.exists(schema.vm_name(name)) is not None:
                tx.delete(schema.vm_name(name))
            return list(tx.commit())

        results = zk.retry(once)
        if not any(isinstance(r, Exception) for r in results):
            zk.delete(schema.vm_console(uuid))
            return
        if any(isinstance(r, BadVersionError | NotEmptyError | NoNodeError) for r in results):
            continue  # changed or a status/console znode appeared meanwhile: read again
        raise next(r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError")
    raise Conflict(f"VM {uuid}: too many concurrent updates, try again")


def set_state(zk: ZK, vm: str, state: str, force: bool = False, wait: bool = False,
              timeout: float = WAIT_TIMEOUT) -> str:
    """Change the desired state (§4.4); with wait, return once the node has done it (bounded)."""
    record = get_vm(zk, vm)
    plans: list[StatePlan] = []

    def first(current: VMRecord) -> VMRecord:
        plan = plan_state(current.name, current.state, state, force)
        plans.append(plan)
        return current.model_copy(update={"state": plan.first}) if plan.first else current

    record = _update(zk, record, first)
    plan = plans[-1]
    if plan.then:
        # Disable a running VM: it must be down first (the node acts on stop/shutdown, not disable).
        down = _wait(lambda: not is_running(get_status(zk, record.uuid)), timeout)
        if not down:
            raise Conflict(f'VM "{record.name}" did not shut down within {int(timeout)} s; it was not '
                           f"disabled (use force to stop it instead).")
        _update(zk, record, lambda r: r.model_copy(update={"state": plan.then}))
        return plan.message
    if wait and plan.wait_while:
        transitional = plan.wait_while
        done = _wait(lambda: get_vm(zk, record.uuid).state != transitional, timeout)
        if not done:
            raise Conflict(f'VM "{record.name}" is still in {transitional} state after {int(timeout)} s.')
        return wait_message(plan, record.name)
    return plan.message


def change_node(zk: ZK, vm: str, action: str, node: str | None = None, force: bool = False,
                wait: bool = False, force_live: bool = False, timeout: float = WAIT_TIMEOUT) -> str:
    """migrate (temporary), move (permanent) or unmigrate (§4.4); the nodes do the migration."""
    record = get_vm(zk, vm)
    if node:
        get_node(zk, node)
    nodes = load_nodes(zk)
    from pvc.cluster.state import get_cluster
    default = get_cluster(zk).migration_target_selector
    changes: list[NodeChange] = []

    def apply(current: VMRecord) -> VMRecord:
        change = plan_node_change(current, action, nodes, node, force, force_live, default)
        changes.append(change)
        return current.model_copy(update={"state": change.state, "node": change.node,
                                          "last_node": change.last_node})

    record = _update(zk, record, apply)
    change = changes[-1]
    if wait and change.wait_while:
        transitional = change.wait_while
        if not _wait(lambda: get_vm(zk, record.uuid).state != transitional, timeout):
            raise Conflict(f'VM "{record.name}" is still in {transitional} state after {int(timeout)} s.')
        return node_change_done_message(action, record.name, change.node)
    return change.message


def transition_pending(zk: ZK, uuid: str, transitional: str) -> bool:
    """True while the VM is still in the given transitional state (for asynchronous waiters)."""
    data = zk.get(schema.vm(uuid), None)
    return isinstance(data, dict) and data.get("state") == transitional


def set_meta(zk: ZK, vm: str, limit: str | Sequence[str] | None = None, selector: str | None = None,
             autostart: bool | None = None, profile: str | None = None,
             migration_method: str | None = None, migration_max_downtime: int | None = None) -> str:
    """Write only the metadata fields given; 'No updates to apply.' when none are."""
    record = get_vm(zk, vm)
    update: dict[str, Any] = {}
    if limit is not None:
        update["node_limit"] = parse_limit(limit)
    if selector is not None:
        update["node_selector"] = placement.check_selector(selector) or "none"
    if autostart is not None:
        update["node_autostart"] = bool(autostart)
    if profile is not None:
        update["profile"] = profile
    if migration_method is not None:
        update["migration_method"] = check_method(migration_method)
    if migration_max_downtime is not None:
        update["migration_max_downtime"] = check_downtime(migration_max_downtime)
    if not update:
        raise InvalidInput("No updates to apply.")
    _update(zk, record, lambda r: r.model_copy(update=update))
    return f'Successfully modified PVC metadata of VM "{record.name}".'


def meta_view(record: VMRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "node_limit": list(record.node_limit) or None,
        "node_selector": record.node_selector or "none",
        "node_autostart": record.node_autostart,
        "migration_method": record.migration_method or "live",
        "migration_max_downtime": record.migration_max_downtime,
        "profile": record.profile,
    }


def plan_tags(tags: Sequence[Tag], action: str, tag: str, protected: bool = False) -> list[Tag]:
    """The tag list after add (replaces a same-named tag) or remove (user, unprotected only)."""
    check_tag(tag)
    if action == "add":
        return [t for t in tags if t.name != tag] + [Tag(name=tag, type="user", protected=protected)]
    if action != "remove":
        raise InvalidInput(f"action: '{action}' is not one of add, remove")
    found = next((t for t in tags if t.name == tag), None)
    if found is None:
        raise Conflict(f'The tag "{tag}" does not exist.')
    if found.type != "user":
        raise Conflict(f'The tag "{tag}" is not a user tag and cannot be removed.')
    if found.protected:
        raise Conflict(f'The tag "{tag}" is protected and cannot be removed.')
    return [t for t in tags if t.name != tag]


def modify_tag(zk: ZK, vm: str, action: str, tag: str, protected: bool = False) -> str:
    record = get_vm(zk, vm)
    _update(zk, record, lambda r: r.model_copy(update={"tags": plan_tags(r.tags, action, tag, protected)}))
    if action == "add":
        return f'Successfully added tag "{tag}" to VM "{record.name}".'
    return f'Successfully removed tag "{tag}" from VM "{record.name}".'


def console_log(zk: ZK, vm: str, lines: int = 10) -> str:
    """The last `lines` lines of the serial console the VM's node keeps in ZooKeeper."""
    if lines < 0:
        raise InvalidInput(f"lines: must not be negative ({lines})")
    record = get_vm(zk, vm)
    data = zk.get(schema.vm_console(record.uuid), None)
    if isinstance(data, dict):
        data = data.get("lines", data.get("log", data.get("data", "")))
    text_lines = [str(line) for line in data] if isinstance(data, list) else str(data or "").split("\n")
    return "\n".join(text_lines[-lines:]) if lines else ""


def flush_locks(zk: ZK, vm: str, force: bool = False) -> TaskRecord:
    """Queue `vm.flush_locks` on the VM's node; only safe while the VM cannot be running.

    Task args: {"domain": name, "uuid": uuid, "force_unlock": force}.
    """
    record = get_vm(zk, vm)
    if record.state not in STOPPED_STATES and not force:
        raise Conflict(f'VM "{record.name}" is not in stopped state; flushing RBD locks on a running VM is '
                       f"dangerous.")
    if not record.node:
        raise Conflict(f'VM "{record.name}" is not assigned to a node.')
    return tasks_mod.submit(zk, "vm.flush_locks",
                            {"domain": record.name, "uuid": record.uuid, "force_unlock": force},
                            target=record.node)


def device_task(zk: ZK, vm: str, xml: str, attach: bool) -> TaskRecord:
    """Queue `vm.device_attach`/`vm.device_detach` on the VM's node (live only; not persisted).

    Task args: {"domain": name, "uuid": uuid, "xml": device XML}.
    """
    check_device_xml(xml)
    record = get_vm(zk, vm)
    if record.state != "start":
        raise Conflict(f'VM "{record.name}" is not in started state; live-{"add" if attach else "remove"} '
                       f"unnecessary.")
    kind = "vm.device_attach" if attach else "vm.device_detach"
    return tasks_mod.submit(zk, kind, {"domain": record.name, "uuid": record.uuid, "xml": xml},
                            target=record.node)


# -- node-level figures ---------------------------------------------------------------------------------

def allocation(entries: Iterable[VMEntry]) -> dict[str, dict[str, int]]:
    """Per node: VMs assigned, vCPUs and MiB allocated (running VMs) and provisioned (all VMs)."""
    out: dict[str, dict[str, int]] = {}
    for entry in entries:
        summary = domain_summary(entry.record.xml)
        figures = out.setdefault(entry.record.node, {"domains": 0, "vcpu_allocated": 0,
                                                     "memory_allocated": 0, "memory_provisioned": 0})
        figures["domains"] += 1
        figures["memory_provisioned"] += int(summary.get("memory", 0) or 0)
        if entry.record.state in ("start", "restart", "shutdown", "migrate", "migrate-live"):
            figures["vcpu_allocated"] += int(summary.get("vcpu", 0) or 0)
            figures["memory_allocated"] += int(summary.get("memory", 0) or 0)
    return out


def uuid_names(zk: ZK) -> dict[str, str]:
    """{uuid: name} of every VM (for showing node running lists by name)."""
    return {e.record.uuid: e.record.name for e in load_entries(zk)}
