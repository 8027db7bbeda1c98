"""frr: the BGP sessions of this node's EVPN (networking.bgp) are established, through
`vtysh -c 'show bgp summary json'`. Refuses when networking.bgp is not set or vtysh is
missing. Delta 10 per session not Established; 10 when FRR does not answer."""

from __future__ import annotations

import json
import shutil
from typing import Any

from daemon_lib.common import run_os_command
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "frr"


def sessions(summary: dict[str, Any]) -> dict[str, str]:
    """peer -> state over every address family of a `show bgp summary json` (any VRF layout)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            peers = node.get("peers")
            if isinstance(peers, dict):
                for peer, facts in peers.items():
                    if isinstance(facts, dict) and found.get(peer) != "Established":
                        found[peer] = str(facts.get("state", "unknown"))
            for value in node.values():
                walk(value)

    walk(summary)
    return found


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not self.config.get("bgp_enabled"):
            return "networking.bgp is not set on this node"
        if shutil.which("vtysh") is None:
            return "vtysh (FRR) is not installed"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        code, out, err = run_os_command(["vtysh", "-c", "show bgp summary json"], timeout=5)
        try:
            summary = json.loads(out) if code == 0 else None
        except ValueError:
            summary = None
        if not isinstance(summary, dict):
            self.plugin_result.set_health_delta(10)
            self.plugin_result.set_message(f"FRR does not answer: {(err or out).strip()[:300]}")
            return self.plugin_result
        found = sessions(summary)
        down = {p: s for p, s in found.items() if s != "Established"}
        self.plugin_result.set_health_delta(10 * len(down))
        self.plugin_result.set_message("; ".join(f"BGP peer {p} {s}" for p, s in sorted(down.items())) or
                                       f"{len(found)} BGP session(s) established")
        self.plugin_result.set_data(found)
        return self.plugin_result
