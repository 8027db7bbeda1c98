"""SR-IOV: the sysfs adapter on a synthetic tree laid out as the kernel does, the netlink seam,
and the pure rules of pvc.cluster.sriov (views, config validation, VM NICs on VFs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.adapters.sriov import PciAddress, SriovError, SysfsSriov, VFConfig
from pvc.adapters.sriov.fake import RecordingNetlink, add_vfs, build_sysfs
from pvc.adapters.sriov.sysfs import vf_spec


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_sysfs(tmp_path / "sys", {
        "ens1f0": {"bus": "3b", "totalvfs": 8, "numvfs": 2, "mtu": 9000},
        "ens1f1": {"bus": "5e", "totalvfs": 4, "numvfs": 0},
    })


def test_discovery_follows_the_kernel_layout(tree: Path) -> None:
    host = SysfsSriov(tree, RecordingNetlink())
    assert [p.phy for p in host.pfs()] == ["ens1f0", "ens1f1"]
    pf = host.pf("ens1f0")
    assert (pf.mtu, pf.vfcount, pf.totalvfs, pf.vfs) == (9000, 2, 8, ("ens1f0v0", "ens1f0v1"))
    vfs = host.vfs("ens1f0")
    assert [(v.phy, v.pf, v.index, str(v.pci)) for v in vfs] == [
        ("ens1f0v0", "ens1f0", 0, "0000:3b:02.0"), ("ens1f0v1", "ens1f0", 1, "0000:3b:02.1")]
    assert vfs[1].mac == "52:54:00:3b:02:01" and vfs[1].mtu == 9000
    assert (tree / "class/net/ens1f0/device").is_symlink()
    assert (tree / "class/net/ens1f0/device/virtfn1").resolve().name == "0000:3b:02.1"


def test_a_vf_bound_to_vfio_has_no_netdev(tmp_path: Path) -> None:
    root = build_sysfs(tmp_path / "sys", {"ens2": {"numvfs": 2}}, vfio=("ens2v1",))
    vfs = SysfsSriov(root, RecordingNetlink()).vfs("ens2")
    assert [(v.phy, v.mac) for v in vfs] == [("ens2v0", "52:54:00:3b:02:00"), ("ens2v1", "")]


def test_non_sriov_and_missing_devices_are_named(tree: Path) -> None:
    (tree / "class/net/lo").mkdir()
    (tree / "class/net/lo/mtu").write_text("65536\n")
    host = SysfsSriov(tree, RecordingNetlink())
    assert [p.phy for p in host.pfs()] == ["ens1f0", "ens1f1"]
    with pytest.raises(SriovError, match="PF lo: not SR-IOV capable"):
        host.pf("lo")
    with pytest.raises(SriovError, match="PF eth9: no such network device"):
        host.vfs("eth9")
    with pytest.raises(SriovError, match="not a network device name"):
        host.pf("../../etc")


def test_numvfs_goes_through_zero_and_respects_totalvfs(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = SysfsSriov(tree, RecordingNetlink())
    numvfs = tree / "class/net/ens1f1/device/sriov_numvfs"
    host.set_vfcount("ens1f1", 3)
    assert numvfs.read_text() == "3"
    add_vfs(tree, "ens1f1", 3)            # what the kernel does on that write
    assert host.pf("ens1f1").vfs == ("ens1f1v0", "ens1f1v1", "ens1f1v2")
    writes: list[str] = []
    original = Path.write_text

    def spy(self: Path, data: str, *a: object, **k: object) -> int:
        if self == numvfs:
            writes.append(data)
        return original(self, data)

    monkeypatch.setattr(Path, "write_text", spy)
    host.set_vfcount("ens1f1", 2)
    host.set_vfcount("ens1f0", 2)      # unchanged: nothing written
    monkeypatch.undo()
    assert writes == ["0", "2"]
    with pytest.raises(SriovError, match=r"vfcount 5 is outside 0..4"):
        host.set_vfcount("ens1f1", 5)


def test_mtu_through_sysfs(tree: Path) -> None:
    host = SysfsSriov(tree, RecordingNetlink())
    host.set_mtu("ens1f1", 9000)
    assert host.pf("ens1f1").mtu == 9000
    with pytest.raises(SriovError, match="MTU 10 is outside"):
        host.set_mtu("ens1f1", 10)


def test_vf_config_goes_through_the_netlink_seam(tree: Path) -> None:
    netlink = RecordingNetlink()
    host = SysfsSriov(tree, netlink)
    config = VFConfig(vlan_id=100, vlan_qos=3, tx_rate_min=10, tx_rate_max=1000, link_state="disable",
                      spoof_check=False, trust=True, query_rss=True)
    host.configure_vf("ens1f0", 1, config, mac="52:54:00:AA:BB:CC")
    assert netlink.calls == [("ens1f0", {
        "vf": 1, "vlan": {"vlan": 100, "qos": 3}, "rate": {"min_tx_rate": 10, "max_tx_rate": 1000},
        "spoofchk": 0, "link_state": 2, "trust": 1, "rss_query_en": 1, "mac": "52:54:00:aa:bb:cc"})]
    with pytest.raises(SriovError, match="PF ens1f0: no VF with index 5"):
        host.configure_vf("ens1f0", 5, VFConfig())
    netlink.fail = "Operation not supported"
    with pytest.raises(SriovError, match="Operation not supported"):
        host.configure_vf("ens1f0", 0, VFConfig())


def test_vf_spec_is_what_pyroute2_encodes() -> None:
    """The spec survives pyroute2's request filter and a netlink encode/decode round trip."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.requests.link import LinkIPRouteFilter
    spec = vf_spec(0, VFConfig(vlan_id=5, tx_rate_max=100), "52:54:00:00:00:01")
    vfinfo = LinkIPRouteFilter("set").get_vf(dict(spec))
    msg = ifinfmsg()
    msg["index"] = 1
    msg["attrs"] = [("IFLA_VFINFO_LIST", vfinfo)]
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    attrs = dict(decoded.get_attr("IFLA_VFINFO_LIST")["attrs"][0][1]["attrs"])
    assert attrs["IFLA_VF_VLAN"]["vlan"] == 5 and attrs["IFLA_VF_RATE"]["max_tx_rate"] == 100
    assert attrs["IFLA_VF_MAC"]["mac"] == "52:54:00:00:00:01" and attrs["IFLA_VF_SPOOFCHK"]["spoofchk"] == 1
    assert set(attrs) == {"IFLA_VF_VLAN", "IFLA_VF_RATE", "IFLA_VF_SPOOFCHK", "IFLA_VF_LINK_STATE",
                          "IFLA_VF_TRUST", "IFLA_VF_RSS_QUERY_EN", "IFLA_VF_MAC"}
    with pytest.raises(SriovError, match="link_state 'up'"):
        vf_spec(0, VFConfig(link_state="up"))


def test_pci_address() -> None:
    pci = PciAddress.parse("0000:3B:02.1")
    assert (pci.domain, pci.bus, pci.slot, pci.function) == ("0000", "3b", "02", "1")
    assert str(pci) == "0000:3b:02.1"
    with pytest.raises(SriovError, match="not a PCI address"):
        PciAddress.parse("3b:02.1")
