"""Which files of the plugin directory are plugins, and under which names.

Upstream's plugin files carry no extension (`disk`, `dpkg`, ...); ours end in `.py`. Both load,
named by the file name without `.py`. Editor, package-manager and hidden leftovers are ignored,
so an operator editing a plugin in place or a dpkg upgrade does not add a second copy.

Plugins run as root, so, like sshd's StrictModes, a plugin file is refused (marked `unsafe`,
never run) when it, the plugin directory or, for a symlink, the directory it really lives in is
not owned by root or is group- or world-writable: anyone who could write there could run code
as root on every pass.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pvcnoded")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IGNORED_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".bak", ".orig", ".rej", ".disabled")
IGNORED_MARKERS = (".dpkg-", ".ucf-", ".update-")
# Owners a plugin file and its directory may have. Root only; tests add their own uid (a seam).
ALLOWED_OWNERS: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class PluginFile:
    name: str
    path: str
    mtime_ns: int
    owner: int = 0
    mode: int = 0
    unsafe: str | None = None     # why it must not run (owner or mode), None when it may


def plugin_name(filename: str) -> str | None:
    """The plugin name of a file name, or None for a file that is not a plugin."""
    if filename.startswith((".", "_")) or filename.endswith(IGNORED_SUFFIXES):
        return None
    if any(marker in filename for marker in IGNORED_MARKERS):
        return None
    name = filename.removesuffix(".py")
    return name if NAME_RE.match(name) else None


def unsafe_reason(what: str, path: str, st: os.stat_result) -> str | None:
    """Why `path` (a plugin file or directory, as `what` says) must not hold root's code, or None."""
    if st.st_uid not in ALLOWED_OWNERS:
        return f"{what} {path} is owned by uid {st.st_uid}, not root"
    writable = [who for who, bit in (("group", stat.S_IWGRP), ("world", stat.S_IWOTH)) if st.st_mode & bit]
    if writable:
        return f"{what} {path} is {'- and '.join(writable)}-writable (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _directory_reason(directory: str, cache: dict[str, str | None]) -> str | None:
    if directory not in cache:
        try:
            cache[directory] = unsafe_reason("plugin directory", directory, os.stat(directory))
        except OSError as exc:
            cache[directory] = f"plugin directory {directory} cannot be checked: {exc.strerror}"
    return cache[directory]


def scan(directory: str) -> dict[str, PluginFile]:
    """The plugins in `directory` by name (sorted); a missing directory has none. Each carries
    `unsafe`, the reason it must not run, when its owner or mode (or its directory's) allow
    anyone but root to change it."""
    found: dict[str, PluginFile] = {}
    dirs: dict[str, str | None] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("health: cannot read plugin directory %s: %s", directory, exc.strerror)
        return {}
    for entry in entries:
        name = plugin_name(entry.name)
        if name is None:
            continue
        try:
            if not entry.is_file():
                continue
            st = entry.stat()
            real_dir = os.path.dirname(os.path.realpath(entry.path)) if entry.is_symlink() else None
        except OSError:
            continue
        if name in found:
            log.warning("health: %s and %s are both plugin %r; using the first",
                        Path(found[name].path).name, entry.name, name)
            continue
        reason = (_directory_reason(directory, dirs) or unsafe_reason("plugin file", entry.path, st)
                  or (_directory_reason(real_dir, dirs) if real_dir else None))
        found[name] = PluginFile(name, entry.path, st.st_mtime_ns, st.st_uid, stat.S_IMODE(st.st_mode),
                                 reason)
    return found
