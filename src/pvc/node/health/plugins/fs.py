"""fs: usage of the filesystems PVC needs room on: `/`, ZooKeeper's data directory and
`/var/log` (`fs_paths` in health.plugin_config; missing paths are skipped, one filesystem is
counted once). Delta 10 per filesystem at or above `fs_warn_percent` (80), 50 at or above
`fs_crit_percent` (90)."""

from __future__ import annotations

import os

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "fs"
DEFAULT_PATHS = ["/", "/var/lib/zookeeper", "/var/log"]


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state: str | None = None) -> PluginResult:
        warn = float(self.config.get("fs_warn_percent", 80))
        crit = float(self.config.get("fs_crit_percent", 90))
        seen: set[int] = set()
        delta, problems, data = 0, [], {}
        for path in self.config.get("fs_paths", DEFAULT_PATHS):
            try:
                dev = os.stat(path).st_dev
                st = os.statvfs(path)
            except OSError:
                continue
            if dev in seen:
                continue
            seen.add(dev)
            used = st.f_blocks - st.f_bfree
            total = used + st.f_bavail
            percent = round(100.0 * used / total, 1) if total else 0.0
            data[path] = percent
            if percent >= crit:
                delta += 50
                problems.append(f"{path} {percent}% full (critical at {crit:g}%)")
            elif percent >= warn:
                delta += 10
                problems.append(f"{path} {percent}% full (warning at {warn:g}%)")
        self.plugin_result.set_health_delta(delta)
        self.plugin_result.set_message("; ".join(problems) if problems else
                                       "usage " + ", ".join(f"{p} {v}%" for p, v in data.items()))
        self.plugin_result.set_data(data)
        return self.plugin_result
