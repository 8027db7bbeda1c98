"""kydb: upstream checks its KeyDB (the Celery broker) here. PVC's tasks queue in ZooKeeper
(DESIGN D1), so the check reports "not applicable" and costs nothing."""

from __future__ import annotations

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "kydb"


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state: str | None = None) -> PluginResult:
        self.plugin_result.set_health_delta(0)
        self.plugin_result.set_message("not applicable: this PVC queues its tasks in ZooKeeper and runs "
                                       "no KeyDB")
        return self.plugin_result
