"""The EC2-style metadata service for cloud-init, on the primary at 169.254.169.254:80.

Guests reach it through their gateway (the primary), which holds the address on `lo`. Answers
follow upstream (pvc-facts §5.4): `GET /` is HTTP 209 with a version message; under any version
prefix (`/latest`, `/2009-04-04`, ...) `meta-data/` lists instance-id, name and profile, each
readable on its own, and `user-data` is the userdata document of the VM's profile.

Who is asking (DESIGN D14): the request's source address must be a DHCP lease or reservation of a
managed network, the address's neighbour entry on that network's bridge must be the lease's MAC,
the bridge must reach that MAC through a VM's tap (its MAC matching) or the network's VXLAN (a VM
on another node, whose tap that node guards), and the MAC must be a NIC of the VM answered for.
The nodes' anti-spoofing (pvc.core.netconfig.render_guard) makes a guest's IP and MAC its own, so
a guest that takes another's address is dropped before it gets here, and refused if it does.

The server is asyncio in a thread of its own: per-connection timeouts, a cap on connections in
all and per source address, and lookups in an index (address -> lease MACs, MAC -> VM) rebuilt
off the request path, periodically and when an address is not found (at most every few seconds);
each answer is confirmed by a few direct reads (the lease, the VM's current document).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pvc.adapters.network import NetworkError, NetworkHost
from pvc.cluster import metadata as lookup
from pvc.cluster import vms as vms_mod
from pvc.core import netconfig, schema
from pvc.core.records import VMRecord
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

KEYS = ("instance-id", "name", "profile")
MAX_CONNECTIONS = 128          # at once, all guests together
MAX_PER_SOURCE = 8             # at once, from one address
REQUEST_TIMEOUT = 10.0         # seconds for a whole request (slow clients are cut off)
MAX_HEADER_BYTES = 8192
INDEX_MAX_AGE = 300.0          # the index is rebuilt at least this often (answers are confirmed)
INDEX_MIN_INTERVAL = 2.0       # and, on a miss, at most this often
WARN_INTERVAL = 60.0           # a refused source is logged at most this often


class Refused(Exception):
    """The request's sender is not who its address says (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def respond(path: str, source: str, find: Callable[[], VMRecord | None],
            userdata: Callable[[VMRecord], str | None]) -> tuple[int, str, str]:
    """(status, content type, body) for one GET of `path`; `find` names the VM behind the
    request (None: no VM; may raise Refused), called only when the path needs it."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts:
        return 209, "application/json", json.dumps({"message": "PVC Provisioner Metadata API version 1"})
    rest = parts[1:]
    if not rest or rest[0] not in ("meta-data", "user-data"):
        return 404, "text/plain", "not found\n"
    try:
        record = find()
    except Refused as exc:
        return exc.status, "text/plain", f"{exc}\n"
    if record is None:
        return 404, "text/plain", f"no VM holds a lease for {source}\n"
    if rest[0] == "user-data":
        text = userdata(record)
        if text is None:
            return 404, "text/plain", f"VM {record.name} has no userdata (profile '{record.profile}')\n"
        return 200, "text/plain", text
    if len(rest) == 1:
        return 200, "text/plain", "\n".join(KEYS)
    values = {"instance-id": record.uuid, "name": record.name, "profile": record.profile}
    if rest[1] not in values:
        return 404, "text/plain", "not found\n"
    return 200, "text/plain", values[rest[1]]


def answer(zk: ZK, source: str, path: str) -> tuple[int, str, str]:
    """An answer by direct ZooKeeper lookups (no index, no neighbour check): for tools and tests."""
    return respond(path, source, lambda: lookup.vm_for_address(zk, source),
                   lambda record: lookup.userdata_for(zk, record))


@dataclass(frozen=True)
class Binding:
    vni: int
    mac: str


@dataclass
class MetadataIndex:
    """address -> the (network, MAC) pairs holding it; MAC -> the VM with that NIC. Rebuilt as a
    whole from ZooKeeper (never on the request path); readers see one consistent snapshot."""

    zk: ZK
    by_address: dict[str, list[Binding]] = field(default_factory=dict)
    by_mac: dict[str, VMRecord] = field(default_factory=dict)
    built: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def rebuild(self) -> None:
        by_address: dict[str, list[Binding]] = {}
        for tree, path_of in ((schema.NET_LEASES, schema.network_lease),
                              (schema.NET_RESERVATIONS, schema.network_reservation)):
            vnis = [v for v in self.zk.children(tree) if v.isdigit()]
            listing = self.zk.children_many([f"{tree}/{vni}" for vni in vnis]) if vnis else {}
            paths = {path_of(vni, mac): int(vni) for vni in vnis for mac in listing.get(f"{tree}/{vni}", [])}
            for path, doc in (self.zk.get_many(list(paths)) if paths else {}).items():
                if isinstance(doc, dict) and doc.get("ip4_address") and doc.get("mac_address"):
                    binding = Binding(paths[path], str(doc["mac_address"]).lower())
                    found = by_address.setdefault(str(doc["ip4_address"]), [])
                    if binding not in found:
                        found.append(binding)
        by_mac: dict[str, VMRecord] = {}
        for entry in vms_mod.load_entries(self.zk):
            for mac in _nic_macs(entry.record):
                by_mac[mac] = entry.record
        with self._lock:
            self.by_address, self.by_mac, self.built = by_address, by_mac, time.monotonic()

    def bindings(self, address: str) -> list[Binding]:
        with self._lock:
            return list(self.by_address.get(address, ()))

    def vm(self, mac: str) -> VMRecord | None:
        with self._lock:
            return self.by_mac.get(mac.lower())


def _nic_macs(record: VMRecord) -> set[str]:
    nics = vms_mod.record_summary(record).get("networks") or []
    return {str(nic["mac"]).lower() for nic in nics if isinstance(nic, dict) and nic.get("mac")}


def confirm(zk: ZK, source: str, binding: Binding, hint: VMRecord | None) -> VMRecord | None:
    """The index is a hint; the answer is checked against ZooKeeper in O(1) reads: the lease (or
    reservation) still gives `source` to the MAC, and the VM still has a NIC of that MAC (its
    current document, so a VM deleted and another made with its MAC never get mixed up)."""
    held = False
    for path in (schema.network_lease(binding.vni, binding.mac),
                 schema.network_reservation(binding.vni, binding.mac)):
        doc = zk.get(path, None)
        if isinstance(doc, dict) and str(doc.get("ip4_address")) == source:
            held = True
            break
    if not held or hint is None:
        return None
    doc = zk.get(schema.vm(hint.uuid), None)
    if not isinstance(doc, dict):
        return None
    record = VMRecord.model_validate(doc)
    return record if binding.mac in _nic_macs(record) else None


def check_sender(host: NetworkHost, source: str, bindings: list[Binding]) -> list[Binding]:
    """The bindings whose MAC is where the source address really is: the neighbour entry of the
    address on the network's bridge, reached through a port that may carry that MAC (a tap
    of that MAC on this node, or the VXLAN from another node). Raises Refused otherwise."""
    kept = []
    links = None
    for binding in bindings:
        bridge = netconfig.bridge_name(binding.vni)
        seen = host.neighbour(bridge, source)
        if seen is None or seen.lower() != binding.mac:
            continue
        port = host.bridge_port(bridge, binding.mac)
        links = links if links is not None else host.links()
        link = links.get(port or "")
        if link is None:
            continue
        own_tap = link.kind == "tun" and netconfig.mac_matches_tap(binding.mac, link.mac)
        remote = link.kind == "vxlan" and link.name == netconfig.vxlan_name(binding.vni)
        if own_tap or remote:
            kept.append(binding)
    if not kept:
        raise Refused(403, f"{source} is not at the MAC its lease names: refused")
    return kept


class MetadataService:
    """The asyncio HTTP server, started on takeover and stopped on relinquish. `host` (the node's
    NetworkHost) enables the neighbour/bridge-port check; without it (tests, tools) the source
    address alone identifies the VM."""

    def __init__(self, zk: ZK, address: str, port: int, host: NetworkHost | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_per_source: int = MAX_PER_SOURCE,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.zk, self.address, self.port, self.host = zk, address, port, host
        self.max_connections, self.max_per_source = max_connections, max_per_source
        self.request_timeout = request_timeout
        self.index = MetadataIndex(zk)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._active = 0
        self._per_source: dict[str, int] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._last_refresh = 0.0
        self._warned: dict[str, float] = {}
        self._refresher: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- lifecycle

    def start(self) -> None:
        """Bind and serve (idempotent: every primary pass calls it). OSError if it cannot bind."""
        with self._lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    self._server = loop.run_until_complete(asyncio.start_server(
                        self._handle, self.address, self.port, limit=MAX_HEADER_BYTES, reuse_address=True))
                except BaseException as exc:      # reported to start()'s caller
                    failure.append(exc)
                    ready.set()
                    loop.close()
                    return
                self._refresher = loop.create_task(self._refresh_loop())
                ready.set()
                try:
                    loop.run_forever()
                finally:
                    self._server.close()
                    pending = asyncio.all_tasks(loop)     # the refresher and open connections
                    for task in pending:
                        task.cancel()
                    with contextlib.suppress(Exception):
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                        loop.run_until_complete(self._server.wait_closed())
                    loop.close()

            thread = threading.Thread(target=run, name="metadata", daemon=True)
            thread.start()
            ready.wait(10)
            if failure:
                thread.join(5)
                raise OSError(f"metadata service on {self.address}:{self.port}: {failure[0]}")
            self._loop, self._thread = loop, thread
            log.info("metadata service listening on %s:%d", self.address, self.port)

    def stop(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        log.info("metadata service stopped")

    # -- the index

    async def _refresh(self) -> None:
        """One rebuild at a time; callers arriving meanwhile wait for that one."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        loop = asyncio.get_running_loop()
        self._refreshing = loop.create_future()
        try:
            await loop.run_in_executor(None, self.index.rebuild)
            self._last_refresh = time.monotonic()
        except Exception:
            log.exception("metadata index rebuild failed")
        finally:
            done, self._refreshing = self._refreshing, None
            done.set_result(None)

    async def _refresh_loop(self) -> None:
        while True:
            await self._refresh()
            now = time.monotonic()
            self._warned = {k: t for k, t in self._warned.items() if now - t < WARN_INTERVAL}
            await asyncio.sleep(INDEX_MAX_AGE)

    async def _bindings(self, source: str) -> list[Binding]:
        found = self.index.bindings(source)
        if not found and time.monotonic() - self._last_refresh >= INDEX_MIN_INTERVAL:
            await self._refresh()         # a lease newer than the index
            found = self.index.bindings(source)
        return found

    async def _identify(self, source: str) -> VMRecord | None:
        bindings = await self._bindings(source)
        if not bindings:
            return None
        if self.host is not None:
            host = self.host
            try:
                bindings = await asyncio.get_running_loop().run_in_executor(
                    None, check_sender, host, source, bindings)
            except NetworkError as exc:
                raise Refused(503, f"cannot check the sender {source}: {exc}") from None
        loop = asyncio.get_running_loop()

        async def confirmed() -> dict[str, VMRecord | None]:
            return {b.mac: await loop.run_in_executor(None, confirm, self.zk, source, b, self.index.vm(b.mac))
                    for b in bindings}

        records = await confirmed()
        stale = time.monotonic() - self._last_refresh >= INDEX_MIN_INTERVAL
        if any(r is None for r in records.values()) and stale:
            await self._refresh()         # a VM (or lease) newer than the index
            records = await confirmed()
        found = {r.uuid: r for r in records.values() if r is not None}
        if len(found) > 1:
            raise Refused(409, f"{source} is held by more than one VM ({', '.join(sorted(found))}): refused")
        return next(iter(found.values()), None)

    # -- HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        if self._active >= self.max_connections or self._per_source.get(source, 0) >= self.max_per_source:
            writer.close()               # over a cap: no answer at all, nothing read
            return
        self._active += 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        try:
            await asyncio.wait_for(self._serve(source, reader, writer), self.request_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        except Exception:
            log.exception("metadata request from %s failed", source)
        finally:
            self._active -= 1
            left = self._per_source.get(source, 1) - 1
            if left > 0:
                self._per_source[source] = left
            else:
                self._per_source.pop(source, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, source: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request) != 3 or not request[2].startswith("HTTP/"):
            status, ctype, body = 400, "text/plain", "bad request\n"
        elif request[0] not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", f"method {request[0][:16]} not allowed\n"
        else:
            status, ctype, body = await self._answer(source, request[1])
        data = body.encode()
        reason = {200: "OK", 209: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed", 409: "Conflict", 503: "Service Unavailable"}.get(status, "")
        headers = (f"HTTP/1.1 {status} {reason}\r\nServer: pvc-metadata\r\nContent-Type: {ctype}\r\n"
                   f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(headers + (b"" if request and request[0] == "HEAD" else data))
        await writer.drain()

    async def _answer(self, source: str, path: str) -> tuple[int, str, str]:
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        needs_vm = len(parts) > 1 and parts[1] in ("meta-data", "user-data")
        record: VMRecord | None = None
        refused: Refused | None = None
        if needs_vm:
            try:
                record = await self._identify(source)
            except Refused as exc:
                if time.monotonic() - self._warned.get(source, 0.0) >= WARN_INTERVAL:
                    self._warned[source] = time.monotonic()     # one line a minute per source
                    log.warning("metadata: %s", exc)
                refused = exc
            except Exception as exc:
                log.exception("metadata lookup for %s failed", source)
                return 503, "text/plain", f"metadata unavailable: {type(exc).__name__}\n"
        text: str | None = None
        if record is not None and len(parts) > 1 and parts[1] == "user-data":
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(None, lookup.userdata_for, self.zk, record)

        def find() -> VMRecord | None:
            if refused is not None:
                raise refused
            return record

        return respond(path, source, find, lambda _record: text)

    def __repr__(self) -> str:
        return f"MetadataService({self.address}:{self.port}, running={self.running})"
