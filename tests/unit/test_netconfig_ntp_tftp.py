"""NTP and TFTP on managed networks (issue #14 item 5): DHCP names the gateway as NTP server,
chrony's configuration, the TFTP root's confinement and the guest-input rules they open."""

# ruff: noqa: F811 - the fixtures imported from test_cli_flows are (by pytest's design) re-bound as arguments

from __future__ import annotations

from typing import Any

import pytest

from pvc.core import chrony
from pvc.core import netconfig as nc
from pvc.core.netconfig import NetSpec
from tests.unit.test_cli_flows import FakeApi, api, env, no_sleep  # noqa: F401
from tests.unit.test_cli_flows import pvc as cli_run


def doc(vni: int = 400, **extra: Any) -> dict[str, Any]:
    return {"vni": vni, "description": f"net{vni}", "type": "managed", "mtu": None, "domain": None,
            "name_servers": [],
            "ip4": {"network": "10.40.0.0/24", "gateway": "10.40.0.1", "dhcp_flag": True,
                    "dhcp_start": "10.40.0.100", "dhcp_end": "10.40.0.199"},
            "ip6": {"network": None, "gateway": None, "dhcp_flag": False}, **extra}


def argv(net: NetSpec, tftp_root: str | None = None) -> list[str]:
    return nc.dnsmasq_argv(net, mtu=1500, hosts_dir="/run/h", hook=["/h"], upstream_dns=[],
                           tftp_root=tftp_root)


def test_dhcp_names_the_gateway_as_ntp_server_as_upstream_does() -> None:
    plain = argv(NetSpec.from_doc(doc()))
    assert "--dhcp-option=option:ntp-server,10.40.0.1" in plain           # option 42
    six = NetSpec.from_doc(doc(ip6={"network": "fd00:40::/64", "gateway": "fd00:40::1", "dhcp_flag": True}))
    assert "--dhcp-option=option6:sntp-server,[fd00:40::1]" in argv(six)  # DHCPv6 option 31
    no_dhcp = NetSpec.from_doc(doc(ip4={"network": "10.40.0.0/24", "gateway": "10.40.0.1"}))
    assert not any("ntp-server" in o for o in argv(no_dhcp))


def test_tftp_only_when_the_node_passes_its_checked_root() -> None:
    net = NetSpec.from_doc(doc(tftp_root="/srv/tftp", dhcp_boot="boot/pxelinux.0"))
    assert net.tftp_root == "/srv/tftp" and net.dhcp_boot == "boot/pxelinux.0"
    off = argv(net)                      # the root is missing or refused on this node
    assert not any(o.startswith(("--enable-tftp", "--tftp", "--dhcp-boot")) for o in off)
    on = argv(net, "/srv/tftp")
    assert {"--enable-tftp=vmbr400", "--tftp-root=/srv/tftp", "--tftp-no-fail",
            "--dhcp-boot=boot/pxelinux.0"} <= set(on)
    assert not any(o.startswith("--user") for o in on)   # runs as nobody: world-readable files only
    with pytest.raises(ValueError, match="not below"):
        argv(net, "/etc")
    plain = argv(NetSpec.from_doc(doc()))
    assert not any("tftp" in o or o.startswith("--dhcp-boot") for o in plain)


@pytest.mark.parametrize(("path", "words"), [
    ("srv/tftp", "absolute"),
    ("/srv", "not below"),
    ("/srv/", "normalised"),
    ("/etc/pvc", "not below"),
    ("/var/lib/pvc/tftp", "not below"),
    ("/srv/../etc", "normalised"),
    ("/srv/./tftp", "normalised"),
    ("/srv//tftp", "normalised"),
    ("/srv/tftp/", "normalised"),
    ("/srv/tftp,vmbr1", "may only contain"),
    ("/srv/tf tp", "may only contain"),
    ("/srv/tftp\n--conf-file=/x", "may only contain"),
    ("/srvx/tftp", "not below"),
    ("/srv/" + "a" * 200, "longer than"),
])
def test_tftp_root_is_confined(path: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        nc.check_tftp_root(path)
    from pvc.node import ntp_tftp

    # a hand-made document parses (the network stays up); the node's TFTP step refuses the root
    root, why = ntp_tftp.tftp_root(NetSpec.from_doc(doc(tftp_root=path)))
    assert root is None and "TFTP refused" in why


def test_a_bad_boot_file_costs_tftp_only() -> None:
    from pvc.node import ntp_tftp

    root, why = ntp_tftp.tftp_root(NetSpec.from_doc(doc(tftp_root="/srv/x", dhcp_boot="../x")))
    assert root is None and "must be relative" in why


def test_tftp_root_accepted_and_resolved() -> None:
    assert nc.check_tftp_root(" /srv/tftp/net-1_a+b@c.d ") == "/srv/tftp/net-1_a+b@c.d"
    assert nc.check_tftp_root("/var/lib/tftpboot/x") == "/var/lib/tftpboot/x"
    assert nc.tftp_root_on_host("/srv/tftp", "/srv/data/tftp") == "/srv/data/tftp"
    with pytest.raises(ValueError, match="resolves to '/etc'"):
        nc.tftp_root_on_host("/srv/tftp", "/etc")
    assert NetSpec.from_doc(doc(tftp_root="", dhcp_boot="None")).tftp_root is None


@pytest.mark.parametrize("name", ["/pxelinux.0", "../x", "a/../b", "a,b", "", "a b", "x" * 129, "a//b"])
def test_boot_file_is_relative_to_the_root(name: str) -> None:
    with pytest.raises(ValueError):
        nc.check_boot_file(name)


def test_guest_input_opens_ntp_and_tftp_to_the_gateway_only() -> None:
    pxe = NetSpec.from_doc(doc(tftp_root="/srv/tftp",
                               ip6={"network": "fd00:40::/64", "gateway": "fd00:40::1", "dhcp_flag": True}))
    plain = NetSpec.from_doc(doc(401, ip4={"network": "10.41.0.0/24", "gateway": "10.41.0.1"}))
    text = nc.render_nft([pxe, plain], {}, primary=True, upstream_device="ens4",
                         metadata_address="169.254.169.254")
    guest_input = text.split("chain guest-input {")[1].split("}")[0]
    for rule in ('iifname "vmbr400" ip daddr 10.40.0.1 udp dport 123 accept',
                 'iifname "vmbr400" ip6 daddr fd00:40::1 udp dport 123 accept',
                 'iifname "vmbr400" ip daddr 10.40.0.1 udp dport 69 accept',
                 'iifname "vmbr400" ip6 daddr fd00:40::1 udp dport 69 accept',
                 'iifname "vmbr401" ip daddr 10.41.0.1 udp dport 123 accept'):
        assert rule in guest_input, rule
    assert 'iifname "vmbr401" ip daddr 10.41.0.1 udp dport 69' not in guest_input   # no root: no TFTP
    for line in guest_input.splitlines():           # every NTP/TFTP opening names the gateway
        if "dport 123" in line or "dport 69" in line:
            assert "daddr 10.4" in line or "daddr fd00:40::1" in line, line
    secondary = nc.render_nft([pxe], {}, primary=False, upstream_device="ens4",
                              metadata_address="169.254.169.254")
    assert "dport 123" not in secondary and "dport 69" not in secondary


def test_chrony_config() -> None:
    net = NetSpec.from_doc(doc())
    text = chrony.chrony_config(net, state_dir="/run/pvc/network/chrony-400")
    assert text is not None
    lines = text.splitlines()
    assert {"bindaddress 10.40.0.1", "allow 10.40.0.0/24", "cmdport 0", "bindcmdaddress /", "port 123",
            f"local stratum {chrony.NTP_LOCAL_STRATUM}",
            "pidfile /run/pvc/network/chrony-400/chronyd.pid"} <= set(lines)
    assert not any(w in text for w in ("driftfile", "rtcsync", "makestep", "server ", "pool "))
    no_gw = NetSpec.from_doc(doc(ip4={}))
    assert chrony.chrony_config(no_gw, state_dir="/run/x") is None
    with pytest.raises(ValueError, match="bridged"):
        chrony.chrony_config(NetSpec.from_doc({**doc(42), "type": "bridged", "ip4": {}}), state_dir="/run/x")
    for bad in ("run/x", "/run/x y", "/run/x\nserver evil", '/run/"x'):
        with pytest.raises(ValueError, match="state directory"):
            chrony.chrony_config(net, state_dir=bad)
    assert chrony.chronyd_argv("/run/c.conf") == ["chronyd", "-d", "-x", "-f", "/run/c.conf"]
    with pytest.raises(ValueError, match="not absolute"):
        chrony.chronyd_argv("c.conf")


# -- the network document (pvc.cluster.networks) ---------------------------------------------------------

def values(**changes: Any) -> dict[str, Any]:
    return {"vni": 10001, "description": "testing", "nettype": "managed", "ip4_network": "10.100.100.0/24",
            "ip4_gateway": "10.100.100.1", "dhcp4": True, "dhcp4_start": "10.100.100.100",
            "dhcp4_end": "10.100.100.199", **changes}


def test_document_carries_tftp_only_when_set() -> None:
    from pvc.cluster import networks as nets

    plain = nets.network_doc(values(tftp_root="", dhcp_boot=None))
    assert "tftp_root" not in plain and "dhcp_boot" not in plain          # upstream's shape unchanged
    assert "tftp_root" not in nets.network_view(plain)
    pxe = nets.network_doc(values(tftp_root="/srv/tftp", dhcp_boot="pxelinux.0"))
    assert (pxe["tftp_root"], pxe["dhcp_boot"]) == ("/srv/tftp", "pxelinux.0")
    view = nets.network_view(pxe)
    assert (view["tftp_root"], view["dhcp_boot"]) == ("/srv/tftp", "pxelinux.0")
    spec = NetSpec.from_doc(pxe)                                           # what every node parses
    assert (spec.tftp_root, spec.dhcp_boot) == ("/srv/tftp", "pxelinux.0")
    # modify: "" clears the root and with it the boot file; other changes keep both
    kept = nets.network_doc(nets.merge_changes(pxe, {"domain": "x.test"}))
    assert kept["tftp_root"] == "/srv/tftp" and kept["dhcp_boot"] == "pxelinux.0"
    cleared = nets.network_doc(nets.merge_changes(pxe, {"tftp_root": ""}))
    assert "tftp_root" not in cleared and "dhcp_boot" not in cleared
    assert nets.network_doc(nets.merge_changes(pxe, {"dhcp_boot": ""})).get("dhcp_boot") is None


@pytest.mark.parametrize(("changes", "words"), [
    ({"tftp_root": "/etc"}, "tftp_root: '/etc' is not below"),
    ({"tftp_root": "/srv/../root"}, "tftp_root: '/srv/../root' is not a normalised path"),
    ({"tftp_root": "srv"}, "tftp_root: 'srv' is not an absolute path"),
    ({"dhcp_boot": "pxelinux.0"}, "dhcp_boot: the boot file is served from the network's TFTP root"),
    ({"tftp_root": "/srv/t", "dhcp_boot": "../x"}, "dhcp_boot: '../x' must be relative"),
    ({"tftp_root": "/srv/t", "dhcp_boot": "p", "dhcp4": False, "dhcp4_start": None, "dhcp4_end": None},
     "dhcp_boot: the boot file is named by DHCPv4"),
    ({"tftp_root": "/srv/t", "ip4_network": None, "ip4_gateway": None, "dhcp4": False, "dhcp4_start": None,
      "dhcp4_end": None}, "tftp_root: TFTP is served on the network's gateway"),
    ({"nettype": "bridged", "vni": 101, "ip4_network": None, "ip4_gateway": None, "dhcp4": False,
      "dhcp4_start": None, "dhcp4_end": None, "tftp_root": "/srv/t"}, "tftp_root: bridged networks"),
])
def test_document_refuses_bad_tftp(changes: dict[str, Any], words: str) -> None:
    from pvc.cluster import networks as nets
    from pvc.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as info:
        nets.network_doc(values(**changes))
    assert words in info.value.message, info.value.message


def test_the_api_host_checks_the_root_exists_and_stays_confined(tmp_path: Any, monkeypatch) -> None:
    from pvc.cluster.networks import networks as netdocs
    from pvc.core.errors import InvalidInput

    monkeypatch.setattr(nc, "TFTP_ROOT_TREES", (str(tmp_path / "srv"),))
    root = tmp_path / "srv" / "pxe"
    doc = netdocs.network_doc(values(tftp_root=str(root)))
    with pytest.raises(InvalidInput, match="is not a directory on this node"):
        netdocs.check_tftp_on_host(doc)
    netdocs.check_tftp_on_host(doc, before=doc)          # unchanged: not checked again
    root.parent.mkdir()
    (tmp_path / "etc").mkdir()
    root.symlink_to(tmp_path / "etc")
    with pytest.raises(InvalidInput, match="resolves to"):
        netdocs.check_tftp_on_host(doc)
    root.unlink()
    root.mkdir()
    netdocs.check_tftp_on_host(doc)


def test_cli_sends_and_shows_tftp(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/network", {"message": "Network 'pxe' added successfully!"})
    api.on("PUT", "/network/10001", {"message": "Network '10001' modified successfully!"})
    result = cli_run(api, env, "-q", "network", "add", "10001", "-d", "pxe", "-p", "managed", "-i",
                     "10.1.0.0/24", "-g", "10.1.0.1", "--tftp-root", "/srv/tftp", "--dhcp-boot", "pxelinux.0")
    assert result.exit_code == 0, result.output
    sent = api.sent("POST", "/network")[0].url.params
    assert (sent["tftp_root"], sent["dhcp_boot"]) == ("/srv/tftp", "pxelinux.0")
    assert cli_run(api, env, "-q", "network", "modify", "10001", "--tftp-root", "").exit_code == 0
    assert dict(api.sent("PUT", "/network/10001")[0].url.params) == {"tftp_root": ""}
    from pvc.cli.commands import network as netcli
    from pvc.cli.output import render

    item = {"vni": 10001, "type": "managed", "mtu": "", "description": "pxe", "domain": "pxe.local",
            "name_servers": [], "ip4": {"network": "None"}, "ip6": {"network": "None"},
            "tftp_root": "/srv/tftp", "dhcp_boot": "pxelinux.0"}
    text = render(netcli.format_info(item))
    assert "TFTP root" in text and "/srv/tftp" in text and "pxelinux.0" in text
    assert "TFTP" not in render(netcli.format_info({**item, "tftp_root": None}))
