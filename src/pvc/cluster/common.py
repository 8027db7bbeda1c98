"""Small helpers shared by the cluster operations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pvc.core.errors import InvalidInput


def limit_matcher(limit: str | None) -> re.Pattern[str] | None:
    """PVC list filters are regexes matched fuzzily unless anchored with ^ or $."""
    if not limit:
        return None
    pattern = limit
    pattern = ".*" + pattern if not pattern.startswith("^") else pattern[1:]
    pattern = pattern + ".*" if not pattern.endswith("$") else pattern[:-1]
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(f"limit: '{limit}' is not a valid regular expression: {exc}") from None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll predicate until it holds (True) or timeout passes (False): the one synchronous wait of
    the cluster layer (the API waits asynchronously, pvc.api.common.wait_async)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def timestamp(epoch: float | None = None) -> str:
    """Fault/task timestamps as PVC shows them: 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)."""
    moment = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(value: str, field: str = "name") -> str:
    if not NAME_RE.match(value or ""):
        raise InvalidInput(
            f"{field}: '{value}' is not a valid name (letters, digits, '.', '_', '-'; at most 63)"
        )
    return value


def optional_text(value: Any) -> str | None:
    """None for unset values: missing, "" or blank (upstream clients send empty options)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def digits(text: str, field: str, what: str, most: int = 9) -> int:
    """A whole number written as 1 to `most` plain digits (no sign); refused as "not <what>"."""
    if not re.fullmatch(rf"[0-9]{{1,{most}}}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not {what}")
    return int(text)


def csv_items(values: Any) -> list[str]:
    """The items of a list input: repeated keys and/or comma-separated text, blanks dropped."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]
