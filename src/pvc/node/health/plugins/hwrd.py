"""hwrd: hardware RAID volumes (upstream's check) through the vendor tools present: Dell BOSS
(`mvcli`), LSI MegaRAID (`megacli`) and HP Smart Array (`ssacli`). Refuses when none is
installed. Delta 50 when a tool fails, 50 per degraded or failed volume, 10 per volume whose
state cannot be read."""

from __future__ import annotations

import re
import shutil

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "hwrd"
PLUGIN_INTERVAL = 60

TOOLS = {"mvcli": "mvcli info -o vd", "megacli": "megacli -LDInfo -Lall -aALL",
         "ssacli": "ssacli ctrl all show config"}


def volumes(tool: str, out: str) -> list[tuple[str, str]]:
    """(volume, state) pairs from a tool's output."""
    if tool == "megacli":
        return [(f"LD{i}", m) for i, m in enumerate(re.findall(r"^State\s*:\s*(.+)$", out, re.M))]
    if tool == "ssacli":
        return [(f"logicaldrive {n}", s.strip()) for n, s in
                re.findall(r"logicaldrive (\d+) \([^)]*,\s*([^,)]+)\)", out)]
    return [(f"vd{i}", s.strip()) for i, s in enumerate(re.findall(r"^status:\s*(.+)$", out, re.M))]


HEALTHY = {"megacli": "Optimal", "ssacli": "OK", "mvcli": "functional"}


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not any(shutil.which(tool) for tool in TOOLS):
            return "no hardware RAID tool (mvcli, megacli, ssacli) is installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        delta, problems, data = 0, [], {}
        for tool, command in TOOLS.items():
            if shutil.which(tool) is None:
                continue
            code, out, err = run_os_command(command, timeout=8)
            if code != 0:
                delta += 50
                problems.append(f"{tool} failed: {(err or out).strip()[:200]}")
                continue
            found = volumes(tool, out)
            if not found:
                delta += 10
                problems.append(f"{tool}: no volume state could be read")
            for name, state in found:
                data[f"{tool} {name}"] = state
                if state != HEALTHY[tool]:
                    delta += 50
                    problems.append(f"{tool} {name}: {state}")
        self.plugin_result.set_health_delta(delta)
        self.plugin_result.set_message("; ".join(problems) if problems else f"{len(data)} volume(s) healthy")
        self.plugin_result.set_data(data)
        return self.plugin_result
