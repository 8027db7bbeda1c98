"""SR-IOV: the sysfs adapter on a synthetic tree laid out as the kernel does, the netlink seam,
and the pure rules of pvc.cluster.sriov (views, config validation, VM NICs on VFs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.sriov import PciAddress, SriovError, SysfsSriov, VFConfig
from pvc.adapters.sriov.fake import RecordingNetlink, add_vfs, build_sysfs
from pvc.adapters.sriov.sysfs import vf_spec
from pvc.cluster import sriov as rules
from pvc.core import domainxml
from pvc.core.errors import Conflict, InvalidInput


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


# -- pvc.cluster.sriov: pure rules ---------------------------------------------------------------------


UUID = "8e5c3a4e-6b4e-4f39-9e66-0cf0f7b7a001"


def _vf(name: str, pf: str, fn: int, used_by: str = "") -> dict[str, object]:
    return {"phy": name, "pf": pf, "index": fn, "mtu": 1500, "mac": f"52:54:00:3b:02:{fn:02x}",
            "pci": {"domain": "0000", "bus": "3b", "slot": "02", "function": str(fn)},
            "used": bool(used_by), "used_by": used_by, "config": dict(rules.CONFIG_DEFAULTS)}


def _xml(nics: str) -> domainxml.Domain:
    return domainxml.parse(f"""<domain type='kvm'><name>vm1</name><uuid>{UUID}</uuid>
      <memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
      <devices>{nics}</devices></domain>""")


MACVTAP = ("<interface type='direct'><mac address='52:54:00:aa:00:01'/>"
           "<source dev='ens1f0v1' mode='passthrough'/><model type='virtio'/></interface>")
HOSTDEV = ("<interface type='hostdev' managed='yes'><mac address='52:54:00:aa:00:02'/><source>"
           "<address type='pci' domain='0x0000' bus='0x3b' slot='0x02' function='0x0'/></source>"
           "<sriov_device>ens1f0v0</sriov_device><model type='virtio'/></interface>")


def test_views_have_upstreams_shapes() -> None:
    pf = rules.pf_view({"phy": "ens1f0", "mtu": 9000, "vfs": ["ens1f0v10", "ens1f0v2"]})
    assert pf == {"phy": "ens1f0", "mtu": "9000", "vfs": ["ens1f0v2", "ens1f0v10"]}
    vf = rules.vf_view(_vf("ens1f0v1", "ens1f0", 1, UUID))
    assert vf["config"] == {"vlan_id": "0", "vlan_qos": "0", "tx_rate_min": "0", "tx_rate_max": "0",
                            "link_state": "auto", "spoof_check": True, "trust": False, "query_rss": False}
    assert vf["usage"] == {"used": True, "domain": UUID} and vf["mtu"] == 1500
    assert vf["pci"] == {"domain": "0000", "bus": "3b", "slot": "02", "function": "1"}


def test_vf_settings_are_validated_and_named() -> None:
    given = {"vlan_id": "100", "trust": "true", "link_state": "enable", "vlan_qos": None}
    assert rules.parse_config(given) == {"vlan_id": 100, "trust": True, "link_state": "enable"}
    for bad, named in (({"vlan_id": 4096}, "vlan_id: 4096 is outside 0..4095"),
                       ({"vlan_qos": "x"}, "vlan_qos: 'x' is not an integer"),
                       ({"link_state": "up"}, "link_state: 'up' is not one of auto, enable, disable"),
                       ({"trust": "maybe"}, "'maybe' is not a boolean"),
                       ({"tx_rate_min": -1}, "tx_rate_min: -1 is outside")):
        with pytest.raises(InvalidInput, match=named):
            rules.parse_config(bad)
    with pytest.raises(InvalidInput, match="vlan_qos: a QoS priority"):
        rules.check_config({**rules.CONFIG_DEFAULTS, "vlan_qos": 3})
    with pytest.raises(InvalidInput, match="tx_rate_min: 500 is above tx_rate_max 100"):
        rules.check_config({**rules.CONFIG_DEFAULTS, "tx_rate_min": 500, "tx_rate_max": 100})


def test_vf_nics_finds_macvtap_and_hostdev() -> None:
    vfs = {"ens1f0v0": _vf("ens1f0v0", "ens1f0", 0), "ens1f0v1": _vf("ens1f0v1", "ens1f0", 1)}
    nics = rules.vf_nics(_xml(MACVTAP + HOSTDEV + "<interface type='bridge'><source bridge='vmbr1'/>"
                              "</interface>"), vfs)
    assert [(n.vf, n.mode, n.mac) for n in nics] == [("ens1f0v1", "macvtap", "52:54:00:aa:00:01"),
                                                     ("ens1f0v0", "hostdev", "52:54:00:aa:00:02")]
    # a hostdev NIC without <sriov_device> is found by its PCI address
    bare = HOSTDEV.replace("<sriov_device>ens1f0v0</sriov_device>", "")
    assert [n.vf for n in rules.vf_nics(_xml(bare), vfs)] == ["ens1f0v0"]


def test_migration_plan_prefers_the_same_vf_then_any_free_vf_of_the_pf() -> None:
    domain = _xml(MACVTAP)
    source = {"ens1f0v1": _vf("ens1f0v1", "ens1f0", 1, UUID)}
    same = {"ens1f0v0": _vf("ens1f0v0", "ens1f0", 0), "ens1f0v1": _vf("ens1f0v1", "ens1f0", 1)}
    assert rules.plan_move(domain, source, same, "hv2", UUID) == {"ens1f0v1": "ens1f0v1"}
    other = {"ens1f0v0": _vf("ens1f0v0", "ens1f0", 0),
             "ens1f0v1": _vf("ens1f0v1", "ens1f0", 1, "someone-else"),
             "ens2v0": _vf("ens2v0", "ens2", 5)}
    moves = rules.plan_move(domain, source, other, "hv2", UUID)
    assert moves == {"ens1f0v1": "ens1f0v0"}
    moved = rules.rewrite(domain, moves, other)
    assert [n.source for n in moved.interfaces] == ["ens1f0v0"]
    full = {"ens1f0v0": _vf("ens1f0v0", "ens1f0", 0, "x"), "ens2v0": _vf("ens2v0", "ens2", 5)}
    with pytest.raises(Conflict, match='Node "hv2" has no free SR-IOV VF on PF "ens1f0"'):
        rules.plan_move(domain, source, full, "hv2", UUID)


def test_hostdev_rewrite_moves_the_pci_address_and_the_name() -> None:
    domain = _xml(HOSTDEV)
    target = {"ens1f0v3": {**_vf("ens1f0v3", "ens1f0", 3)}}
    moved = rules.rewrite(domain, {"ens1f0v0": "ens1f0v3"}, target)
    nic = moved.interfaces[0]
    assert (nic.sriov_device, nic.source) == ("ens1f0v3", "0000:3b:02.3")
    assert 'function="0x3"' in domainxml.render(moved) and rules.has_hostdev(moved)


# -- the node's SR-IOV service over a synthetic tree -----------------------------------------------------

class MiniZK:
    """Just the ZK methods the service uses, over a dict (paths -> JSON values)."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.watches: dict[str, object] = {}
        self.versions: dict[str, int] = {}

    def get(self, path: str, default: object = None) -> object:
        return self.data.get(path, default)

    def put(self, path: str, value: object) -> None:
        self.data[path] = value

    def update(self, path: str, fn: object, create: bool = False) -> object:
        assert create or path in self.data
        self.data[path] = fn(self.data.get(path))  # type: ignore[operator]
        return self.data[path]

    def exists(self, path: str) -> bool:
        return path in self.data or any(p.startswith(path + "/") for p in self.data)

    def children(self, path: str) -> list[str]:
        return sorted({p[len(path) + 1:].split("/")[0] for p in self.data if p.startswith(path + "/")})

    def delete(self, path: str) -> None:
        for p in [p for p in self.data if p == path or p.startswith(path + "/")]:
            del self.data[p]

    def get_many(self, paths: list[str]) -> dict[str, object]:
        return {p: self.data[p] for p in paths if p in self.data}

    def watch_data(self, path: str, fn: object) -> None:
        self.watches[path] = fn

    def get_doc(self, path: str) -> object:
        from pvc.core.zk import Document
        return Document(path, self.data[path], self.versions.get(path, 0)) if path in self.data else None

    def set_doc(self, path: str, value: object, version: int = -1) -> int:
        from kazoo.exceptions import BadVersionError
        if version not in (-1, self.versions.get(path, 0)):
            raise BadVersionError()
        self.data[path] = value
        self.versions[path] = self.versions.get(path, 0) + 1
        return self.versions[path]


def _service(tree: Path, netlink: RecordingNetlink,
             devices: list[dict[str, object]]) -> tuple[object, MiniZK]:
    import threading

    from pvc.core.config import NetworkingSettings
    from pvc.node.services.sriov import SriovService

    class S:
        node_name = "hv1"
        networking = NetworkingSettings(sriov_enable=True, sriov_device=devices)

    zk = MiniZK()
    return SriovService(S(), zk, SysfsSriov(tree, netlink), threading.Event()), zk  # type: ignore[arg-type]


def test_node_service_sets_up_publishes_and_applies(tree: Path) -> None:
    from pvc.core import schema

    netlink = RecordingNetlink()
    service, zk = _service(tree, netlink, [{"phy": "ens1f1", "mtu": 9000, "vfcount": 2}])
    service.setup()                                          # type: ignore[attr-defined]
    assert (tree / "class/net/ens1f1/device/sriov_numvfs").read_text() == "2"
    assert (tree / "class/net/ens1f1/mtu").read_text() == "9000"
    add_vfs(tree, "ens1f1", 2)                               # the kernel's part of that write
    service.run_pass()                                       # type: ignore[attr-defined]
    assert zk.get(schema.node_sriov_pf("hv1", "ens1f1")) == {
        "phy": "ens1f1", "mtu": 9000, "vfcount": 2, "totalvfs": 4, "vfs": ["ens1f1v0", "ens1f1v1"]}
    vf = zk.get(schema.node_sriov_vf("hv1", "ens1f1v1"))
    assert isinstance(vf, dict)
    assert (vf["pf"], vf["index"], vf["used"], vf["pci_address"]) == ("ens1f1", 1, False, "0000:5e:02.1")
    assert vf["phy_mac"] == vf["mac"] == "52:54:00:5e:02:01"
    assert [c[1]["vf"] for c in netlink.calls] == [0, 1]      # defaults applied once at start
    service.run_pass()                                       # type: ignore[attr-defined]
    assert len(netlink.calls) == 2                            # unchanged: nothing applied again
    # the API writes desired settings and a claim; the node keeps them and applies the settings
    zk.put(schema.vm(UUID), {"uuid": UUID, "name": "vm1", "node": "hv1"})
    zk.update(schema.node_sriov_vf("hv1", "ens1f1v1"),
              lambda d: {**d, "config": {**d["config"], "vlan_id": 42, "trust": True},
                         "used": True, "used_by": UUID})
    service.run_pass()                                       # type: ignore[attr-defined]
    assert netlink.calls[-1] == ("ens1f1", {**vf_spec(1, VFConfig(vlan_id=42, trust=True))})
    kept = zk.get(schema.node_sriov_vf("hv1", "ens1f1v1"))
    assert isinstance(kept, dict) and kept["used_by"] == UUID and kept["config"]["vlan_id"] == 42
    # VFs that disappear are unpublished
    (tree / "class/net/ens1f1/device/virtfn1").unlink()
    service.run_pass()                                       # type: ignore[attr-defined]
    assert zk.get(schema.node_sriov_vf("hv1", "ens1f1v1")) is None


def test_node_service_lets_its_vms_use_its_own_vfs_only(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pvc.core.domainxml import DomainPolicy
    from pvc.node.vms.context import ReconcilerSettings

    service, _zk = _service(tree, RecordingNetlink(), [{"phy": "ens1f0", "vfcount": 2}])

    class Vms:
        class ctx:
            settings = ReconcilerSettings()

    service.vms = Vms                                          # type: ignore[attr-defined]
    monkeypatch.setattr(DomainPolicy, "from_settings", classmethod(lambda cls, _s: DomainPolicy()))
    service.run_pass()                                         # type: ignore[attr-defined]
    policy = Vms.ctx.settings.domain_policy
    assert policy.direct_devices == ("ens1f0v0", "ens1f0v1")
    assert policy.hostdev_pci == ("0000:3b:02.0", "0000:3b:02.1")
    domainxml.check_domain(domainxml.render(_xml(MACVTAP.replace("ens1f0v1", "ens1f0v0"))), policy)
    with pytest.raises(domainxml.DomainPolicyViolation, match="ens1f1v0"):
        domainxml.check_domain(domainxml.render(_xml(MACVTAP.replace("ens1f0v1", "ens1f1v0"))), policy)


def test_node_service_frees_claims_of_vms_that_never_appeared(tree: Path) -> None:
    from pvc.core import schema

    service, zk = _service(tree, RecordingNetlink(), [{"phy": "ens1f0", "vfcount": 2}])
    service.run_pass()                                       # type: ignore[attr-defined]
    vfs = SysfsSriov(tree, RecordingNetlink()).vfs("ens1f0")
    other = "0b0e7a1c-0000-4000-8000-000000000002"
    for vf, user in (("ens1f0v0", UUID), ("ens1f0v1", other)):
        zk.update(schema.node_sriov_vf("hv1", vf),
                  lambda d, user=user: {**d, "used": True, "used_by": user, "claimed_at": 1000.0})
    zk.put(schema.vm(other), {"uuid": other, "name": "exists", "node": "hv1"})
    assert service.free_orphans(vfs, now=1010.0) == []           # type: ignore[attr-defined]
    assert service.free_orphans(vfs, now=2000.0) == ["ens1f0v0"]  # type: ignore[attr-defined]
    freed = zk.get(schema.node_sriov_vf("hv1", "ens1f0v0"))
    assert isinstance(freed, dict) and (freed["used"], freed["used_by"]) == (False, "")
    kept = zk.get(schema.node_sriov_vf("hv1", "ens1f0v1"))
    assert isinstance(kept, dict) and kept["used_by"] == other


# -- the sender side of a migration: a hostdev VF never goes live --------------------------------------

from tests.unit.test_vm_reconciler import cluster, running_on, settle  # noqa: E402,F401


def _with_hostdev(store: Any, uuid: str) -> None:
    doc = store.vms[uuid]
    store.set(uuid, xml=doc["xml"].replace("</devices>", HOSTDEV + "</devices>"))


def test_a_hostdev_vm_is_never_migrated_live(cluster: Any) -> None:  # noqa: F811
    store, hvs, recs = cluster
    uuid = running_on(store, recs, migration_method="live")
    _with_hostdev(store, uuid)
    store.set(uuid, state="migrate-live", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert not any(op == "migrate" for op, _ in hvs["hv1"].calls)
    assert hvs["hv1"].is_running(uuid) and store.vms[uuid]["node"] == "hv1"
    assert "ens1f0v0" in store.statuses[uuid]["last_migration_error"]["error"]


def test_node_service_claims_follow_vms_moved_without_the_api(tree: Path) -> None:
    """A flush or HA recovery moves a VM by its document alone: the node it now runs on claims its
    VFs, the node it left frees them (after the grace period)."""
    from dataclasses import dataclass

    from pvc.core import schema

    @dataclass
    class Domain:
        running: bool = True

    class Hv:
        def __init__(self) -> None:
            self.domains: dict[str, Domain] = {}

        def list_domains(self) -> dict[str, Domain]:
            return self.domains

    class Vms:
        hv = Hv()

    service, zk = _service(tree, RecordingNetlink(), [{"phy": "ens1f0", "vfcount": 2}])
    service.vms = Vms                                         # type: ignore[attr-defined]
    service.run_pass()                                        # type: ignore[attr-defined]
    xml = domainxml.render(_xml(MACVTAP))                     # on ens1f0v1
    zk.put(schema.vm(UUID), {"uuid": UUID, "name": "vm1", "node": "hv1", "xml": xml})
    Vms.hv.domains[UUID] = Domain()
    assert service.follow_vms() == ["ens1f0v1"]               # type: ignore[attr-defined]
    assert zk.get(schema.node_sriov_vf("hv1", "ens1f0v1"))["used_by"] == UUID  # type: ignore[index]
    # another VM running here on a VF someone holds: reported, nothing taken
    other = "0b0e7a1c-0000-4000-8000-000000000003"
    zk.put(schema.vm(other), {"uuid": other, "name": "vm2", "node": "hv1",
                              "xml": domainxml.render(_xml(MACVTAP)).replace(UUID, other)})
    Vms.hv.domains[other] = Domain()
    assert service.follow_vms() == []                         # type: ignore[attr-defined]
    assert zk.get(schema.node_sriov_vf("hv1", "ens1f0v1"))["used_by"] == UUID  # type: ignore[index]
    # the VM moved away (its document names hv2) and stopped here: freed once the grace is over
    del Vms.hv.domains[UUID]
    zk.put(schema.vm(UUID), {"uuid": UUID, "name": "vm1", "node": "hv2", "xml": xml})
    vfs = SysfsSriov(tree, RecordingNetlink()).vfs("ens1f0")
    claimed_at = zk.get(schema.node_sriov_vf("hv1", "ens1f0v1"))["claimed_at"]  # type: ignore[index]
    assert service.free_orphans(vfs, now=claimed_at + 1) == []              # type: ignore[attr-defined]
    assert service.free_orphans(vfs, now=claimed_at + 1000) == ["ens1f0v1"]  # type: ignore[attr-defined]
