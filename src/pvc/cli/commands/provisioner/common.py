"""What the `pvc provisioner` commands share: the API calls, reading documents from files, and the
`list` and `remove` commands every document kind has."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from pvc.cli.errors import CLIError
from pvc.cli.output import Formatter
from pvc.cli.state import confirm_option, format_option, get_state


def quoted(value: str | int) -> str:
    return quote(str(value), safe="")


def say(method: str, path: str, params: dict[str, Any] | None = None,
         data: dict[str, Any] | None = None) -> None:
    """A call answered with `{"message": ...}`: print the message (errors exit non-zero)."""
    state = get_state()
    state.out(state.api().message(method, path, params=params, data=data))


def list_items(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [item for item in get_state().api().get_list(path, params=params) if isinstance(item, dict)]


def read_document(filename: str) -> str:
    try:
        return Path(filename).read_text(encoding="utf-8") if filename != "-" else click.get_text_stream(
            "stdin").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"Cannot read {filename}: {exc}") from None


def show_document(text: str) -> None:
    get_state().out(text, nl=not text.endswith("\n"))


def list_command(group: click.Group, path: str, formats: dict[str, Formatter], short_help: str,
                 what: str) -> None:
    """`<group> list [LIMIT]`: `what` (e.g. "the system templates") at `path`, rendered by `formats`."""
    @group.command(name="list", short_help=short_help,
                   help=f"List {what}; optionally only those whose name matches the regex LIMIT.")
    @click.argument("limit", required=False, default=None)
    @format_option(formats)
    def list_(limit: str | None, formatter: Formatter) -> None:
        get_state().emit(list_items(path, {"limit": limit}), formatter)


def remove_command(group: click.Group, path: str, short_help: str, question: str, help_text: str) -> None:
    """`<group> remove NAME` (confirmed by `question`, or -y): DELETE `path`/NAME."""
    @group.command(name="remove", short_help=short_help, help=help_text)
    @click.argument("name")
    @confirm_option(question)
    def remove(name: str) -> None:
        say("DELETE", f"{path}/{quoted(name)}")
