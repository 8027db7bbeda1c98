"""nics: the network devices PVC uses (upstream's check): the bridge, upstream, cluster and
storage devices, vLANs resolved to their parents. Delta 10 each for a device that is missing
or down, a bond with fewer than 2 slaves up, and a NIC below its expected speed: the
`nics_expected_speed` {device: Mb/s} of health.plugin_config, else the fastest mode the NIC
supports (`ethtool`, when installed; virtual devices report none and are not judged)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "nics"
SYS_NET = Path("/sys/class/net")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return ""


def parent(dev: str) -> str:
    """A vLAN's (or macvlan's) lower device; the device itself otherwise."""
    lower = sorted(p.name.removeprefix("lower_") for p in (SYS_NET / dev).glob("lower_*"))
    return parent(lower[0]) if lower else dev


def max_speed(dev: str) -> int:
    """The fastest supported link mode in Mb/s (ethtool), 0 when unknown."""
    if shutil.which("ethtool") is None:
        return 0
    code, out, _ = run_os_command(["ethtool", dev], timeout=3)
    if code != 0:
        return 0
    block = out.split("Supported link modes:", 1)[-1].split("Supported pause", 1)[0] if \
        "Supported link modes:" in out else ""
    speeds = [int(s) for s in re.findall(r"(\d+)base", block)]
    return max(speeds, default=0)


class MonitoringPluginScript(MonitoringPlugin):
    def run(self, coordinator_state: str | None = None) -> PluginResult:
        expected = {str(k): int(v) for k, v in (self.config.get("nics_expected_speed") or {}).items()}
        devices = sorted({parent(d) if (SYS_NET / d).exists() else d
                          for d in (self.config.get(k) for k in ("bridge_dev", "upstream_dev", "cluster_dev",
                                                                 "storage_dev")) if d})
        delta, problems, data = 0, [], {}
        for dev in devices:
            base = SYS_NET / dev
            if not base.exists():
                delta += 10
                problems.append(f"{dev} does not exist")
                continue
            state = _read(base / "operstate")
            info: dict[str, object] = {"state": state}
            if state == "down":
                delta += 10
                problems.append(f"{dev} is down")
            slaves = _read(base / "bonding" / "slaves").split()
            if (base / "bonding").exists():
                up = [s for s in slaves if _read(SYS_NET / s / "operstate") == "up"]
                info.update(slaves=slaves, slaves_up=up)
                if len(up) < 2:
                    delta += 10
                    problems.append(f"bond {dev} has {len(up)} of {len(slaves)} slave(s) up")
                nics = slaves
            else:
                nics = [dev]
            for nic in nics:
                try:
                    speed = int(_read(SYS_NET / nic / "speed") or 0)
                except ValueError:
                    speed = 0
                want = expected.get(nic) or (max_speed(nic) if (SYS_NET / nic / "device").exists() else 0)
                info[f"{nic}_speed"] = speed
                if want and 0 < speed < want:
                    delta += 10
                    problems.append(f"{nic} runs at {speed} Mb/s, below {want} Mb/s")
            data[dev] = info
        self.plugin_result.set_health_delta(delta)
        self.plugin_result.set_message("; ".join(problems) if problems else
                                       f"{', '.join(devices) or 'no devices'} up at expected speed")
        self.plugin_result.set_data(data)
        return self.plugin_result
