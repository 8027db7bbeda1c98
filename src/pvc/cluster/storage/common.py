"""What every storage operation shares: names, sizes and limits checked before anything changes,
adapter errors turned into PVC errors, `ceph df` figures, and reading the /ceph documents."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import NoNodeError

from pvc.adapters.ceph import StorageError, StorageInUse, StorageNotFound, StorageUnavailable
from pvc.adapters.osd import OsdError, parse_file_device
from pvc.cluster.common import limit_matcher
from pvc.core.errors import Conflict, InvalidInput, NotFound, PVCError
from pvc.core.units import parse_size
from pvc.core.vocabulary import POOL_TIERS as TIERS
from pvc.core.zk import ZK

SAFE_RATIO = 0.8              # volumes may fill a pool to 80 % unless forced (upstream rule)
MAX_NAME = 100
MAX_PGS = 65536               # Ceph's mon_max_pool_pg_num
MAX_COPIES = 10               # Ceph: "pool size must be between 1 and 10"
_UNITS = ("B", "K", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q")
_FORBIDDEN = {"/": "'/'", "@": "'@'", '"': "quotes", "'": "quotes", "\\": "'\\'"}


class StorageDown(PVCError):
    """Ceph cannot be reached (or is not configured on this node); nothing was changed."""

    status = 503


class VolumeInUse(Conflict):
    """A refusal because a client still has the image open: a caller that knows the client is
    going away (a VM just stopped) may try again."""



# -- adapter errors -----------------------------------------------------------------------------

@contextmanager
def ceph(action: str, not_found: type[PVCError] = NotFound) -> Iterator[None]:
    """Run adapter calls, turning their errors into PVC errors that name the action.

    `not_found` is the error for something missing in Ceph: 404 where the request named it, 400
    (Conflict) where it is a precondition (e.g. no OSDs of a pool's tier).
    """
    try:
        yield
    except StorageUnavailable as exc:
        raise StorageDown(f"Ceph is unavailable, cannot {action}: {exc.message}") from None
    except StorageNotFound as exc:
        raise not_found(f"Failed to {action}: {exc.message}") from None
    except StorageInUse as exc:
        raise VolumeInUse(f"Failed to {action}: {exc.message}") from None
    except StorageError as exc:   # StorageExists included: both are refusals of a valid request
        raise Conflict(f"Failed to {action}: {exc.message}") from None


# -- validation (pure) ------------------------------------------------------------------------------

def check_name(value: str | None, field: str) -> str:
    """Pool, volume, snapshot and job names: they become ZooKeeper path elements and RBD specs
    (`pool/volume@snapshot`), so '/', '@', blanks and control characters cannot be allowed."""
    text = "" if value is None else str(value)
    if not text:
        raise InvalidInput(f"{field}: a name is required")
    if len(text) > MAX_NAME:
        raise InvalidInput(f"{field}: '{text[:40]}...' is too long ({len(text)} characters, "
                           f"at most {MAX_NAME})")
    if any(ch.isspace() for ch in text):
        raise InvalidInput(f"{field}: '{text}' may not contain spaces or other blanks")
    for char, what in _FORBIDDEN.items():
        if char in text:
            raise InvalidInput(f"{field}: '{text}' may not contain {what}")
    if any(not ch.isprintable() for ch in text):
        raise InvalidInput(f"{field}: '{text}' may not contain control characters")
    if text in (".", "..") or text.startswith("-"):
        raise InvalidInput(f"{field}: '{text}' is not a valid name (it may not be '.', '..' or "
                           f"start with '-')")
    return text


def parse_volume_size(value: str | int | None, field: str = "size") -> int:
    """Bytes of a human size ('10G', '512M', bare bytes); refusals name the field."""
    if value is None or str(value).strip() == "":
        raise InvalidInput(f"{field}: a size is required (e.g. 10G)")
    return parse_size(str(value), field)


def parse_replcfg(value: str | None, field: str = "replcfg") -> tuple[int, int]:
    """(copies, mincopies) of 'copies=N,mincopies=M' (either order), with 1 <= M <= N <= 10."""
    text = (value or "").strip()
    found: dict[str, int] = {}
    example = "e.g. 'copies=3,mincopies=2'"
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, number = (s.strip() for s in part.partition("="))
        if not sep or key not in ("copies", "mincopies") or key in found:
            raise InvalidInput(f"{field}: '{text}' is not a replication configuration ({example})")
        if not re.fullmatch(r"\d{1,6}", number):
            raise InvalidInput(f"{field}: {key} '{number}' is not a whole number ({example})")
        found[key] = int(number)
    if set(found) != {"copies", "mincopies"}:
        raise InvalidInput(f"{field}: '{text}' must give both copies and mincopies ({example})")
    copies, mincopies = found["copies"], found["mincopies"]
    if not 1 <= copies <= MAX_COPIES:
        raise InvalidInput(f"{field}: copies={copies} must be between 1 and {MAX_COPIES}")
    if not 1 <= mincopies <= copies:
        raise InvalidInput(f"{field}: mincopies={mincopies} must be between 1 and copies ({copies})")
    return copies, mincopies


def check_pgs(pgs: int, field: str = "pgs", power_of_two: bool = False) -> int:
    """Placement groups: > 0 and at most Ceph's limit; a power of two where PVC requires it."""
    if pgs < 1 or pgs > MAX_PGS:
        raise InvalidInput(f"{field}: {pgs} must be between 1 and {MAX_PGS}")
    if power_of_two and pgs & (pgs - 1):
        raise InvalidInput(f"{field}: {pgs} is not a power of two (e.g. 32, 64, 128)")
    return pgs


def check_tier(tier: str | None, field: str = "tier") -> str:
    value = tier or "default"
    if value not in TIERS:
        raise InvalidInput(f"{field}: '{tier}' is not one of {', '.join(TIERS)}")
    return value


def check_osd_id(osd_id: str | int, field: str = "osd") -> int:
    text = str(osd_id).strip()
    if not re.fullmatch(r"\d{1,9}", text):
        raise InvalidInput(f"{field}: '{osd_id}' is not an OSD ID (a whole number)")
    return int(text)


def check_device(device: str | None, field: str = "device") -> str:
    """A block device path (/dev/...), a detect string (detect:NAME:SIZE:INDEX), or a file-backed
    device (file:PATH[:SIZE]) for nodes that run OSDs directly (the lab, hosts without LVM)."""
    text = (device or "").strip()
    if not text:
        raise InvalidInput(f"{field}: a block device is required (e.g. /dev/sdb or detect:INTEL:800G:0)")
    if any(ch.isspace() or not ch.isprintable() for ch in text) or len(text) > 255:
        raise InvalidInput(f"{field}: '{text}' is not a block device path or detect string")
    if text.startswith("file:"):
        try:
            parse_file_device(text, "/")
        except OsdError as exc:
            raise InvalidInput(f"{field}: {exc}") from None
        return text
    if text.startswith("detect:"):
        if len(text.split(":")) != 4 or not all(text.split(":")[1:]):
            raise InvalidInput(f"{field}: '{text}' is not a detect string (detect:NAME:SIZE:INDEX)")
        return text
    if not text.startswith("/dev/") or "/../" in text or text.endswith("/.."):
        raise InvalidInput(f"{field}: '{text}' is not a block device path (/dev/...), detect string or "
                           f"file:PATH[:SIZE]")
    return text


def check_weight(weight: float | None, field: str = "weight") -> float:
    if weight is None or not math.isfinite(weight) or weight <= 0:
        raise InvalidInput(f"{field}: '{weight}' must be a number greater than zero (the CRUSH weight, "
                           f"usually the size in TiB)")
    return float(weight)


def check_db_options(ext_db_ratio: float | None, ext_db_size: str | None) -> tuple[float | None, int | None]:
    """The OSD DB volume is sized by a ratio of the OSD or an explicit size, never both."""
    if ext_db_ratio is not None and ext_db_size:
        raise InvalidInput("ext_db_ratio, ext_db_size: give only one of them (they are mutually exclusive)")
    if ext_db_ratio is not None and (not math.isfinite(ext_db_ratio) or not 0 < ext_db_ratio < 1):
        raise InvalidInput(f"ext_db_ratio: '{ext_db_ratio}' must be a fraction between 0 and 1 (e.g. 0.05)")
    size = parse_volume_size(ext_db_size, "ext_db_size") if ext_db_size else None
    return ext_db_ratio, size


def human_size(size: int) -> str:
    """A byte count as PVC shows sizes: exact in the largest whole unit ('1G', '1536M'), else as
    upstream rounds (up, in the smallest unit that needs at most 4 digits)."""
    for index in range(len(_UNITS) - 1, 0, -1):
        factor = 1024 ** index
        if size >= factor and size % factor == 0:
            return f"{size // factor}{_UNITS[index]}"
    for index, unit in enumerate(_UNITS):
        value = -(-size // 1024 ** index)      # integer ceiling: floats lose bytes at petabytes
        if value <= 9999:
            return f"{value}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class PoolSpace:
    """A pool's stored bytes and its free bytes (after replication), from `ceph df`."""

    stored: int
    free: int

    @property
    def safe_free(self) -> int:
        """What may still be allocated before the pool is 80 % full: (stored+free)*0.8 - stored."""
        return int((self.stored + self.free) * SAFE_RATIO) - self.stored


def check_space(size: int, space: PoolSpace, pool: str, force: bool, field: str = "size") -> None:
    """Refuse what does not fit: never beyond the free space, and beyond 80 % only with force."""
    if size >= space.free:
        raise InvalidInput(f"{field}: '{human_size(size)}' is greater than the free space in pool \"{pool}\" "
                           f"('{human_size(max(space.free, 0))}')")
    if not force and size >= space.safe_free:
        raise InvalidInput(f"{field}: '{human_size(size)}' is greater than the safe free space in pool "
                           f"\"{pool}\" ('{human_size(max(space.safe_free, 0))}' until 80% full); retry "
                           f"with force to ignore this limit")


def df_stats(df: Mapping[str, Any] | None, pool: str) -> dict[str, Any] | None:
    """The pool-statistics figures PVC keeps (pvc-facts §2.5) that a `ceph df --format json`
    answer has for `pool`: id, stored_bytes, free_bytes, used_bytes, used_percent, num_objects."""
    for entry in (df or {}).get("pools", []) or []:
        if isinstance(entry, dict) and entry.get("name") == pool:
            stats = entry.get("stats") or {}
            return {"id": entry.get("id", 0), "stored_bytes": int(stats.get("stored", 0) or 0),
                    "free_bytes": int(stats.get("max_avail", 0) or 0),
                    "used_bytes": int(stats.get("bytes_used", 0) or 0),
                    "used_percent": float(stats.get("percent_used", 0.0) or 0.0),
                    "num_objects": int(stats.get("objects", 0) or 0)}
    return None


def df_space(df: Mapping[str, Any] | None, pool: str) -> PoolSpace | None:
    """The PoolSpace of `pool` in a `ceph df --format json` answer (None if it is not there)."""
    stats = df_stats(df, pool)
    return None if stats is None else PoolSpace(stats["stored_bytes"], stats["free_bytes"])



# -- reading and merging ZooKeeper documents ------------------------------------------------------

def read_doc(zk: ZK, path: str) -> dict[str, Any] | None:
    data = zk.get(path, None)
    return data if isinstance(data, dict) else None


def safe_name(value: str | None) -> bool:
    """A name that can be looked up (anything else cannot exist, and would be a bad ZK path)."""
    try:
        check_name(value, "name")
    except InvalidInput:
        return False
    return True


def name_filter(limit: str | None) -> Callable[[str], bool]:
    """Whether a name matches `limit` (fuzzy regex as upstream's lists take it; None: all)."""
    matcher = limit_matcher(limit)
    return (lambda _name: True) if matcher is None else matcher.fullmatch


def set_stats(zk: ZK, path: str, **stats: Any) -> None:
    """Merge figures into a document's stats, unless the document has gone meanwhile."""
    try:
        zk.update(path, lambda doc: {**doc, "stats": {**(doc.get("stats") or {}), **stats}})
    except NoNodeError:
        pass
