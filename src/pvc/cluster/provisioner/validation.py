"""Validation of single values shared by every provisioner document kind (pure: no ZooKeeper).

Upstream clients send unset options as empty strings, so `optional_text` treats "", blanks and
None alike; every refusal is an InvalidInput naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from pvc.cluster.common import check_name
from pvc.core.errors import InvalidInput
from pvc.core.units import parse_bool

TEXT_MAX = 512 * 1024                               # userdata/scripts: well below ZooKeeper's 1 MB


def optional_text(value: Any) -> str | None:
    """None for unset values: missing, "" or blank (upstream clients send empty options)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def check_object_name(value: Any, field: str = "name") -> str:
    text = optional_text(value)
    if text is None:
        raise InvalidInput(f"{field}: a name is required (letters, digits, '.', '_', '-'; at most 63)")
    return check_name(text, field)


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
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a whole number ({what}, {low}..{high})")
    number = int(text)
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
