"""ZooKeeper session: connection handling, retries, JSON documents, CAS writes, pipelined reads.

Everything PVC knows lives in ZooKeeper (DESIGN D1). This wrapper is the only place that
talks to kazoo directly, so retry and error policy is decided once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry, RetryFailedError
from kazoo.security import make_digest_acl

from pvc.core import zkmulti
from pvc.core.errors import ClusterUnavailable, Conflict
from pvc.core.zkcache import TreeMirror

log = logging.getLogger(__name__)

Json = Any
MULTI_BATCH = 250          # reads per multiRead (a few hundred KiB of documents)
_MISSING = object()
# What a pipelined write can lose to a concurrent writer: the caller re-reads and decides again.
_RACES = (BadVersionError, NodeExistsError, NoNodeError)


class Document:
    """A JSON value read from a znode together with the version needed to CAS it back."""

    __slots__ = ("data", "path", "version")

    def __init__(self, path: str, data: Json, version: int) -> None:
        self.path, self.data, self.version = path, data, version


def encode(value: Json) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes | None) -> Json:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


# One step of a multi-op transaction (see ZK.commit_ops), built by the op_* functions below.
TxOp = Callable[[Any], None]


def op_create(path: str, value: Json = None) -> TxOp:
    data = b"" if value is None else encode(value)
    return lambda tx: tx.create(path, data)


def op_set(path: str, value: Json, version: int = -1) -> TxOp:
    data = b"" if value is None else encode(value)
    return lambda tx: tx.set_data(path, data, version=version)


def op_delete(path: str, version: int = -1) -> TxOp:
    return lambda tx: tx.delete(path, version=version)


def op_check(path: str, version: int) -> TxOp:
    return lambda tx: tx.check(path, version)


class ZK:
    """A kazoo session with PVC's policy: reconnect forever, retry idempotent calls on loss."""

    def __init__(
        self,
        hosts: Iterable[str],
        root: str = "/pvc",
        session_timeout: float = 6.0,
        auth: tuple[str, str] | None = None,
        read_only: bool = False,
    ) -> None:
        chroot = "" if root == "/" else root
        self.hosts = ",".join(hosts) + chroot
        self.root = root
        acl = None
        auth_data = None
        if auth:
            user, password = auth
            auth_data = [("digest", f"{user}:{password}")]
            acl = [make_digest_acl(user, password, all=True)]
        self.client = KazooClient(
            hosts=self.hosts,
            timeout=session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0, "backoff": 1.5},
            command_retry={"max_tries": 3, "delay": 0.1, "max_delay": 1.0},
            auth_data=auth_data,
            default_acl=acl,
            read_only=read_only,
        )
        self._retry = KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0, deadline=30, ignore_expire=False)
        self._listeners: list[Callable[[KazooState], None]] = []
        self.client.add_listener(self._on_state)
        self.lost = threading.Event()
        self._caches: dict[str, TreeMirror] = {}
        self._decoded: dict[str, tuple[int, Json]] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ZK:
        zk = settings.zookeeper
        auth = (zk.auth.username, zk.auth.password) if zk.auth else None
        return cls(zk.hosts, zk.root, zk.session_timeout, auth)

    # -- connection ----------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> ZK:
        try:
            with warnings.catch_warnings():
                # kazoo warns when the chroot is missing; _ensure_chroot creates it just below.
                warnings.filterwarnings("ignore", message="No chroot path exists")
                self.client.start(timeout=timeout)
        except KazooTimeoutError:
            self.client.stop()
            raise ClusterUnavailable(f"cannot connect to ZooKeeper at {self.hosts}") from None
        if self.root != "/":
            # The chroot itself must exist; create it through a root-level client.
            self._ensure_chroot()
        return self

    def _ensure_chroot(self) -> None:
        if self.client.exists("/") is not None:
            return
        bare = KazooClient(hosts=self.hosts.split("/", 1)[0], auth_data=self.client.auth_data or None,
                           default_acl=self.client.default_acl)
        bare.start(timeout=10)
        try:
            bare.ensure_path(self.root)
        finally:
            bare.stop()
            bare.close()

    # -- ACLs (DESIGN D14; pvc.core.schema.protect decides when) -----------------------------

    @property
    def default_acl(self) -> list[Any]:
        """The ACL this session gives what it creates (the digest ACL; empty without credentials)."""
        return list(self.client.default_acl or ())

    def protect_tree(self, acl: list[Any]) -> int:
        """Set `acl` on every znode of the tree (the root included) that the world may open; walk
        level by level with the requests of a level pipelined. How many znodes it changed."""
        client = self.client
        changed, level = 0, ["/"]
        while level:
            if self.root == "/":
                level = [p for p in level if p != "/zookeeper" and not p.startswith("/zookeeper/")]

            def once(paths: list[str] = level) -> tuple[int, list[str]]:
                acls = [(p, client.get_acls_async(p)) for p in paths]
                opened = []
                for path, result in acls:
                    try:
                        current, _stat = result.get(timeout=30)
                    except NoNodeError:
                        continue
                    if any(entry.id.scheme == "world" for entry in current):
                        opened.append(client.set_acls_async(path, acl))
                done = 0
                for result in opened:
                    try:
                        result.get(timeout=30)
                        done += 1
                    except NoNodeError:
                        pass
                kids = [(p, client.get_children_async(p)) for p in paths]
                below = []
                for path, result in kids:
                    try:
                        below += [f"{path.rstrip('/')}/{child}" for child in result.get(timeout=30)]
                    except NoNodeError:
                        pass
                return done, below

            done, level = self.retry(once)
            changed += done
        return changed

    def stop(self) -> None:
        for mirror in self._caches.values():
            mirror.close()
        self._caches.clear()
        try:
            self.client.stop()
        finally:
            self.client.close()

    @property
    def connected(self) -> bool:
        return self.client.state == KazooState.CONNECTED

    @property
    def session_id(self) -> int | None:
        session = self.client.client_id
        return session[0] if session else None

    def add_listener(self, fn: Callable[[KazooState], None]) -> None:
        self._listeners.append(fn)

    def _on_state(self, state: KazooState) -> None:
        log.info("zookeeper session %s", state.lower())
        if state == KazooState.LOST:
            self.lost.set()
        elif state == KazooState.CONNECTED:
            self.lost.clear()
        for fn in self._listeners:
            try:
                fn(state)
            except Exception:  # a listener must never break kazoo's connection thread
                log.exception("zookeeper state listener failed")

    def retry(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn, retrying on connection loss; map a final failure to ClusterUnavailable.

        kazoo queues a call made while it is reconnecting and waits for the answer without any
        time limit, so with ZooKeeper down a call would block forever. An attempt is therefore
        only made while connected; otherwise it counts as a connection loss, retried until the
        deadline.
        """
        def attempt(*a: Any, **kw: Any) -> Any:
            if not self.client.connected:
                raise ConnectionLoss("not connected to ZooKeeper")
            return fn(*a, **kw)

        try:
            return self._retry.copy()(attempt, *args, **kwargs)
        except (RetryFailedError, ConnectionLoss, OperationTimeoutError, SessionExpiredError,
                KazooTimeoutError) as exc:
            raise ClusterUnavailable(f"ZooKeeper unavailable: {type(exc).__name__}") from None

    # -- watched caches ------------------------------------------------------------------------

    def cache(self, parent: str, depth: int = 1, before_watch: Callable[[], Any] | None = None) -> None:
        """Keep a watch-driven copy of parent's subtree (depth levels), so hot lists need no round
        trips. Long-running readers (the API) call this; lists then serve from memory, while
        single reads and CAS updates still go to the server, so a write is never based on stale
        data: a check over a whole list that decides a write (which VMs use a network or volume,
        which nodes can take a VM) reads it with fresh=True (pvc.cluster's load_entries,
        load_nodes), as the copy may lag the server. The copy is loaded in bulk (pvc.core.zkcache)."""
        if parent not in self._caches:
            mirror = TreeMirror(self.client, parent, depth, before_watch)
            self._caches[parent] = mirror
            mirror.start()

    def cached_children_docs(self, parent: str) -> dict[str, Json] | None:
        """{child: decoded data} from the cache of parent, or None when none is live."""
        mirror = self.live_cache(parent)
        if mirror is None:
            return None
        out: dict[str, Json] = {}
        for child, node in list(mirror.root.children.items()):
            if node.stat is None:
                continue
            path = f"{parent}/{child}"
            # Decoding every document on every list is most of a list's cost: keep the decoded
            # value until the znode changes (its mzxid moves).
            known = self._decoded.get(path)
            if known is None or known[0] != node.stat.mzxid:
                known = (node.stat.mzxid, decode(node.data))
                self._decoded[path] = known
            out[child] = known[1]
        return out

    def live_cache(self, parent: str, wait: float = 0.0) -> TreeMirror | None:
        """The mirror of parent if it can answer: started, loaded, and the session connected.

        wait: while a started mirror takes its first snapshot (well under a second at 10,000
        VMs), wait up to this long for it rather than read everything directly.
        For readers that need more than direct children (the VM list reads each VM's status).
        """
        mirror = self._caches.get(parent)
        if mirror is None or not self.connected:
            return None
        if not mirror.loaded.is_set() and not (wait and mirror.loading() and mirror.loaded.wait(wait)):
            return None
        return mirror

    def mirror(self, parent: str) -> TreeMirror | None:
        """The mirror of parent as started by cache(), loaded or not."""
        return self._caches.get(parent)

    def cached_children(self, parent: str) -> list[str] | None:
        mirror = self.live_cache(parent)
        if mirror is None:
            return None
        return sorted(name for name, node in list(mirror.root.children.items()) if node.stat is not None)

    # -- reads ---------------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def stat(self, path: str, retry: bool = True) -> ZnodeStat | None:
        """The znode's stat (its version, the session owning an ephemeral), None when missing.

        retry=False for a caller already inside a retried function (a transaction being built)
        or one that must learn of a failure at once (the election treats it as still holding)."""
        return self.retry(self.client.exists, path) if retry else self.client.exists(path)

    def exists_async(self, path: str) -> Any:
        """A kazoo async result of exists(path): many checks sent at once, answered together."""
        return self.client.exists_async(path)

    def get(self, path: str, default: Json = _MISSING) -> Json:
        doc = self.get_doc(path)
        if doc is None:
            if default is _MISSING:
                raise NoNodeError(path)
            return default
        return doc.data

    def get_doc(self, path: str) -> Document | None:
        try:
            raw, stat = self.retry(self.client.get, path)
        except NoNodeError:
            return None
        return Document(path, decode(raw), stat.version)

    def get_raw(self, path: str) -> tuple[bytes, ZnodeStat] | None:
        try:
            return self.retry(self.client.get, path)
        except NoNodeError:
            return None

    def children(self, path: str) -> list[str]:
        try:
            return sorted(self.retry(self.client.get_children, path))
        except NoNodeError:
            return []

    def get_many(self, paths: list[str]) -> dict[str, Json]:
        """Fetch many znodes in one pipelined round (missing ones map to None)."""
        return self.retry(self._get_many_once, paths)

    def _get_many_once(self, paths: list[str]) -> dict[str, Json]:
        return {path: doc.data if doc is not None else None
                for path, doc in self._get_many_docs_once(paths).items()}

    def get_many_docs(self, paths: list[str]) -> dict[str, Document | None]:
        """Like get_many, with each znode's version (for compare-and-set and ETags)."""
        return self.retry(self._get_many_docs_once, paths)

    def _get_many_docs_once(self, paths: list[str]) -> dict[str, Document | None]:
        # multiRead batches: kazoo spends ~0.2 ms per request however pipelined, one batch costs
        # about as much as one read (pvc.core.zkmulti).
        answers = self._multi_read([zkmulti.ReadOp(zkmulti.GET_DATA, path) for path in paths])
        out: dict[str, Document | None] = {}
        for path, answer in zip(paths, answers, strict=True):
            if isinstance(answer, NoNodeError):
                out[path] = None
            elif isinstance(answer, Exception):
                raise answer
            else:
                raw, stat = answer
                out[path] = Document(path, decode(raw), stat.version)
        return out

    def _multi_read(self, ops: list[zkmulti.ReadOp]) -> list[Any]:
        """The answers of ops, in order (an exception object where one failed), in batches."""
        pending = [zkmulti.send(self.client, ops[i:i + MULTI_BATCH]) for i in range(0, len(ops), MULTI_BATCH)]
        answers: list[Any] = []
        for result in pending:
            answers.extend(result.get(timeout=30))
        return answers

    def children_many(self, paths: list[str]) -> dict[str, list[str]]:
        def once() -> dict[str, list[str]]:
            answers = self._multi_read([zkmulti.ReadOp(zkmulti.GET_CHILDREN, path) for path in paths])
            out: dict[str, list[str]] = {}
            for path, answer in zip(paths, answers, strict=True):
                if isinstance(answer, NoNodeError):
                    out[path] = []
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    out[path] = sorted(answer)
            return out

        return self.retry(once)

    # -- writes --------------------------------------------------------------------------------

    def create(self, path: str, value: Json = None, ephemeral: bool = False, sequence: bool = False,
               makepath: bool = True, raw: bytes | None = None) -> str:
        data = raw if raw is not None else (b"" if value is None else encode(value))
        return self.retry(self.client.create, path, data, ephemeral=ephemeral, sequence=sequence,
                          makepath=makepath)

    def put(self, path: str, value: Json, version: int = -1) -> None:
        """Write (creating if missing) a JSON document; with version, only over that version."""
        data = encode(value)

        def once() -> None:
            try:
                self.client.set(path, data, version=version)
            except NoNodeError:
                if version not in (-1,):
                    raise
                try:
                    self.client.create(path, data, makepath=True)
                except NodeExistsError:
                    self.client.set(path, data)

        self.retry(once)

    def put_raw(self, path: str, data: bytes) -> None:
        def once() -> None:
            try:
                self.client.set(path, data)
            except NoNodeError:
                self.client.create(path, data, makepath=True)

        self.retry(once)

    def update(self, path: str, fn: Callable[[Json], Json], create: bool = False,
               attempts: int = 50) -> Json:
        """Compare-and-set loop: fn(current) returns the new value (or raises to abort).

        Losers back off for a random, growing interval so that one writer cannot be starved by
        others that keep winning the race on a busy znode.
        """
        for attempt in range(attempts):
            if attempt:
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))
            doc = self.get_doc(path)
            if doc is None:
                if not create:
                    raise NoNodeError(path)
                new = fn(None)
                try:
                    self.retry(self.client.create, path, encode(new), makepath=True)
                    return new
                except NodeExistsError:
                    continue
            new = fn(doc.data)
            if new == doc.data:
                return new
            try:
                self.retry(self.client.set, path, encode(new), version=doc.version)
                return new
            except BadVersionError:
                continue
        raise Conflict(f"{path}: too many concurrent updates, try again")

    def delete(self, path: str, recursive: bool = True) -> bool:
        try:
            self.retry(self.client.delete, path, recursive=recursive)
            return True
        except NoNodeError:
            return False
        except NotEmptyError:
            if not recursive:
                raise           # the caller meant "only when empty" (a lock others queue under)
            # Children appeared between listing and deleting; try once more.
            self.retry(self.client.delete, path, recursive=True)
            return True

    def ensure(self, path: str) -> None:
        self.retry(self.client.ensure_path, path)

    def set_raw(self, path: str, data: bytes, version: int = -1) -> ZnodeStat:
        """Write raw bytes, only at `version` when given (BadVersionError otherwise); the new stat."""
        return self.retry(self.client.set, path, data, version=version)

    def set_doc(self, path: str, value: Json, version: int = -1) -> int:
        """Write a JSON value, only at `version` when given (BadVersionError otherwise); the new
        version. For callers that run their own compare-and-set decisions."""
        return self.set_raw(path, encode(value), version).version

    def create_doc(self, path: str, value: Json, makepath: bool = False) -> None:
        """Create a znode holding a JSON value (NodeExistsError when it exists)."""
        self.retry(self.client.create, path, encode(value), makepath=makepath)

    def put_guarded(self, path: str, value: Json, guard: str) -> None:
        """Write a JSON value; create path only while `guard` exists (one transaction), so a
        document never outlives what it belongs to (a deleted VM's console). When guard is gone
        (or another writer created path meanwhile) nothing is written."""
        data = encode(value)

        def once() -> None:
            try:
                self.client.set(path, data)
            except NoNodeError:
                tx = self.client.transaction()
                tx.check(guard, -1)
                tx.create(path, data)
                tx.commit()

        self.retry(once)

    # -- pipelined writes (all requests sent, then all answers collected: one round trip) -----

    def write_many(self, writes: list[tuple[str, Json, int | None]],
                   makepath: bool = True) -> dict[str, Exception | None]:
        """Compare-and-set many JSON documents at once: (path, value, version) creates path when
        version is None, else sets it only at that version. {path: None when written, else the
        BadVersionError / NodeExistsError / NoNodeError that lost a race}, so the caller re-reads
        just those. makepath=False where a create must never re-create a removed parent (a
        deleted VM's status)."""
        def once() -> dict[str, Exception | None]:
            pending = []
            for path, value, version in writes:
                data = encode(value)
                pending.append((path, self.client.create_async(path, data, makepath=makepath)
                                if version is None else self.client.set_async(path, data, version=version)))
            out: dict[str, Exception | None] = {}
            for path, result in pending:
                try:
                    result.get(timeout=10)
                    out[path] = None
                except _RACES as exc:
                    out[path] = exc
            return out

        return self.retry(once) if writes else {}

    def put_many(self, docs: dict[str, Json]) -> None:
        """Like put for many documents at once (set, create the missing ones with their parents),
        for documents a single writer owns (a node's VM stats shards): no versions."""
        if not docs:
            return
        encoded = {path: encode(value) for path, value in docs.items()}

        def once() -> None:
            sets = [(path, data, self.client.set_async(path, data)) for path, data in encoded.items()]
            creates = []
            for path, data, result in sets:
                try:
                    result.get(timeout=10)
                except NoNodeError:
                    creates.append((path, data, self.client.create_async(path, data, makepath=True)))
            for path, data, result in creates:
                try:
                    result.get(timeout=10)
                except NodeExistsError:
                    self.client.set(path, data)

        self.retry(once)

    def delete_many(self, paths: list[str]) -> None:
        """Delete many znodes at once (not recursively); missing ones are no error."""
        if not paths:
            return

        def once() -> None:
            pending = [self.client.delete_async(path) for path in paths]
            for result in pending:
                with contextlib.suppress(NoNodeError):
                    result.get(timeout=10)

        self.retry(once)

    # -- watches and locks (kazoo recipes; callbacks run on kazoo's event thread) ---------------

    def watch_data(self, path: str, fn: Callable[..., Any]) -> Any:
        """Call fn(data, stat[, event]) now and on every change of path (kazoo DataWatch)."""
        return self.client.DataWatch(path, fn)

    def watch_children(self, path: str, fn: Callable[..., Any], send_event: bool = False) -> Any:
        """Call fn(children[, event]) now and on every change of path's children (ChildrenWatch)."""
        return self.client.ChildrenWatch(path, fn, send_event=send_event)

    def lock(self, path: str, identifier: str) -> Any:
        """A kazoo Lock recipe on path (acquire/release; contenders queue as sequence znodes)."""
        return self.client.Lock(path, identifier)

    def transaction(self) -> Any:
        return self.client.transaction()

    def commit_ops(self, ops: list[TxOp]) -> bool:
        """Commit `ops` in one transaction, built afresh if a lost connection makes us retry.

        False when a concurrent writer changed what the ops depend on (a version, a znode's
        existence): the caller reads again and re-plans. Any other error is raised."""
        def once() -> list[Any]:
            tx = self.client.transaction()
            for op in ops:
                op(tx)
            return list(tx.commit())

        results = self.retry(once)
        failed = next((r for r in results
                       if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"), None)
        if failed is None:
            return True
        if isinstance(failed, BadVersionError | NodeExistsError | NoNodeError | NotEmptyError):
            return False
        raise failed

    def commit(self, tx: Any) -> list[Any]:
        """Commit a kazoo transaction; raise the first real error (rollbacks are secondary)."""
        results = self.retry(tx.commit)
        for item in results:
            if isinstance(item, Exception) and not type(item).__name__ == "RolledBackError":
                raise item
        return results

    # -- bulk ----------------------------------------------------------------------------------

    def walk(self, path: str = "/") -> dict[str, tuple[bytes, bool]]:
        """Every znode below path as (raw data, is_ephemeral), read level by level, pipelined."""
        out: dict[str, tuple[bytes, bool]] = {}
        level = [path]
        while level:
            datas = self.retry(self._raw_many, level)
            kids = self.children_many(level)
            out.update(datas)
            level = [_join(parent, child) for parent in level for child in kids.get(parent, [])]
        return out

    def _raw_many(self, paths: list[str]) -> dict[str, tuple[bytes, bool]]:
        answers = self._multi_read([zkmulti.ReadOp(zkmulti.GET_DATA, p) for p in paths])
        result: dict[str, tuple[bytes, bool]] = {}
        for p, answer in zip(paths, answers, strict=True):
            if isinstance(answer, NoNodeError):
                continue
            if isinstance(answer, Exception):
                raise answer
            raw, stat = answer
            result[p] = (raw or b"", stat.ephemeralOwner != 0)
        return result


def _join(parent: str, child: str) -> str:
    return f"{parent.rstrip('/')}/{child}"


__all__ = [
    "ZK",
    "BadVersionError",
    "Document",
    "KazooException",
    "NoNodeError",
    "NodeExistsError",
    "decode",
    "encode",
]
