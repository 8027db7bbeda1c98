"""The worker loop: find runnable tasks, claim them atomically, run them in a thread pool.

Level-triggered: a watch on /tasks wakes the loop, and a periodic scan catches anything a
watch missed. Any worker also reaps tasks whose owner session died, so no task stays RUNNING
forever; the primary's worker prunes old finished tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from pvc.cluster import tasks
from pvc.cluster.nodes import primary_node
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable, PVCError
from pvc.core.taskkinds import BadTaskArgs, validate_args
from pvc.core.zk import ZK
from pvc.worker.registry import KINDS, TaskCancelled, TaskContext, TaskFailed

log = logging.getLogger(__name__)

SCAN_INTERVAL = 2.0
PRUNE_INTERVAL = 600.0


def runnable(task: tasks.TaskRecord, node: str, primary: str | None) -> bool:
    """Is this PENDING task for this node's worker? (pure)"""
    if task.state != "PENDING":
        return False
    if task.target == tasks.PRIMARY:
        return primary == node
    return task.target == node


class Worker:
    def __init__(self, zk: ZK, settings: Settings) -> None:
        self.zk = zk
        self.settings = settings
        self.node = settings.node_name
        self.concurrency = settings.worker.concurrency
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="task")
        self.running: dict[str, tasks.TaskRecord] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._last_prune = 0.0

    def start(self) -> None:
        self.zk.watch_children(schema.TASKS, self._on_tasks, send_event=False)
        self.zk.watch_data(schema.PRIMARY_NODE, lambda *_: self._wake.set())

    def _on_tasks(self, _children: list[str]) -> bool:
        self._wake.set()
        return not self.stopping.is_set()

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.scan()
            except (ClusterUnavailable, KazooException) as exc:
                log.warning("task scan failed: %s", exc)
            except Exception:
                log.exception("task scan failed")
            self._wake.wait(SCAN_INTERVAL)
            self._wake.clear()

    def scan(self) -> None:
        primary = primary_node(self.zk)
        all_tasks = tasks.load_tasks(self.zk)
        for task, version in all_tasks:
            with self._lock:
                if len(self.running) >= self.concurrency:
                    break
            if not runnable(task, self.node, primary) or self.stopping.is_set():
                continue
            if task.kind not in KINDS:
                self._reject(task, version)
                continue
            claimed = tasks.claim(self.zk, task, version, self.node)
            if claimed is None:
                continue
            with self._lock:
                self.running[claimed.id] = claimed
            log.info("claimed task %s (%s)", claimed.id, claimed.kind)
            self.pool.submit(self._execute, claimed)
        if any(t.state == "RUNNING" for t, _ in all_tasks):
            for task_id in tasks.reap_orphans(self.zk):
                log.warning("task %s: its worker stopped while running it (failed, or queued again "
                            "if its kind resumes)", task_id)
        if primary == self.node and time.monotonic() - self._last_prune > PRUNE_INTERVAL:
            self._last_prune = time.monotonic()
            keep = self.settings.worker.task_retention_days * 86400
            pruned = tasks.prune(self.zk, time.time() - keep)
            if pruned:
                log.info("pruned %d finished tasks", pruned)

    def _reject(self, task: tasks.TaskRecord, version: int) -> None:
        claimed = tasks.claim(self.zk, task, version, self.node)
        if claimed:
            tasks.finish(self.zk, task.id, self.node, "FAILURE",
                         f"UnknownTask: no worker implements task kind '{task.kind}'")

    def _execute(self, task: tasks.TaskRecord) -> None:
        ctx = TaskContext(self.zk, self.settings, self.node, task)
        try:
            try:
                args = validate_args(task.kind, task.args)   # again: the document may be foreign
            except BadTaskArgs as exc:
                self._fail(task, f"BadTaskArgs: {exc}")
                return
            try:
                result = KINDS[task.kind](ctx, **dict(args))
            except TaskCancelled:
                tasks.finish(self.zk, task.id, self.node, "CANCELLED", "Cancelled by request")
                log.info("task %s cancelled", task.id)
                return
            except TaskFailed as exc:
                tasks.finish(self.zk, task.id, self.node, "FAILURE", str(exc), result=_jsonable(exc.result))
                return
            except PVCError as exc:
                self._fail(task, f"{type(exc).__name__}: {exc.message}")
                return
            except Exception as exc:
                log.exception("task %s (%s) failed", task.id, task.kind)
                self._fail(task, f"{type(exc).__name__}: {exc}")
                return
            status = result.get("status", "Task completed") if isinstance(result, dict) else "Task completed"
            tasks.finish(self.zk, task.id, self.node, "SUCCESS", str(status), result=_jsonable(result))
            log.info("task %s (%s) succeeded", task.id, task.kind)
        except (tasks.TaskLost, NoNodeError) as exc:
            log.warning("task %s: %s", task.id, exc)
        except Exception:
            log.exception("could not record the outcome of task %s", task.id)
        finally:
            with self._lock:
                self.running.pop(task.id, None)
            self._wake.set()

    def _fail(self, task: tasks.TaskRecord, text: str) -> None:
        ctx_log = TaskContext(self.zk, self.settings, self.node, task)
        ctx_log.log(f"failed: {text}")
        tasks.finish(self.zk, task.id, self.node, "FAILURE", text)

    def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; give running tasks `grace` seconds, then mark the rest failed."""
        self.stopping.set()
        self._wake.set()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self.running:
                    break
            time.sleep(0.2)
        with self._lock:
            leftover = list(self.running)
        for task_id in leftover:
            try:
                tasks.finish(self.zk, task_id, self.node, "FAILURE",
                             f"Worker on node {self.node} was stopped while running this task")
            except Exception:
                log.warning("could not mark task %s failed", task_id)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
