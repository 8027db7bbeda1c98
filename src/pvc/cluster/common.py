"""Small helpers shared by the cluster operations."""

from __future__ import annotations

import re
from datetime import UTC, datetime

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
