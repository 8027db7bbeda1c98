"""Errors the CLI reports as one line on stderr with a non-zero exit code (never a traceback)."""

from __future__ import annotations


class CLIError(Exception):
    """Anything that ends a command unsuccessfully; `message` is what the user sees."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CLIError):
    """The API answered with an error status; `message` is the API's own message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachable(CLIError):
    """No HTTP answer at all (refused, timed out, TLS failure)."""
