"""ceph: this node's part of Ceph: its OSDs (those under its CRUSH host bucket) are up, and on a
coordinator its mon (id = node name) is in quorum. Through librados with the node's ceph.conf
and keyring. Refuses when the storage subsystem is off or librados is missing. Delta 10 per
down OSD, 25 when this node's mon is out of quorum, 50 when the cluster does not answer."""

from __future__ import annotations

import json
import os
from typing import Any

from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginResult

PLUGIN_NAME = "ceph"


def host_osds(tree: dict[str, Any], hosts: set[str]) -> list[int]:
    """The OSD ids under the CRUSH host buckets named `hosts`."""
    nodes = tree.get("nodes", [])
    return sorted(child for n in nodes if n.get("type") == "host" and n.get("name") in hosts
                  for child in n.get("children", []))


class MonitoringPluginScript(MonitoringPlugin):
    def setup(self) -> str | None:
        if not self.config.get("enable_storage", True):
            return "the storage subsystem is off on this node"
        try:
            import rados  # noqa: F401
        except ImportError:
            return "librados (python3-rados) is not installed"
        if not os.path.exists(str(self.config.get("ceph_config_file", ""))):
            return f"no Ceph configuration at {self.config.get('ceph_config_file')}"
        return None

    def _command(self, cluster: Any, prefix: str) -> dict[str, Any]:
        code, out, err = cluster.mon_command(json.dumps({"prefix": prefix, "format": "json"}), b"",
                                             timeout=5)
        if code != 0:
            raise RuntimeError(f"{prefix}: {err}")
        return dict(json.loads(out))

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        import rados

        result = self.plugin_result
        cluster = rados.Rados(conffile=str(self.config["ceph_config_file"]),
                              rados_id=str(self.config.get("ceph_client_user") or "admin"),
                              conf={"keyring": str(self.config.get("ceph_keyring_file", ""))})
        try:
            cluster.connect(timeout=5)
            tree = self._command(cluster, "osd tree")
            dump = self._command(cluster, "osd dump")
            quorum = self._command(cluster, "quorum_status")
        except (rados.Error, RuntimeError, ValueError) as exc:
            result.set_health_delta(50)
            result.set_message(f"Ceph does not answer: {exc}")
            return result
        finally:
            cluster.shutdown()
        name = self.this_node.name
        mine = host_osds(tree, {name, str(self.config.get("node_hostname", name)).split(".")[0]})
        states = {o["osd"]: o for o in dump.get("osds", [])}
        down = [i for i in mine if not states.get(i, {}).get("up")]
        delta, problems = 10 * len(down), [f"osd.{i} is down" for i in down]
        mons = {m.get("name") for m in quorum.get("monmap", {}).get("mons", [])}
        in_quorum = name in set(quorum.get("quorum_names", []))
        if name in mons and not in_quorum:
            delta += 25
            problems.append(f"mon.{name} is out of quorum")
        result.set_health_delta(delta)
        result.set_message("; ".join(problems) or
                           f"{len(mine)} OSD(s) up" + (f", mon.{name} in quorum" if name in mons else ""))
        result.set_data({"osds": mine, "down": down, "mon": name in mons, "in_quorum": in_quorum})
        return result
