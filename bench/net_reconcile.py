#!/usr/bin/env python3
"""How long a node takes to converge 100 managed networks after a restart.

A private ZooKeeper holds 100 managed networks (VXLAN, a /24 each with DHCP) and two other nodes'
documents (the flood lists). The network reconciler runs for node hv1 in a throwaway namespace
(never the root namespace), as the primary, so every network gets its VXLAN device, bridge,
flood list, gateway, dnsmasq and nftables chains. Three passes are timed:

  cold       nothing exists yet (a node after a reboot)
  restart    a new reconciler over what the last one built (pvcnoded restarted: nothing to do
             but check; dnsmasq instances are adopted through their pid files)
  steady     the periodic pass with nothing changed

Usage: bench/net_reconcile.py [--networks 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from pathlib import Path

from _common import ZooKeeperServer, free_port, table, workdir, write_config
from pvc.adapters.network import LinuxNetworkHost, LinuxNftables, ProcessServices
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.lab import netns, proc
from pvc.node.networks import NetworkReconciler

TARGET_COLD = 30.0
TARGET_RESTART = 2.0


def network_doc(vni: int, index: int) -> dict[str, object]:
    net = f"10.{230 + index // 250}.{index % 250}"
    return {"vni": vni, "description": f"bench{vni}", "type": "managed", "mtu": None,
            "domain": f"bench{vni}.test", "name_servers": [],
            "ip4": {"network": f"{net}.0/24", "gateway": f"{net}.1", "dhcp_flag": True,
                    "dhcp_start": f"{net}.100", "dhcp_end": f"{net}.199"},
            "ip6": {"network": None, "gateway": None, "dhcp_flag": False}}


def make_reconciler(zk: ZK, config: Path, ns: str, run: Path) -> NetworkReconciler:
    settings = load_config(str(config))
    reconciler = NetworkReconciler(zk, LinuxNetworkHost(netns=ns), LinuxNftables(netns=ns),
                                   ProcessServices(run / "services", netns=ns), settings, "hv1", run)
    reconciler.primary = True
    return reconciler


def converged(reconciler: NetworkReconciler, count: int) -> bool:
    links = reconciler.host.links()
    bridges = [n for n in links if n.startswith("vmbr")]
    services = reconciler.services
    running = [k for k in services.names() if k.startswith("dnsmasq-") and services.pid(k)]
    return len(bridges) == count and len(running) == count and not reconciler.problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", type=int, default=100)
    args = parser.parse_args()
    work = workdir("netrec")
    ns = f"nrb{uuid.uuid4().hex[:5]}"
    proc.run(["ip", "netns", "add", ns])
    server = ZooKeeperServer(work / "zk", free_port()).start()
    zk = ZK([server.address], "/bench").start()
    try:
        proc.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        proc.run(["ip", "-n", ns, "link", "add", "eth0", "mtu", "1550", "type", "veth",
                  "peer", "name", "eth0p", "mtu", "1550"])
        proc.run(["ip", "-n", ns, "addr", "add", "10.229.0.1/24", "dev", "eth0"])
        for link in ("eth0", "eth0p"):
            proc.run(["ip", "-n", ns, "link", "set", link, "up"])
        schema.migrate(zk)
        for i, node in enumerate(("hv2", "hv3"), start=2):
            zk.put(schema.node(node), {"name": node, "cluster_address": f"10.229.0.{i}"})
        for i in range(args.networks):
            zk.put(schema.network(2000 + i), network_doc(2000 + i, i))
        config = write_config(work / "pvc.conf", [server.address], "/bench", node="hv1",
                              networking={"cluster_device": "eth0", "cluster_address": "10.229.0.1",
                                          "upstream_device": "eth0", "metadata_port": 8080},
                              subsystem={"enable_networking": True})
        run = work / "run"
        figures = {}
        reconciler = make_reconciler(zk, config, ns, run)
        for label in ("cold", "restart", "steady"):
            if label == "restart":
                reconciler.host.close()
                reconciler = make_reconciler(zk, config, ns, run)
            started = time.monotonic()
            reconciler.reconcile()
            figures[label] = time.monotonic() - started
            if not converged(reconciler, args.networks):
                print(f"not converged after the {label} pass: {reconciler.problems}", file=sys.stderr)
                return 1
        n = args.networks
        table(f"network reconcile, {n} managed networks with DHCP (primary node)", [
            ("cold pass (s)", f"{figures['cold']:.2f}", f"< {TARGET_COLD:.0f}",
             figures["cold"] < TARGET_COLD),
            ("restart pass (s)", f"{figures['restart']:.2f}", f"< {TARGET_RESTART:.0f}",
             figures["restart"] < TARGET_RESTART),
            ("steady pass (s)", f"{figures['steady']:.2f}", f"< {TARGET_RESTART:.0f}",
             figures["steady"] < TARGET_RESTART),
        ])
        return 0
    finally:
        for pid in netns.netns_pids(ns):
            proc.run(["kill", str(pid)], check=False)
        netns.kill_netns_processes(ns)
        proc.run(["ip", "netns", "del", ns], check=False)
        zk.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
