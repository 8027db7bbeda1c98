"""dpkg: the node's packages (upstream's check): inconsistent packages (`dpkg --audit`),
upgradable packages (`apt list --upgradable`; `dpkg_ignore_upgradable` in health.plugin_config
turns that category off), and configuration files a package upgrade left behind in /etc
(`*.dpkg-*`, `*.ucf-*`, `*.update-*`). Delta 1 per category present (at most 3).

apt takes about a second of CPU, so its answer is kept in the dynamic directory and asked again
only when the package database or apt's lists change (or after a day)."""

from __future__ import annotations

import json
import os
import shutil
import time

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "dpkg"
PLUGIN_INTERVAL = 60          # ours: package state changes seldom
MARKERS = (".dpkg-", ".ucf-", ".update-")
STATE_FILES = ("/var/lib/dpkg/status", "/var/lib/apt/lists")
CACHE_AGE = 86400.0


def _key() -> list[int]:
    key = []
    for path in STATE_FILES:
        try:
            key.append(os.stat(path).st_mtime_ns)
        except OSError:
            key.append(0)
    return key


def upgradable(cache_dir: str) -> list[str]:
    """The upgradable packages (`apt list --upgradable`), cached until dpkg's or apt's state changes."""
    cache = os.path.join(cache_dir, "health-dpkg-upgradable.json")
    key = _key()
    try:
        with open(cache) as handle:
            saved = json.load(handle)
        if saved["key"] == key and time.time() - saved["time"] < CACHE_AGE:
            return list(saved["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    _, out, _ = run_os_command("apt list --upgradable", timeout=8, environment={"LC_ALL": "C"})
    packages = [line.split("/", 1)[0] for line in out.splitlines() if "/" in line]
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache + ".tmp", "w") as handle:
            json.dump({"key": key, "time": time.time(), "packages": packages}, handle)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass
    return packages


def leftovers(root: str = "/etc") -> list[str]:
    found = []
    for directory, _, files in os.walk(root):
        found += [os.path.join(directory, f) for f in files if any(m in f for m in MARKERS)]
    return sorted(found)


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if shutil.which("dpkg") is None:
            return "dpkg is not installed (not a Debian host)"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        problems, data = [], {}
        _, audit, _ = run_os_command("dpkg --audit", timeout=8)
        inconsistent = [line for line in audit.splitlines() if line.strip()]
        data["inconsistent"] = len(inconsistent)
        if inconsistent:
            problems.append("inconsistent packages (dpkg --audit)")
        if not self.config.get("dpkg_ignore_upgradable") and shutil.which("apt"):
            packages = upgradable(str(self.config.get("dynamic_directory") or "/run/pvc"))
            data["upgradable"] = len(packages)
            if packages:
                problems.append(f"{len(packages)} upgradable package(s)")
        left = leftovers()
        data["obsolete_conffiles"] = left[:50]
        if left:
            problems.append(f"{len(left)} leftover configuration file(s) in /etc")
        self.plugin_result.set_health_delta(len(problems))
        self.plugin_result.set_message("; ".join(problems) if problems else "packages consistent and current")
        self.plugin_result.set_data(data)
        return self.plugin_result
