"""Tasks in Chromium: the list, following one task's progress and log, cancelling it."""

from __future__ import annotations

from typing import Any

from pvc.cluster import tasks
from pvc.core import schema
from pvc.core.zk import ZK
from tests.ui.conftest import UI


def test_follow_and_cancel_a_task(ui: UI, zk: ZK, cluster: dict[str, Any]) -> None:
    first, second = cluster["tasks"]
    ui.login()
    ui.goto("/tasks")
    ui.live()
    assert ui.page.locator(f"#task-row-{first} .state").inner_text().endswith("PENDING")
    ui.page.locator(f"#follow-{first}").click()
    ui.page.get_by_role("heading", name=f"Task {first}").wait_for()
    ui.live()
    # a worker's progress and log lines appear as they are written
    zk.update(schema.task(first), lambda d: {**d, "state": "RUNNING", "worker": "hv1", "current": 3,
                                             "total": 10, "status": "checking ZooKeeper"})
    zk.update(schema.task_log(first), lambda lines: [*lines, "selftest: ZooKeeper answers in 2 ms"])
    ui.page.locator("#task-state .state").get_by_text("RUNNING").wait_for()
    ui.page.locator("#task-log").get_by_text("ZooKeeper answers in 2 ms").wait_for()
    ui.shot("task-followed")
    ui.page.get_by_role("button", name="Cancel task").click()
    ui.page.locator("#flash").get_by_text(f"Cancellation of running task {first} requested").wait_for()
    assert tasks.get_task(zk, first).model_dump()["cancel_requested"] is True
    # the worker ends it: the page shows it and the cancel button goes
    zk.update(schema.task(first), lambda d: {**d, "state": "CANCELLED", "status": "cancelled"})
    ui.page.locator("#task-state .state").get_by_text("CANCELLED").wait_for()
    ui.page.locator("#cancel-task").wait_for(state="detached")
    # a waiting task is cancelled at once, from the list
    ui.goto("/tasks")
    ui.page.locator(f"#cancel-{second}").click()
    ui.page.locator(f"#task-row-{second} .state").get_by_text("CANCELLED").wait_for()
    assert tasks.get_task(zk, second).state == "CANCELLED"
    ui.shot("tasks-cancelled")
