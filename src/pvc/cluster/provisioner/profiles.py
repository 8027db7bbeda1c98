"""Profiles: a system template, network and storage templates, userdata, a script and its arguments
(or an OVA), combined into what a provisioning job builds.

    {id, name, profile_type, system_template, network_template, storage_template, userdata, script,
     ova, arguments: ["k=v", ...]}                                   (names, None if unset)

`load_profile` is the one reader of a whole profile: the provisioning job (pvc.worker.provisioner)
builds its `vm_data` from the ProfileDocs it returns.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pvc.cluster.common import check_name, optional_text
from pvc.cluster.provisioner.store import PARENTS, WHAT, docs_of, get_doc, matching
from pvc.cluster.provisioner.transactions import Op, create_document, transact, update_document
from pvc.cluster.provisioner.userdata import EMPTY, USERDATA, ensure_empty_userdata
from pvc.cluster.provisioner.validation import check_object_name, refuse_unknown
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.vocabulary import PROFILE_TYPES
from pvc.core.zk import ZK, op_delete

PROFILE_REFS = ("system_template", "network_template", "storage_template", "userdata", "script", "ova")
PROFILE_FIELDS = ("profile_type", *PROFILE_REFS, "arguments")
NA = "N/A"

_ARG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


# -- validation (pure) -----------------------------------------------------------------------------

def check_profile_type(value: Any, field: str = "profile_type") -> str:
    text = optional_text(value)
    if text not in PROFILE_TYPES:
        raise InvalidInput(f"{field}: '{value}' is not one of {', '.join(PROFILE_TYPES)}")
    return text


def parse_arguments(values: Any, field: str = "arg") -> list[str]:
    """Script arguments as 'key=value' items (repeated keys); a key is given once."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    keys: set[str] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        key, sep, _value = text.partition("=")
        if not sep or not _ARG_KEY_RE.match(key.strip()):
            raise InvalidInput(f"{field}: '{text[:60]}' is not a key=value argument (e.g. "
                               f"deb_release=bookworm)")
        if key.strip() in keys:
            raise InvalidInput(f"{field}: the argument '{key.strip()}' is given twice")
        keys.add(key.strip())
        out.append(f"{key.strip()}={_value}")
    return out


def arguments_dict(items: Iterable[str] | None, field: str = "arg") -> dict[str, str]:
    """`key=value` items as a dict (later items win; a value may hold '='): a profile's stored
    arguments and a job's run arguments; an item without '=' or with an empty key is refused."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not key.strip():
            raise InvalidInput(f"{field}: '{item}' is not in key=value form")
        out[key.strip()] = value
    return out


def profile_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The validated fields of a profile (names not yet checked against the cluster): a type, a
    system template and a script always; network and storage templates for provisioner profiles
    (as upstream); an OVA for ova profiles."""
    profile_type = check_profile_type(values.get("profile_type"))
    out: dict[str, Any] = {"profile_type": profile_type}
    for ref in PROFILE_REFS:
        text = optional_text(values.get(ref))
        out[ref] = None if text is None else check_name(text, ref)
    for ref in ("system_template", "script"):
        if out[ref] is None:
            raise InvalidInput(f"{ref}: required (the name of a {WHAT[ref]})")
    if profile_type == "provisioner":
        for ref in ("network_template", "storage_template"):
            if out[ref] is None:
                raise InvalidInput(f"{ref}: a provisioner profile needs a {WHAT[ref]}")
    elif out["ova"] is None:
        raise InvalidInput("ova: an ova profile needs the name of its OVA")
    out["arguments"] = parse_arguments(values.get("arguments"))
    return out


def profile_view(doc: Mapping[str, Any], existing: Mapping[str, set[str]] | None = None) -> dict[str, Any]:
    """Upstream's profile item: names of what it uses, "N/A" for what is unset (or gone)."""
    out: dict[str, Any] = {"id": doc.get("id"), "name": doc.get("name"), "type": doc.get("profile_type")}
    for ref in PROFILE_REFS:
        value = doc.get(ref)
        known = existing is None or value in existing.get(ref, set())
        out[ref] = str(value) if value and known else NA
    out["arguments"] = list(doc.get("arguments") or [])
    return out


# -- reads -----------------------------------------------------------------------------------------

def existing_names(zk: ZK) -> dict[str, set[str]]:
    """The names of everything a profile may name, by kind (PROFILE_REFS)."""
    names = zk.children_many([PARENTS[k] for k in PROFILE_REFS])
    out = {k: set(names.get(PARENTS[k], [])) for k in PROFILE_REFS}
    out["userdata"].add(EMPTY)
    return out


def get_profile(zk: ZK, name: str) -> dict[str, Any]:
    return get_doc(zk, "profile", name)


def list_profiles(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    existing = existing_names(zk)
    return [profile_view(d, existing) for d in matching(docs_of(zk, "profile"), limit)]


def profile_item(zk: ZK, name: str) -> dict[str, Any]:
    return profile_view(get_profile(zk, name), existing_names(zk))


@dataclasses.dataclass
class ProfileDocs:
    """A profile with every document it names, read together (what a provisioning job builds from)."""

    name: str
    profile: dict[str, Any]
    system: dict[str, Any]
    script_name: str
    script: str                                 # the script's text
    network: dict[str, Any] | None = None       # the network template document
    storage: dict[str, Any] | None = None       # the storage template document
    ova: dict[str, Any] | None = None           # the OVA document ({id, name, ovf, volumes})
    userdata: str | None = None                 # the userdata's text ("" for "empty"), None if unset
    arguments: list[str] = dataclasses.field(default_factory=list)   # the profile's "key=value" items


def load_profile(zk: ZK, name: str) -> ProfileDocs:
    """Profile `name` and every document it names; NotFound names whatever is missing (a document
    removed behind the API's back), InvalidInput an ova profile without its OVA."""
    profile = get_profile(zk, name)

    def ref(kind: str) -> dict[str, Any] | None:
        value = profile.get(kind)
        if not value:
            return None
        try:
            return USERDATA.get(zk, value) if kind == "userdata" else get_doc(zk, kind, value)
        except NotFound:
            raise NotFound(f"The {WHAT[kind]} '{value}' of profile '{name}' does not exist.") from None

    system = ref("system_template")
    if system is None:
        raise NotFound(f"The profile '{name}' has no system template.")
    script = ref("script")
    if script is None:
        raise NotFound(f"The profile '{name}' has no script.")
    ova = ref("ova")
    if ova is None and profile.get("profile_type") == "ova":
        raise InvalidInput(f"The profile '{name}' is of type ova but names no OVA.")
    userdata = ref("userdata")
    return ProfileDocs(
        name=name, profile=profile, system=system, script_name=str(profile.get("script")),
        script=str(script.get("script") or ""), network=ref("network_template"),
        storage=ref("storage_template"), ova=ova,
        userdata=str(userdata.get("userdata") or "") if userdata is not None else None,
        arguments=list(profile.get("arguments") or []))


# -- writes ----------------------------------------------------------------------------------------

def _check_refs(zk: ZK, values: Mapping[str, Any]) -> None:
    existing = existing_names(zk)
    for ref in PROFILE_REFS:
        name = values.get(ref)
        if name is not None and name not in existing[ref]:
            raise InvalidInput(f"{ref}: the {WHAT[ref]} '{name}' does not exist")


def add_profile(zk: ZK, name: Any, profile_type: Any, system_template: Any, network_template: Any = None,
                storage_template: Any = None, userdata: Any = None, script: Any = None, ova: Any = None,
                arguments: Any = None) -> str:
    name = check_object_name(name)
    values = profile_values({"profile_type": profile_type, "system_template": system_template,
                             "network_template": network_template, "storage_template": storage_template,
                             "userdata": userdata, "script": script, "ova": ova, "arguments": arguments})
    if values["userdata"] == EMPTY:
        ensure_empty_userdata(zk)

    def fields() -> dict[str, Any]:
        _check_refs(zk, values)
        return values

    return create_document(zk, "profile", name, f'Created VM profile "{name}".', fields)


def modify_profile(zk: ZK, name: str, **changes: Any) -> str:
    """Change the given fields (None = keep; "" clears network_template, storage_template, userdata
    or ova; an empty `arguments` list keeps them, [""] clears them); validated as a whole."""
    refuse_unknown(changes, PROFILE_FIELDS, "profile")
    if changes.get("userdata") == EMPTY:
        ensure_empty_userdata(zk)

    def change(current: dict[str, Any]) -> dict[str, Any]:
        inputs = {field: current.get(field) for field in PROFILE_FIELDS}
        for field, value in changes.items():
            if value is None or (field == "arguments" and not value):
                continue
            inputs[field] = value
        values = profile_values(inputs)
        _check_refs(zk, values)
        return {**current, **values}

    return update_document(zk, "profile", name, change, f'Modified VM profile "{name}".',
                           unchanged=f'VM profile "{name}" is unchanged.')


def remove_profile(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_profile(zk, name)
        return [op_delete(schema.profile(name))], f'Removed VM profile "{name}".'

    return transact(zk, plan)
