"""psur: power supply redundancy as the BMC reports it (`ipmitool sdr type 'Power Supply'`,
upstream's check; Dell, HP and Cisco sensor names). Refuses without a configured BMC or
ipmitool. Delta 0 when fully redundant, 5 per sensor without a reading, 10 per other state,
5 when the BMC has no redundancy sensor."""

from __future__ import annotations

import shutil

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "psur"


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not (self.config.get("ipmi_hostname") and self.config.get("ipmi_password")):
            return "no BMC configured for this node (fencing.agent is not ipmi)"
        if shutil.which("ipmitool") is None:
            return "ipmitool is not installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        cfg = self.config
        command = ["ipmitool", "-I", str(cfg.get("ipmi_interface") or "lanplus"),
                   "-H", str(cfg["ipmi_hostname"]), "-U", str(cfg["ipmi_username"]), "-E",
                   "-N", "2", "-R", "1", "sdr", "type", "Power Supply"]
        code, out, err = run_os_command(command, timeout=8,
                                        environment={"IPMI_PASSWORD": str(cfg["ipmi_password"])})
        if code != 0:
            self.plugin_result.set_health_delta(10)
            self.plugin_result.set_message(f"BMC sensors unreadable: {(err or out).strip()[:300]}")
            return self.plugin_result
        delta, states = 0, {}
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) < 5 or "redundan" not in fields[0].lower():
                continue
            states[fields[0]] = fields[4]
            if "fully redundant" in fields[4].lower():
                continue
            delta += 5 if "no reading" in fields[4].lower() else 10
        if not states:
            delta = 5
        self.plugin_result.set_health_delta(delta)
        self.plugin_result.set_message("no power supply redundancy sensor" if not states else
                                       "; ".join(f"{k}: {v}" for k, v in states.items()))
        self.plugin_result.set_data(states)
        return self.plugin_result
