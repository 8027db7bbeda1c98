"""Mapping upstream PVC's `pvc cluster backup` JSON (schema 15, PVC 1.0.x) onto our layout (pure).

Upstream's backup is a flat {znode path: text} map of its whole ZooKeeper tree (facts:
shared/reference/pvc-zk-schema-v15.md). `plan()` reads it and decides, without touching any
ZooKeeper, what becomes which of our documents: VMs (XML held to the domain XML policy, placement,
migration, autostart, profile, tags, state) with their VM snapshot records, networks (definition,
DHCP reservations, ACLs), storage metadata (pools, volumes, RBD snapshots, owned by the VM snapshot
that lists them) and faults. Every input value passes the same
checks our API applies, so a mapped item is one our own write paths would accept. What cannot be
taken is `unmapped` (with the check's reason); what is deliberately not taken is `dropped` (with
why). The writer (pvc.cluster.upstream_writes) commits each mapped item in one transaction.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pvc.cluster import placement
from pvc.cluster.common import check_name, csv_items
from pvc.cluster.networks.networks import network_doc
from pvc.cluster.networks.validation import DIRECTIONS, check_host, check_hostname, normalize_mac
from pvc.cluster.storage.docs import snapshot_doc, volume_doc
from pvc.cluster.vms.rules import (
    canonical_uuid,
    check_downtime,
    check_method,
    check_tag,
    check_vm_name,
    parse_limit,
    parse_xml,
)
from pvc.cluster.vms.view import derived
from pvc.cluster.vmsnapshots import capture_meta, owner
from pvc.core import domainxml, netconfig, schema
from pvc.core import vmsnapshots as snapshot_rules
from pvc.core.errors import InvalidInput
from pvc.core.records import FaultRecord, SnapshotVolume, Tag, VMRecord, VMSnapshotRecord

UPSTREAM_SCHEMA = 15
LOCK_SEGMENT = re.compile(r"^[0-9a-f]{32}__r?lock__[0-9]{10}$")
KNOWN_TREES = ("schema", "config", "nodes", "domains", "networks", "ceph", "logs", "faults")
# Empty keys upstream's schema migrations leave at the root (facts §4.3).
STRAY_KEYS = ("pvcversion", "tags", "db_device", "mtu", "tier", "fsid", "lvm", "monitoring_plugins",
              "monitoring_data", "monitoring_health", "is_split", "network_stats", "migration_max_downtime",
              "snapshots", "sriov", "cmd")
# Upstream VM states -> ours, for states that only mean something while a daemon acts on them.
STATE_MAP = {"restart": "start", "shutdown": "stop", "migrate": "start", "migrate-live": "start",
             "unmigrate": "start", "fail": "stop", "provision": "stop", "import": "stop",
             "restore": "stop", "delete": "stop"}
KEPT_STATES = ("start", "stop", "disable", "mirror")

# Why each kind of upstream data is not taken over (shown in the dry run).
R_CONFIG = ("cluster settings come from this cluster's own configuration (pvc.conf) and "
            "`pvc cluster init`, not from another cluster")
R_NODES = ("nodes register themselves when their pvcnoded starts; the BMC credentials upstream keeps "
           "here in plaintext are secrets and are never imported (each node publishes its own fence "
           "parameters, sealed)")
R_LOGS = "daemon log tails: runtime output of upstream's daemons"
R_LOCK = "a lock contender: transient lock state of a live upstream session"
R_CEPH_STATUS = "Ceph status/health/usage text: rewritten by our primary from Ceph itself"
R_OSDS = ("OSDs belong to Ceph and the nodes that host them: our OSD documents are written when an OSD "
          "is added and kept in step with Ceph's OSD map by the primary's storage monitor")
R_VM_RUNTIME = ("runtime data of the running VM (statistics, console log, VNC endpoint, failure text), "
                "rewritten by the node that runs it")
R_VM_DERIVED = "derived from the VM's XML here (the XML is the source of truth for its disks)"
R_VM_LOCK = "a lock anchor: our VM writes are compare-and-set, no lock znode"
R_LEASES = ("dynamic DHCP leases: runtime state of upstream's dnsmasq; our primary's dnsmasq records "
            "leases again as guests renew")
R_ARTEFACT = "an empty artefact of upstream's schema validator (facts §4.3), no data"
R_STRAY = "an empty key left at the root by an upstream schema migration (facts §4.3)"
R_FOREIGN = "not PVC data: another program's tree in the same ZooKeeper"
R_SCHEMA = "upstream's schema version: checked, then not needed (our schema has its own version)"
R_NULL = "the znode vanished while upstream took the backup (value null): nothing to import"


@dataclass(frozen=True)
class Mapped:
    """One object that maps: the znodes to create for it (parents first), in one transaction."""

    kind: str                                  # vm, network, pool, volume, snapshot, fault
    key: str                                   # uuid, vni, pool, pool/volume, pool/volume@snap, id
    name: str
    creates: tuple[tuple[str, Any], ...]       # (path, JSON document or None for an empty znode)
    parents: tuple[str, ...] = ()              # containers to ensure first (may exist already)
    notes: tuple[str, ...] = ()

    def view(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "name": self.name, "notes": list(self.notes)}


@dataclass(frozen=True)
class Unmapped:
    """An object we would import but cannot: the check that refused it says why."""

    kind: str
    key: str
    name: str
    reason: str

    def view(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "name": self.name, "reason": self.reason}


@dataclass
class Plan:
    source_cluster: str
    schema_version: int
    mapped: list[Mapped] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    dropped: dict[tuple[str, str], list[str]] = field(default_factory=dict)   # (what, reason) -> paths
    # pool/volume@snap -> the owner value (`vm:<uuid>/<name>`) of the mapped VM snapshot listing it
    owners: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Everything we import mapped (deliberate drops do not count against it)."""
        return not self.unmapped

    def drop(self, what: str, reason: str, path: str) -> None:
        self.dropped.setdefault((what, reason), []).append(path)

    def report(self) -> dict[str, Any]:
        return {
            "source": {"cluster": self.source_cluster, "schema_version": self.schema_version},
            "complete": self.complete,
            "mapped": [m.view() for m in self.mapped],
            "unmapped": [u.view() for u in self.unmapped],
            "dropped": [{"what": what, "reason": reason, "count": len(paths), "paths": paths[:20]}
                        for (what, reason), paths in self.dropped.items()],
        }


# -- reading the file ----------------------------------------------------------------------------------

def load(data: Any) -> dict[str, str | None]:
    """Upstream's backup as {path: value}: the file (`pvc cluster backup -f`), the raw API body
    (double-encoded) or the decoded object. Anything else is refused, naming what it is."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="strict")
    if isinstance(data, str):
        try:
            data = json.loads(data)
            if isinstance(data, str):
                data = json.loads(data)
        except ValueError as exc:
            hint = (" (it looks like the Python repr that upstream's `pvc cluster backup` prints without "
                    "-f; write the backup with `pvc cluster backup -f FILE`)"
                    if isinstance(data, str) and data.lstrip().startswith("{'") else "")
            raise InvalidInput(f"upstream backup: not valid JSON: {exc}{hint}") from None
    if not isinstance(data, dict):
        raise InvalidInput("upstream backup: must be a JSON object of znode path: value")
    for path, value in data.items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise InvalidInput(f"upstream backup: {path!r} is not an absolute znode path")
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"upstream backup: the value of {path} is not a string")
    if "/vms" in data or schema.CLUSTER in data or "manifest" in data:
        raise InvalidInput("upstream backup: this is a backup of this PVC (it has /vms or /config/cluster), "
                           "not of upstream PVC 1.0; restore it without --from-upstream")
    version = data.get("/schema/version")
    if version is None:
        raise InvalidInput("upstream backup: no /schema/version (a backup from before upstream 0.9.20, "
                           "or not an upstream PVC backup)")
    if not str(version).isdigit() or int(version) > UPSTREAM_SCHEMA:
        raise InvalidInput(f"upstream backup: schema version {version!r} is not one this importer knows "
                           f"(0..{UPSTREAM_SCHEMA})")
    return data


class _Tree:
    """Parent/child relations rebuilt from the flat paths; lock contenders left out."""

    def __init__(self, data: Mapping[str, str | None], plan: Plan) -> None:
        self.values: dict[str, str | None] = {}
        self.kids: dict[str, list[str]] = {}
        for path in sorted(data):
            parts = [p for p in path.split("/") if p]
            if any(LOCK_SEGMENT.match(p) for p in parts):
                plan.drop("lock contender znodes", R_LOCK, path)
                continue
            self.values[path] = data[path]
            if parts:
                parent = "/" + "/".join(parts[:-1])
                self.kids.setdefault(parent, []).append(parts[-1])

    def get(self, path: str, default: str = "") -> str:
        value = self.values.get(path)
        return default if value is None else value

    def children(self, path: str) -> list[str]:
        return sorted(self.kids.get(path, []))

    def under(self, path: str) -> list[str]:
        """Every path strictly below `path`."""
        return [p for p in self.values if p.startswith(path + "/")]


def _unset(value: str | None) -> str | None:
    """Upstream's many spellings of "not set": "", "None"."""
    return None if value is None or value.strip() in ("", "None") else value.strip()


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _json_or_empty(value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value or "")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# -- the plan ---------------------------------------------------------------------------------------------

def plan(data: Any, policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY) -> Plan:
    """What upstream's backup maps to in our layout, what cannot map and what is dropped; pure."""
    raw = load(data)
    result = Plan(source_cluster=str(raw.get("/config") or ""),
                  schema_version=int(str(raw["/schema/version"])))
    tree = _Tree(raw, result)
    for path, value in tree.values.items():
        if value is None:
            result.drop("vanished znodes", R_NULL, path)
    for top in tree.children("/"):
        base = f"/{top}"
        if top in KNOWN_TREES:
            continue
        reason = R_STRAY if top in STRAY_KEYS else R_FOREIGN
        for path in [base, *tree.under(base)]:
            result.drop(f"/{top}", reason, path)
    for path in ("/schema", "/schema/version"):
        if path in tree.values:
            result.drop("/schema", R_SCHEMA, path)
    for what, base, reason in (("/config", "/config", R_CONFIG), ("/nodes", "/nodes", R_NODES),
                               ("/logs", "/logs", R_LOGS), ("/ceph/osds", "/ceph/osds", R_OSDS)):
        for path in [p for p in (base,) if p in tree.values] + tree.under(base):
            result.drop(what, reason, path)
    for path in ("/ceph", "/ceph/health", "/ceph/util"):
        if path in tree.values:
            result.drop("/ceph status text", R_CEPH_STATUS, path)
    _vms(tree, result, policy)
    _networks(tree, result)
    _storage(tree, result)
    _faults(tree, result)
    return result


# -- VMs -------------------------------------------------------------------------------------------

VM_RUNTIME_KEYS = ("stats", "consolelog", "vnc", "failedreason")


def _vms(tree: _Tree, result: Plan, policy: domainxml.DomainPolicy) -> None:
    seen_names: dict[str, str] = {}
    for segment in tree.children("/domains"):
        base = f"/domains/{segment}"
        for key in VM_RUNTIME_KEYS:
            if f"{base}/{key}" in tree.values:
                result.drop(f"/domains/*/{key}", R_VM_RUNTIME, f"{base}/{key}")
        if f"{base}/rbdlist" in tree.values:
            result.drop("/domains/*/rbdlist", R_VM_DERIVED, f"{base}/rbdlist")
        if f"{base}/migrate_sync_lock" in tree.values:
            result.drop("/domains/*/migrate_sync_lock", R_VM_LOCK, f"{base}/migrate_sync_lock")
        name = tree.get(base)
        try:
            mapped = _vm(tree, base, segment, policy)
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("vm", segment, name, exc.message))
            continue
        record_name = mapped.name
        if record_name in seen_names:
            result.unmapped.append(Unmapped("vm", segment, record_name,
                                            f'name "{record_name}" is also VM {seen_names[record_name]}\'s'))
            continue
        seen_names[record_name] = segment
        result.mapped.append(_with_snapshots(tree, base, mapped, policy, result))


def _with_snapshots(tree: _Tree, base: str, vm: Mapped, policy: domainxml.DomainPolicy,
                    result: Plan) -> Mapped:
    """The VM item with its VM snapshot records in the same transaction (a record never exists
    without its VM); a snapshot that cannot be taken is unmapped with the reason, the VM still maps."""
    record = VMRecord.model_validate(dict(vm.creates)[schema.vm(vm.key)])
    snapshots: list[tuple[str, Any]] = []
    for name in tree.children(f"{base}/snapshots"):
        try:
            snap = _vm_snapshot(tree, f"{base}/snapshots/{name}", name, record, policy)
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("vm snapshot", f"{vm.key}/{name}", f"{vm.name}@{name}",
                                            exc.message))
            continue
        snapshots.append((schema.vm_snapshot(vm.key, name), snap.doc()))
        for volume in snap.volumes:
            result.owners[volume.ref] = owner(vm.key, name)
    if not snapshots:
        return vm
    names = ", ".join(path.rsplit("/", 1)[1] for path, _ in snapshots)
    note = (f"{len(snapshots)} VM snapshot record(s): {names} (consistency crash, as upstream took them "
            f"without freezing or pausing; node limit, selector, autostart, migration, profile and tags "
            f"as the VM has them now, which upstream did not record per snapshot)")
    return Mapped(vm.kind, vm.key, vm.name, (*vm.creates, *snapshots),
                  (*vm.parents, schema.VM_SNAPSHOTS, schema.vm_snapshots(vm.key)), (*vm.notes, note))


def _vm_snapshot(tree: _Tree, base: str, name: str, vm: VMRecord,
                 policy: domainxml.DomainPolicy) -> VMSnapshotRecord:
    """Upstream's `/domains/<uuid>/snapshots/<name>/{timestamp, xml, rbdsnaplist}` as our record,
    held to the checks our own snapshots pass: the name rule, the XML policy (a rollback restores
    that XML), and each RBD snapshot present in the backup's storage tree."""
    snapshot_rules.check_name(name, "snapshot")
    text = tree.get(f"{base}/timestamp").strip()
    try:
        created = float(text)
    except ValueError:
        created = math.nan
    if not math.isfinite(created) or created <= 0:
        raise InvalidInput(f"timestamp: '{text[:40]}' is not epoch seconds")
    xml = tree.get(f"{base}/xml")
    try:
        domain = parse_xml(xml, policy=policy)
    except InvalidInput as exc:
        raise InvalidInput(f"domain XML policy: {exc.message}") from None
    if domain.uuid != vm.uuid:
        raise InvalidInput(f"xml: <uuid> {domain.uuid} differs from the VM's {vm.uuid}")
    volumes: list[SnapshotVolume] = []
    for ref in csv_items(tree.get(f"{base}/rbdsnaplist")):
        image, _, snap = ref.partition("@")
        pool, _, volume = image.partition("/")
        if snap != name or not pool or not volume:
            raise InvalidInput(f"rbdsnaplist: '{ref}' is not pool/volume@{name}")
        check_name(pool, "pool")
        check_name(volume, "volume")
        stats_path = f"/ceph/snapshots/{pool}/{volume}/{snap}"
        if stats_path not in tree.values:
            raise InvalidInput(f"rbdsnaplist: RBD snapshot {ref} is not in the backup's /ceph/snapshots")
        size = _json_or_empty(tree.get(f"{stats_path}/stats")).get("size")
        volumes.append(SnapshotVolume(pool=pool, volume=volume, snap=snap,
                                      size=size if isinstance(size, int) and size >= 0 else 0))
    if not volumes:
        raise InvalidInput("rbdsnaplist: names no RBD snapshot")
    return VMSnapshotRecord(name=name, created=created, xml=xml, meta=capture_meta(vm), volumes=volumes,
                            consistency="crash", origin=snapshot_rules.origin_of(name),  # type: ignore[arg-type]
                            state="ready")


def _vm(tree: _Tree, base: str, segment: str, policy: domainxml.DomainPolicy) -> Mapped:
    uuid = canonical_uuid(segment)
    if uuid is None:
        raise InvalidInput(f"'{segment}' is not a VM UUID")
    xml = tree.get(f"{base}/xml")
    try:
        domain = parse_xml(xml, policy=policy)
    except InvalidInput as exc:
        raise InvalidInput(f"domain XML policy: {exc.message}") from None
    check_vm_name(domain.name, "xml: <name>")
    if domain.uuid != uuid:
        raise InvalidInput(f"xml: <uuid> {domain.uuid} differs from the VM's key {uuid}")
    notes: list[str] = []
    if tree.get(base) and tree.get(base) != domain.name:
        notes.append(f'named "{domain.name}" after its XML (upstream listed it as "{tree.get(base)}")')
    state = tree.get(f"{base}/state", "stop").strip() or "stop"
    if state not in KEPT_STATES:
        if state not in STATE_MAP:
            raise InvalidInput(f"state: '{state}' is not an upstream VM state")
        notes.append(f"state {state} (in progress upstream) imported as {STATE_MAP[state]}")
        state = STATE_MAP[state]
    selector = _unset(tree.get(f"{base}/node_selector"))
    downtime = _unset(tree.get(f"{base}/migration_max_downtime")) or "300"
    tags: list[Tag] = []
    for tag in tree.children(f"{base}/tags"):
        check_tag(tag, "tag")
        kind = tree.get(f"{base}/tags/{tag}/type").strip() or "user"
        if kind != "user":
            notes.append(f"tag {tag}: type {kind} kept as is")
        tags.append(Tag(name=tag, type=kind, protected=_flag(tree.get(f"{base}/tags/{tag}/protected"))))
    node = tree.get(f"{base}/node").strip()
    if node:
        check_name(node, "node")
    last_node = tree.get(f"{base}/lastnode").strip()
    if last_node:
        check_name(last_node, "lastnode")
    limit = parse_limit(tree.get(f"{base}/node_limit"), "node_limit")
    record = VMRecord(
        uuid=uuid, name=domain.name, xml=xml, **derived(domain, xml), state=state, node=node,
        last_node=last_node, node_limit=limit,
        node_selector=placement.check_selector(selector, "node_selector") or "none",
        node_autostart=_flag(tree.get(f"{base}/node_autostart")),
        migration_method=check_method(_unset(tree.get(f"{base}/migration_method")) or "none"),
        migration_max_downtime=check_downtime(downtime), profile=_unset(tree.get(f"{base}/profile")) or "",
        description=domain.description or "", tags=tags, rbd_volumes=domain.rbd_volumes,
    )
    creates = ((schema.vm(uuid), record.doc()), (schema.vm_name(domain.name), uuid))
    return Mapped("vm", uuid, domain.name, creates,
                  (schema.VMS, schema.VM_NAMES), tuple(notes))


# -- networks --------------------------------------------------------------------------------------

NETWORK_KEYS = ("nettype", "mtu", "domain", "name_servers", "ip4_network", "ip4_gateway", "dhcp4_flag",
                "dhcp4_start", "dhcp4_end", "ip6_network", "ip6_gateway", "dhcp6_flag")
MANAGED_KEYS = ("domain", "name_servers", "ip4_network", "ip4_gateway", "dhcp4_start", "dhcp4_end",
                "ip6_network", "ip6_gateway")


def name_servers(value: str | None) -> list[str]:
    """Upstream stores a single DNS server comma-joined per character ("1,0,.,0,.,0,.,1", facts
    §4.5): when every element is one character, join them again."""
    items = csv_items(value or "")
    if len(items) > 1 and all(len(item) == 1 for item in items):
        return ["".join(items)]
    return items


def _networks(tree: _Tree, result: Plan) -> None:
    for segment in tree.children("/networks"):
        base = f"/networks/{segment}"
        for lease in tree.children(f"{base}/dhcp4_leases"):
            result.drop("/networks/*/dhcp4_leases/*", R_LEASES, f"{base}/dhcp4_leases/{lease}")
        for mac in tree.children(f"{base}/dhcp4_reservations"):
            for artefact in ("mac", "ip"):
                if f"{base}/dhcp4_reservations/{mac}/{artefact}" in tree.values:
                    result.drop("reservation mac/ip keys", R_ARTEFACT,
                                f"{base}/dhcp4_reservations/{mac}/{artefact}")
        for direction in DIRECTIONS:
            for acl in tree.children(f"{base}/firewall_rules/{direction}"):
                path = f"{base}/firewall_rules/{direction}/{acl}/description"
                if path in tree.values:
                    result.drop("ACL description keys", R_ARTEFACT, path)
        description = tree.get(base)
        try:
            result.mapped.append(_network(tree, base, segment, result))
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("network", segment, description, exc.message))


def _network(tree: _Tree, base: str, segment: str, result: Plan) -> Mapped:
    nettype = tree.get(f"{base}/nettype").strip()
    notes: list[str] = []
    values: dict[str, Any] = {"vni": segment, "nettype": nettype, "description": tree.get(base),
                              "mtu": _unset(tree.get(f"{base}/mtu"))}
    if nettype == "managed":
        for key in MANAGED_KEYS:
            values[key] = _unset(tree.get(f"{base}/{key}"))
        values["name_servers"] = name_servers(tree.get(f"{base}/name_servers"))
        if len(csv_items(tree.get(f"{base}/name_servers"))) != len(values["name_servers"]):
            notes.append(f"name servers repaired from upstream's per-character split: "
                         f"{','.join(values['name_servers'])}")
        values["dhcp4"] = _flag(tree.get(f"{base}/dhcp4_flag"))
    else:
        ignored = [k for k in MANAGED_KEYS if _unset(tree.get(f"{base}/{k}"))]
        if ignored:
            notes.append(f"{', '.join(ignored)} ignored: a bridged network carries no IP, DHCP or DNS "
                         f"configuration here")
    doc = network_doc(values)
    vni = doc["vni"]
    if values["mtu"] is not None:
        notes.append(f"MTU {values['mtu']} kept (upstream's nodes may have written the effective MTU back)")
    creates: list[tuple[str, Any]] = [(schema.network(vni), doc)]
    creates.append((schema.network_acls(vni), _acls(tree, base, doc, result)))
    creates.append((schema.network_reservations(vni), None))
    reserved: dict[str, str] = {}
    for segment_mac in tree.children(f"{base}/dhcp4_reservations"):
        path = f"{base}/dhcp4_reservations/{segment_mac}"
        try:
            reservation = _reservation(tree, path, segment_mac, doc, reserved)
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("reservation", f"{vni}/{segment_mac}", segment_mac, exc.message))
            continue
        creates.append((schema.network_reservation(vni, reservation["mac_address"]), reservation))
    creates.append((schema.network_leases(vni), None))
    return Mapped("network", str(vni), doc["description"], tuple(creates),
                  (schema.NETWORKS, schema.NET_ACLS, schema.NET_RESERVATIONS, schema.NET_LEASES),
                  tuple(notes))


def _reservation(tree: _Tree, path: str, segment: str, doc: Mapping[str, Any],
                 reserved: dict[str, str]) -> dict[str, Any]:
    mac = normalize_mac(segment, "mac")
    ip4 = doc.get("ip4") or {}
    if doc.get("type") != "managed" or not ip4.get("network"):
        raise InvalidInput("DHCP reservations need a managed network with an IPv4 network")
    address = check_host(tree.get(f"{path}/ipaddr").strip(), ipaddress.ip_network(ip4["network"]), "ipaddr")
    if address == ip4.get("gateway"):
        raise InvalidInput(f"ipaddr: {address} is the network's gateway")
    if address in reserved:
        raise InvalidInput(f"ipaddr: {address} is also reserved for {reserved[address]}")
    reserved[address] = mac
    return {"mac_address": mac, "ip4_address": address,
            "hostname": check_hostname(_unset(tree.get(f"{path}/hostname")))}


def _acls(tree: _Tree, base: str, doc: Mapping[str, Any], result: Plan) -> dict[str, list[dict[str, str]]]:
    """Both chains, by integer order then description (upstream's orders may repeat or gap, facts
    §4.5); an ACL that fails our checks is unmapped, the others keep their relative order."""
    out: dict[str, list[dict[str, str]]] = {d: [] for d in DIRECTIONS}
    names: set[str] = set()
    for direction in DIRECTIONS:
        rows = []
        for acl in tree.children(f"{base}/firewall_rules/{direction}"):
            path = f"{base}/firewall_rules/{direction}/{acl}"
            order_text = tree.get(f"{path}/order").strip()
            order = int(order_text) if order_text.isdigit() else 1 << 30
            rows.append((order, acl, tree.get(f"{path}/rule")))
        for _order, acl, rule in sorted(rows):
            key = f"{doc['vni']}/{direction}/{acl}"
            try:
                if doc.get("type") != "managed":
                    raise InvalidInput("firewall rules exist only on managed networks here")
                check_name(acl, "description")
                if acl in names:
                    raise InvalidInput(f'description: "{acl}" names a rule in both directions')
                text = netconfig.validate_rule_text(rule)
            except InvalidInput as exc:
                result.unmapped.append(Unmapped("acl", key, acl, exc.message))
                continue
            except ValueError as exc:
                result.unmapped.append(Unmapped("acl", key, acl, f"rule: {exc}"))
                continue
            names.add(acl)
            out[direction].append({"description": acl, "rule": text})
    return out


# -- storage ---------------------------------------------------------------------------------------

def _storage(tree: _Tree, result: Plan) -> None:
    for pool in tree.children("/ceph/pools"):
        base = f"/ceph/pools/{pool}"
        try:
            check_name(pool, "pool")
            pgs_text = tree.get(f"{base}/pgs").strip() or "0"
            if not pgs_text.isdigit():
                raise InvalidInput(f"pgs: '{pgs_text}' is not a number")
            tier = tree.get(f"{base}/tier").strip() or "default"
            if tier not in ("default", "hdd", "ssd", "nvme"):
                raise InvalidInput(f"tier: '{tier}' is not default, hdd, ssd or nvme")
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("pool", pool, pool, exc.message))
            continue
        doc = {"name": pool, "pgs": int(pgs_text), "tier": tier, "copies": None, "mincopies": None,
               "stats": _json_or_empty(tree.get(f"{base}/stats"))}
        result.mapped.append(Mapped("pool", pool, pool, ((schema.pool(pool), doc),), (schema.CEPH_POOLS,),
                                    ("copies and mincopies are not in upstream's backup: read them from "
                                     "Ceph (`ceph osd pool get`)",)))
    for pool in tree.children("/ceph/volumes"):
        for volume in tree.children(f"/ceph/volumes/{pool}"):
            key = f"{pool}/{volume}"
            try:
                check_name(pool, "pool")
                check_name(volume, "volume")
            except InvalidInput as exc:
                result.unmapped.append(Unmapped("volume", key, volume, exc.message))
                continue
            stats = _json_or_empty(tree.get(f"/ceph/volumes/{key}/stats"))
            notes = () if stats else ("no readable `rbd info` statistics: the storage monitor fills them in",)
            result.mapped.append(Mapped(
                "volume", key, volume, ((schema.volume(pool, volume), volume_doc(pool, volume, stats)),),
                (schema.CEPH_VOLUMES, schema.pool_volumes(pool), f"{schema.CEPH_SNAPSHOTS}/{pool}",
                 schema.volume_snapshots(pool, volume)), notes))
    for pool in tree.children("/ceph/snapshots"):
        for volume in tree.children(f"/ceph/snapshots/{pool}"):
            for snap in tree.children(f"/ceph/snapshots/{pool}/{volume}"):
                key = f"{pool}/{volume}@{snap}"
                base = f"/ceph/snapshots/{pool}/{volume}/{snap}"
                try:
                    check_name(pool, "pool")
                    check_name(volume, "volume")
                    check_name(snap, "snapshot")
                    extra = [c for c in tree.children(base) if c != "stats"]
                    if extra:
                        raise InvalidInput(f"snapshot: '{snap}/{extra[0]}' (upstream let '/' into snapshot "
                                           f"names; such a name is not valid here)")
                except InvalidInput as exc:
                    result.unmapped.append(Unmapped("snapshot", key, snap, exc.message))
                    continue
                doc = snapshot_doc(pool, volume, snap, _json_or_empty(tree.get(f"{base}/stats")))
                if key in result.owners:         # a VM snapshot lists it: protected as ours are
                    doc["owner"] = result.owners[key]
                result.mapped.append(Mapped(
                    "snapshot", key, snap, ((schema.snapshot(pool, volume, snap), doc),),
                    (schema.CEPH_SNAPSHOTS, f"{schema.CEPH_SNAPSHOTS}/{pool}",
                     schema.volume_snapshots(pool, volume))))


# -- faults ----------------------------------------------------------------------------------------

def _fault_time(value: str) -> str:
    """Upstream's "YYYY-MM-DD HH:MM:SS" (local time of its health daemon), ours too; kept as is."""
    text = value.strip()
    if text and not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?", text):
        raise InvalidInput(f"time: '{text[:40]}' is not YYYY-MM-DD HH:MM:SS")
    return text


def _faults(tree: _Tree, result: Plan) -> None:
    for fid in tree.children("/faults"):
        base = f"/faults/{fid}"
        try:
            if not re.fullmatch(r"[A-Za-z0-9_.:@+-]{1,200}", fid):
                raise InvalidInput(f"id: '{fid}' is not a fault id")
            status = tree.get(f"{base}/status").strip() or "new"
            if status not in ("new", "ack"):
                raise InvalidInput(f"status: '{status}' is not new or ack")
            delta_text = tree.get(f"{base}/delta").strip() or "0"
            if not delta_text.isdigit():
                raise InvalidInput(f"delta: '{delta_text}' is not a number")
            first = _fault_time(tree.get(f"{base}/first_time"))
            record = FaultRecord(id=fid, first_reported=first,
                                 last_reported=_fault_time(tree.get(f"{base}/last_time")) or first,
                                 acknowledged_at=_fault_time(tree.get(f"{base}/ack_time")), status=status,
                                 health_delta=int(delta_text), message=tree.get(f"{base}/message"))
        except InvalidInput as exc:
            result.unmapped.append(Unmapped("fault", fid, fid, exc.message))
            continue
        result.mapped.append(Mapped("fault", fid, fid, ((schema.fault(fid), record.doc()),), (schema.FAULTS,),
                                    ("times kept as upstream wrote them (its health daemon's local time)",)))
