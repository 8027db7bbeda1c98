"""Per-invocation CLI state (global options, the chosen connection) and the shared option decorators.

Command modules only use `get_state()` and the decorators here, so a new area (vm, storage, ...)
is one module that plugs into `commands/__init__.py`.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console, RenderableType
from rich.text import Text

from pvc.cli import connections as store
from pvc.cli.client import ApiClient
from pvc.cli.errors import CLIError
from pvc.cli.output import WIDE, Formatter, escape_controls, render

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CLIState:
    """Global options of one `pvc` invocation and the lazily opened API client."""

    connection_name: str | None = None
    debug: bool = False
    quiet: bool = False
    silent: bool = False
    unsafe: bool = False
    colour: bool | None = None
    transport: httpx.BaseTransport | None = None  # tests inject an httpx.MockTransport
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _api: ApiClient | None = None
    _connection: store.Connection | None = None

    # -- output --------------------------------------------------------------------------------------

    def use_colour(self, err: bool = False) -> bool:
        if self.colour is not None:
            return self.colour
        if self.env.get("NO_COLOR"):
            return False
        stream = sys.stderr if err else sys.stdout
        return bool(getattr(stream, "isatty", lambda: False)())

    def out(self, data: RenderableType = "", nl: bool = True) -> None:
        """Results, to stdout (suppressed only by --silent)."""
        if self.silent:
            return
        colour = self.use_colour()
        # full width even on a terminal: tables never truncate data cells; the terminal wraps
        click.echo(render(data, colour=colour, width=WIDE), nl=nl, color=colour)

    def info(self, data: RenderableType = "", nl: bool = True) -> None:
        """Chatter for humans (connection header, progress), to stderr; --quiet/--silent hide it."""
        if self.quiet or self.silent:
            return
        colour = self.use_colour(err=True)
        click.echo(render(data, colour=colour, width=WIDE), nl=nl, err=True, color=colour)

    def error(self, message: str) -> None:
        """One error line on stderr (only --silent hides it)."""
        if not self.silent:
            click.echo(escape_controls(message), err=True)

    def emit(self, data: Any, formatter: Formatter) -> None:
        self.out(formatter(data))

    def stderr_console(self) -> Console:
        """A live console on stderr (progress bars), honouring --colour/--no-colour."""
        return Console(file=sys.stderr, force_terminal=self.colour, no_color=not self.use_colour(err=True),
                       highlight=False, markup=False)

    # -- connection ----------------------------------------------------------------------------------

    @property
    def store_path(self) -> Path:
        return store.store_path(self.env)

    def load_store(self) -> dict[str, dict[str, Any]]:
        return store.load_store(self.store_path)

    @property
    def connection(self) -> store.Connection:
        if self._connection is None:
            self._connection = store.select_connection(self.load_store(), self.connection_name, self.env)
        return self._connection

    def api(self) -> ApiClient:
        """The API client of the chosen connection; announces the connection once on stderr."""
        if self._api is None:
            conn = self.connection
            self._api = ApiClient(conn, debug=self.debug, transport=self.transport,
                                  log=lambda line: click.echo(escape_controls(line), err=True))
            unverified = " (unverified)" if conn.scheme == "https" and not conn.verify_ssl else ""
            self.info(f'Using connection "{conn.name}" - Host: "{conn.host}:{conn.port}"  '
                      f'Scheme: "{conn.scheme}{unverified}"  Prefix: "{store.API_PREFIX}"')
            self.info("")
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def get_state() -> CLIState:
    ctx = click.get_current_context()
    state = ctx.find_object(CLIState)
    if state is None:  # a command invoked without the root group (unit tests)
        state = ctx.ensure_object(CLIState)
    return state


def finish(message: str = "", ok: bool = True) -> None:
    """End a command with a message: stdout on success, stderr + exit 1 on failure."""
    if not ok:
        raise CLIError(message)
    if message:
        get_state().out(message)


# -- option decorators -------------------------------------------------------------------------------

def format_option(formatters: dict[str, Formatter], default: str = "pretty") -> Callable[[F], F]:
    """`-f/--format` choosing one of `formatters`; the command gets `formatter` (a callable)."""
    if default not in formatters:
        raise ValueError(f"default format {default} not among {list(formatters)}")

    def decorator(function: F) -> F:
        @click.option("-f", "--format", "output_format", type=click.Choice(list(formatters)),
                      default=default, show_default=True, help="Output format.")
        @functools.wraps(function)
        def wrapper(*args: Any, output_format: str, **kwargs: Any) -> Any:
            return function(*args, formatter=formatters[output_format], **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def confirm_option(message: str | Callable[[dict[str, Any]], str]) -> Callable[[F], F]:
    """`-y/--yes`; without it (and without --unsafe) ask first.

    `message` is a format string over the command's arguments ({name} is shown quoted) or a
    callable that builds the question from them.
    """

    def decorator(function: F) -> F:
        @click.option("-y", "--yes", "confirmed", is_flag=True, default=False,
                      help="Pre-confirm this operation (no prompt).")
        @functools.wraps(function)
        def wrapper(*args: Any, confirmed: bool, **kwargs: Any) -> Any:
            state = get_state()
            if not confirmed and not state.unsafe:
                question = message(kwargs) if callable(message) else \
                    message.format(**{k: f'"{v}"' for k, v in kwargs.items()})
                try:
                    answer = click.confirm(escape_controls(question), prompt_suffix="? ", default=False,
                                           err=True)
                except click.Abort:
                    answer = False
                if not answer:
                    raise CLIError("Aborted.")
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def wait_option(default: bool, help_text: str = "Wait for the operation to finish, showing progress.") \
        -> Callable[[F], F]:
    return click.option("-w/-W", "--wait/--no-wait", "wait", default=default,
                        show_default="--wait" if default else "--no-wait", help=help_text)


def review_diff(current: str, new: str, ask: bool) -> bool:
    """Show the unified diff of an edit (upstream's colours) and, when `ask`, confirm it.

    False when nothing changed (the caller aborts with nothing written); CLIError("Aborted.") when
    the administrator says no."""
    state = get_state()
    diff = list(difflib.unified_diff(current.split("\n"), new.split("\n"), fromfile="current",
                                     tofile="modified", lineterm="", n=3))
    if not diff:
        state.info("Aborting with no modifications.")
        return False
    shown = Text()
    for line in diff:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else \
            "blue" if line.startswith("@") else ""
        shown.append(line + "\n", style=style)
    state.info("Pending modifications:\n")
    state.info(shown)
    if ask:
        try:
            ok = click.confirm("Write modifications to cluster", prompt_suffix="? ", default=False, err=True)
        except click.Abort:
            ok = False
        if not ok:
            raise CLIError("Aborted.")
    return True
