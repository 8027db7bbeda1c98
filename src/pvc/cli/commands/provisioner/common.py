"""What the `pvc provisioner` commands share: the API calls and reading documents from files."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from pvc.cli.errors import CLIError
from pvc.cli.state import get_state


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
