"""NTP and TFTP in the network reconciler (issue #14 item 5), over a real ZooKeeper with the
in-memory network adapters: chronyd per managed network on the primary only, moving with a
primary change, adopted by a restarted daemon; the TFTP root handed to dnsmasq only when it is
a directory on the node that resolves inside the confined trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.adapters.network.fake import FakeNetworkHost, FakeNftables, FakeServices
from pvc.core import netconfig, schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.node.networks import NetworkReconciler


def net_doc(vni: int, subnet: str, **extra: object) -> dict[str, object]:
    return {"vni": vni, "description": f"net{vni}", "type": "managed", "mtu": None, "domain": f"n{vni}.test",
            "name_servers": [],
            "ip4": {"network": f"{subnet}.0/24", "gateway": f"{subnet}.1", "dhcp_flag": True,
                    "dhcp_start": f"{subnet}.100", "dhcp_end": f"{subnet}.199"},
            "ip6": {"network": None, "gateway": None, "dhcp_flag": False}, **extra}


@pytest.fixture
def make(zk: ZK, tmp_path: Path, config_factory):
    schema.migrate(zk)
    services = FakeServices()

    def build(node: str = "hv1", address: str = "10.0.0.1") -> NetworkReconciler:
        config = config_factory(node, networking={"cluster_device": "eth0", "cluster_address": address})
        host = FakeNetworkHost()
        host.add_address("eth0", f"{address}/24")
        return NetworkReconciler(zk, host, FakeNftables(), services, load_config(str(config)), node,
                                 tmp_path / "run")

    return build


def test_chronyd_per_network_on_the_primary_only(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100, "10.1.0"))
    zk.put(schema.network(101), net_doc(101, "10.2.0"))
    node = make()
    node.reconcile()
    assert not node.services.pid("chrony-100")                      # not primary
    node.set_primary(True)
    for vni, gw in ((100, "10.1.0.1"), (101, "10.2.0.1")):
        svc = node.services.services[f"chrony-{vni}"]
        conf = node.run_dir / f"chrony-{vni}" / "chrony.conf"
        assert svc.running and list(svc.argv) == ["chronyd", "-d", "-x", "-f", str(conf)]
        assert f"bindaddress {gw}" in conf.read_text().splitlines()
    starts = len(node.services.history)
    node.reconcile()
    assert len(node.services.history) == starts                     # unchanged: left alone
    again = NetworkReconciler(zk, node.host, node.nft, node.services, node.settings, "hv1", node.run_dir)
    again.set_primary(True)
    assert len(node.services.history) == starts                     # a restarted daemon adopts it
    # a new gateway restarts that network's chronyd only
    zk.put(schema.network(101), net_doc(101, "10.3.0"))
    again.reconcile()
    assert "bindaddress 10.3.0.1" in (node.run_dir / "chrony-101" / "chrony.conf").read_text()
    assert [s.key for s in node.services.history[starts:]] == ["dnsmasq-101", "chrony-101", "dns-view"]
    # a removed network's chronyd goes; giving up the primary stops the rest
    zk.delete(schema.network(100))
    again.reconcile()
    assert not node.services.pid("chrony-100") and node.services.pid("chrony-101")
    again.set_primary(False)
    assert not [k for k in node.services.names() if node.services.pid(k)]


def test_a_chronyd_that_cannot_start_is_a_problem_not_a_stop(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100, "10.1.0"))
    node = make()
    node.services.fail_start("chronyd")
    node.set_primary(True)
    assert "chronyd exited at once" in node.problems["chrony-100"]
    assert node.services.pid("dnsmasq-100")                          # DNS and DHCP go on


def test_tftp_root_reaches_dnsmasq_only_when_it_is_a_confined_directory(zk: ZK, make, tmp_path: Path,
                                                                          monkeypatch) -> None:
    trees = tmp_path / "srv"
    monkeypatch.setattr(netconfig, "TFTP_ROOT_TREES", (str(trees),))
    root = trees / "pxe"
    zk.put(schema.network(100), net_doc(100, "10.1.0", tftp_root=str(root), dhcp_boot="pxelinux.0"))
    node = make()
    node.set_primary(True)

    def argv() -> list[str]:
        return list(node.services.services["dnsmasq-100"].argv)

    assert not any(a.startswith(("--enable-tftp", "--tftp", "--dhcp-boot")) for a in argv())
    assert "is not a directory on this node" in node.problems["tftp-100"]
    root.mkdir(parents=True)
    node.reconcile()
    assert {f"--tftp-root={root}", "--enable-tftp=vmbr100", "--dhcp-boot=pxelinux.0"} <= set(argv())
    assert not node.problems.get("tftp-100")
    # a symlink out of the trees is refused on the node, whatever the stored path says
    root.rmdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    root.symlink_to(outside)
    node.reconcile()
    assert not any(a.startswith(("--enable-tftp", "--tftp")) for a in argv())
    assert "resolves to" in node.problems["tftp-100"]


# -- the API -----------------------------------------------------------------------------------------------

@pytest.fixture
def client(config_factory, zk: ZK):
    from fastapi.testclient import TestClient

    from pvc.api.app import create_app
    from tests.conftest import API_TOKEN

    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as test_client:
        yield test_client


def test_api_stores_shows_and_clears_the_tftp_root(client, zk: ZK, tmp_path: Path, monkeypatch) -> None:
    from tests.integration.apihelp import ok, refused

    monkeypatch.setattr(netconfig, "TFTP_ROOT_TREES", (str(tmp_path),))
    root = tmp_path / "pxe"
    root.mkdir()
    base = "/api/v1/network"
    params = {"vni": 10001, "description": "pxe", "nettype": "managed", "ip4_network": "10.100.100.0/24",
              "ip4_gateway": "10.100.100.1", "dhcp4": "true", "dhcp4_start": "10.100.100.100",
              "dhcp4_end": "10.100.100.199"}
    before = zk.walk("/")
    refused(client.post(base, params={**params, "tftp_root": "/etc"}), 400, "tftp_root: '/etc' is not below")
    refused(client.post(base, params={**params, "tftp_root": str(tmp_path / "absent")}), 400,
            "is not a directory on this node")
    refused(client.post(base, params={**params, "dhcp_boot": "pxelinux.0"}), 400, "dhcp_boot:")
    assert zk.walk("/") == before                                  # refusals write nothing
    ok(client.post(base, params={**params, "tftp_root": str(root), "dhcp_boot": "pxelinux.0"}))
    item = ok(client.get(f"{base}/10001"))[0]
    assert (item["tftp_root"], item["dhcp_boot"]) == (str(root), "pxelinux.0")
    assert zk.get(schema.network(10001))["tftp_root"] == str(root)
    ok(client.put(f"{base}/10001", params={"dhcp_boot": ""}))
    assert "dhcp_boot" not in ok(client.get(f"{base}/10001"))[0]
    ok(client.put(f"{base}/10001", params={"tftp_root": ""}))
    item = ok(client.get(f"{base}/10001"))[0]
    assert "tftp_root" not in item and "tftp_root" not in zk.get(schema.network(10001))
