"""Provisioner data (pvc-facts §7, §8.3 "Provisioner"): templates, userdata, scripts, profiles, OVAs.

Everything lives in ZooKeeper (DESIGN D1), one JSON document per object (paths in core.schema):

    system template   {id, name, vcpu_count, vram_mb, serial, vnc, vnc_bind, node_limit (list|null),
                       node_selector, node_autostart, migration_method, migration_max_downtime, ova}
    network template  {id, name, mac_template, ova, networks: [{id, vni}]}         (VNIs in order added)
    storage template  {id, name, ova, disks: [{id, disk_id, pool, source_volume, disk_size_gb,
                       filesystem, filesystem_args: [...], mountpoint}]}            (sorted by disk_id)
    userdata          {id, name, userdata}      ("empty" always exists and cannot be removed)
    script            {id, name, script}
    profile           {id, name, profile_type, system_template, network_template, storage_template,
                       userdata, script, ova, arguments: ["k=v", ...]}              (names, None if unset)
    ova               {id, name, ovf, volumes: [{pool, volume_name, volume_format, disk_id,
                       disk_size_gb}]}

Integer ids (upstream's API shows them) come from one sequence znode per kind under
schema.PROVISIONER_IDS (`next_id`). Every operation validates all of its input first and writes
nothing when it refuses (InvalidInput/Conflict -> 400, NotFound -> 404, each message naming the
field). Writes are single transactions that also bump the data version of /provisioner, so
concurrent writers serialise: a profile cannot be added with a template that is being removed.

The job runner reads a whole profile with `load_profile`.
"""

from __future__ import annotations

import ast
import email
import email.message
import re
import shutil
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml
from kazoo.exceptions import NodeExistsError

from pvc.cluster import networks as nets
from pvc.cluster import storage as storage_mod
from pvc.cluster.common import check_name, limit_matcher
from pvc.cluster.placement import SELECTORS
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.units import parse_bool
from pvc.core.vocabulary import MIGRATION_METHODS
from pvc.core.zk import ZK, TxOp, op_create, op_delete, op_set

PROFILE_TYPES = ("provisioner", "ova")
SPECIAL_NETWORKS = ("upstream", "cluster", "storage")   # host bridges br<name> (pvc-facts §7.2)
FILESYSTEMS: dict[str, str] = {"ext2": "mkfs.ext2", "ext3": "mkfs.ext3", "ext4": "mkfs.ext4",
                               "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs", "f2fs": "mkfs.f2fs",
                               "vfat": "mkfs.vfat", "swap": "mkswap"}
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"
VCPU_MIN, VCPU_MAX = 1, 1024
VRAM_MIN, VRAM_MAX = 32, 16 * 1024 * 1024          # MB
DOWNTIME_DEFAULT = 300                              # ms (upstream's default)
DOWNTIME_MAX = 3_600_000
DISK_MIN_GB, DISK_MAX_GB = 1, 1024 * 1024
TEXT_MAX = 512 * 1024                               # userdata/scripts: well below ZooKeeper's 1 MB
EMPTY = "empty"
MAC_PREFIX = "52:54:01"
ATTEMPTS = 25
NA = "N/A"

ID_KINDS = ("system_template", "network_template", "network", "storage_template", "storage", "userdata",
            "script", "profile", "ova", "ova_volume")

_DISK_ID_RE = re.compile(r"^(sd|vd)[a-z]$")
_ARG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_FSARG_RE = re.compile(r"^-\S*$")
_USERDATA_HEADERS = ("#cloud-config-archive", "#cloud-config", "#cloud-boothook", "#include", "#part-handler",
                     "## template: jinja", "#!")

Which = Callable[[str], str | None]


def _which(program: str) -> str | None:
    return shutil.which(program, path=SBIN_PATH)


# -- validation of single values (pure) ----------------------------------------------------------------

def _text(value: Any) -> str | None:
    """None for unset values: missing, "" or blank (upstream clients send empty options)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def check_object_name(value: Any, field: str = "name") -> str:
    text = _text(value)
    if text is None:
        raise InvalidInput(f"{field}: a name is required (letters, digits, '.', '_', '-'; at most 63)")
    return check_name(text, field)


def _safe(name: Any) -> bool:
    """A name that can be looked up (anything else cannot exist, and would be a bad ZK path)."""
    try:
        check_object_name(name)
    except InvalidInput:
        return False
    return True


def _int(value: Any, field: str, low: int, high: int, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field}: '{value}' is not a whole number ({what})")
    text = _text(value)
    if text is None:
        raise InvalidInput(f"{field}: required ({what}, {low}..{high})")
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a whole number ({what}, {low}..{high})")
    number = int(text)
    if not low <= number <= high:
        raise InvalidInput(f"{field}: {number} is out of range ({what}, {low}..{high})")
    return number


def _bool(value: Any, field: str, default: bool | None = None) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        if default is None:
            raise InvalidInput(f"{field}: required (true or false)")
        return default
    return parse_bool(value, field)


def check_vnc_bind(value: Any, field: str = "vnc_bind") -> str | None:
    text = _text(value)
    return None if text is None else nets.check_ip(text, field)


def parse_node_limit(value: Any, field: str = "node_limit") -> list[str] | None:
    """A node limit from a comma-separated string and/or a list; None when empty."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            check_name(part, field)
            if part not in out:
                out.append(part)
    return out or None


def check_node_selector(value: Any, field: str = "node_selector") -> str | None:
    text = _text(value)
    if text is None or text.lower() == "none":
        return None
    if text not in SELECTORS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join((*SELECTORS, 'none'))}")
    return text


def check_migration_method(value: Any, field: str = "migration_method") -> str | None:
    text = _text(value)
    if text is None:
        return None
    if text.lower() not in MIGRATION_METHODS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join(MIGRATION_METHODS)}")
    return text.lower()


SYSTEM_FIELDS = ("vcpus", "vram", "serial", "vnc", "vnc_bind", "node_limit", "node_selector",
                 "node_autostart", "migration_method", "migration_max_downtime")


def system_template_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The validated fields of a system template document (without id, name and ova), from the
    inputs named as in the API (SYSTEM_FIELDS): vcpus, vram, serial and vnc are required."""
    downtime = values.get("migration_max_downtime")
    return {
        "vcpu_count": _int(values.get("vcpus"), "vcpus", VCPU_MIN, VCPU_MAX, "a vCPU count"),
        "vram_mb": _int(values.get("vram"), "vram", VRAM_MIN, VRAM_MAX, "memory in MB"),
        "serial": _bool(values.get("serial"), "serial"),
        "vnc": _bool(values.get("vnc"), "vnc"),
        "vnc_bind": check_vnc_bind(values.get("vnc_bind")),
        "node_limit": parse_node_limit(values.get("node_limit")),
        "node_selector": check_node_selector(values.get("node_selector")),
        "node_autostart": _bool(values.get("node_autostart"), "node_autostart", False),
        "migration_method": check_migration_method(values.get("migration_method")),
        "migration_max_downtime": DOWNTIME_DEFAULT if _text(downtime) is None else _int(
            downtime, "migration_max_downtime", 1, DOWNTIME_MAX, "milliseconds"),
    }


def system_template_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as system_template_values inputs (for merging a modification into it)."""
    return {"vcpus": doc.get("vcpu_count"), "vram": doc.get("vram_mb"), "serial": bool(doc.get("serial")),
            "vnc": bool(doc.get("vnc")), "vnc_bind": doc.get("vnc_bind"), "node_limit": doc.get("node_limit"),
            "node_selector": doc.get("node_selector"), "node_autostart": bool(doc.get("node_autostart")),
            "migration_method": doc.get("migration_method"),
            "migration_max_downtime": doc.get("migration_max_downtime")}


def check_mac_template(value: Any, field: str = "mac_template") -> str | None:
    """A MAC template: a MAC address once {prefix} (52:54:01), {vmid} and {netid} (one hex digit
    each) are filled in, e.g. '{prefix}:ff:ff:{vmid}{netid}'."""
    text = _text(value)
    if text is None:
        return None
    try:
        for _literal, name, spec, conversion in string.Formatter().parse(text):
            if name is not None and (name not in ("prefix", "vmid", "netid") or spec or conversion):
                raise ValueError(text)  # only the plain placeholders (no attributes, widths, ...)
        mac = text.format(prefix=MAC_PREFIX, vmid="0", netid="0")
    except (KeyError, IndexError, ValueError, AttributeError):
        raise InvalidInput(f"{field}: '{text[:60]}' is not a MAC template: only {{prefix}}, {{vmid}} and "
                           f"{{netid}} may be filled in (e.g. {{prefix}}:ff:ff:{{vmid}}{{netid}})") from None
    try:
        nets.normalize_mac(mac, field)
    except InvalidInput:
        raise InvalidInput(f"{field}: '{text[:60]}' does not make a unicast MAC address (it gives "
                           f"'{mac[:40]}'; e.g. {{prefix}}:ff:ff:{{vmid}}{{netid}})") from None
    return text


def parse_template_vni(value: Any, field: str = "vni") -> str:
    """A network template's VNI: a PVC network's VNI, or upstream/cluster/storage (host bridges)."""
    text = _text(value)
    if text is None:
        raise InvalidInput(f"{field}: a VNI is required (a network's VNI, or one of "
                           f"{', '.join(SPECIAL_NETWORKS)})")
    if text in SPECIAL_NETWORKS:
        return text
    return str(nets.parse_vni(text, field=field))


def check_disk_id(value: Any, field: str = "disk_id") -> str:
    text = _text(value) or ""
    if not _DISK_ID_RE.match(text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not a disk id (sdX or vdX, e.g. sda, vdb)")
    return text


def check_filesystem(value: Any, which: Which | None = None, field: str = "filesystem") -> str | None:
    text = _text(value)
    if text is None:
        return None
    if text not in FILESYSTEMS:
        raise InvalidInput(f"{field}: '{text[:40]}' is not one of {', '.join(FILESYSTEMS)}")
    program = FILESYSTEMS[text]
    if (which or _which)(program) is None:
        raise InvalidInput(f"{field}: {program} is not installed on this node, so {text} filesystems "
                           f"cannot be created")
    return text


def parse_filesystem_args(values: Any, field: str = "filesystem_arg") -> list[str]:
    """mkfs arguments, each one word starting with '-' (e.g. -L=root), repeated keys."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not _FSARG_RE.match(text):
            raise InvalidInput(f"{field}: '{text[:40]}' is not an mkfs argument (one word starting with '-', "
                               f"e.g. -L=root)")
        out.append(text)
    return out


def check_mountpoint(value: Any, field: str = "mountpoint") -> str | None:
    text = _text(value)
    if text is None:
        return None
    parts = text.split("/")
    if not text.startswith("/") or any(p in (".", "..") for p in parts) or re.search(r"[\s\x00]", text):
        raise InvalidInput(f"{field}: '{text[:60]}' is not an absolute path without blanks (e.g. /var)")
    return "/" + "/".join(p for p in parts if p)


def disk_doc(values: Mapping[str, Any], which: Which | None = None) -> dict[str, Any]:
    """A storage template disk (without id) from the API's inputs (disk_id, pool, source_volume,
    disk_size, filesystem, filesystem_arg, mountpoint), with upstream's rules: a clone (source_volume)
    takes no size, filesystem or mountpoint; a mountpoint needs a filesystem; anything else needs a
    size."""
    disk_id = check_disk_id(values.get("disk_id"))
    pool = check_object_name(values.get("pool"), "pool")
    source = _text(values.get("source_volume"))
    if source is not None:
        check_name(source, "source_volume")
    size_given = _text(values.get("disk_size")) is not None
    size = _int(values.get("disk_size"), "disk_size", DISK_MIN_GB, DISK_MAX_GB, "a size in GB") \
        if size_given else None
    filesystem = _text(values.get("filesystem"))
    mountpoint = check_mountpoint(values.get("mountpoint"))
    fs_args = parse_filesystem_args(values.get("filesystem_arg"))
    if source is not None:
        for field, given in (("disk_size", size_given), ("filesystem", filesystem is not None),
                             ("mountpoint", mountpoint is not None), ("filesystem_arg", bool(fs_args))):
            if given:
                raise InvalidInput(f"{field}: a disk cloned from source_volume '{source}' takes no {field} "
                                   f"(the clone keeps the source's size and contents)")
    elif size is None:
        raise InvalidInput("disk_size: a size in GB is required (unless the disk is a clone of "
                           "source_volume)")
    if mountpoint is not None and filesystem is None:
        raise InvalidInput(f"mountpoint: a filesystem is required to mount the disk at {mountpoint}")
    if fs_args and filesystem is None:
        raise InvalidInput("filesystem_arg: mkfs arguments need a filesystem")
    filesystem = check_filesystem(filesystem, which)
    if filesystem == "swap" and mountpoint is not None:
        raise InvalidInput("mountpoint: a swap disk is not mounted")
    return {"disk_id": disk_id, "pool": pool, "source_volume": source, "disk_size_gb": size,
            "filesystem": filesystem, "filesystem_args": fs_args, "mountpoint": mountpoint}


def check_disks(disk: Mapping[str, Any], others: Iterable[Mapping[str, Any]], template: str) -> None:
    """A disk id and a mountpoint are used once per template."""
    for other in others:
        if other.get("disk_id") == disk["disk_id"]:
            raise Conflict(f"disk_id: the disk '{disk['disk_id']}' in storage template '{template}' already "
                           f"exists")
        if disk["mountpoint"] and other.get("mountpoint") == disk["mountpoint"]:
            raise Conflict(f"mountpoint: {disk['mountpoint']} is already the mountpoint of disk "
                           f"'{other.get('disk_id')}' in storage template '{template}'")


def _data(value: Any, field: str) -> str:
    if value is None:
        raise InvalidInput(f"{field}: required (the document's text)")
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be text")
    if len(value.encode("utf-8", "surrogatepass")) > TEXT_MAX:
        raise InvalidInput(f"{field}: the document is too large (at most {TEXT_MAX // 1024} KiB)")
    if "\x00" in value:
        raise InvalidInput(f"{field}: the document contains a NUL character")
    return value


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
    text = _data(value, field)
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


def check_script(value: Any, field: str = "data") -> str:
    """A provisioning script: Python that compiles and defines `class VMBuilderScript(VMBuilder)`."""
    text = _data(value, field)
    if not text.strip():
        raise InvalidInput(f"{field}: the script is empty; it must define class VMBuilderScript(VMBuilder)")
    try:
        tree = ast.parse(text, filename="<script>")
    except SyntaxError as exc:
        raise InvalidInput(f"{field}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise InvalidInput(f"{field}: the script cannot be parsed: {exc}") from None
    classes = [node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == "VMBuilderScript"]
    if not classes:
        raise InvalidInput(f"{field}: the script does not define class VMBuilderScript (a subclass of "
                           f"VMBuilder; see the examples)")
    bases = [ast.unparse(base) for base in classes[-1].bases]
    if not any(base.split(".")[-1] == "VMBuilder" for base in bases):
        raise InvalidInput(f"{field}: class VMBuilderScript must extend VMBuilder (from pvcapid.vmbuilder "
                           f"import VMBuilder), not {', '.join(bases) or 'object'}")
    return text


def check_profile_type(value: Any, field: str = "profile_type") -> str:
    text = _text(value)
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


def arguments_dict(arguments: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in arguments:
        key, _sep, value = str(item).partition("=")
        out[key] = value
    return out


# -- views (the API's items) ---------------------------------------------------------------------------

def system_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    limit = doc.get("node_limit")
    return {"id": doc.get("id"), "name": doc.get("name"), "vcpu_count": doc.get("vcpu_count"),
            "vram_mb": doc.get("vram_mb"), "serial": bool(doc.get("serial")), "vnc": bool(doc.get("vnc")),
            "vnc_bind": doc.get("vnc_bind"), "node_limit": ",".join(limit) if limit else None,
            "node_selector": doc.get("node_selector"), "node_autostart": bool(doc.get("node_autostart")),
            "migration_method": doc.get("migration_method"),
            "migration_max_downtime": doc.get("migration_max_downtime", DOWNTIME_DEFAULT),
            "ova": doc.get("ova")}


def template_network_view(template: Mapping[str, Any], net: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": net.get("id"), "network_template": template.get("id"), "vni": str(net.get("vni"))}


def network_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"), "mac_template": doc.get("mac_template"),
            "ova": doc.get("ova"),
            "networks": [template_network_view(doc, n) for n in doc.get("networks") or []]}


def template_disk_view(template: Mapping[str, Any], disk: Mapping[str, Any]) -> dict[str, Any]:
    """A disk as upstream shows it: filesystem_args space-joined (its database column)."""
    return {"id": disk.get("id"), "storage_template": template.get("id"), "disk_id": disk.get("disk_id"),
            "pool": disk.get("pool"), "source_volume": disk.get("source_volume"),
            "disk_size_gb": disk.get("disk_size_gb"), "filesystem": disk.get("filesystem"),
            "filesystem_args": " ".join(disk.get("filesystem_args") or []),
            "mountpoint": disk.get("mountpoint")}


def storage_template_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    disks = sorted(doc.get("disks") or [], key=lambda d: str(d.get("disk_id")))
    return {"id": doc.get("id"), "name": doc.get("name"), "ova": doc.get("ova"),
            "disks": [template_disk_view(doc, d) for d in disks]}


def userdata_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"), "userdata": doc.get("userdata") or ""}


def script_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"), "script": doc.get("script") or ""}


PROFILE_REFS = ("system_template", "network_template", "storage_template", "userdata", "script", "ova")


def profile_view(doc: Mapping[str, Any], existing: Mapping[str, set[str]] | None = None) -> dict[str, Any]:
    """Upstream's profile item: names of what it uses, "N/A" for what is unset (or gone)."""
    out: dict[str, Any] = {"id": doc.get("id"), "name": doc.get("name"), "type": doc.get("profile_type")}
    for ref in PROFILE_REFS:
        value = doc.get(ref)
        known = existing is None or value in existing.get(ref, set())
        out[ref] = str(value) if value and known else NA
    out["arguments"] = list(doc.get("arguments") or [])
    return out


def ova_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": doc.get("id"), "name": doc.get("name"),
            "volumes": [{"pool": v.get("pool"), "volume_name": v.get("volume_name"),
                         "volume_format": v.get("volume_format"), "disk_id": v.get("disk_id"),
                         "disk_size_gb": v.get("disk_size_gb")} for v in doc.get("volumes") or []]}


# -- ZooKeeper reads ---------------------------------------------------------------------------------------

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


def _docs(zk: ZK, kind: str) -> dict[str, dict[str, Any]]:
    names = zk.children(PARENTS[kind])
    docs = zk.get_many([PATHS[kind](n) for n in names])
    return {n: d for n in names if isinstance(d := docs.get(PATHS[kind](n)), dict)}


def _get(zk: ZK, kind: str, name: Any) -> dict[str, Any]:
    doc = zk.get(PATHS[kind](str(name)), None) if _safe(name) else None
    if not isinstance(doc, dict):
        raise NotFound(f"The {WHAT[kind]} '{name}' does not exist.")
    return doc


def _matching(docs: Mapping[str, dict[str, Any]], limit: str | None) -> list[dict[str, Any]]:
    matcher = limit_matcher(limit)
    return [docs[n] for n in sorted(docs) if matcher is None or matcher.fullmatch(n)]


def get_system_template(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "system_template", name)


def get_network_template(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "network_template", name)


def get_storage_template(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "storage_template", name)


def get_script(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "script", name)


def get_profile(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "profile", name)


def get_ova(zk: ZK, name: str) -> dict[str, Any]:
    return _get(zk, "ova", name)


def get_userdata(zk: ZK, name: str) -> dict[str, Any]:
    if name == EMPTY:
        ensure_empty_userdata(zk)
    return _get(zk, "userdata", name)


def list_system_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [system_template_view(d) for d in _matching(_docs(zk, "system_template"), limit)]


def list_network_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [network_template_view(d) for d in _matching(_docs(zk, "network_template"), limit)]


def list_storage_templates(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [storage_template_view(d) for d in _matching(_docs(zk, "storage_template"), limit)]


def list_templates(zk: ZK, limit: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """GET /provisioner/template: the three lists (keys with underscores, as upstream's code)."""
    return {"system_templates": list_system_templates(zk, limit),
            "network_templates": list_network_templates(zk, limit),
            "storage_templates": list_storage_templates(zk, limit)}


def list_template_networks(zk: ZK, template: str) -> list[dict[str, Any]]:
    doc = get_network_template(zk, template)
    return [template_network_view(doc, n) for n in doc.get("networks") or []]


def get_template_network(zk: ZK, template: str, vni: str) -> dict[str, Any]:
    doc = get_network_template(zk, template)
    for net in doc.get("networks") or []:
        if str(net.get("vni")) == str(vni).strip():
            return template_network_view(doc, net)
    raise NotFound(f"The network '{vni}' is not in network template '{template}'.")


def list_template_disks(zk: ZK, template: str) -> list[dict[str, Any]]:
    return storage_template_view(get_storage_template(zk, template))["disks"]


def get_template_disk(zk: ZK, template: str, disk_id: str) -> dict[str, Any]:
    for disk in list_template_disks(zk, template):
        if disk["disk_id"] == disk_id:
            return disk
    raise NotFound(f"The disk '{disk_id}' is not in storage template '{template}'.")


def list_userdata(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    ensure_empty_userdata(zk)
    return [userdata_view(d) for d in _matching(_docs(zk, "userdata"), limit)]


def list_scripts(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [script_view(d) for d in _matching(_docs(zk, "script"), limit)]


def _existing(zk: ZK) -> dict[str, set[str]]:
    names = zk.children_many([PARENTS[k] for k in PROFILE_REFS])
    out = {k: set(names.get(PARENTS[k], [])) for k in PROFILE_REFS}
    out["userdata"].add(EMPTY)
    return out


def list_profiles(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    existing = _existing(zk)
    return [profile_view(d, existing) for d in _matching(_docs(zk, "profile"), limit)]


def list_ovas(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    return [ova_view(d) for d in _matching(_docs(zk, "ova"), limit)]


def system_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return system_template_view(get_system_template(zk, name))


def network_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return network_template_view(get_network_template(zk, name))


def storage_template_item(zk: ZK, name: str) -> dict[str, Any]:
    return storage_template_view(get_storage_template(zk, name))


def userdata_item(zk: ZK, name: str) -> dict[str, Any]:
    return userdata_view(get_userdata(zk, name))


def script_item(zk: ZK, name: str) -> dict[str, Any]:
    return script_view(get_script(zk, name))


def profile_item(zk: ZK, name: str) -> dict[str, Any]:
    return profile_view(get_profile(zk, name), _existing(zk))


def ova_item(zk: ZK, name: str) -> dict[str, Any]:
    return ova_view(get_ova(zk, name))


def profiles_using(zk: ZK, kind: str, name: str) -> list[str]:
    """Names of the profiles whose `kind` (system_template, ..., ova) is `name`."""
    return sorted(p for p, doc in _docs(zk, "profile").items() if doc.get(kind) == name)


# -- the job runner's view -------------------------------------------------------------------------------

def load_profile(zk: ZK, name: str) -> dict[str, Any]:
    """Everything a provisioning job needs from profile `name`, resolved; NotFound names what is missing.

    Returns {
        "name": profile name, "profile_type": "provisioner" | "ova", "profile": the profile document,
        "system_template": system template document (node_limit a list or None),
        "network_template": network template document or None,
        "mac_template": the network template's MAC template or None,
        "networks": [{"id", "network_template" (template id), "vni" (str)}] in order ([] without template),
        "storage_template": storage template document or None,
        "volumes": [{"id", "storage_template" (template id), "disk_id", "pool", "source_volume",
                     "disk_size_gb", "filesystem", "filesystem_args" (list), "mountpoint"}] by disk_id,
        "userdata_name": name or None, "userdata": its text ("" for "empty") or None,
        "script_name": name, "script": the script's text,
        "arguments": {key: value} from the profile's "key=value" items,
        "ova": the OVA document ({id, name, ovf, volumes}) or None,
    }
    """
    try:
        profile = get_profile(zk, name)
    except NotFound:
        raise NotFound(f"The profile '{name}' does not exist.") from None

    def ref(kind: str) -> dict[str, Any] | None:
        value = profile.get(kind)
        if not value:
            return None
        try:
            return get_userdata(zk, value) if kind == "userdata" else _get(zk, kind, value)
        except NotFound:
            raise NotFound(f"The {WHAT[kind]} '{value}' of profile '{name}' does not exist.") from None

    system = ref("system_template")
    if system is None:
        raise NotFound(f"The profile '{name}' has no system template.")
    script = ref("script")
    if script is None:
        raise NotFound(f"The profile '{name}' has no script.")
    network, storage = ref("network_template"), ref("storage_template")
    userdata, ova = ref("userdata"), ref("ova")
    networks = [{"id": n.get("id"), "network_template": network.get("id"), "vni": str(n.get("vni"))}
                for n in (network or {}).get("networks") or []] if network else []
    volumes = [{"id": d.get("id"), "storage_template": storage.get("id"), "disk_id": d.get("disk_id"),
                "pool": d.get("pool"), "source_volume": d.get("source_volume"),
                "disk_size_gb": d.get("disk_size_gb"), "filesystem": d.get("filesystem"),
                "filesystem_args": list(d.get("filesystem_args") or []), "mountpoint": d.get("mountpoint")}
               for d in sorted(storage.get("disks") or [], key=lambda d: str(d.get("disk_id")))] \
        if storage else []
    return {
        "name": name, "profile_type": profile.get("profile_type"), "profile": profile,
        "system_template": system, "network_template": network,
        "mac_template": network.get("mac_template") if network else None, "networks": networks,
        "storage_template": storage, "volumes": volumes,
        "userdata_name": profile.get("userdata") or None,
        "userdata": (userdata.get("userdata") or "") if userdata else None,
        "script_name": profile.get("script"), "script": script.get("script") or "",
        "arguments": arguments_dict(profile.get("arguments") or []), "ova": ova,
    }


# -- ZooKeeper writes ------------------------------------------------------------------------------------

Op = TxOp
_create, _set, _delete = op_create, op_set, op_delete


def next_id(zk: ZK, kind: str) -> int:
    """A new integer id for an object of `kind` (ID_KINDS): one sequence znode per id."""
    if kind not in ID_KINDS:
        raise ValueError(f"unknown provisioner id kind {kind}")
    path = zk.create(f"{schema.PROVISIONER_IDS}/{kind}/id-", None, sequence=True, makepath=True)
    return int(path.rsplit("-", 1)[1]) + 1


def _lock(zk: ZK) -> Op:
    """Bump /provisioner's data version (kept as it is): every provisioner write does, so two
    writers validated against the same state cannot both commit."""
    found = zk.get_raw(schema.PROVISIONER)
    if found is None:
        zk.ensure(schema.PROVISIONER)
        found = zk.get_raw(schema.PROVISIONER)
    assert found is not None
    raw, stat = found
    version = stat.version
    return lambda tx: tx.set_data(schema.PROVISIONER, raw or b"", version=version)


def _transact(zk: ZK, plan: Callable[[Op], tuple[list[Op], str]]) -> str:
    """Run plan(lock) (read, validate, return the ops and the answer) and commit lock + ops in one
    transaction; when another writer won, plan again on the new state."""
    for _attempt in range(ATTEMPTS):
        lock = _lock(zk)
        ops, answer = plan(lock)
        if not ops or zk.commit_ops([lock, *ops]):
            return answer
    raise Conflict("Too many concurrent changes to the provisioner; try again.")


def _refuse_existing(zk: ZK, kind: str, name: str) -> None:
    if zk.exists(PATHS[kind](name)):
        raise Conflict(f"name: the {WHAT[kind]} '{name}' already exists.")


def _refuse_used(zk: ZK, kind: str, name: str) -> None:
    users = profiles_using(zk, kind, name)
    if users:
        names = ", ".join(f"'{u}'" for u in users)
        raise Conflict(f"The {WHAT[kind]} '{name}' is used by profile{'s' if len(users) > 1 else ''} "
                       f"{names}; change or remove {'them' if len(users) > 1 else 'it'} first.")


def _ova_ref(zk: ZK, ova: Any, field: str = "ova") -> str | None:
    text = _text(ova)
    if text is None:
        return None
    check_name(text, field)
    if not zk.exists(schema.ova(text)):
        raise InvalidInput(f"{field}: the OVA '{text}' does not exist")
    return text


# system templates

def add_system_template(zk: ZK, name: Any, vcpus: Any, vram: Any, serial: Any, vnc: Any, vnc_bind: Any = None,
                        node_limit: Any = None, node_selector: Any = None, node_autostart: Any = False,
                        migration_method: Any = None, migration_max_downtime: Any = None,
                        ova: Any = None) -> str:
    name = check_object_name(name)
    values = system_template_values({
        "vcpus": vcpus, "vram": vram, "serial": serial, "vnc": vnc, "vnc_bind": vnc_bind,
        "node_limit": node_limit, "node_selector": node_selector, "node_autostart": node_autostart,
        "migration_method": migration_method, "migration_max_downtime": migration_max_downtime})

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "system_template", name)
        ova_name = _ova_ref(zk, ova)
        doc = {"id": next_id(zk, "system_template"), "name": name, **values, "ova": ova_name}
        return [_create(schema.system_template(name), doc)], f'Added new system template "{name}".'

    return _transact(zk, plan)


def modify_system_template(zk: ZK, name: str, **changes: Any) -> str:
    """Change the given fields (None = keep; "" clears an optional one); validated as a whole."""
    unknown = set(changes) - set(SYSTEM_FIELDS)
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))}: not a system template field")

    def plan(_lock: Op) -> tuple[list[Op], str]:
        current = get_system_template(zk, name)
        inputs = system_template_inputs(current)
        for field, value in changes.items():
            if value is None:
                continue
            if field in ("vcpus", "vram", "serial", "vnc") and _text(value) is None:
                raise InvalidInput(f"{field}: cannot be cleared")
            inputs[field] = value
        doc = {**current, **system_template_values(inputs)}
        if doc == current:
            return [], f'System template "{name}" is unchanged.'
        return [_set(schema.system_template(name), doc)], f'Modified system template "{name}".'

    return _transact(zk, plan)


def remove_system_template(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_system_template(zk, name)
        _refuse_used(zk, "system_template", name)
        return [_delete(schema.system_template(name))], f'Removed system template "{name}".'

    return _transact(zk, plan)


# network templates

def add_network_template(zk: ZK, name: Any, mac_template: Any = None, ova: Any = None) -> str:
    name = check_object_name(name)
    mac = check_mac_template(mac_template)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "network_template", name)
        doc = {"id": next_id(zk, "network_template"), "name": name, "mac_template": mac,
               "ova": _ova_ref(zk, ova), "networks": []}
        return [_create(schema.network_template(name), doc)], f'Added new network template "{name}".'

    return _transact(zk, plan)


def remove_network_template(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_network_template(zk, name)
        _refuse_used(zk, "network_template", name)
        return [_delete(schema.network_template(name))], f'Removed network template "{name}".'

    return _transact(zk, plan)


def add_template_network(zk: ZK, template: str, vni: Any, permit_duplicate: Any = False) -> str:
    """Append a network to a network template: the VNI of an existing PVC network (or upstream,
    cluster, storage); each VNI once unless permit_duplicate."""
    text = parse_template_vni(vni)
    duplicate = _bool(permit_duplicate, "permit_duplicate", False)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_network_template(zk, template)
        if text not in SPECIAL_NETWORKS and not zk.exists(schema.network(int(text))):
            raise InvalidInput(f"vni: the network {text} does not exist (add it with 'pvc network add' "
                               f"first)")
        networks = list(doc.get("networks") or [])
        if not duplicate and any(str(n.get("vni")) == text for n in networks):
            raise Conflict(f"vni: the VNI '{text}' in network template '{template}' already exists "
                           f"(permit_duplicate allows it twice)")
        networks.append({"id": next_id(zk, "network"), "vni": text})
        return ([_set(schema.network_template(template), {**doc, "networks": networks})],
                f'Added new network "{text}" to network template "{template}".')

    return _transact(zk, plan)


def remove_template_network(zk: ZK, template: str, vni: str) -> str:
    """Remove a VNI from a network template (its last occurrence, if it is there twice)."""
    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_network_template(zk, template)
        networks = list(doc.get("networks") or [])
        found = [i for i, n in enumerate(networks) if str(n.get("vni")) == str(vni).strip()]
        if not found:
            raise NotFound(f"The network '{vni}' is not in network template '{template}'.")
        del networks[found[-1]]
        return ([_set(schema.network_template(template), {**doc, "networks": networks})],
                f'Removed network "{vni}" from network template "{template}".')

    return _transact(zk, plan)


# storage templates

def add_storage_template(zk: ZK, name: Any, ova: Any = None) -> str:
    name = check_object_name(name)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "storage_template", name)
        doc = {"id": next_id(zk, "storage_template"), "name": name, "ova": _ova_ref(zk, ova), "disks": []}
        return [_create(schema.storage_template(name), doc)], f'Added new storage template "{name}".'

    return _transact(zk, plan)


def remove_storage_template(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_storage_template(zk, name)
        _refuse_used(zk, "storage_template", name)
        return [_delete(schema.storage_template(name))], f'Removed storage template "{name}".'

    return _transact(zk, plan)


def add_template_disk(zk: ZK, template: str, disk_id: Any, pool: Any, source_volume: Any = None,
                      disk_size: Any = None, filesystem: Any = None, filesystem_args: Any = None,
                      mountpoint: Any = None, which: Which | None = None) -> str:
    """Add a disk to a storage template (see disk_doc for the rules); the pool must exist."""
    disk = disk_doc({"disk_id": disk_id, "pool": pool, "source_volume": source_volume, "disk_size": disk_size,
                     "filesystem": filesystem, "filesystem_arg": filesystem_args, "mountpoint": mountpoint},
                    which)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_storage_template(zk, template)
        if not zk.exists(schema.pool(disk["pool"])):
            raise InvalidInput(f"pool: the storage pool '{disk['pool']}' does not exist")
        disks = list(doc.get("disks") or [])
        check_disks(disk, disks, template)
        disks.append({"id": next_id(zk, "storage"), **disk})
        disks.sort(key=lambda d: str(d.get("disk_id")))
        return ([_set(schema.storage_template(template), {**doc, "disks": disks})],
                f'Added new disk "{disk["disk_id"]}" to storage template "{template}".')

    return _transact(zk, plan)


def remove_template_disk(zk: ZK, template: str, disk_id: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_storage_template(zk, template)
        disks = [d for d in doc.get("disks") or [] if d.get("disk_id") != disk_id]
        if len(disks) == len(doc.get("disks") or []):
            raise NotFound(f"The disk '{disk_id}' is not in storage template '{template}'.")
        return ([_set(schema.storage_template(template), {**doc, "disks": disks})],
                f'Removed disk "{disk_id}" from storage template "{template}".')

    return _transact(zk, plan)


# userdata

def ensure_empty_userdata(zk: ZK) -> None:
    """The built-in, always-present "empty" document (created on first use)."""
    if zk.exists(schema.userdata(EMPTY)):
        return
    doc = {"id": next_id(zk, "userdata"), "name": EMPTY, "userdata": ""}
    try:
        zk.create(schema.userdata(EMPTY), doc, makepath=True)
    except NodeExistsError:
        pass


def add_userdata(zk: ZK, name: Any, data: Any) -> str:
    name = check_object_name(name)
    text = check_userdata(data)
    ensure_empty_userdata(zk)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "userdata", name)
        doc = {"id": next_id(zk, "userdata"), "name": name, "userdata": text}
        return [_create(schema.userdata(name), doc)], f'Created userdata document "{name}".'

    return _transact(zk, plan)


def modify_userdata(zk: ZK, name: str, data: Any) -> str:
    text = check_userdata(data)
    if name == EMPTY:
        raise Conflict(f"The userdata document '{EMPTY}' is built in and cannot be changed.")

    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_userdata(zk, name)
        return ([_set(schema.userdata(name), {**doc, "userdata": text})],
                f'Updated userdata document "{name}".')

    return _transact(zk, plan)


def remove_userdata(zk: ZK, name: str) -> str:
    if name == EMPTY:
        raise Conflict(f"The userdata document '{EMPTY}' is built in and cannot be removed.")

    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_userdata(zk, name)
        _refuse_used(zk, "userdata", name)
        return [_delete(schema.userdata(name))], f'Removed userdata document "{name}".'

    return _transact(zk, plan)


# scripts

def add_script(zk: ZK, name: Any, data: Any) -> str:
    name = check_object_name(name)
    text = check_script(data)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "script", name)
        doc = {"id": next_id(zk, "script"), "name": name, "script": text}
        return [_create(schema.script(name), doc)], f'Created provisioning script "{name}".'

    return _transact(zk, plan)


def modify_script(zk: ZK, name: str, data: Any) -> str:
    text = check_script(data)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        doc = get_script(zk, name)
        return [_set(schema.script(name), {**doc, "script": text})], f'Updated provisioning script "{name}".'

    return _transact(zk, plan)


def remove_script(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_script(zk, name)
        _refuse_used(zk, "script", name)
        return [_delete(schema.script(name))], f'Removed provisioning script "{name}".'

    return _transact(zk, plan)


# profiles

PROFILE_FIELDS = ("profile_type", *PROFILE_REFS, "arguments")


def profile_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The validated fields of a profile (names not yet checked against the cluster): a type, a
    system template and a script always; network and storage templates for provisioner profiles
    (as upstream); an OVA for ova profiles."""
    profile_type = check_profile_type(values.get("profile_type"))
    out: dict[str, Any] = {"profile_type": profile_type}
    for ref in PROFILE_REFS:
        text = _text(values.get(ref))
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


def _check_refs(zk: ZK, values: Mapping[str, Any]) -> None:
    existing = _existing(zk)
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

    def plan(_lock: Op) -> tuple[list[Op], str]:
        _refuse_existing(zk, "profile", name)
        _check_refs(zk, values)
        doc = {"id": next_id(zk, "profile"), "name": name, **values}
        return [_create(schema.profile(name), doc)], f'Created VM profile "{name}".'

    return _transact(zk, plan)


def modify_profile(zk: ZK, name: str, **changes: Any) -> str:
    """Change the given fields (None = keep; "" clears network_template, storage_template, userdata
    or ova; an empty `arguments` list keeps them, [""] clears them); validated as a whole."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise InvalidInput(f"{', '.join(sorted(unknown))}: not a profile field")
    if changes.get("userdata") == EMPTY:
        ensure_empty_userdata(zk)

    def plan(_lock: Op) -> tuple[list[Op], str]:
        current = get_profile(zk, name)
        inputs = {field: current.get(field) for field in PROFILE_FIELDS}
        for field, value in changes.items():
            if value is None or (field == "arguments" and not value):
                continue
            inputs[field] = value
        values = profile_values(inputs)
        _check_refs(zk, values)
        doc = {**current, **values}
        if doc == current:
            return [], f'VM profile "{name}" is unchanged.'
        return [_set(schema.profile(name), doc)], f'Modified VM profile "{name}".'

    return _transact(zk, plan)


def remove_profile(zk: ZK, name: str) -> str:
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_profile(zk, name)
        return [_delete(schema.profile(name))], f'Removed VM profile "{name}".'

    return _transact(zk, plan)


# OVAs (the upload itself is the OVA job's; these read and remove what it stored)

def remove_ova(zk: ZK, name: str, storage: Any = None) -> str:
    """Remove an OVA: its volumes (through `storage`, a pvc.adapters.ceph.Storage, when given), then in
    one transaction its document and the profiles and system templates made for it. Refused while a
    profile of another OVA, or a provisioner profile, uses one of those system templates."""
    doc = get_ova(zk, name)
    profiles = [p for p, d in _docs(zk, "profile").items() if d.get("ova") == name]
    templates = [t for t, d in _docs(zk, "system_template").items() if d.get("ova") == name]
    for template in templates:
        others = [p for p in profiles_using(zk, "system_template", template) if p not in profiles]
        if others:
            names = ", ".join(f"'{p}'" for p in others)
            raise Conflict(f"The OVA '{name}' cannot be removed: its system template '{template}' is used by "
                           f"profile{'s' if len(others) > 1 else ''} {names}; change or remove "
                           f"{'them' if len(others) > 1 else 'it'} first.")
    if storage is not None:
        for volume in doc.get("volumes") or []:
            try:
                storage_mod.remove_volume(zk, storage, str(volume.get("pool")),
                                          str(volume.get("volume_name")))
            except NotFound:
                continue

    def plan(_lock: Op) -> tuple[list[Op], str]:
        if not zk.exists(schema.ova(name)):
            return [], f'Removed OVA image "{name}".'
        ops = [_delete(schema.ova(name))]
        ops += [_delete(schema.profile(p)) for p, d in _docs(zk, "profile").items() if d.get("ova") == name]
        ops += [_delete(schema.system_template(t)) for t, d in _docs(zk, "system_template").items()
                if d.get("ova") == name]
        return ops, f'Removed OVA image "{name}".'

    return _transact(zk, plan)
