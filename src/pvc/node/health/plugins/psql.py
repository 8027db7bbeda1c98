"""psql: upstream checks its PostgreSQL (Patroni) here. PVC keeps no PostgreSQL (DESIGN D1: the
provisioner's data lives in ZooKeeper), so the check reports "not applicable" and costs nothing."""

from __future__ import annotations

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "psql"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state: str | None = None) -> PluginResult:
        self.plugin_result.set_health_delta(0)
        self.plugin_result.set_message("not applicable: this PVC keeps its state in ZooKeeper and runs "
                                       "no PostgreSQL")
        return self.plugin_result
