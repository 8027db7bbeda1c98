"""A watch-driven copy of a ZooKeeper subtree, loaded in bulk: the API's list caches.

kazoo's TreeCache loads node by node (a getData and a getChildren each, with watches), which at
10,000 VMs took 12-25 s, and its requests queue ahead of every other request of the process
meanwhile. This mirror loads in two phases:

1. **Snapshot**: the subtree, level by level, in multiRead batches (pvc.core.zkmulti): 30,000
   znodes in about a second. Readers are served from it as soon as it is in place.
2. **Watch**: one getData / getChildren with a watch per znode, at most WINDOW in flight so
   other requests of the process still get through. Each answer is applied like a change, so
   whatever changed since the snapshot is caught up by the time its watch is set.

After that, a watch event only sends a request (re-read the data, re-list the children); every
change to the mirror is made from the answers, which kazoo delivers on one thread in server order,
so a late answer can never resurrect a deleted node. When the session expires the mirror stops
answering and loads afresh once connected. kazoo forgets every watcher when the connection drops
(even when the session survives), so after a reconnect the mirror reads and watches everything
again, as kazoo's TreeCache does; answers newer than the mirror apply as changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import ConnectionLoss, NoNodeError, OperationTimeoutError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, KazooState, ZnodeStat

from pvc.core import zkmulti

log = logging.getLogger(__name__)

WINDOW = 256          # watch-setting requests in flight at once
BATCH = 250           # reads per multiRead during the snapshot


class CacheNode:
    """One znode of the mirror: its data and stat (None until read) and its children."""

    __slots__ = ("children", "data", "stat")

    def __init__(self, data: bytes | None = None, stat: ZnodeStat | None = None) -> None:
        self.data = data
        self.stat = stat
        self.children: dict[str, CacheNode] = {}


class TreeMirror:
    """The subtree `depth` levels below `root` (depth 1: the children; 2: grandchildren too)."""

    def __init__(self, client: Any, root: str, depth: int,
                 before_watch: Callable[[], Any] | None = None) -> None:
        self.client, self.root_path, self.depth = client, root.rstrip("/") or "/", depth
        self.root = CacheNode()
        self.loaded = threading.Event()            # a snapshot is in place and the session lives
        self.watching = threading.Event()          # every znode of the snapshot has its watch
        self.generation = 0
        self._listeners: list[Callable[[], Any]] = []
        self._epoch = 0
        self._window = threading.BoundedSemaphore(WINDOW)
        self._closed = False
        # Run once the first snapshot is in place, before the watch phase takes the CPU (the API
        # renders its VM list there, so the first list after a start is served at once).
        self._before_watch = before_watch

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.client.add_listener(self._on_state)
        self._reload()

    def close(self) -> None:
        self._closed = True
        self._epoch += 1
        self.loaded.clear()

    def loading(self) -> bool:
        """A first snapshot is on its way (started, not closed, not yet in place)."""
        return not self._closed and not self.loaded.is_set() and self._epoch > 0

    def listen(self, fn: Callable[[], Any]) -> None:
        """fn() after every change of the mirror (on kazoo's completion thread: keep it cheap)."""
        self._listeners.append(fn)

    def _on_state(self, state: KazooState) -> Any:
        if state == KazooState.LOST:
            self._epoch += 1                         # every watch is gone; answers in flight too
            self.loaded.clear()
            self.watching.clear()
        elif state == KazooState.SUSPENDED:
            self.watching.clear()                    # kazoo forgets every watcher on a drop
        elif state == KazooState.CONNECTED and not self._closed:
            if not self.loaded.is_set():
                self._reload()
            else:
                # Same session, but kazoo dropped its watcher table with the connection: read and
                # watch everything again (answers newer than the mirror are applied as changes).
                # Not from this thread: it is kazoo's connection thread, which must keep draining
                # its queue (sending from here deadlocked once the queue filled).
                epoch = self._epoch
                threading.Thread(target=self._watch_all, args=(epoch, time.monotonic()), daemon=True,
                                 name=f"mirror{self.root_path}-rewatch").start()
        return False                                 # keep listening

    def _lost(self, listing: bool, path: str, depth: int, epoch: int, exc: Exception) -> None:
        """A read failed. Connection lost or timed out: while connected, send it again at once;
        otherwise the re-watch after the reconnect covers it. Any other error (e.g. an ACL
        refusing us) is logged, and that znode is not mirrored."""
        what = f"{'listing' if listing else 'read'} of {path}"
        if not isinstance(exc, ConnectionLoss | OperationTimeoutError | KazooTimeoutError):
            log.warning("mirror %s: %s failed: %s", self.root_path, what, exc)
            return
        if self.client.connected and epoch == self._epoch:
            (self._list if listing else self._read)(path, depth, epoch)

    def _reload(self) -> None:
        self._epoch += 1
        epoch = self._epoch
        threading.Thread(target=self._load, args=(epoch,), daemon=True,
                         name=f"mirror{self.root_path}").start()

    def _changed(self) -> None:
        self.generation += 1
        for fn in self._listeners:
            try:
                fn()
            except Exception:
                log.exception("mirror listener failed")

    # -- phase 1: the snapshot -----------------------------------------------------------------

    def _path(self, parent: str, child: str) -> str:
        return f"{parent}/{child}" if parent != "/" else f"/{child}"

    def _load(self, epoch: int) -> None:
        began = time.monotonic()
        while not self._closed and epoch == self._epoch:
            try:
                root = self._snapshot()
                break
            except Exception as exc:                 # connection loss, timeout: try again
                log.info("mirror %s: snapshot failed (%s); retrying", self.root_path, exc)
                threading.Event().wait(1.0)
        else:
            return
        if epoch != self._epoch:
            return
        self.root = root
        self.loaded.set()
        self._changed()
        log.info("mirror %s: snapshot of %d children in %.2f s", self.root_path, len(root.children),
                 time.monotonic() - began)
        hook, self._before_watch = self._before_watch, None
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("mirror %s: the hook before watching failed", self.root_path)
        self._watch_all(epoch, began)

    def _snapshot(self) -> CacheNode:
        root = CacheNode()
        try:
            names = self.client.get_children(self.root_path)
        except NoNodeError:
            names = []           # the watch phase's listing of the root waits for it to appear
        level: list[tuple[str, CacheNode, int]] = [
            (self._path(self.root_path, n), self._child(root, n), 1) for n in names]
        while level:
            ops: list[zkmulti.ReadOp] = []
            for path, _node, depth in level:
                ops.append(zkmulti.ReadOp(zkmulti.GET_DATA, path))
                if depth < self.depth:
                    ops.append(zkmulti.ReadOp(zkmulti.GET_CHILDREN, path))
            results: list[Any] = []
            pending = [zkmulti.send(self.client, ops[i:i + BATCH]) for i in range(0, len(ops), BATCH)]
            for result in pending:
                results.extend(result.get(timeout=60))
            answers = iter(results)
            following: list[tuple[str, CacheNode, int]] = []
            for path, node, depth in level:
                data = next(answers)
                kids = next(answers) if depth < self.depth else []
                if isinstance(data, tuple):
                    node.data, node.stat = data
                if isinstance(kids, list):
                    following += [(self._path(path, k), self._child(node, k), depth + 1) for k in kids]
            # znodes deleted between the listing and the read have no data: leave them out
            for path, node, _depth in level:
                if node.stat is None:
                    self._drop_from(root, path)
            level = following
        return root

    @staticmethod
    def _child(parent: CacheNode, name: str) -> CacheNode:
        node = CacheNode()
        parent.children[name] = node
        return node

    # -- phase 2: watches ------------------------------------------------------------------------

    def _watch_all(self, epoch: int, began: float = 0.0) -> None:
        self._list(self.root_path, 0, epoch, windowed=True)
        stack: list[tuple[str, CacheNode, int]] = [
            (self._path(self.root_path, n), node, 1) for n, node in list(self.root.children.items())]
        while stack and epoch == self._epoch:
            path, node, depth = stack.pop()
            self._read(path, depth, epoch, windowed=True)
            if depth < self.depth:
                self._list(path, depth, epoch, windowed=True)
                stack += [(self._path(path, n), child, depth + 1) for n, child in list(node.children.items())]
        if epoch == self._epoch:
            self.watching.set()
            log.info("mirror %s: watching, %.2f s after the start of its load", self.root_path,
                     time.monotonic() - began)

    def _data_watcher(self, epoch: int) -> Callable[[Any], None]:
        cached = getattr(self, "_dw", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]

        def watcher(event: Any) -> None:
            if epoch == self._epoch and event.type in (EventType.CHANGED, EventType.DELETED):
                self._read(event.path, self._depth_of(event.path), epoch)

        self._dw = (epoch, watcher)
        return watcher

    def _child_watcher(self, epoch: int) -> Callable[[Any], None]:
        cached = getattr(self, "_cw", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]

        def watcher(event: Any) -> None:
            if epoch == self._epoch and event.type in (EventType.CHILD, EventType.DELETED):
                self._list(event.path, self._depth_of(event.path), epoch)

        self._cw = (epoch, watcher)
        return watcher

    def _depth_of(self, path: str) -> int:
        if path == self.root_path:
            return 0
        rest = path[len(self.root_path):] if self.root_path != "/" else path
        return rest.strip("/").count("/") + 1

    def _send(self, call: Callable[..., Any], path: str, watch: Callable[[Any], None],
              done: Callable[[Any], None], windowed: bool) -> None:
        """Send a watching read; done(answer) runs on kazoo's completion thread. Only the loader
        thread is windowed (it may block); callbacks never wait on the window."""
        if windowed:
            self._window.acquire()
        try:
            result = call(path, watch=watch)
        except Exception:
            if windowed:
                self._window.release()
            raise

        def finished(answer: Any) -> None:
            if windowed:
                self._window.release()
            done(answer)

        result.rawlink(finished)

    def _read(self, path: str, depth: int, epoch: int, windowed: bool = False) -> None:
        def done(answer: Any) -> None:
            if epoch != self._epoch:
                return
            try:
                data, stat = answer.get_nowait()
            except NoNodeError:
                self._remove(path)
                return
            except Exception as exc:
                self._lost(False, path, depth, epoch, exc)
                return
            self._store(path, data, stat)

        self._send(self.client.get_async, path, self._data_watcher(epoch), done, windowed)

    def _list(self, path: str, depth: int, epoch: int, windowed: bool = False) -> None:
        def done(answer: Any) -> None:
            if epoch != self._epoch:
                return
            try:
                names = set(answer.get_nowait())
            except NoNodeError:
                if path == self.root_path:
                    self._root_gone(epoch)
                else:
                    self._remove(path)
                return
            except Exception as exc:
                self._lost(True, path, depth, epoch, exc)
                return
            node = self._find(path)
            if node is None:
                return
            gone = [n for n in node.children if n not in names]
            for name in gone:
                node.children.pop(name, None)
            for name in sorted(names - set(node.children)):
                child_path = self._path(path, name)
                self._read(child_path, depth + 1, epoch)       # inserts it when its data arrives
                if depth + 1 < self.depth:
                    self._list(child_path, depth + 1, epoch)
            if gone:
                self._changed()

        self._send(self.client.get_children_async, path, self._child_watcher(epoch), done, windowed)

    def _root_gone(self, epoch: int) -> None:
        """The mirrored path itself was deleted (a wipe before a restore): empty the mirror and
        list it again once it exists (an exists watch is the only watch a missing znode takes)."""
        if self.root.children:
            self.root.children.clear()
            self._changed()

        def created(event: Any) -> None:
            if epoch == self._epoch and event.type == EventType.CREATED:
                self._list(self.root_path, 0, epoch)

        def answered(answer: Any) -> None:
            try:
                stat = answer.get_nowait()
            except Exception:
                return
            if stat is not None and epoch == self._epoch:   # created meanwhile
                self._list(self.root_path, 0, epoch)

        self.client.exists_async(self.root_path, watch=created).rawlink(answered)

    # -- the tree (changed only from answers, in server order) ---------------------------------

    def _find(self, path: str, create: bool = False) -> CacheNode | None:
        if path == self.root_path:
            return self.root
        rest = path[len(self.root_path):] if self.root_path != "/" else path
        node = self.root
        parts = rest.strip("/").split("/")
        for index, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                if not create or index != len(parts) - 1:
                    return None
                child = CacheNode()
                node.children[part] = child
            node = child
        return node

    def _store(self, path: str, data: bytes, stat: ZnodeStat) -> None:
        node = self._find(path, create=True)
        if node is None:                             # its parent is gone
            return
        if node.stat is not None and stat.mzxid <= node.stat.mzxid and node.data is not None:
            return
        node.data, node.stat = data, stat
        self._changed()

    def _remove(self, path: str) -> None:
        if self._drop_from(self.root, path):
            self._changed()

    def _drop_from(self, root: CacheNode, path: str) -> bool:
        parent_path, _, name = path.rpartition("/")
        rest = parent_path[len(self.root_path):] if self.root_path != "/" else parent_path
        node: CacheNode | None = root
        for part in [p for p in rest.strip("/").split("/") if p]:
            node = node.children.get(part) if node is not None else None
        return node is not None and node.children.pop(name, None) is not None
