"""zkpr: the ZooKeeper member on this node answers (upstream's check).

Asks `srvr` on the configured member whose address is this node's (`zookeeper_local`); nodes
without a member refuse. Delta 50 when it does not answer.
"""

from __future__ import annotations

import socket

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "zkpr"


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not self.config.get("zookeeper_local"):
            return "no ZooKeeper member runs on this node"
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        member = str(self.config["zookeeper_local"])
        host, _, port = member.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=3) as sock:
                sock.sendall(b"srvr")
                sock.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := sock.recv(4096):
                    reply += chunk
        except OSError as exc:
            self.plugin_result.set_health_delta(50)
            self.plugin_result.set_message(f"ZooKeeper on {member} does not answer: {exc}")
            return self.plugin_result
        text = reply.decode(errors="replace")
        if not text:
            self.plugin_result.set_health_delta(50)
            self.plugin_result.set_message(f"ZooKeeper on {member} accepted but sent nothing")
            return self.plugin_result
        mode = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("Mode:")), "unknown")
        self.plugin_result.set_health_delta(0)
        self.plugin_result.set_message(f"ZooKeeper on {member} answers (mode {mode})")
        self.plugin_result.set_data({"member": member, "mode": mode})
        return self.plugin_result
