"""The node daemon's storage side (DESIGN D2, D6): Ceph facts into ZooKeeper, Ceph access for VMs.

* `StorageMonitor` (primary only, once per keepalive): cluster status, OSD, pool and volume
  documents under /ceph, shaped as upstream PVC stores them (pvc-facts §2.5, §6), so the API
  serves them without asking Ceph. It writes only documents whose content changed, reads and
  writes in pipelined rounds, and never calls `volume_info` for volumes it already knows (a
  cluster has hundreds); the API refreshes a volume's stats when it changes one.
* `NodeCeph` (every node): the one long-lived Storage connection, the libvirt ceph secret (same
  UUID on every node, derived from the fsid unless configured) and what a VM's rbd disks need
  at start (monitors, cephx user, secret UUID), plus the node's own addresses for lock checks.
* `lock_decision` (pure): which RBD locks on a VM's volumes are stale leftovers of this node and
  may be broken, and when a start must be refused because another client holds a volume.

The shaping functions are pure and take Ceph 16's JSON, so tests feed them captured output.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psutil
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc.adapters.ceph import Locker, Storage, StorageError, StorageNotFound, keyring_key, secret_uuid
from pvc.adapters.hypervisor import Hypervisor
from pvc.core import schema
from pvc.core.vocabulary import DEVICE_CLASSES
from pvc.core.zk import ZK

log = logging.getLogger("pvcnoded.storage")

# Pools Ceph keeps for itself: never shown as PVC pools.
HIDDEN_POOLS = frozenset({".mgr", "device_health_metrics"})
# A document whose object is gone from Ceph is removed, and an object Ceph has without a document
# is added, only after this many passes in a row: an API operation in flight (Ceph first, then
# ZooKeeper) is never mistaken for a leftover, nor raced to the document it is about to write.
SETTLE_PASSES = 2
MONITOR_REFRESH_S = 600.0

Change = Callable[[Any], Any]


# ------------------------------------------------------------------------------------------------
# Pure helpers: identities, units, shaping Ceph's answers


def secret_usage(client_user: str) -> str:
    return f"client.{client_user} secret"


def format_bytes(n: float, width: int = 5) -> str:
    """Ceph's short sizes (mgr_util.format_bytes, as `ceph osd status` prints them): 292M, 1755M."""
    units = ["", "k", "M", "G", "T", "P", "E"]
    unit = 0
    n = max(0, int(n))
    while len(str(n // 1024 ** unit)) > width - 1 and unit < len(units) - 1:
        unit += 1
    if unit == 0:
        return str(n)
    text = f"{n / 1024 ** unit:f}"[: width - 1]
    return text.rstrip(".") + units[unit]


_UNIT_FACTORS = {"": 0, "k": 1, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_VALUE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kKMGTPE]?)$")


def parse_units(text: str, base: int) -> int:
    """`1.2k` -> 1200 (base 1000) or 1228 (base 1024); anything unreadable counts as 0."""
    match = _VALUE_RE.match(text.strip())
    if not match:
        return 0
    return int(float(match.group(1)) * base ** _UNIT_FACTORS[match.group(2)])


_ANSI_RE = re.compile(r"\x1b(\[.*?[@-~]|\].*?(\x07|\x1b\\))")


def parse_osd_status(text: str) -> dict[str, dict[str, int]]:
    """Per-OSD I/O rates from `ceph osd status` (text only: its JSON mode is broken in Ceph 16).

    Ceph 16: `ID HOST USED AVAIL WR-OPS WR-DATA RD-OPS RD-DATA STATE`; Ceph 14 frames the same
    columns with `|`. Ops are decimal (1.2k), data binary (4096k).
    """
    out: dict[str, dict[str, int]] = {}
    for raw in text.splitlines():
        cells = [c for c in _ANSI_RE.sub("", raw).replace("|", " ").split() if c]
        if len(cells) < 8 or not cells[0].isdigit():
            continue
        out[cells[0]] = {"wr_ops": parse_units(cells[4], 1000), "wr_data": parse_units(cells[5], 1024),
                         "rd_ops": parse_units(cells[6], 1000), "rd_data": parse_units(cells[7], 1024)}
    return out


def osd_hosts(tree: dict[str, Any]) -> dict[str, str]:
    """OSD id -> name of its CRUSH host bucket (PVC names host buckets after its nodes)."""
    hosts = {}
    for node in tree.get("nodes", []):
        if node.get("type") == "host":
            for child in node.get("children", []):
                hosts[str(child)] = str(node.get("name", ""))
    return hosts


def shape_osds(dump: dict[str, Any], df: dict[str, Any], tree: dict[str, Any],
               rates: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, Any]]:
    """{osd id: {"node", "stats"}} from `osd dump`, `osd df`, `osd tree` (+ osd status rates).

    Every OSD of the osd map is there; figures an answer lacks (an OSD not yet in CRUSH) are 0.
    """
    hosts = osd_hosts(tree)
    usage = {str(n["id"]): n for n in [*df.get("nodes", []), *df.get("stray", [])] if "id" in n}
    rates = rates or {}
    out: dict[str, dict[str, Any]] = {}
    for osd in dump.get("osds", []):
        osd_id = str(osd["osd"])
        use = usage.get(osd_id, {})
        rate = rates.get(osd_id, {})
        node = hosts.get(osd_id, "")
        kb_used, kb_avail = int(use.get("kb_used", 0)), int(use.get("kb_avail", 0))
        stats = {
            "uuid": osd.get("uuid", ""), "up": int(osd.get("up", 0)), "in": int(osd.get("in", 0)),
            "primary_affinity": osd.get("primary_affinity", 1),
            "utilization": use.get("utilization", 0), "var": use.get("var", 0), "pgs": use.get("pgs", 0),
            "kb": int(use.get("kb", 0)), "kb_used": kb_used, "kb_used_data": int(use.get("kb_used_data", 0)),
            "kb_used_omap": int(use.get("kb_used_omap", 0)), "kb_used_meta": int(use.get("kb_used_meta", 0)),
            "kb_avail": kb_avail, "weight": use.get("crush_weight", 0), "reweight": use.get("reweight", 0),
            "class": use.get("device_class", ""), "node": node,
            "used": format_bytes(kb_used * 1024), "avail": format_bytes(kb_avail * 1024),
            "wr_ops": rate.get("wr_ops", 0), "wr_data": rate.get("wr_data", 0),
            "rd_ops": rate.get("rd_ops", 0), "rd_data": rate.get("rd_data", 0),
            "state": ",".join(osd.get("state", [])),
        }
        out[osd_id] = {"node": node, "stats": stats}
    return out


def shape_pools(df: dict[str, Any], dump: dict[str, Any],
                pg_dump: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """{pool: {"id", "pgs", "copies", "mincopies", "rbd", "rule", "stats"}} for every pool PVC shows.

    `df` is `df detail` (plain `df` works too), `dump` the osd map (size, min_size, PGs, the rbd
    application), `pg_dump` `pg dump pools` (object health and lifetime I/O, as upstream took
    from `rados df`); without it, I/O comes from `df detail` and object health is 0.
    """
    sums = {int(p["poolid"]): p.get("stat_sum", {}) for p in (pg_dump or {}).get("pool_stats", [])
            if "poolid" in p}
    config = {p.get("pool_name"): p for p in dump.get("pools", [])}
    out: dict[str, dict[str, Any]] = {}
    for pool in df.get("pools", []):
        name = pool.get("name")
        if not name or name in HIDDEN_POOLS or name not in config:
            continue
        st, cfg = pool.get("stats", {}), config[name]
        pool_id = int(pool.get("id", cfg.get("pool", 0)))
        total = sums.get(pool_id)
        if total is not None:
            io = (total.get("num_read", 0), total.get("num_read_kb", 0) * 1024,
                  total.get("num_write", 0), total.get("num_write_kb", 0) * 1024)
        else:
            io = (st.get("rd", 0), st.get("rd_bytes", 0), st.get("wr", 0), st.get("wr_bytes", 0))
        total = total or {}
        stats = {
            "id": pool_id, "stored_bytes": st.get("stored", 0), "free_bytes": st.get("max_avail", 0),
            "used_bytes": st.get("bytes_used", 0), "used_percent": st.get("percent_used", 0),
            "num_objects": st.get("objects", 0),
            "num_object_clones": total.get("num_object_clones", 0),
            "num_object_copies": total.get("num_object_copies", st.get("objects", 0) * cfg.get("size", 1)),
            "num_objects_missing_on_primary": total.get("num_objects_missing_on_primary", 0),
            "num_objects_unfound": total.get("num_objects_unfound", 0),
            "num_objects_degraded": total.get("num_objects_degraded", 0),
            "read_ops": io[0], "read_bytes": io[1], "write_ops": io[2], "write_bytes": io[3],
        }
        out[name] = {"id": pool_id, "pgs": int(cfg.get("pg_num_target", cfg.get("pg_num", 0))),
                     "copies": int(cfg.get("size", 0)), "mincopies": int(cfg.get("min_size", 0)),
                     "rbd": "rbd" in (cfg.get("application_metadata") or {}),
                     "rule": cfg.get("crush_rule"), "stats": stats}
    return out


def rule_tier(rule_name: str | None) -> str:
    """PVC's tier of a pool from its CRUSH rule (`ssd_tier` -> ssd); anything else is default."""
    prefix = (rule_name or "").removesuffix("_tier")
    return prefix if rule_name and rule_name.endswith("_tier") and prefix in DEVICE_CLASSES else "default"


# ------------------------------------------------------------------------------------------------
# RBD locks before a VM starts (pvc-facts §4.2 "start")


@dataclass(frozen=True)
class LockDecision:
    """`stale`: this node's leftover locks, to break before starting; `refuse`: why not to start."""

    stale: tuple[Locker, ...] = ()
    refuse: str = ""


def client_address(address: str) -> str:
    """`v1:10.0.0.1:0/123` -> `10.0.0.1:0/123`: lockers and watchers name clients alike."""
    text = address.strip()
    for prefix in ("v1:", "v2:", "any:"):
        text = text.removeprefix(prefix)
    return text


def address_ip(address: str) -> str:
    """The IP of a Ceph client address `ip:port/nonce` (`[v6]:port/nonce`)."""
    text = client_address(address).split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def lock_decision(volume: str, lockers: Iterable[Locker], watchers: Iterable[str], own: set[str],
                  names: dict[str, str] | None = None) -> LockDecision:
    """Decide about the locks on one volume of a VM that is about to start on this node.

    A lock held from one of this node's addresses is stale: the VM does not run here (the
    caller checked), so a QEMU of ours died holding it. A lock held from anywhere else means
    another node may still run the VM: refuse, and say whether that client still has the image
    open (a watcher) or not (its node is probably dead; an administrator, or later the fencing
    logic, flushes the locks once that is known). `names` maps addresses to node names.
    """
    open_by = {client_address(w) for w in watchers}
    stale = []
    for locker in lockers:
        ip = address_ip(locker.address)
        if ip in own:
            stale.append(locker)
            continue
        holder = f"{locker.client} at {locker.address}"
        node = (names or {}).get(ip)
        if node:
            holder += f" (node {node})"
        if client_address(locker.address) in open_by:
            return LockDecision(refuse=f"volume {volume} is locked by {holder}, which still has it open; "
                                       "not starting the VM here")
        return LockDecision(refuse=f"volume {volume} is locked by {holder}, which no longer has it open; "
                                   "flush locks with `pvc vm flush-locks` once that node is known dead")
    return LockDecision(stale=tuple(stale))


def local_addresses() -> set[str]:
    """Every IP address of this host (of this network namespace, where the node daemon runs)."""
    found = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name in ("AF_INET", "AF_INET6"):
                found.add(addr.address.split("%", 1)[0])
    return found


# ------------------------------------------------------------------------------------------------
# This node's Ceph client side


@dataclass(frozen=True)
class DiskAccess:
    """What an rbd disk of a VM needs to reach Ceph from this (and any) node."""

    hosts: tuple[tuple[str, int], ...]
    username: str
    secret_uuid: str


class NodeCeph:
    """One long-lived Storage connection per daemon, the libvirt ceph secret, RBD disk access.

    The Storage is created on first use (in the thread that first needs it) and reconnects by
    itself. The secret is defined once per daemon start (and again after a failure); VM starts
    ensure it themselves, so a VM never starts before its disks can authenticate.
    """

    def __init__(self, storage: Storage | Callable[[], Storage], hypervisor: Hypervisor | None,
                 client_user: str = "admin", keyring: str = "/etc/ceph/ceph.client.admin.keyring",
                 configured_secret: str | None = None, extra_addresses: Iterable[str] = (),
                 addresses: Callable[[], set[str]] = local_addresses) -> None:
        self._factory = storage if callable(storage) and not isinstance(storage, Storage) else None
        self._storage = storage if isinstance(storage, Storage) else None
        self.hypervisor = hypervisor
        self.client_user = client_user
        self.keyring = keyring
        self.configured_secret = configured_secret
        self.extra_addresses = {a for a in extra_addresses if a}
        self._addresses = addresses
        self._lock = threading.Lock()
        self._secret_lock = threading.Lock()
        self._uuid: str | None = None
        self._monitors: tuple[tuple[str, int], ...] = ()
        self._monitors_at = 0.0
        self.secret_ready = False

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    assert self._factory is not None
                    self._storage = self._factory()
        return self._storage

    def close(self) -> None:
        with self._lock:
            storage, self._storage = self._storage, (None if self._factory else self._storage)
        if storage is not None and self._factory is not None:
            storage.close()

    def secret_uuid(self) -> str:
        if self._uuid is None:
            self._uuid = secret_uuid("" if self.configured_secret else self.storage.fsid(),
                                     self.configured_secret)
        return self._uuid

    def ensure_secret(self) -> str:
        """Define the ceph secret in this node's libvirtd (idempotent); its UUID.

        Raises StorageError (no fsid, no key in the keyring) or HypervisorError (libvirt refused).
        """
        with self._secret_lock:
            uuid = self.secret_uuid()
            if self.secret_ready or self.hypervisor is None:
                return uuid
            entity = f"client.{self.client_user}"
            try:
                key = keyring_key(self.keyring, entity)
            except OSError as exc:
                raise StorageError(f"cannot read the key of {entity} from {self.keyring}: "
                                   f"{exc.strerror}") from None
            self.hypervisor.ensure_secret(uuid, secret_usage(self.client_user), key)
            self.secret_ready = True
            log.info("libvirt ceph secret %s (%s) defined", uuid, secret_usage(self.client_user))
            return uuid

    def monitors(self) -> tuple[tuple[str, int], ...]:
        """The monitors' (address, v1 port), cached (they rarely change; refreshed every 10 min)."""
        if not self._monitors or time.monotonic() - self._monitors_at > MONITOR_REFRESH_S:
            found = tuple((str(h), int(p)) for h, p in self.storage.mon_addresses())
            if not found:
                raise StorageError("the Ceph cluster reports no monitors")
            self._monitors, self._monitors_at = found, time.monotonic()
        return self._monitors

    def disk_access(self) -> DiskAccess:
        """Monitors, user and secret for a VM's rbd disks; defines the secret first if needed."""
        uuid = self.ensure_secret()
        return DiskAccess(self.monitors(), self.client_user, uuid)

    def client_addresses(self) -> list[str]:
        """The source addresses this node's Ceph clients use towards the monitors: what the
        cluster blocklists when it fences this node (a routing lookup; no packet is sent)."""
        found: list[str] = []
        for host, port in self.monitors():
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((host, port))
                source = probe.getsockname()[0]
                if source not in found:
                    found.append(source)
        return found

    def own_addresses(self) -> set[str]:
        """Addresses this node's Ceph clients (its QEMUs) may use: all of the host's, plus any
        configured one (the migration address), so a lock of ours is always recognised."""
        return self._addresses() | self.extra_addresses


# ------------------------------------------------------------------------------------------------
# ZooKeeper: pipelined reads and change-only writes


def read_docs(zk: ZK, paths: list[str]) -> dict[str, tuple[Any, int] | None]:
    """(data, version) of many znodes in one pipelined round; None for missing ones."""
    if not paths:
        return {}
    return {path: None if doc is None else (doc.data, doc.version)
            for path, doc in zk.get_many_docs(paths).items()}


def write_changes(zk: ZK, changes: dict[str, Change],
                  known: dict[str, tuple[Any, int] | None] | None = None) -> int:
    """Apply `fn(current) -> new` per path (None: leave it), writing only what differs; how many
    were written. `known` are documents read just before (no second read). One pipelined round of
    CAS writes; paths whose write lost a race are redone one by one on fresh data."""
    if not changes:
        return 0
    current = dict(known or {})
    missing = [p for p in changes if p not in current]
    current.update(read_docs(zk, missing))
    writes: list[tuple[str, Any, int | None]] = []
    for path, fn in changes.items():
        doc = current.get(path)
        new = fn(None if doc is None else doc[0])
        if new is not None and (doc is None or new != doc[0]):
            writes.append((path, new, None if doc is None else doc[1]))
    results = zk.write_many(writes, makepath=True)
    written = sum(1 for failed in results.values() if failed is None)
    for path, failed in results.items():
        if failed is not None:
            written += _write_one(zk, path, changes[path])
    return written


def _write_one(zk: ZK, path: str, fn: Change) -> int:
    for _ in range(10):
        doc = zk.get_doc(path)
        new = fn(None if doc is None else doc.data)
        if new is None or (doc is not None and new == doc.data):
            return 0
        try:
            if doc is None:
                zk.create_doc(path, new, makepath=True)
            else:
                zk.set_doc(path, new, doc.version)
            return 1
        except (BadVersionError, NodeExistsError, NoNodeError):
            continue
    log.warning("%s: too many concurrent updates; trying again next pass", path)
    return 0


# ------------------------------------------------------------------------------------------------
# The primary's stats pass


@dataclass
class CephFacts:
    """Everything one pass reads from Ceph about the cluster (volumes are listed later)."""

    status: dict[str, Any]
    health: dict[str, Any]
    util: dict[str, Any]
    status_text: str
    util_text: str
    osds: dict[str, dict[str, Any]]
    pools: dict[str, dict[str, Any]]


HEALTH_DELTAS = {"HEALTH_WARN": 10, "HEALTH_ERR": 50}


def health_faults(health: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(name, health delta, message) of each fault for a `ceph health` answer, as upstream names
    them: one per health check, `CEPH_WARN_<CHECK>` (10) or `CEPH_ERR_<CHECK>` (50); none when OK.
    A check an administrator muted (`ceph health mute`) raises nothing.
    The primary's cluster checks (pvc.node.services.clusterhealth) raise and resolve them."""
    status = str(health.get("status") or "")
    if status not in HEALTH_DELTAS:
        return []
    checks = {k: v for k, v in (health.get("checks") or {}).items()
              if not (isinstance(v, dict) and v.get("muted"))}
    if not checks and health.get("checks"):
        return []
    if not checks:
        level = status.removeprefix("HEALTH_")
        return [(f"CEPH_{level}_HEALTH", HEALTH_DELTAS[status], f"Ceph cluster health is {status}")]
    found = []
    for name, check in sorted(checks.items()):
        severity = str((check or {}).get("severity") or status)
        severity = severity if severity in HEALTH_DELTAS else status
        summary = ((check or {}).get("summary") or {}).get("message", "")
        found.append((f"CEPH_{severity.removeprefix('HEALTH_')}_{name}", HEALTH_DELTAS[severity],
                      f"{severity} {name}" + (f": {summary}" if summary else "")))
    return found


class StorageMonitor:
    """Ceph's state into /ceph, once per keepalive, on the primary (pvc-facts §6 stats gathering).

    `run_once()` is one pass; it returns (and keeps in `last_duration`) how long it took.
    """

    def __init__(self, zk: ZK, storage: Storage | Callable[[], Storage], node: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.zk = zk
        self._storage = storage
        self.node = node
        self.clock = clock
        self.last_duration = 0.0
        self.passes = 0
        self._streaks: dict[str, int] = {}
        self._touched: set[str] = set()
        self._optional_failed: set[str] = set()
        self._pool_writes = 0

    @property
    def storage(self) -> Storage:
        return self._storage if isinstance(self._storage, Storage) else self._storage()

    def run_once(self) -> float:
        started = time.monotonic()
        self._touched = set()
        facts = self.gather()
        writes = self.write_status(facts)
        writes += self.sync_osds(facts.osds)
        pools = self.sync_pools(facts.pools)
        writes += self._pool_writes + self.sync_volumes(pools)
        for pool in facts.pools:
            # volumes removed since the last pass wait in the RBD trash (see CephStorage)
            self._optional(f"trash purge of pool {pool}", lambda p=pool: self.storage.purge_trash(p))
        self._streaks = {k: v for k, v in self._streaks.items() if k in self._touched}
        self.passes += 1
        self.last_duration = time.monotonic() - started
        log.debug("storage pass %d: %.3fs, %d document(s) written", self.passes, self.last_duration, writes)
        return self.last_duration

    # -- Ceph ----------------------------------------------------------------------------------

    def _optional(self, what: str, fn: Callable[[], Any]) -> Any:
        """A read the pass can do without (mgr-served commands, missing in fakes): None if it fails."""
        try:
            result = fn()
        except StorageError as exc:
            if what not in self._optional_failed:
                log.info("storage pass: %s unavailable (%s); going on without it", what, exc)
                self._optional_failed.add(what)
            return None
        self._optional_failed.discard(what)
        return result

    def gather(self) -> CephFacts:
        ceph = self.storage
        status = ceph.mon_command("status") or {}
        health = status.get("health") or ceph.mon_command("health") or {}
        util = ceph.mon_command("df", detail="detail") or {}
        status_text = ceph.mon_command_text("status")
        util_text = ceph.mon_command_text("df")
        dump = ceph.mon_command("osd dump") or {}
        osd_df = ceph.mon_command("osd df") or {}
        tree = ceph.mon_command("osd tree") or {}
        pg_dump = self._optional("pg dump", lambda: ceph.mon_command("pg dump", dumpcontents=["pools"]))
        rates_text = self._optional("osd status", lambda: ceph.mon_command_text("osd status"))
        rates = parse_osd_status(rates_text) if isinstance(rates_text, str) else {}
        return CephFacts(status=status, health=health, util=util, status_text=status_text,
                         util_text=util_text, osds=shape_osds(dump, osd_df, tree, rates),
                         pools=shape_pools(util, dump, pg_dump if isinstance(pg_dump, dict) else None))

    # -- ZooKeeper -----------------------------------------------------------------------------

    def write_status(self, facts: CephFacts) -> int:
        self.zk.put(schema.CEPH_STATUS, {
            "node": self.node, "time": self.clock(), "status_text": facts.status_text,
            "status": facts.status, "health": facts.health, "util_text": facts.util_text,
            "util": facts.util})
        return 1

    def _settled(self, key: str, condition: bool) -> bool:
        """True once `condition` has held for `key` in SETTLE_PASSES passes in a row."""
        if not condition:
            self._streaks.pop(key, None)
            return False
        self._touched.add(key)
        self._streaks[key] = self._streaks.get(key, 0) + 1
        return self._streaks[key] >= SETTLE_PASSES

    def sync_osds(self, osds: dict[str, dict[str, Any]]) -> int:
        known = self.zk.children(schema.CEPH_OSDS)
        docs = read_docs(self.zk, [schema.osd(i) for i in known])
        for osd_id in known:
            if self._settled(f"gone osd {osd_id}", osd_id not in osds):
                log.info("OSD %s is gone from the osd map; removing its document", osd_id)
                self.zk.delete(schema.osd(osd_id))
        changes: dict[str, Change] = {}
        for osd_id, facts in osds.items():
            def change(doc: Any, osd_id: str = osd_id, facts: dict[str, Any] = facts) -> Any:
                base = doc if isinstance(doc, dict) else {"id": osd_id, "node": "", "device": "",
                                                          "db_device": ""}
                return {**base, "id": osd_id, "node": facts["node"] or base.get("node", ""),
                        "stats": facts["stats"]}
            changes[schema.osd(osd_id)] = change
        return write_changes(self.zk, changes, docs)

    def sync_pools(self, pools: dict[str, dict[str, Any]]) -> list[str]:
        """Pool documents; the names of the pools that exist in both Ceph and ZooKeeper now."""
        known = self.zk.children(schema.CEPH_POOLS)
        docs = read_docs(self.zk, [schema.pool(p) for p in known])
        for name in known:
            if self._settled(f"gone pool {name}", name not in pools):
                log.info("pool %s is gone from Ceph; removing its documents", name)
                for path in (schema.pool(name), schema.pool_volumes(name), f"{schema.CEPH_SNAPSHOTS}/{name}"):
                    self.zk.delete(path)
        # New RBD pools (not created through PVC: the lab's `vms`, one made with `ceph`) are added;
        # other pools Ceph has are not PVC's to show.
        new = [p for p, f in pools.items() if p not in known and f["rbd"]
               and self._settled(f"new pool {p}", True)]
        rules = self._rule_names() if new else {}
        changes: dict[str, Change] = {}
        for name, facts in pools.items():
            if name not in known and name not in new:
                continue
            tier = rule_tier(rules.get(facts["rule"]))

            def change(doc: Any, name: str = name, facts: dict[str, Any] = facts, tier: str = tier) -> Any:
                base = doc if isinstance(doc, dict) else {"name": name, "tier": tier}
                return {**base, "name": name, "pgs": facts["pgs"], "copies": facts["copies"],
                        "mincopies": facts["mincopies"], "stats": facts["stats"]}
            changes[schema.pool(name)] = change
        if new:
            log.info("found RBD pool(s) %s in Ceph; adding them", ", ".join(sorted(new)))
        self._pool_writes = write_changes(self.zk, changes, docs)
        return sorted(n for n in pools if schema.pool(n) in changes)

    def _rule_names(self) -> dict[Any, str]:
        rules = self._optional("osd crush rule dump", lambda: self.storage.mon_command("osd crush rule dump"))
        return {r.get("rule_id"): str(r.get("rule_name")) for r in rules or [] if isinstance(r, dict)}

    def sync_volumes(self, pools: list[str]) -> int:
        """Volume documents of every pool: add new volumes (with `rbd info`), drop vanished ones.

        ZooKeeper is read before Ceph is listed: a volume the API creates (Ceph first, then its
        document) is then never seen in ZooKeeper without being seen in Ceph.
        """
        listed = self.zk.children_many([schema.pool_volumes(p) for p in pools])
        written = 0
        for pool in pools:
            known = set(listed.get(schema.pool_volumes(pool), []))
            try:
                present = set(self.storage.list_volumes(pool))
            except StorageNotFound:
                continue
            for name in sorted(known):
                if self._settled(f"gone volume {pool}/{name}", name not in present):
                    log.info("volume %s/%s is gone from Ceph; removing its documents", pool, name)
                    self.zk.delete(schema.volume(pool, name))
                    self.zk.delete(schema.volume_snapshots(pool, name))
            for name in sorted(present - known):
                if not self._settled(f"new volume {pool}/{name}", True):
                    continue
                try:
                    info = self.storage.volume_info(pool, name)
                except StorageNotFound:
                    continue      # removed meanwhile
                try:
                    self.zk.create(schema.volume(pool, name), {"name": name, "pool": pool, "stats": info})
                    written += 1
                    log.info("found volume %s/%s in Ceph; added it", pool, name)
                except NodeExistsError:
                    pass          # the API created it meanwhile, with the same facts
        return written
