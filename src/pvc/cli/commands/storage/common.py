"""What the `pvc storage` commands share: reading Ceph's stats values and the call patterns.

Everything goes over `/api/v1/storage/ceph/...` exactly as PVC's own client sends it (scalar
arguments as query parameters), so this client works against upstream PVC and upstream's client
works against us. OSD and benchmark jobs are tasks (202): they are followed with a progress bar
unless `--no-wait`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pvc.cli.state import get_state
from pvc.cli.waiters import run_task, start_task  # noqa: F401 - start_task re-exported
from pvc.core.errors import InvalidInput
from pvc.core.units import format_bytes, parse_size

F = TypeVar("F", bound=Callable[..., Any])

BASE = "/storage/ceph"
NA = "N/A"


# -- value helpers -----------------------------------------------------------------------------------

def stat(data: Any, key: str) -> Any:
    """A stats value, or None when missing; PVC writes "|" while an OSD has not reported yet."""
    value = data.get(key) if isinstance(data, dict) else None
    return None if value in ("|", "") else value


def as_number(value: Any) -> float | None:
    """A float from whatever the stats hold (numbers, numeric text); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_size(value: Any) -> str:
    """Bytes in binary units (1.5G). Sizes the API already made human ("1536M", "98.5 GiB") are
    re-rendered the same way so a column reads alike; anything else is shown as it came."""
    number = as_number(value)
    if number is not None:
        return format_bytes(int(number))
    if isinstance(value, str):
        try:
            return format_bytes(parse_size(value))
        except InvalidInput:
            return value
    return NA if value is None else str(value)


def human_count(value: Any) -> str:
    """Operation counters in decimal units, as upstream shows them: 1234567 -> 1.2M."""
    number = as_number(value)
    if number is None:
        return NA if value is None else str(value)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}".removesuffix(".0") + unit
    return f"{number:.0f}"


def human_latency(nanoseconds: Any) -> str:
    number = as_number(nanoseconds)
    if number is None:
        return NA
    for unit, size in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if number >= size:
            return f"{number / size:.2f}".rstrip("0").rstrip(".") + unit
    return f"{number:.0f}ns"


def plain(value: Any) -> str:
    """A stats value as text, floats without trailing zeros."""
    if value is None:
        return NA
    if isinstance(value, float):
        # small CRUSH weights (TiB: a 2 GiB OSD weighs 0.002) must not show as 0
        text = f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.2g}"
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text
    return str(value)


# -- command plumbing --------------------------------------------------------------------------------

def arguments(*names: str) -> Callable[[F], F]:
    """Plain positional arguments in this order (POOL VOLUME NAME ...)."""
    def decorate(function: F) -> F:
        for name in reversed(names):
            function = click.argument(name)(function)
        return function

    return decorate


def wait_flag(function: F) -> F:
    """`--wait/--no-wait` for task commands (long form only: `-w` is `--weight` on OSD commands)."""
    return click.option("--wait/--no-wait", "wait", default=True, show_default=True,
                        help="Wait for the task to finish, showing progress.")(function)


def size_arg(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse sizes that are not sizes before asking the API; the API gets the text as typed."""
    if value is None:
        return None
    try:
        parse_size(value, param.name or "size")
    except InvalidInput as exc:
        raise click.BadParameter(f"'{value}' is not a size (e.g. 10G, 512M)") from exc
    return value


def say(method: str, path: str, params: dict[str, Any] | None = None) -> None:
    """A call answered with `{"message": ...}`: print the message."""
    state = get_state()
    state.out(state.api().message(method, path, params=params))




def list_items(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A list GET (an empty, 404 answer is an empty list)."""
    return [item for item in get_state().api().get_list(path, params=params) if isinstance(item, dict)]
