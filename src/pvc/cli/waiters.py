"""Waiting for cluster work: task progress (`GET /tasks/<id>`) and node state transitions.

Both poll over HTTP like upstream's client (tasks every 0.5 s, nodes every 1 s) so they work with
any API that speaks PVC's protocol.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

from pvc.cli.client import decode, message_text
from pvc.cli.errors import CLIError
from pvc.cli.output import escape_controls
from pvc.cli.state import CLIState, get_state
from pvc.core.vocabulary import TASK_FINISHED, TASK_STATES

TASK_POLL_INTERVAL = 0.5
NODE_POLL_INTERVAL = 1.0
# Anything not finished is still being worked on; a finished task that did not succeed failed.
ACTIVE_TASK_STATES = tuple(s for s in TASK_STATES if s not in TASK_FINISHED)
FAILED_TASK_STATES = tuple(s for s in TASK_FINISHED if s != "SUCCESS")

# action -> (field of the node item, transitional value, value when done)
NODE_TRANSITIONS: dict[str, tuple[str, str, str]] = {
    "primary": ("coordinator_state", "takeover", "primary"),
    "secondary": ("coordinator_state", "relinquish", "secondary"),
    "flush": ("domain_state", "flush", "flushed"),
    "ready": ("domain_state", "unflush", "ready"),
}


def accepted_task(body: Any) -> tuple[str, str, str]:
    """(task_id, task_name, run_on) from a 202 body; a malformed body is a clear error."""
    if not isinstance(body, dict) or not body.get("task_id"):
        raise CLIError(f"The API did not return a task for this job: {body!r}")
    return str(body["task_id"]), str(body.get("task_name", "")), str(body.get("run_on", "unknown"))


def task_result_line(status: dict[str, Any]) -> str:
    return f"{status.get('state', 'UNKNOWN')}: {status.get('status', '')}"


def wait_for_task(state: CLIState, task_id: str, *, task_name: str | None = None,
                  run_on: str | None = None, poll: float = TASK_POLL_INTERVAL,
                  sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Follow a task until it leaves PENDING/RUNNING, with a progress bar on stderr; return its status."""
    sleep = sleep or time.sleep
    api = state.api()
    if task_name:
        state.info(f"Task ID: {task_id} ({task_name}) assigned to node {run_on}")
    else:
        state.info(f"Watching task {task_id}")
    show = not (state.quiet or state.silent) and sys.stderr.isatty()
    console = state.stderr_console()
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[status]}", markup=False), console=console, disable=not show,
        transient=False,
    )
    status: dict[str, Any] = {}
    try:
        with progress:
            bar = progress.add_task("Waiting for task to start", total=None, status="")
            while True:
                status = api.get_json(f"/tasks/{task_id}")
                if not isinstance(status, dict):
                    raise CLIError(f"Unexpected task status from the API: {status!r}")
                current_state = status.get("state")
                if current_state not in ACTIVE_TASK_STATES:
                    break
                if current_state == "RUNNING":
                    total = max(int(status.get("total") or 1), 1)
                    progress.update(bar, description="Running", total=total,
                                    completed=min(int(status.get("current") or 0), total),
                                    status=escape_controls(str(status.get("status", ""))))
                sleep(poll)
            if status.get("state") == "SUCCESS":
                total = max(int(status.get("total") or 1), 1)
                progress.update(bar, description="Done", total=total, completed=total,
                                status=escape_controls(str(status.get("status", ""))))
            else:
                progress.update(bar, description=escape_controls(str(status.get("state"))), status="")
    except KeyboardInterrupt:
        raise CLIError(f"Stopped waiting; task {task_id} carries on. "
                       f"Check it with: pvc cluster task {task_id}", exit_code=130) from None
    return status


def finish_task(state: CLIState, status: dict[str, Any]) -> None:
    """Print `<state>: <status>`; a failed or cancelled task ends the command with exit code 1."""
    line = task_result_line(status)
    if status.get("state") in FAILED_TASK_STATES:
        raise CLIError(line)
    state.out(line)


def run_task(state: CLIState, body: Any, wait: bool) -> None:
    """Handle a 202 task answer: follow it (`--wait`) or say where it runs (`--no-wait`)."""
    task_id, task_name, run_on = accepted_task(body)
    if not wait:
        state.out(f"Task ID: {task_id} assigned to node {run_on}")
        return
    finish_task(state, wait_for_task(state, task_id, task_name=task_name, run_on=run_on))


def start_task(method: str, path: str, params: dict[str, Any], wait: bool) -> None:
    """A call that starts a task (202): follow it or print where it runs; a 200 is printed as is."""
    state = get_state()
    response = state.api().call(method, path, params=params, ok=(200, 202))
    body = decode(response)
    if response.status_code == 202:
        run_task(state, body, wait)
    else:
        state.out(message_text(body))


def node_wait_needed(action: str, initial: str) -> bool:
    _field, _transitional, final = NODE_TRANSITIONS[action]
    return initial != final


def node_wait_step(action: str, initial: str, reacted: bool, value: str) -> tuple[bool, bool]:
    """One observation of the node: returns (reacted, done).

    The node has reacted once it left its initial state or entered the transitional one (so we
    never return before the daemon saw the request); it is done once it has reacted and is no
    longer in the transitional state. Pure, so the rule is unit-tested.
    """
    _field, transitional, _final = NODE_TRANSITIONS[action]
    reacted = reacted or initial == transitional or value != initial or value == transitional
    return reacted, reacted and value != transitional


def wait_for_node(state: CLIState, node: str, action: str, initial: str,
                  poll: float = NODE_POLL_INTERVAL, sleep: Callable[[float], None] | None = None,
                  clock: Callable[[], float] | None = None) -> str | None:
    """Poll `GET /node/<node>` every second until the requested transition has finished."""
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    if not node_wait_needed(action, initial):
        return None
    field_name = NODE_TRANSITIONS[action][0]
    api = state.api()
    start = clock()
    reacted = False
    polls = 0
    state.info("Waiting...", nl=False)
    try:
        while True:
            sleep(poll)
            polls += 1
            value = str(api.get_one(f"/node/{node}", what="Node").get(field_name))
            reacted, done = node_wait_step(action, initial, reacted, value)
            if done:
                break
            if polls % 5 == 0:
                state.info(".", nl=False)
    except KeyboardInterrupt:
        state.info("")
        raise CLIError("Stopped waiting; the node carries on with the change.", exit_code=130) from None
    state.info(f" done. [{int(clock() - start)}s]")
    return value
