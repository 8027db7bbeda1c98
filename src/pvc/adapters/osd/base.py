"""Running commands for the OSD adapter, its error, and the OsdService interface both modes implement."""

from __future__ import annotations

import abc
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class OsdError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stderr or self.stdout).strip()


Runner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float = 600.0) -> CommandResult:
    """Run one command; a missing program or a timeout is an OsdError naming it."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise OsdError(f"{argv[0]} is not installed on this node") from None
    except subprocess.TimeoutExpired:
        raise OsdError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def tail(text: str, limit: int = 600) -> str:
    """The end of a command's output, short enough for an error message."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def check(result: CommandResult, what: str) -> CommandResult:
    """The result if the command succeeded; else an OsdError naming `what` with its output's tail."""
    if result.returncode != 0:
        raise OsdError(f"{what} failed (exit {result.returncode}): {tail(result.output) or 'no output'}")
    return result


class OsdService(abc.ABC):
    """Starting and stopping this node's OSD daemons; the mode-specific preparation is in the
    subclasses, whose task flows differ (see pvc.worker.kinds.storage)."""

    mode: str

    @abc.abstractmethod
    def start(self, osd_id: int) -> None: ...

    @abc.abstractmethod
    def stop(self, osd_id: int, timeout: float = 60.0) -> None: ...

    @abc.abstractmethod
    def running(self, osd_id: int) -> bool: ...

    def describe_failure(self, osd_id: int) -> str:
        """Why the daemon might have died (a log tail), for error messages."""
        return ""
