"""The lab underlay: switch + node namespaces, MTU, partition and rejoin, teardown."""

from __future__ import annotations

import os
import time

import pytest

from pvc.lab import netns, proc

from .labinfra import lab

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


def ping(src: str, dst: str, size: int = 56, wait: float = 1) -> bool:
    """One DF ping of `size` payload bytes from namespace `src`."""
    result = proc.run(["ping", "-n", "-q", "-c", "1", "-W", str(wait), "-M", "do", "-s", str(size), dst],
                      netns=src, check=False)
    return result.returncode == 0


def test_underlay_mtu_isolate_rejoin_delete() -> None:
    t0 = time.monotonic()
    with lab(2) as plan:
        hv1, hv2 = plan.nodes
        print(f"\nswitch + 2 nodes up and forwarding in {time.monotonic() - t0:.2f}s")
        assert netns.list_lab_netns(plan.name) == sorted([plan.switch_netns, plan.world_netns, hv1.netns,
                                                          hv2.netns])
        # 1522 bytes of ICMP payload + 28 bytes of headers = the 1550 underlay MTU, unfragmented.
        assert ping(hv1.netns, hv2.address, 1522)
        assert ping(hv2.netns, hv1.address, 1522)
        assert not ping(hv1.netns, hv2.address, 1523)
        forward = proc.run(["sysctl", "-n", "net.ipv4.ip_forward"], netns=hv1.netns).stdout.strip()
        assert forward == "1"

        netns.isolate(plan, hv2)
        assert not ping(hv1.netns, hv2.address)
        assert not ping(hv2.netns, hv1.address)
        netns.wait_links_ready(plan)          # a downed port is not "not ready"

        t1 = time.monotonic()
        netns.rejoin(plan, hv2)
        assert ping(hv1.netns, hv2.address, 1522, wait=2)
        print(f"rejoin to first ping {time.monotonic() - t1:.2f}s")
        # idempotent creation: running it again changes nothing
        netns.create_switch(plan)
        netns.create_node_netns(plan, hv1)
        assert ping(hv2.netns, hv1.address)

        t2 = time.monotonic()
        deleted = netns.delete_all(plan)
        print(f"delete_all {time.monotonic() - t2:.2f}s: {deleted}")
        assert netns.list_lab_netns(plan.name) == []
        assert netns.delete_all(plan) == []       # safe when nothing exists
