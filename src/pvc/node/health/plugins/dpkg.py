"""dpkg: the node's packages (upstream's check): inconsistent packages (`dpkg --audit`),
upgradable packages (`apt list --upgradable`; `dpkg_ignore_upgradable` in health.plugin_config
turns that category off), and configuration files a package upgrade left behind in /etc
(`*.dpkg-*`, `*.ucf-*`, `*.update-*`). Delta 1 per category present (at most 3)."""

from __future__ import annotations

import os
import shutil

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "dpkg"
PLUGIN_INTERVAL = 300         # ours: apt is slow and package state changes seldom
MARKERS = (".dpkg-", ".ucf-", ".update-")


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
            _, out, _ = run_os_command("apt list --upgradable", timeout=8,
                                       environment={"LC_ALL": "C"})
            upgradable = [line.split("/", 1)[0] for line in out.splitlines() if "/" in line]
            data["upgradable"] = len(upgradable)
            if upgradable:
                problems.append(f"{len(upgradable)} upgradable package(s)")
        left = leftovers()
        data["obsolete_conffiles"] = left[:50]
        if left:
            problems.append(f"{len(left)} leftover configuration file(s) in /etc")
        self.plugin_result.set_health_delta(len(problems))
        self.plugin_result.set_message("; ".join(problems) if problems else "packages consistent and current")
        self.plugin_result.set_data(data)
        return self.plugin_result
