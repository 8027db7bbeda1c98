"""Wiring of the node's network reconciler (`pvc.node.networks`) over the real host adapters."""

from __future__ import annotations

import logging
from pathlib import Path

from pvc.core.config import Settings
from pvc.core.zk import ZK
from pvc.node.metadata import MetadataService
from pvc.node.networks import NetworkReconciler

log = logging.getLogger("pvcnoded")


def network_reconciler(settings: Settings, zk: ZK) -> NetworkReconciler:
    from pvc.adapters.network import LinuxNetworkHost, LinuxNftables, ProcessServices

    net = settings.networking
    run_dir = Path(settings.path.dynamic_directory) / "network"
    host = LinuxNetworkHost(vlan_backend=net.vlan_backend, lab_switch_netns=net.lab_switch_netns)
    reconciler = NetworkReconciler(zk, host, LinuxNftables(), ProcessServices(run_dir / "services"),
                                   settings, settings.node_name, run_dir)
    # the host checks who is asking: neighbour MAC and bridge port of the request's address
    reconciler.metadata = MetadataService(zk, net.metadata_address, net.metadata_port, host=host)
    return reconciler


def network_keys(networks: NetworkReconciler | None) -> dict[str, str]:
    """This node's VTEP address, which the other nodes put in their VXLAN flood lists, and all
    its own addresses (comma-separated), which every node keeps guests away from."""
    if networks is None:
        return {}
    try:
        links = networks.host.links()
        return {"cluster_address": networks.local_address(links) or "",
                "addresses": ",".join(networks.own_addresses(links))}
    except Exception as exc:
        log.warning("cannot tell this node's cluster address: %s", exc)
        return {"cluster_address": "", "addresses": ""}
