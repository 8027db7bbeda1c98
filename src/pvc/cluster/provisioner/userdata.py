"""Userdata: cloud-init documents the metadata service serves to a profile's VMs.

    {id, name, userdata}      ("empty" always exists and cannot be changed or removed)

Reads and writes are USERDATA's (documents.TextDocuments); this module checks the text.
"""

from __future__ import annotations

import email
import email.message
import re
from typing import Any

import yaml

from pvc.cluster.provisioner.documents import TextDocuments
from pvc.cluster.provisioner.validation import document_text
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK

EMPTY = "empty"

_USERDATA_HEADERS = ("#cloud-config-archive", "#cloud-config", "#cloud-boothook", "#include", "#part-handler",
                     "## template: jinja", "#!")


# -- validation (pure) -----------------------------------------------------------------------------

def _yaml_mapping(text: str, field: str, what: str) -> None:
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(f"{field}: {what} is not valid YAML{where}: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # a value YAML parses but cannot build, e.g. the date 2001-02-30
        raise InvalidInput(f"{field}: {what} is not valid YAML: {exc}") from None
    if parsed is not None and not isinstance(parsed, dict):
        raise InvalidInput(f"{field}: {what} must be a YAML mapping (key: value), not a "
                           f"{type(parsed).__name__}")


def _check_part(text: str, field: str, what: str) -> None:
    """One userdata document (or MIME part): #cloud-config is a YAML mapping, #cloud-config-archive a
    YAML list; the other cloud-init formats (#!, #include, ...) are taken as they are."""
    stripped = text.lstrip()
    if stripped.startswith("#cloud-config-archive"):
        try:
            parsed = yaml.safe_load(stripped)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
            parsed = None
        if not isinstance(parsed, list):
            raise InvalidInput(f"{field}: {what} (#cloud-config-archive) must be a YAML list")
    elif stripped.startswith("#cloud-config"):
        _yaml_mapping(stripped, field, what)


def check_userdata(value: Any, field: str = "data") -> str:
    """A cloud-init userdata document: '#cloud-config' (a YAML mapping), a script ('#!'), another
    cloud-init format (#include, #cloud-boothook, ...), or a MIME document (single or multipart,
    e.g. 'Content-Type: multipart/mixed'); empty is allowed (like the 'empty' document)."""
    text = document_text(value, field)
    stripped = text.lstrip()
    if not stripped:
        return text
    first = stripped.split("\n", 1)[0].strip()
    if re.match(r"^(content-type|mime-version)\s*:", first, re.IGNORECASE):
        _check_mime(stripped, field)
    elif first.startswith(_USERDATA_HEADERS):
        _check_part(stripped, field, "the #cloud-config document")
    else:
        raise InvalidInput(f"{field}: not a cloud-init userdata document: it must start with "
                           f"'#cloud-config', '#!' (a script) or another cloud-init header, or be a MIME "
                           f"document ('Content-Type: ...'); it starts with '{first[:40]}'")
    return text


def _check_mime(text: str, field: str) -> None:
    message = email.message_from_string(text)
    if message.defects:
        raise InvalidInput(f"{field}: the MIME document is malformed: {type(message.defects[0]).__name__}")
    if message.is_multipart():
        parts = [p for p in message.walk() if not p.is_multipart()]
        if not parts:
            raise InvalidInput(f"{field}: the multipart MIME document has no parts")
        for number, part in enumerate(parts, 1):
            if part.defects:
                raise InvalidInput(f"{field}: part {number} of the MIME document is malformed: "
                                   f"{type(part.defects[0]).__name__}")
            _check_mime_part(part, field, f"part {number}")
    else:
        if message.get_content_maintype() == "multipart":
            raise InvalidInput(f"{field}: the multipart MIME document has no parts (is its boundary right?)")
        _check_mime_part(message, field, "the MIME document's body")


def _check_mime_part(part: email.message.Message, field: str, what: str) -> None:
    payload = part.get_payload(decode=True)
    if payload is None:
        return
    charset = part.get_content_charset() or "utf-8"
    try:
        body = payload.decode(charset, "replace") if isinstance(payload, bytes) else str(payload)
    except LookupError:
        raise InvalidInput(f"{field}: {what} has an unknown charset '{charset}'") from None
    if part.get_content_type() == "text/cloud-config":
        _yaml_mapping(body, field, f"{what} (text/cloud-config)")
    else:
        _check_part(body, field, what)


USERDATA = TextDocuments("userdata", "userdata document", check_userdata, builtin=EMPTY)


def ensure_empty_userdata(zk: ZK) -> None:
    """The built-in, always-present "empty" document (created on first use)."""
    USERDATA.ensure_builtin(zk)
