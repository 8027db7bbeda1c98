"""Parsing of human sizes and booleans as PVC clients send them."""

import re

from pvc.core.errors import InvalidInput

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?\s*$", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}

_TRUE = {"true", "yes", "y", "on", "1", "t"}
_FALSE = {"false", "no", "n", "off", "0", "f"}


def parse_bool(value: object, field: str = "value") -> bool:
    """Parse booleans the way flask-restful's `strtobool` did, so old clients keep working."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"{field}: '{value}' is not a boolean (use true or false)")


def parse_size(value: str, field: str = "size") -> int:
    """Return bytes for '10G', '512M', '1024' (bytes) ...; reject anything without a number."""
    match = _SIZE_RE.match(str(value))
    if not match:
        raise InvalidInput(f"{field}: '{value}' is not a size (e.g. 10G, 512M)")
    number, unit = float(match.group(1)), match.group(2).upper()
    size = int(number * _FACTORS[unit])
    if size <= 0:
        raise InvalidInput(f"{field}: '{value}' must be greater than zero")
    return size


def format_bytes(size: int) -> str:
    """Render bytes with a binary suffix, as the PVC CLI shows them."""
    for unit in ("B", "K", "M", "G", "T"):
        if abs(size) < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}".replace(".0", "")
        size /= 1024  # type: ignore[assignment]
    return f"{size}P"
