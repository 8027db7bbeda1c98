"""Parsing of human sizes and booleans as PVC clients send them."""

import re
from fractions import Fraction

from pvc.core.errors import InvalidInput

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGTPEZYRQ]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = "KMGTPEZYRQ"
_FACTORS = {"": 1, **{unit: 1024 ** (index + 1) for index, unit in enumerate(_UNITS)}}
_NEGATIVE_RE = re.compile(r"^\s*-\s*(\d|\.\d)")
_NO_NUMBER_RE = re.compile(r"^\s*[A-Za-z]*\s*$")

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
    """Bytes for '10G', '512M', '1.5TiB', '1024' (bare numbers are bytes), as PVC sizes are given.

    Binary multipliers K..Q, case-insensitive, optional B/iB (pvc-facts §6). Every refusal names
    the field and says what is wrong, so an API client or CLI user can fix it at once.
    """
    text = str(value)
    match = _SIZE_RE.match(text)
    if not match:
        if _NEGATIVE_RE.match(text):
            raise InvalidInput(f"{field}: '{value}' is negative; give a size greater than zero (e.g. 10G)")
        if _NO_NUMBER_RE.match(text):
            raise InvalidInput(f"{field}: '{value}' is not a size: it has no number (e.g. 10G, 512M)")
        raise InvalidInput(f"{field}: '{value}' is not a size (e.g. 10G, 512M, 1024 for bytes; "
                           f"units K, M, G, T, P ... Q)")
    # Exact arithmetic: a float would round '3Q' (2^101 bytes) to a neighbouring value.
    size = int(Fraction(match.group(1)) * _FACTORS[match.group(2).upper()])
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
