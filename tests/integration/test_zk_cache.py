"""The API's list caches (pvc.core.zkcache) on a real ZooKeeper: bulk snapshot, then watches.

Every test ends by comparing the mirror with a fresh read of the same subtree: whatever the
order of writes, answers and events, the mirror must converge to what is stored.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from kazoo.protocol.connection import _SESSION_EXPIRED

from pvc.core import zkmulti
from pvc.core.zk import ZK
from pvc.core.zkcache import CacheNode, TreeMirror
from tests.conftest import wait_for

ROOT = "/mirror"


def stored(zk: ZK, path: str, depth: int) -> dict[str, Any]:
    """{child: (data, {grandchild: data})} read directly, depth 1 or 2."""
    out: dict[str, Any] = {}
    for child in zk.children(path):
        raw = zk.get_raw(f"{path}/{child}")
        if raw is None:
            continue
        kids = {}
        if depth > 1:
            for grand in zk.children(f"{path}/{child}"):
                graw = zk.get_raw(f"{path}/{child}/{grand}")
                if graw is not None:
                    kids[grand] = graw[0]
        out[child] = (raw[0], kids)
    return out


def mirrored(root: CacheNode, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child, node in list(root.children.items()):
        if node.stat is None:
            continue
        kids = {g: n.data for g, n in list(node.children.items()) if n.stat is not None} if depth > 1 else {}
        out[child] = (node.data, kids)
    return out


def converged(zk: ZK, mirror: TreeMirror, depth: int = 2) -> bool:
    return mirror.loaded.is_set() and mirror.watching.is_set() and \
        mirrored(mirror.root, depth) == stored(zk, ROOT, depth)


def populate(zk: ZK, count: int) -> None:
    for index in range(count):
        zk.create(f"{ROOT}/vm{index}", {"n": index}, makepath=True)
        if index % 2:
            zk.create(f"{ROOT}/vm{index}/status", {"running": True})


def start(zk: ZK, depth: int = 2) -> TreeMirror:
    mirror = TreeMirror(zk.client, ROOT, depth)
    mirror.start()
    wait_for(lambda: mirror.watching.is_set(), message="the mirror's watches")
    return mirror


def test_multiread_answers_data_children_and_errors(zk: ZK) -> None:
    populate(zk, 3)
    ops = [zkmulti.ReadOp(zkmulti.GET_DATA, f"{ROOT}/vm1"),
           zkmulti.ReadOp(zkmulti.GET_CHILDREN, f"{ROOT}/vm1"),
           zkmulti.ReadOp(zkmulti.GET_DATA, f"{ROOT}/missing")]
    data, children, missing = zkmulti.send(zk.client, ops).get(timeout=10)
    assert data[0] == b'{"n":1}'
    assert data[1].version == 0
    assert children == ["status"]
    assert type(missing).__name__ == "NoNodeError"


def test_snapshot_then_every_kind_of_change(zk: ZK) -> None:
    populate(zk, 50)
    mirror = start(zk)
    assert converged(zk, mirror)
    generation = mirror.generation
    zk.put(f"{ROOT}/vm3", {"n": 333})                        # data changed
    zk.create(f"{ROOT}/vm4/status", {"running": False})      # grandchild created
    zk.delete(f"{ROOT}/vm5/status")                          # grandchild deleted
    zk.delete(f"{ROOT}/vm6")                                 # child and subtree deleted
    zk.create(f"{ROOT}/new", {"n": "new"})                   # child created
    zk.create(f"{ROOT}/new/status", {"s": 1})                # ... with a grandchild
    wait_for(lambda: converged(zk, mirror), message="the mirror to follow the changes")
    assert mirror.generation > generation
    zk.delete(f"{ROOT}/vm7")
    zk.create(f"{ROOT}/vm7", {"n": "again"})                 # deleted and created again
    wait_for(lambda: converged(zk, mirror), message="a re-created child")


def test_depth_one_ignores_grandchildren(zk: ZK) -> None:
    populate(zk, 5)
    mirror = start(zk, depth=1)
    assert all(not node.children for node in mirror.root.children.values())
    zk.put(f"{ROOT}/vm1", {"n": "changed"})
    wait_for(lambda: converged(zk, mirror, depth=1), message="a depth-1 change")


def test_concurrent_writers_while_loading_converge(zk: ZK) -> None:
    populate(zk, 300)
    stop = threading.Event()
    rng = random.Random(7)

    def churn() -> None:
        while not stop.is_set():
            index = rng.randrange(320)
            path = f"{ROOT}/vm{index}"
            action = rng.choice(["put", "put", "status", "unstatus", "delete", "create"])
            try:
                if action == "put" and zk.exists(path):
                    zk.put(path, {"n": rng.random()})
                elif action == "status" and zk.exists(path):
                    zk.put(f"{path}/status", {"r": rng.random()})
                elif action == "unstatus":
                    zk.delete(f"{path}/status")
                elif action == "delete":
                    zk.delete(path)
                elif action == "create" and not zk.exists(path):
                    zk.create(path, {"n": "c"})
            except Exception:
                pass

    writers = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
    for writer in writers:
        writer.start()
    mirror = TreeMirror(zk.client, ROOT, 2)
    mirror.start()
    wait_for(lambda: mirror.watching.is_set(), message="the mirror's watches")
    threading.Event().wait(1.0)
    stop.set()
    for writer in writers:
        writer.join(10)
    wait_for(lambda: converged(zk, mirror), timeout=30, message="the mirror to converge after churn")


def test_session_expiry_reloads(zk: ZK) -> None:
    populate(zk, 20)
    mirror = start(zk)
    before = zk.session_id
    zk.client._queue.append((_SESSION_EXPIRED, None))        # kazoo's own way to expire a session
    zk.client._connection._write_sock.send(b"\0")
    wait_for(lambda: zk.session_id not in (None, before), message="a new session")
    writer = ZK([zk.hosts.split("/", 1)[0]], zk.root).start()
    try:
        writer.put(f"{ROOT}/vm2", {"n": "while expired"})
        writer.delete(f"{ROOT}/vm3")
    finally:
        writer.stop()
    wait_for(lambda: zk.connected and converged(zk, mirror), timeout=30,
             message="the mirror to reload after the session expired")


def test_root_deleted_and_created_again(zk: ZK) -> None:
    """A wipe before a restore deletes the mirrored path itself; the mirror empties, then follows
    the restored tree."""
    populate(zk, 5)
    mirror = start(zk)
    zk.delete(ROOT)
    wait_for(lambda: not mirror.root.children, message="an empty mirror")
    populate(zk, 3)
    wait_for(lambda: converged(zk, mirror), message="the mirror of the restored tree")


def drop_connection(zk: ZK) -> None:
    """kazoo's own way to drop the socket (the session survives)."""
    from kazoo.protocol.connection import _CONNECTION_DROP

    zk.client._queue.append((_CONNECTION_DROP, None))
    zk.client._connection._write_sock.send(b"\0")


def change_some(zk: ZK, tag: str) -> None:
    writer = ZK([zk.hosts.split("/", 1)[0]], zk.root).start()
    try:
        for index in range(0, 400, 7):                        # every znode must still be watched
            writer.put(f"{ROOT}/vm{index}", {"n": f"{tag} {index}"})
        writer.put(f"{ROOT}/vm2/status", {"running": tag})
        writer.delete(f"{ROOT}/vm3")
        writer.create(f"{ROOT}/new-{tag}", {"n": tag})
    finally:
        writer.stop()


def test_connection_drops_lose_nothing(zk: ZK) -> None:
    """kazoo forgets its watchers when the connection drops, even when the session survives, and
    reads in flight fail: after the reconnect the mirror reads and watches everything again, so
    it follows every later change, whether the drop came during its watch phase or after it."""
    populate(zk, 400)
    mirror = TreeMirror(zk.client, ROOT, 2)
    mirror.start()
    wait_for(lambda: mirror.loaded.is_set(), message="the snapshot")
    session = zk.session_id
    drop_connection(zk)                                       # during the watch phase
    wait_for(lambda: mirror.watching.is_set() and zk.connected, timeout=30, message="the watch phase")
    assert zk.session_id == session                           # a reconnect, not a new session
    change_some(zk, "first")
    wait_for(lambda: converged(zk, mirror), timeout=30, message="the mirror after the first drop")
    drop_connection(zk)                                       # in steady state
    wait_for(lambda: mirror.watching.is_set() and zk.connected, timeout=30, message="the re-watch")
    assert zk.session_id == session
    change_some(zk, "second")
    wait_for(lambda: converged(zk, mirror), timeout=30, message="the mirror after the second drop")
