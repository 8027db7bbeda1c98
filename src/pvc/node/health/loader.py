"""Which files of the plugin directory are plugins, and under which names.

Upstream's plugin files carry no extension (`disk`, `dpkg`, ...); ours end in `.py`. Both load,
named by the file name without `.py`. Editor, package-manager and hidden leftovers are ignored,
so an operator editing a plugin in place or a dpkg upgrade does not add a second copy.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pvcnoded")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IGNORED_SUFFIXES = (".pyc", ".pyo", "~", ".swp", ".bak", ".orig", ".rej", ".disabled")
IGNORED_MARKERS = (".dpkg-", ".ucf-", ".update-")


@dataclass(frozen=True)
class PluginFile:
    name: str
    path: str
    mtime_ns: int


def plugin_name(filename: str) -> str | None:
    """The plugin name of a file name, or None for a file that is not a plugin."""
    if filename.startswith((".", "_")) or filename.endswith(IGNORED_SUFFIXES):
        return None
    if any(marker in filename for marker in IGNORED_MARKERS):
        return None
    name = filename.removesuffix(".py")
    return name if NAME_RE.match(name) else None


def scan(directory: str) -> dict[str, PluginFile]:
    """The plugins in `directory` by name (sorted); a missing directory has none."""
    found: dict[str, PluginFile] = {}
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
            mtime = entry.stat().st_mtime_ns
        except OSError:
            continue
        if name in found:
            log.warning("health: %s and %s are both plugin %r; using the first",
                        Path(found[name].path).name, entry.name, name)
            continue
        found[name] = PluginFile(name, entry.path, mtime)
    return found
