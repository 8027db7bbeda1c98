"""Node health: result arithmetic, the loader, upstream's plugin interface (the shim), the
shipped plugins' parsers and the NIC rate arithmetic. Pure logic; processes are in
tests/integration/test_health_plugins.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from pvc.core.config import parse_config
from pvc.node.health import loader
from pvc.node.health.results import (
    FAILURE_DELTA,
    PluginState,
    fault_delta,
    fault_message,
    fault_name,
    from_host,
    node_health,
)
from pvc.node.health.runner import plugin_config
from pvc.node.services import netstats
from pvchealthd.objects.MonitoringInstance import MonitoringPlugin, PluginLogger, PluginResult, ThisNode

PLUGINS = Path(__file__).resolve().parents[2] / "src" / "pvc" / "node" / "health" / "plugins"


def plugin(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"plugin_{name}", PLUGINS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- results -------------------------------------------------------------------------------------

def state(name: str, delta: int) -> PluginState:
    return PluginState(name, 1000.0, delta, "m")


def test_node_health_is_100_minus_the_deltas_never_below_0() -> None:
    assert node_health([]) == 100
    assert node_health([state("a", 0), state("b", 10), state("c", 5)]) == 85
    assert node_health([state("a", 60), state("b", 50)]) == 0


def test_a_crash_or_timeout_is_a_deduction_with_its_reason() -> None:
    crashed = from_host({"name": "boom", "error": "RuntimeError: disk on fire", "runtime": 0.1}, 1234.5)
    text = "RuntimeError: disk on fire"
    assert (crashed.health_delta, crashed.message, crashed.error) == (FAILURE_DELTA, text, text)
    timed_out = from_host({"name": "hang", "timed_out": True, "error": "timed out after 10 s"}, 1.0)
    assert timed_out.health_delta == FAILURE_DELTA and timed_out.message == "timed out after 10 s"
    assert node_health([crashed]) == 90


def test_a_result_keeps_upstreams_detail_shape() -> None:
    ok = from_host({"name": "load", "health_delta": 0, "message": "fine", "data": {"x": 1}, "runtime": 0.02},
                   1700000000.7)
    assert ok.detail() == {"name": "load", "last_run": 1700000000, "health_delta": 0, "message": "fine",
                           "data": {"x": 1}, "runtime": 0.02, "error": None}


def test_plugin_faults_are_named_and_weighted_as_upstream() -> None:
    s = PluginState("disk", 1.0, 21, "sda failing")
    assert fault_name("disk", "hv1") == "NODE_PLUGIN_DISK_HV1"
    assert fault_delta(s) == 10
    assert fault_message(s, "hv1") == "hv1 disk: sda failing"


# -- loader --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("filename", "name"), [
    ("disk", "disk"), ("disk.py", "disk"), ("my-check_2.py", "my-check_2"),
    (".hidden", None), ("_private.py", None), ("disk.py~", None), ("disk.dpkg-dist", None),
    ("disk.pyc", None), ("disk.swp", None), ("bad name.py", None), ("x.ucf-old", None),
])
def test_which_files_are_plugins(filename: str, name: str | None) -> None:
    assert loader.plugin_name(filename) == name


def test_scan_names_plugins_and_keeps_the_first_of_two_files_with_one_name(tmp_path: Path) -> None:
    (tmp_path / "load").write_text("")
    (tmp_path / "load.py").write_text("")
    (tmp_path / "zkpr.py").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / ".swap").write_text("")
    found = loader.scan(str(tmp_path))
    assert sorted(found) == ["load", "zkpr"]
    assert found["load"].path == str(tmp_path / "load")
    assert loader.scan(str(tmp_path / "missing")) == {}


@pytest.fixture
def own_uid_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam: files a non-root test run creates count as root's."""
    monkeypatch.setattr(loader, "ALLOWED_OWNERS", (0, os.getuid()))


@pytest.mark.usefixtures("own_uid_trusted")
def test_scan_marks_files_anyone_but_root_could_change(tmp_path: Path) -> None:
    directory = tmp_path / "plugins"
    directory.mkdir(mode=0o755)
    for name in ("good", "open", "group"):
        (directory / f"{name}.py").write_text("")
    (directory / "good.py").chmod(0o644)
    (directory / "open.py").chmod(0o666)
    (directory / "group.py").chmod(0o664)
    found = loader.scan(str(directory))
    assert found["good"].unsafe is None
    assert found["open"].unsafe == (f"plugin file {directory}/open.py is group- and world-writable "
                                    f"(mode 0666)")
    assert found["group"].unsafe == f"plugin file {directory}/group.py is group-writable (mode 0664)"
    # a file (here: the target of a symlink) owned by another uid
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "theirs.py").write_text("")
    (directory / "theirs.py").symlink_to(elsewhere / "theirs.py")
    if os.getuid() == 0:
        os.chown(elsewhere / "theirs.py", 4242, 4242)
        assert loader.scan(str(directory))["theirs"].unsafe == (f"plugin file {directory}/theirs.py is owned "
                                                                f"by uid 4242, not root")
        os.chown(elsewhere / "theirs.py", 0, 0)
    # the directory a symlinked plugin really lives in counts too
    elsewhere.chmod(0o777)
    assert loader.scan(str(directory))["theirs"].unsafe == (f"plugin directory {elsewhere} is group- and "
                                                            f"world-writable (mode 0777)")
    # the plugin directory itself: every file in it is refused
    directory.chmod(0o775)
    found = loader.scan(str(directory))
    expected = f"plugin directory {directory} is group-writable (mode 0775)"
    assert {f.unsafe for f in found.values()} == {expected}


def test_scan_trusts_only_root_by_default(tmp_path: Path) -> None:
    assert loader.ALLOWED_OWNERS == (0,)
    (tmp_path / "mine.py").write_text("")
    tmp_path.chmod(0o755)
    found = loader.scan(str(tmp_path))["mine"]
    assert (found.unsafe is None) == (os.getuid() == 0)


# -- the shim ------------------------------------------------------------------------------------

class Script(MonitoringPlugin):
    def run(self, coordinator_state: str | None = None) -> PluginResult:
        self.log("debug line")
        self.log("warned", state="w")
        self.plugin_result.set_health_delta(5)
        self.plugin_result.set_message(f"on {self.this_node.name} as {coordinator_state}")
        self.plugin_result.set_data({"k": self.config["bridge_dev"]})
        return self.plugin_result


def test_upstreams_plugin_api() -> None:
    logger = PluginLogger(debug=False)
    script = Script(None, {"bridge_dev": "bond0"}, logger, ThisNode("hv1"), "test")
    assert str(script) == "test" and script.zkhandler is None
    assert script.setup() is None
    result = script.run(coordinator_state="primary")
    assert (result.health_delta, result.message, result.data) == (5, "on hv1 as primary", {"k": "bond0"})
    assert logger.lines == [("warning", "test: warned")]       # debug lines only with debug on
    result.set_runtime("0.10")
    result.to_zookeeper()
    script.cleanup()
    fresh = Script(None, {}, logger, ThisNode("hv1"), "test").plugin_result
    assert (fresh.health_delta, fresh.message, fresh.data) == (0, "N/A", {})


# -- configuration mapping ------------------------------------------------------------------------

def settings_for(extra: str = "") -> object:
    return parse_config(f"""
cluster: {{name: t, coordinator_nodes: [hv1], all_nodes: [hv1]}}
zookeeper: {{hosts: ["127.0.0.1:2181", "192.0.2.7:2181"], acl: false}}
node: {{name: hv1}}
networking: {{cluster_device: bond0, bridge_device: vlan100}}
{extra}
""")


def test_plugin_config_maps_our_settings_to_upstreams_keys() -> None:
    config = plugin_config(settings_for())     # type: ignore[arg-type]
    assert config["cluster_dev"] == "bond0" and config["bridge_dev"] == "vlan100"
    assert config["upstream_dev"] == "bond0"
    assert config["zookeeper_local"] == "127.0.0.1:2181"
    assert config["ipmi_password"] == "" and config["bgp_enabled"] is False


def test_plugin_config_carries_the_bmc_and_operator_keys(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    secret = tmp_path / "ipmi.pw"
    secret.write_text("hunter2-bmc\n")
    config = plugin_config(settings_for(f"""
fencing: {{agent: ipmi, ipmi: {{hostname: "{{node}}-bmc", username: root, password_file: {secret}}}}}
health: {{plugin_config: {{load_factor: 4, nics_expected_speed: {{eth0: 10000}}}}}}
""").model_copy(update={}))     # type: ignore[attr-defined]
    assert (config["ipmi_hostname"], config["ipmi_username"], config["ipmi_password"]) == \
        ("hv1-bmc", "root", "hunter2-bmc")
    assert config["load_factor"] == 4 and config["nics_expected_speed"] == {"eth0": 10000}
    assert not key.exists()


def test_bad_plugin_timeouts_are_refused_by_name() -> None:
    from pvc.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"plugin_timeouts\.hang"):
        settings_for("health: {plugin_timeouts: {hang: 0}}")


# -- shipped plugins' parsers ------------------------------------------------------------------------

def test_disk_smart_report_deductions() -> None:
    check = plugin("disk").check
    assert check("sda", {"smart_status": {"passed": True}, "ata_smart_attributes": {"table": [
        {"name": "Reallocated_Sector_Ct", "when_failed": ""}]}}) == (0, [])
    delta, problems = check("sda", {"ata_smart_attributes": {"table": [
        {"name": "Reallocated_Sector_Ct", "when_failed": "now"}, {"name": "Seek", "when_failed": "past"}]}})
    assert delta == 20 and "Reallocated_Sector_Ct" in problems[0]
    delta, _ = check("nvme0n1", {"nvme_smart_health_information_log": {
        "critical_warning": 1, "media_errors": 3, "percentage_used": 95}})
    assert delta == 30


def test_frr_sessions_across_families_and_vrfs() -> None:
    sessions = plugin("frr").sessions
    summary = {"default": {"ipv4Unicast": {"peers": {"10.0.0.2": {"state": "Established"}}},
                           "l2VpnEvpn": {"peers": {"10.0.0.2": {"state": "Established"},
                                                   "10.0.0.3": {"state": "Active"}}}}}
    assert sessions(summary) == {"10.0.0.2": "Established", "10.0.0.3": "Active"}


def test_chrony_tracking_parse() -> None:
    text = "Reference ID    : C0A80001 (gw)\nSystem time     : 0.000123456 seconds slow of NTP time\n" \
           "Leap status     : Normal\n"
    assert plugin("clock").chrony_offset(text) == (0.000123456, "Normal")
    assert plugin("clock").chrony_offset("506 Cannot talk to daemon") == (None, "unknown")


def test_raid_volume_states() -> None:
    volumes = plugin("hwrd").volumes
    assert volumes("megacli", "Name :\nState               : Optimal\nState : Degraded\n") == \
        [("LD0", "Optimal"), ("LD1", "Degraded")]
    text = "   logicaldrive 1 (447.1 GB, RAID 1, OK)\n   logicaldrive 2 (1 TB, RAID 5, Interim Recovery Mode)"
    assert volumes("ssacli", text) == [("logicaldrive 1", "OK"), ("logicaldrive 2", "Interim Recovery Mode")]
    assert volumes("mvcli", "id: 0\nstatus: functional\n") == [("vd0", "functional")]


def test_ceph_osds_of_this_host() -> None:
    tree = {"nodes": [{"type": "root", "name": "default", "children": [-2, -3]},
                      {"type": "host", "name": "hv1", "children": [1, 0]},
                      {"type": "host", "name": "hv2", "children": [2]}]}
    assert plugin("ceph").host_osds(tree, {"hv1"}) == [0, 1]


def test_psql_and_kydb_do_not_apply_here() -> None:
    for name in ("psql", "kydb"):
        script = plugin(name).MonitoringPluginScript(None, {}, PluginLogger(), ThisNode("hv1"), name)
        assert script.setup() is None
        result = script.run()
        assert result.health_delta == 0 and result.message.startswith("not applicable")


def test_clock_source_none_does_not_apply() -> None:
    script = plugin("clock").MonitoringPluginScript(None, {"clock_source": "none"}, PluginLogger(),
                                                    ThisNode("hv1"), "clock")
    assert script.setup() is None
    assert script.run().health_delta == 0
    bad = plugin("clock").MonitoringPluginScript(None, {"clock_source": "sundial"}, PluginLogger(),
                                                 ThisNode("hv1"), "clock")
    assert "sundial" in (bad.setup() or "")


def test_fs_thresholds(tmp_path: Path) -> None:
    base = {"fs_paths": [str(tmp_path), str(tmp_path / "missing")]}
    never = {**base, "fs_warn_percent": 100.1, "fs_crit_percent": 100.2}
    ok = plugin("fs").MonitoringPluginScript(None, never, PluginLogger(), ThisNode("hv1"), "fs").run()
    assert ok.health_delta == 0 and list(ok.data) == [str(tmp_path)]
    crit = plugin("fs").MonitoringPluginScript(None, {**base, "fs_warn_percent": 0, "fs_crit_percent": 0},
                                               PluginLogger(), ThisNode("hv1"), "fs").run()
    assert crit.health_delta == 50 and "critical" in crit.message


# -- NIC traffic ---------------------------------------------------------------------------------

def fake_nic(root: Path, name: str, rx: int, tx: int, speed: str = "1000", physical: bool = True) -> None:
    base = root / name
    (base / "statistics").mkdir(parents=True, exist_ok=True)
    counters = (("rx_bytes", rx), ("tx_bytes", tx), ("rx_packets", rx // 100), ("tx_packets", tx // 100))
    for key, value in counters:
        (base / "statistics" / key).write_text(f"{value}\n")
    (base / "speed").write_text(speed + "\n")
    (base / "operstate").write_text("up\n")
    if physical:
        (base / "device").mkdir(exist_ok=True)


def test_nic_rates_over_an_interval(tmp_path: Path) -> None:
    fake_nic(tmp_path, "eno1", 1000, 2000)
    fake_nic(tmp_path, "lo", 5, 5, physical=False)
    fake_nic(tmp_path, "vnet3", 5, 5, physical=False)
    fake_nic(tmp_path, "bond0", 0, 0, speed="-1", physical=False)
    (tmp_path / "bond0" / "bonding").mkdir()
    (tmp_path / "bond0" / "bonding" / "slaves").write_text("eno1\n")
    names = netstats.interfaces(tmp_path, {"bond0"})
    assert names == ["bond0", "eno1"]                 # taps and lo are not NICs
    first = netstats.sample(tmp_path, names)
    assert netstats.rates(None, first, 0.0)["eno1"]["total_bps"] == 0
    fake_nic(tmp_path, "eno1", 1000 + 125_000, 2000 + 250_000)
    figures = netstats.rates(first, netstats.sample(tmp_path, names), 2.0)
    assert figures["eno1"] == {"rx_bps": 500_000, "rx_pps": 625, "tx_bps": 1_000_000, "tx_pps": 1250,
                               "total_bps": 1_500_000, "total_pps": 1875, "link_speed": 1_000_000_000,
                               "state": "up"}
    assert figures["bond0"]["link_speed"] == 0
    fake_nic(tmp_path, "eno1", 10, 10)                # counters reset: no negative rate
    assert netstats.rates(first, netstats.sample(tmp_path, names), 1.0)["eno1"]["rx_bps"] == 0


def test_dpkg_asks_apt_again_only_when_package_state_changes(tmp_path: Path) -> None:
    dpkg = plugin("dpkg")
    status = tmp_path / "status"
    status.write_text("")
    dpkg.STATE_FILES = (str(status), str(tmp_path / "lists"))
    calls: list[object] = []

    def apt(command: object, **_: object) -> tuple[int, str, str]:
        calls.append(command)
        return 0, "Listing...\nlibc6/stable 2.36-9+deb12u9 amd64 [upgradable from: 2.36-9]\n", ""

    dpkg.run_os_command = apt
    assert dpkg.upgradable(str(tmp_path)) == ["libc6"]
    assert dpkg.upgradable(str(tmp_path)) == ["libc6"] and len(calls) == 1
    os.utime(status, ns=(1, 1))
    assert dpkg.upgradable(str(tmp_path)) == ["libc6"] and len(calls) == 2
