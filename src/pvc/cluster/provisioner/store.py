"""Where each provisioner document kind lives in ZooKeeper, and the reads every kind shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pvc.cluster.common import check_name, limit_matcher, optional_text
from pvc.cluster.provisioner.validation import is_safe_name
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.zk import ZK

PARENTS = {"system_template": schema.SYSTEM_TEMPLATES, "network_template": schema.NETWORK_TEMPLATES,
           "storage_template": schema.STORAGE_TEMPLATES, "userdata": schema.USERDATA,
           "script": schema.SCRIPTS, "profile": schema.PROFILES, "ova": schema.OVAS}
PATHS: dict[str, Callable[[str], str]] = {
    "system_template": schema.system_template, "network_template": schema.network_template,
    "storage_template": schema.storage_template, "userdata": schema.userdata, "script": schema.script,
    "profile": schema.profile, "ova": schema.ova}
WHAT = {"system_template": "system template", "network_template": "network template",
        "storage_template": "storage template", "userdata": "userdata document", "script": "script",
        "profile": "profile", "ova": "OVA"}


def docs_of(zk: ZK, kind: str) -> dict[str, dict[str, Any]]:
    """Every document of `kind` by name (unreadable ones left out)."""
    names = zk.children(PARENTS[kind])
    docs = zk.get_many([PATHS[kind](n) for n in names])
    return {n: d for n in names if isinstance(d := docs.get(PATHS[kind](n)), dict)}


def get_doc(zk: ZK, kind: str, name: Any) -> dict[str, Any]:
    doc = zk.get(PATHS[kind](str(name)), None) if is_safe_name(name) else None
    if not isinstance(doc, dict):
        raise NotFound(f"The {WHAT[kind]} '{name}' does not exist.")
    return doc


def matching(docs: Mapping[str, dict[str, Any]], limit: str | None) -> list[dict[str, Any]]:
    """The documents whose name matches the list route's `limit` regex, by name."""
    matcher = limit_matcher(limit)
    return [docs[n] for n in sorted(docs) if matcher is None or matcher.fullmatch(n)]


def profiles_using(zk: ZK, kind: str, name: str) -> list[str]:
    """Names of the profiles whose `kind` (system_template, ..., ova) is `name`."""
    return sorted(p for p, doc in docs_of(zk, "profile").items() if doc.get(kind) == name)


def ova_ref(zk: ZK, ova: Any, field: str = "ova") -> str | None:
    """The OVA a template is made for: None, or the name of an existing OVA."""
    text = optional_text(ova)
    if text is None:
        return None
    check_name(text, field)
    if not zk.exists(schema.ova(text)):
        raise InvalidInput(f"{field}: the OVA '{text}' does not exist")
    return text
