"""edac: uncorrected memory errors the kernel's EDAC counted (upstream reads `edac-util`; the
same counters are read here from sysfs, so the tool is not needed). Refuses on hosts without
an EDAC memory controller; delta 50 on any uncorrected error."""

from __future__ import annotations

from pathlib import Path

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "edac"
EDAC = Path("/sys/devices/system/edac/mc")


def _count(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not list(EDAC.glob("mc[0-9]*")):
            return "no EDAC memory controller on this host"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        data = {mc.name: {"ce": _count(mc / "ce_count"), "ue": _count(mc / "ue_count")}
                for mc in sorted(EDAC.glob("mc[0-9]*"))}
        bad = [f"{name}: {c['ue']} uncorrected" for name, c in data.items() if c["ue"] > 0]
        self.plugin_result.set_health_delta(50 if bad else 0)
        self.plugin_result.set_message("; ".join(bad) if bad else
                                       f"no uncorrected memory errors on {len(data)} controller(s)")
        self.plugin_result.set_data(data)
        return self.plugin_result
