"""load: the 1-minute load average against the CPU count (upstream's check).

Delta 50 when the load exceeds `load_factor` (health.plugin_config, default 1.0) x CPUs.
"""

from __future__ import annotations

import os

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "load"


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        load1 = os.getloadavg()[0]
        cpus = os.cpu_count() or 1
        limit = cpus * float(self.config.get("load_factor", 1.0))
        self.plugin_result.set_health_delta(50 if load1 > limit else 0)
        self.plugin_result.set_message(f"Current load is {load1:.2f} out of {cpus} CPU cores")
        self.plugin_result.set_data({"load": load1, "cpus": cpus, "limit": limit})
        return self.plugin_result

    def cleanup(self) -> None:
        pass
