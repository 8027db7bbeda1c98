"""What the `pvc provisioner` commands share: the API calls, reading documents from files, and the
`list` and `remove` commands every document kind has."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from pvc.cli.errors import CLIError
from pvc.cli.output import Formatter
from pvc.cli.state import confirm_option, format_option, get_state, review_diff


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


def edit_document(current: str, extension: str) -> str | None:
    """The document as edited in $EDITOR, after its diff was shown and confirmed (upstream's
    `modify -e`); None when nothing changed or the editor was left without saving."""
    state = get_state()
    current = current.strip()
    edited = click.edit(text=current, require_save=True, extension=extension)
    new = edited.strip() if edited is not None else None
    if new is None:
        state.info("Aborting with no modifications.")
        return None
    if not review_diff(current, new, ask=not state.unsafe):
        return None
    return new


def list_command(group: click.Group, path: str, formats: dict[str, Formatter], short_help: str,
                 what: str, long_format: str | None = None) -> None:
    """`<group> list [LIMIT]`: `what` (e.g. "the system templates") at `path`, rendered by `formats`.

    With `long_format`, upstream's `-l/--long` picks that format instead of `pretty`.
    """
    def list_(limit: str | None, formatter: Formatter, long_output: bool = False) -> None:
        if long_output and long_format is not None and formatter is formats["pretty"]:
            formatter = formats[long_format]
        get_state().emit(list_items(path, {"limit": limit}), formatter)

    command: Any = format_option(formats)(list_)
    if long_format is not None:
        command = click.option("-l", "--long", "long_output", is_flag=True, default=False,
                               help="Show all lines of the documents ('pretty' format only).")(command)
    command = click.argument("limit", required=False, default=None)(command)
    group.command(name="list", short_help=short_help,
                  help=f"List {what}; optionally only those whose name matches the regex LIMIT.")(command)


def remove_command(group: click.Group, path: str, short_help: str, question: str, help_text: str) -> None:
    """`<group> remove NAME` (confirmed by `question`, or -y): DELETE `path`/NAME."""
    @group.command(name="remove", short_help=short_help, help=help_text)
    @click.argument("name")
    @confirm_option(question)
    def remove(name: str) -> None:
        say("DELETE", f"{path}/{quoted(name)}")
