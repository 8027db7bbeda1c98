"""disk: SMART health of the SATA, SAS and NVMe disks (`lsblk --include 8,259`), through
`smartctl --all --json` (upstream's check). Refuses without smartctl or without such disks
(virtual disks have no SMART). Delta 10 per failed ATA attribute; for NVMe, 10 each for a
critical warning, media errors and more than 90 % of rated endurance used; 10 for a disk
whose overall self-assessment failed."""

from __future__ import annotations

import json
import shutil
from typing import Any

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "disk"
PLUGIN_INTERVAL = 60          # ours: SMART data changes slowly; results are reused in between


def _disks() -> list[str]:
    code, out, _ = run_os_command("lsblk --include 8,259 --nodeps --json --output NAME,TYPE", timeout=5)
    if code != 0:
        return []
    try:
        devices = json.loads(out).get("blockdevices", [])
    except ValueError:
        return []
    return sorted(d["name"] for d in devices if d.get("type") == "disk")


def check(name: str, report: dict[str, Any]) -> tuple[int, list[str]]:
    """The deduction and problems of one disk's smartctl JSON report."""
    delta, problems = 0, []
    if report.get("smart_status", {}).get("passed") is False:
        delta += 10
        problems.append(f"{name}: SMART overall self-assessment failed")
    for attr in report.get("ata_smart_attributes", {}).get("table", []):
        if attr.get("when_failed"):
            delta += 10
            problems.append(f"{name}: attribute {attr.get('name', attr.get('id'))} failed "
                            f"({attr['when_failed']})")
    nvme = report.get("nvme_smart_health_information_log")
    if nvme:
        if nvme.get("critical_warning", 0) > 0:
            delta += 10
            problems.append(f"{name}: NVMe critical warning {nvme['critical_warning']}")
        if nvme.get("media_errors", 0) > 0:
            delta += 10
            problems.append(f"{name}: {nvme['media_errors']} media errors")
        if nvme.get("percentage_used", 0) > 90:
            delta += 10
            problems.append(f"{name}: {nvme['percentage_used']}% of rated endurance used")
    return delta, problems


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if shutil.which("smartctl") is None:
            return "smartctl is not installed"
        if not _disks():
            return "no SATA, SAS or NVMe disks on this host"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        delta, problems, data = 0, [], {}
        for name in _disks():
            _, out, _ = run_os_command(f"smartctl --all --json /dev/{name}", timeout=8)
            try:
                report = json.loads(out)
            except ValueError:
                delta += 10
                problems.append(f"{name}: smartctl gave no report")
                continue
            disk_delta, disk_problems = check(name, report)
            delta += disk_delta
            problems += disk_problems
            data[name] = {"model": report.get("model_name", ""), "delta": disk_delta}
        self.plugin_result.set_health_delta(delta)
        self.plugin_result.set_message("; ".join(problems) if problems else f"{len(data)} disk(s) healthy")
        self.plugin_result.set_data(data)
        return self.plugin_result
