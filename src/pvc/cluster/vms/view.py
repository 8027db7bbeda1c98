"""The VM as the API shows it (pure): list filters, the VM item, metadata and node figures."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

from pvc.cluster.common import limit_matcher
from pvc.cluster.vms.rules import canonical_uuid
from pvc.core import domainxml
from pvc.core import vmsnapshots as snapshot_rules
from pvc.core.errors import InvalidInput
from pvc.core.records import VMRecord, VMSnapshotRecord, VMStatus

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


def xml_digest(xml: str) -> str:
    return hashlib.blake2b(xml.encode(), digest_size=16).hexdigest()


def derived(domain: domainxml.Domain, xml: str) -> dict[str, Any]:
    """The record fields derived from its XML (parsed once by the writer)."""
    return {"summary": domainxml.summary(domain), "summary_of": xml_digest(xml)}


def record_summary(record: VMRecord) -> dict[str, Any]:
    """The summary stored with the record when it matches its XML, else parsed (memoised)."""
    if record.summary and record.summary_of == xml_digest(record.xml):
        return record.summary
    return domain_summary(record.xml)


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


# Fields upstream's client formats with a width (`{x: <8}`), which fails on null: sent as text.
NET_TEXT = ("type", "mac", "source", "model")
DISK_TEXT = ("type", "name", "dev", "bus")


def _texts(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {**item, **{k: "" for k in keys if item.get(k) is None}}


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
    summary = summary if summary is not None else record_summary(record)
    if stats is None:
        stats = status.stats if status is not None and status.stats else {}
    return {**static_view(record, status, summary), **stats_view(summary, stats)}


def _unless_none(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


def static_view(record: VMRecord, status: VMStatus | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The part of the item that changes only with the VM document or its status."""
    status = status or VMStatus()
    # As upstream: VNC only as the node read it from the running VM's live XML ("listen:port").
    vnc: dict[str, str | None] = {"listen": None, "port": None}
    if status.running and status.vnc and ":" in status.vnc:
        listen, _, port = status.vnc.rpartition(":")
        vnc = {"listen": listen or None, "port": port or None}
    return {
        "name": record.name,
        "uuid": record.uuid,
        "state": record.state,
        "node": record.node,
        "last_node": record.last_node,
        "migrated": f"from {record.last_node}" if record.last_node else "no",
        "failed_reason": status.failed_reason,
        "node_limit": list(record.node_limit) or None,
        # As upstream: null when unset or "none" (the cluster's default applies).
        "node_selector": _unless_none(record.node_selector),
        "node_autostart": record.node_autostart,
        "migration_method": _unless_none(record.migration_method),
        "migration_max_downtime": record.migration_max_downtime,
        "tags": [t.doc() for t in record.tags],
        "snapshots": [],
        "description": summary.get("description", record.description or "N/A"),
        "profile": record.profile,
        "memory": summary.get("memory", 0),
        "vcpu": summary.get("vcpu", 0),
        "vcpu_topology": summary.get("vcpu_topology", "N/A"),
        "type": summary.get("type"),
        "arch": summary.get("arch"),
        "machine": summary.get("machine"),
        "console": summary.get("console", "none"),
        "vnc": vnc,
        "emulator": summary.get("emulator"),
        "features": summary.get("features", []),
        "controllers": [_texts(c, ("type",)) for c in summary.get("controllers", [])],
        "xml": record.xml.replace('"', "'"),
        "running": status.running,
        "last_migration": status.last_migration,
    }


def stats_view(summary: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """The part of the item that follows the node's statistics (every keepalive)."""
    networks = []
    for net in summary.get("networks", []):
        found = _find_stats(stats.get("net_stats"), ("mac", net.get("mac")), ("bridge", net.get("source")))
        networks.append({**_texts(net, NET_TEXT), **{k: int(found.get(k, 0) or 0) for k in NET_COUNTERS}})
    disks = []
    for disk in summary.get("disks", []):
        found = _find_stats(stats.get("disk_stats"), ("name", disk.get("name")), ("dev", disk.get("dev")))
        disks.append({**_texts(disk, DISK_TEXT), **{k: int(found.get(k, 0) or 0) for k in DISK_COUNTERS}})
    return {
        "memory_stats": stats.get("mem_stats") or {},
        "vcpu_stats": stats.get("cpu_stats") or {},
        "networks": networks,
        "disks": disks,
    }



# -- snapshots in the item (pure; the reads are in index.py) ----------------------------------------

# (digest of the VM's XML, uuid, snapshot name, created) -> xml_diff_lines: the diff is computed once
# per snapshot and version of the VM's XML, not on every list.
_DIFFS: dict[tuple[str, str, str, float], list[str]] = {}
_DIFF_LOCK = threading.Lock()
MAX_DIFFS = 20_000
EMPTY_SNAPSHOTS = b'"snapshots":[]'


def snapshot_diff(record: VMRecord, snapshot: VMSnapshotRecord) -> list[str]:
    digest = record.summary_of if record.summary_of and record.summary else xml_digest(record.xml)
    key = (digest, record.uuid, snapshot.name, snapshot.created)
    found = _DIFFS.get(key)
    if found is None:
        found = snapshot_rules.xml_diff_lines(record.xml, snapshot.xml)
        with _DIFF_LOCK:
            if len(_DIFFS) >= MAX_DIFFS:
                _DIFFS.clear()
            _DIFFS[key] = found
    return found


def snapshots_view(record: VMRecord, snapshots: list[VMSnapshotRecord], now: float) -> list[dict[str, Any]]:
    """The item's `snapshots`: upstream's entries, newest first, with each one's consistency (from
    the record the list's cache already holds: no extra read)."""
    ordered = sorted(snapshots, key=lambda s: (-s.created, s.name))
    return [snapshot_rules.snapshot_item(s.name, s.created, s.rbd_snapshots, snapshot_diff(record, s), now,
                                         s.consistency)
            for s in ordered]


def splice_snapshots(item: bytes, snapshots: bytes) -> bytes:
    """An encoded item with its empty `snapshots` replaced (the key comes once, before any text a
    user controls that could contain it unescaped)."""
    return item.replace(EMPTY_SNAPSHOTS, b'"snapshots":' + snapshots, 1)


def meta_view(record: VMRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "node_limit": list(record.node_limit) or None,
        "node_selector": record.node_selector or "none",
        "node_autostart": record.node_autostart,
        "migration_method": record.migration_method or "none",
        "migration_max_downtime": record.migration_max_downtime,
        "profile": record.profile,
    }


# One encoder for every item: json.dumps with options builds a new encoder per call, which was a
# tenth of rendering 10,000 VMs.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dump(value: Any) -> bytes:
    """Compact JSON bytes, as the API answers."""
    return _ENCODER.encode(value).encode()


def _template(keys: tuple[str, ...]) -> bytes:
    return b",".join(b'"%s":%%d' % k.encode() for k in keys)


_NET_COUNTERS_JSON = _template(NET_COUNTERS)
_DISK_COUNTERS_JSON = _template(DISK_COUNTERS)


def _counters(found: dict[str, Any], keys: tuple[str, ...], template: bytes) -> bytes:
    return template % tuple(int(found.get(k, 0) or 0) for k in keys)


def stats_prefixes(summary: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """Each NIC's and disk's encoded facts without the closing brace, for encode_stats."""
    def open_object(item: dict[str, Any]) -> bytes:
        return dump(item)[:-1]

    return ([open_object(_texts(n, NET_TEXT)) for n in summary.get("networks", [])],
            [open_object(_texts(d, DISK_TEXT)) for d in summary.get("disks", [])])


def encode_stats(summary: dict[str, Any], prefixes: tuple[list[bytes], list[bytes]],
                 stats: dict[str, Any]) -> bytes:
    """stats_view(summary, stats) encoded, with the NIC and disk facts pre-encoded: a keepalive
    re-encodes thousands of these, so only the counters are formatted here."""
    nets = []
    for net, prefix in zip(summary.get("networks", []), prefixes[0], strict=True):
        found = _find_stats(stats.get("net_stats"), ("mac", net.get("mac")), ("bridge", net.get("source")))
        nets.append(prefix + (b"," if prefix != b"{" else b"")
                    + _counters(found, NET_COUNTERS, _NET_COUNTERS_JSON) + b"}")
    disks = []
    for disk, prefix in zip(summary.get("disks", []), prefixes[1], strict=True):
        found = _find_stats(stats.get("disk_stats"), ("name", disk.get("name")), ("dev", disk.get("dev")))
        disks.append(prefix + (b"," if prefix != b"{" else b"")
                     + _counters(found, DISK_COUNTERS, _DISK_COUNTERS_JSON) + b"}")
    return b"".join((
        b'{"memory_stats":', dump(stats.get("mem_stats") or {}),
        b',"vcpu_stats":', dump(stats.get("cpu_stats") or {}),
        b',"networks":[', b",".join(nets), b'],"disks":[', b",".join(disks), b"]}",
    ))
