"""EVPN on real FRR: two node reconcilers with `networking.bgp` set build a managed network whose
flood list and guest MACs come from BGP (zebra installs them), not from static FDB entries.

Two namespaces cabled on one underlay run the network reconciler (real adapters, real ZooKeeper),
each starting its own zebra and bgpd; a guest namespace on each side pings the other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from pvc.adapters.network import LinuxNftables, ProcessServices
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.node.networks import BGPD, ZEBRA, NetworkReconciler
from tests.lab.test_network_adapter import Topo, pings, run, wait_for

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not Path("/usr/lib/frr/bgpd").exists(), reason="needs FRR"),
]


def test_evpn_carries_a_managed_network(zk: ZK, topo: Topo, config_factory) -> None:
    schema.migrate(zk)
    a, b = topo.nodes()
    # FRR drops to user frr: its directories must be reachable (pytest's tmp is root-only)
    base = Path(tempfile.mkdtemp(prefix="pvc-evpn-", dir="/tmp"))
    base.chmod(0o755)
    reconcilers = []
    try:
        zk.put(schema.network(100), {
            "vni": 100, "description": "evpn", "type": "managed", "mtu": None, "domain": "evpn.test",
            "name_servers": [], "ip4": {"network": None, "gateway": None, "dhcp_flag": False,
                                        "dhcp_start": None, "dhcp_end": None},
            "ip6": {"network": None, "gateway": None, "dhcp_flag": False}})
        for node, ns, address in (("hv1", a, "10.211.0.1"), ("hv2", b, "10.211.0.2")):
            zk.put(schema.node(node), {"name": node, "cluster_address": address})
            config = config_factory(node, networking={"cluster_device": "eth0", "cluster_address": address,
                                                      "bgp": {"asn": 65210}})
            run_dir = base / node
            reconciler = NetworkReconciler(zk, topo.host(ns), LinuxNftables(ns),
                                           ProcessServices(run_dir / "services", ns),
                                           load_config(str(config)), node, run_dir)
            reconcilers.append(reconciler)
        for reconciler in reconcilers:
            reconciler.reconcile()
            assert not reconciler.problems, reconciler.problems
            assert reconciler.services.pid(ZEBRA) and reconciler.services.pid(BGPD)
        g1 = topo.guest(a, "vm-g1", "g1", "52:54:00:00:77:01", "10.213.0.1/24")
        g2 = topo.guest(b, "vm-g2", "g2", "52:54:00:00:77:02", "10.213.0.2/24")
        for node, port in ((a, "vm-g1"), (b, "vm-g2")):
            run("ip", "-n", node, "link", "set", port, "master", "vmbr100", "up")
        # no static head-end entries: zebra installs the remote VTEP once BGP is up
        wait_for("EVPN to install the remote VTEP", lambda: "dst 10.211.0.2" in run(
            "bridge", "fdb", "show", "dev", "vxlan100", netns=a).stdout, 30)
        wait_for("guest to guest over EVPN", lambda: pings(g1, "10.213.0.2"), 20)
        assert pings(g2, "10.213.0.1")
        time.sleep(0.5)
        fdb = run("bridge", "fdb", "show", "dev", "vxlan100", netns=a).stdout
        assert "52:54:00:00:77:02" in fdb and "extern_learn" in fdb   # the remote MAC, from BGP
    finally:
        for reconciler in reconcilers:
            for key in (BGPD, ZEBRA):
                reconciler.services.stop(key)
        shutil.rmtree(base, ignore_errors=True)
