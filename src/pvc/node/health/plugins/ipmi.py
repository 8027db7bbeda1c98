"""ipmi: this node's own BMC answers (upstream's check), so fencing can reach it. Refuses when no
BMC is configured (fencing.agent other than ipmi) or ipmitool is missing. The password reaches
ipmitool through its environment (`-E`), never its command line. Three tries, 2 s each;
delta 10 when none answers."""

from __future__ import annotations

import shutil

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "ipmi"


def ipmitool(config: dict[str, object], *args: str, timeout: float = 4) -> tuple[int, str, str]:
    """ipmitool against this node's BMC, the password in IPMI_PASSWORD only."""
    command = ["ipmitool", "-I", str(config.get("ipmi_interface") or "lanplus"),
               "-H", str(config["ipmi_hostname"]), "-U", str(config["ipmi_username"]), "-E",
               "-N", "2", "-R", "1", *args]
    return run_os_command(command, timeout=timeout,
                          environment={"IPMI_PASSWORD": str(config["ipmi_password"])})


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not (self.config.get("ipmi_hostname") and self.config.get("ipmi_password")):
            return "no BMC configured for this node (fencing.agent is not ipmi)"
        if shutil.which("ipmitool") is None:
            return "ipmitool is not installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        last = ""
        for _ in range(3):
            code, out, err = ipmitool(self.config, "chassis", "power", "status")
            if code == 0:
                self.plugin_result.set_health_delta(0)
                self.plugin_result.set_message(f"BMC {self.config['ipmi_hostname']}: {out.strip()}")
                return self.plugin_result
            last = (err or out).strip()[:300]
        self.plugin_result.set_health_delta(10)
        self.plugin_result.set_message(f"BMC {self.config['ipmi_hostname']} does not answer: {last}")
        return self.plugin_result
