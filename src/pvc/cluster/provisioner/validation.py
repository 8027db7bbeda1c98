"""Validation of single values shared by every provisioner document kind (pure: no ZooKeeper).

Upstream clients send unset options as empty strings, so `optional_text` (pvc.cluster.common)
treats "", blanks and None alike; every refusal is an InvalidInput naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pvc.cluster.common import check_name, digits, optional_text
from pvc.core.errors import InvalidInput
from pvc.core.units import parse_bool

TEXT_MAX = 512 * 1024                               # userdata/scripts: well below ZooKeeper's 1 MB


def check_object_name(value: Any, field: str = "name") -> str:
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: a name is required (letters, digits, '.', '_', '-'; at most 63)")
    return check_name(text, field)


def refuse_unknown(changes: Mapping[str, Any], fields: Iterable[str], what: str) -> None:
    """A modification names only fields of its document kind."""
    unknown = set(changes) - set(fields)
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))}: not a {what} field")


def is_safe_name(name: Any) -> bool:
    """A name that can be looked up (anything else cannot exist, and would be a bad ZK path)."""
    try:
        check_object_name(name)
    except InvalidInput:
        return False
    return True


def whole_number(value: Any, field: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: '{value}' is not a whole number ({what})")
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: required ({what}, {low}..{high})")
    number = digits(text, field, f"a whole number ({what}, {low}..{high})", 12)
    if not low <= number <= high:
        raise InvalidInput(f"{field}: {number} is out of range ({what}, {low}..{high})")
    return number


def flag(value: Any, field: str, default: bool | None = None) -> bool:
    """A boolean input; unset means `default`, or is refused when there is none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise InvalidInput(f"{field}: required (true or false)")
        return default
    return parse_bool(value, field)


def document_text(value: Any, field: str) -> str:
    """The text of a userdata document or script: present, text, small enough for ZooKeeper."""
    if value is None:
        raise InvalidInput(f"{field}: required (the document's text)")
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be text")
    if len(value.encode("utf-8", "surrogatepass")) > TEXT_MAX:
        raise InvalidInput(f"{field}: the document is too large (at most {TEXT_MAX // 1024} KiB)")
    if "\x00" in value:
        raise InvalidInput(f"{field}: the document contains a NUL character")
    return value
