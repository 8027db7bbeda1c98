"""clock: the node's clock is synchronised (ZooKeeper and Ceph both suffer from skew), asking
chrony (`chronyc -n tracking`) or systemd-timesyncd (`timedatectl show`). `clock_source` in
health.plugin_config: auto (default), chrony, timesyncd, or none (the check does not apply, as
in the lab, whose nodes share one host's clock). Refuses when neither tool is installed. Delta
10 when not synchronised or the offset is above `clock_warn_offset` (0.1 s), 50 above
`clock_crit_offset` (1 s)."""

from __future__ import annotations

import re
import shutil

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "clock"


def chrony_offset(text: str) -> tuple[float | None, str]:
    """(offset in seconds, leap status) from `chronyc tracking`."""
    offset = re.search(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", text, re.M)
    leap = re.search(r"^Leap status\s*:\s*(.+)$", text, re.M)
    return (float(offset.group(1)) if offset else None), (leap.group(1).strip() if leap else "unknown")


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        source = self.config.get("clock_source", "auto")
        if source not in ("auto", "chrony", "timesyncd", "none"):
            return f"clock_source {source!r} is not auto, chrony, timesyncd or none"
        if source != "none" and not (shutil.which("chronyc") or shutil.which("timedatectl")):
            return "neither chrony nor systemd-timesyncd is installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        source = self.config.get("clock_source", "auto")
        result = self.plugin_result
        if source == "none":
            result.set_health_delta(0)
            result.set_message("not applicable: clock_source is none")
            return result
        warn = float(self.config.get("clock_warn_offset", 0.1))
        crit = float(self.config.get("clock_crit_offset", 1.0))
        if source in ("auto", "chrony") and shutil.which("chronyc"):
            code, out, err = run_os_command(["chronyc", "-n", "tracking"], timeout=4)
            if code == 0:
                offset, leap = chrony_offset(out)
                result.set_data({"source": "chrony", "offset": offset, "leap": leap})
                if leap != "Normal" or offset is None:
                    result.set_health_delta(10)
                    result.set_message(f"chrony is not synchronised (leap status {leap})")
                else:
                    result.set_health_delta(50 if offset > crit else 10 if offset > warn else 0)
                    result.set_message(f"chrony: offset {offset:.6f} s")
                return result
            if source == "chrony" or not shutil.which("timedatectl"):
                result.set_health_delta(10)
                result.set_message(f"chronyd does not answer: {(err or out).strip()[:200]}")
                return result
        code, out, err = run_os_command(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                        timeout=4)
        if code != 0:
            result.set_health_delta(10)
            result.set_message(f"no time synchronisation daemon answers: {(err or out).strip()[:200]}")
        elif out.strip() != "yes":
            result.set_health_delta(10)
            result.set_message("systemd-timesyncd is not synchronised")
        else:
            result.set_health_delta(0)
            result.set_message("systemd-timesyncd: synchronised")
        result.set_data({"source": "timesyncd", "synchronised": out.strip()})
        return result
