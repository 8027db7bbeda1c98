"""Revert on failure (Incus's "reverter"): register an undo per step, run them in reverse on error.

Used by every operation that changes several things one after another (provisioning, VM rename
with its volumes, OVA upload, OSD tasks): a failure or a cancel part way leaves nothing behind.

    with Reverter(log) as revert:
        create_volume(...)
        revert.add("remove volume vms/a", lambda: remove_volume(...))
        define_vm(...)
        revert.commit()        # success: forget the undos
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)


def _text(error: BaseException | None) -> str:
    return str(getattr(error, "message", None) or error)


class Reverter:
    """Undo steps registered as work proceeds; on an exception they run in reverse order.

    `report` receives one line per event (a task's log, or the module logger by default);
    `describe` turns the exception into the first line's reason (e.g. "cancelled").
    """

    def __init__(self, report: Callable[[str], Any] | None = None,
                 describe: Callable[[BaseException | None], str] | None = None) -> None:
        self.report = report or _log.warning
        self.describe = describe or (lambda exc: f"failed: {_text(exc)}")
        self.steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, undo: Callable[[], Any]) -> None:
        self.steps.append((what, undo))

    def commit(self) -> None:
        """Success: nothing is undone any more."""
        self.steps.clear()

    def revert(self, reason: str = "failed") -> list[str]:
        """Run the undos now, newest first; returns the steps whose undo failed (each reported)."""
        failed: list[str] = []
        if self.steps:
            self.report(f"{reason}; reverting {len(self.steps)} step(s)")
        for what, undo in reversed(self.steps):
            try:
                undo()
                self.report(f"reverted: {what}")
            except Exception as error:
                failed.append(what)
                self.report(f"could not revert ({what}): {_text(error)}")
        self.steps.clear()
        return failed

    def __enter__(self) -> Reverter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        if exc_type is not None and self.steps:
            self.revert(self.describe(exc))
        return False
