"""Tasks in ZooKeeper (DESIGN D9): submitted by the API, run by a node's pvcworkerd.

A task is one JSON document. A worker claims it with one transaction that checks the
document's version, sets RUNNING and creates an ephemeral owner znode; if the worker's session
dies, the owner vanishes and any worker's reaper marks the task failed with the reason (or,
for a kind that finishes what it started when run again, queues it again).
Target "primary" is resolved when a worker claims the task, so a task submitted just before a
primary change still runs (on the new primary).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from pydantic import BaseModel

from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import TaskRecord
from pvc.core.taskkinds import MAX_ATTEMPTS, RESUMABLE, BadTaskArgs, validate_args
from pvc.core.vocabulary import TASK_FINISHED
from pvc.core.zk import ZK, encode

PRIMARY = "primary"
MAX_LOG_LINES = 1000


def new_task_id() -> str:
    return uuid.uuid4().hex[:8]


def submit(zk: ZK, kind: str, args: dict[str, Any] | BaseModel | None = None, target: str = PRIMARY,
           total: int = 1) -> TaskRecord:
    """Queue a task; its arguments are checked against the kind's model (pvc.core.taskkinds)."""
    try:
        typed = validate_args(kind, args)
    except BadTaskArgs as exc:
        raise InvalidInput(str(exc)) from None
    args = typed.model_dump(mode="json")
    if target != PRIMARY and not zk.exists(schema.node(target)):
        raise NotFound(f"Node not found: {target}")
    for _ in range(10):
        task = TaskRecord(id=new_task_id(), kind=kind, args=args or {}, target=target, total=total)
        try:
            zk.create(schema.task(task.id), task.doc())
            return task
        except NodeExistsError:
            continue
    raise Conflict("could not allocate a task id")


def get_task(zk: ZK, task_id: str) -> TaskRecord:
    data = zk.get(schema.task(task_id), None) if _valid_id(task_id) else None
    if not isinstance(data, dict):
        raise NotFound(f"Task not found: {task_id}")
    return TaskRecord.model_validate(data)


def _valid_id(task_id: str) -> bool:
    return bool(task_id) and "/" not in task_id and task_id not in (".", "..")


def load_tasks(zk: ZK) -> list[tuple[TaskRecord, int]]:
    """All tasks with their znode versions (for CAS), oldest first."""
    docs = zk.get_many_docs([schema.task(i) for i in zk.children(schema.TASKS)])
    out = [(TaskRecord.model_validate(doc.data), doc.version) for doc in docs.values()
           if doc is not None and isinstance(doc.data, dict)]
    return sorted(out, key=lambda pair: pair[0].created)


def run_on(task: TaskRecord, primary: str | None) -> str:
    if task.worker:
        return task.worker
    if task.target == PRIMARY:
        return f"{primary or 'none'} (primary)"
    return task.target


def accepted(task: TaskRecord, primary: str | None) -> dict[str, str]:
    """The 202 body PVC clients expect for a submitted task."""
    return {"task_id": task.id, "task_name": task.kind, "run_on": run_on(task, primary)}


def task_view(task: TaskRecord) -> dict[str, Any]:
    """`GET /tasks/<id>` in PVC's shape."""
    if task.state == "PENDING":
        return {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}
    if task.state == "FAILURE":
        return {"state": "FAILURE", "current": 1, "total": 1, "status": task.status}
    view: dict[str, Any] = {"state": task.state, "current": task.current, "total": task.total,
                            "status": task.status}
    if task.result is not None:
        view["result"] = task.result
    return view


def task_summary(task: TaskRecord) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.kind,
        "args": [],
        "kwargs": task.args,
        "state": task.state,
        "target": task.target,
        "worker": task.worker,
        "current": task.current,
        "total": task.total,
        "status": task.status,
        "created": task.created,
        "started": task.started,
        "finished": task.finished,
    }


def list_tasks(zk: ZK, primary: str | None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """`GET /tasks`: running tasks as "active", waiting ones as "reserved", keyed by worker."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"active": {}, "reserved": {}, "scheduled": {}}
    for task, _version in load_tasks(zk):
        if task.state == "RUNNING":
            out["active"].setdefault(f"pvcworkerd@{task.worker}", []).append(task_summary(task))
        elif task.state == "PENDING":
            target = primary if task.target == PRIMARY else task.target
            out["reserved"].setdefault(f"pvcworkerd@{target}", []).append(task_summary(task))
    return out


def cancel(zk: ZK, task_id: str) -> str:
    """Cancel a waiting task at once; ask a running one to stop (its worker runs cleanup)."""
    result: dict[str, str] = {}

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            raise NotFound(f"Task not found: {task_id}")
        task = TaskRecord.model_validate(doc)
        if task.state in TASK_FINISHED:
            raise Conflict(f"Task {task_id} has already finished ({task.state}).")
        if task.state == "PENDING":
            result["message"] = f"Task {task_id} cancelled."
            return {**doc, "state": "CANCELLED", "status": "Cancelled before it started",
                    "finished": time.time(), "cancel_requested": True}
        result["message"] = f"Cancellation of running task {task_id} requested."
        return {**doc, "cancel_requested": True}

    get_task(zk, task_id)
    zk.update(schema.task(task_id), change)
    return result["message"]


def task_log(zk: ZK, task_id: str) -> list[str]:
    get_task(zk, task_id)
    lines = zk.get(schema.task_log(task_id), None)
    return lines if isinstance(lines, list) else []


# -- worker side -----------------------------------------------------------------------------------

def claim(zk: ZK, task: TaskRecord, version: int, node: str) -> TaskRecord | None:
    """Atomically take a PENDING task for `node`; None if someone else changed it first."""
    now = time.time()
    running = task.model_copy(update={"state": "RUNNING", "worker": node, "started": now,
                                      "status": "Starting", "attempts": task.attempts + 1})
    tx = zk.transaction()
    tx.check(schema.task(task.id), version)
    tx.create(schema.task_owner(task.id), node.encode(), ephemeral=True)
    tx.set_data(schema.task(task.id), encode(running.doc()), version=version)
    try:
        zk.commit(tx)
    except (BadVersionError, NodeExistsError, NoNodeError):
        return None
    return running


class TaskLost(Exception):
    """The task is no longer ours (reaped after our session was lost, or deleted)."""


def _ours(doc: dict[str, Any] | None, task_id: str, node: str) -> dict[str, Any]:
    if doc is None or doc.get("state") != "RUNNING" or doc.get("worker") != node:
        raise TaskLost(f"task {task_id} is no longer running on {node}")
    return doc


def update(zk: ZK, task_id: str, node: str, **fields: Any) -> TaskRecord:
    """Update a running task's progress fields; returns the stored record (with cancel flag)."""
    doc = zk.update(schema.task(task_id), lambda d: {**_ours(d, task_id, node), **fields})
    return TaskRecord.model_validate(doc)


def finish(zk: ZK, task_id: str, node: str, state: str, status: str, result: Any = None) -> None:
    """Record the outcome, unless the task was meanwhile declared lost (then TaskLost)."""
    if state not in TASK_FINISHED:
        raise InvalidInput(f"not a final task state: {state}")

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        new = {**_ours(doc, task_id, node), "state": state, "status": status, "finished": time.time()}
        if state == "SUCCESS":
            new["current"] = new.get("total", 1)
        if result is not None:
            new["result"] = result
        return new

    zk.update(schema.task(task_id), change)
    zk.delete(schema.task_owner(task_id))


def append_log(zk: ZK, task_id: str, *lines: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    new = [f"{stamp} {line}" for line in lines]
    zk.update(schema.task_log(task_id), lambda old: ((old or []) + new)[-MAX_LOG_LINES:], create=True)


def reap_orphans(zk: ZK) -> list[str]:
    """Settle RUNNING tasks whose worker session is gone: a resumable kind (taskkinds.RESUMABLE)
    is queued again while it has attempts left, any other is marked failed; return their ids."""
    reaped = []
    for task, version in load_tasks(zk):
        if task.state != "RUNNING" or zk.exists(schema.task_owner(task.id)):
            continue
        stopped = f"Worker on node {task.worker} stopped while running this task"
        if task.kind in RESUMABLE and task.attempts < MAX_ATTEMPTS:
            update: dict[str, Any] = {
                "state": "PENDING", "worker": "", "started": None,
                "status": f"{stopped} (last status: {task.status}); queued again to finish it "
                          f"(attempt {task.attempts + 1} of {MAX_ATTEMPTS})",
            }
        else:
            update = {"state": "FAILURE", "finished": time.time(),
                      "status": f"{stopped} (last status: {task.status})"}
        try:
            zk.set_doc(schema.task(task.id), task.model_copy(update=update).doc(), version=version)
            reaped.append(task.id)
        except (BadVersionError, NoNodeError):
            continue
    return reaped


def prune(zk: ZK, older_than: float) -> int:
    """Delete finished tasks (and their logs) that finished before `older_than` (epoch)."""
    count = 0
    for task, _version in load_tasks(zk):
        if task.state in TASK_FINISHED and (task.finished or task.created) < older_than:
            zk.delete(schema.task(task.id))
            zk.delete(schema.task_log(task.id))
            count += 1
    return count
