"""Config validation: one clear message naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.core.config import load_config, parse_config
from pvc.core.errors import ConfigError

GOOD = """
cluster: {name: c1, coordinator_nodes: [hv1, hv2, hv3]}
zookeeper: {hosts: ["hv1:2181"]}
node: {name: hv2}
"""


def test_defaults_and_identity() -> None:
    settings = parse_config(GOOD)
    assert settings.timer.keepalive_interval == 5
    assert settings.api.listen.port == 7370
    assert settings.zookeeper.root == "/pvc"
    assert settings.node_name == "hv2" and settings.is_coordinator
    assert settings.logging.node_log_lines == 2000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster: {name: c1, coordinator_nodes: [hv1]}\n", "missing key 'zookeeper'"),
        (GOOD + "timer: {keepalive_interval: -1}\n", "key 'timer.keepalive_interval'"),
        (GOOD + "timer: {keepalive_intervall: 3}\n", "unknown key 'timer.keepalive_intervall'"),
        (GOOD.replace("hv3]", "'bad name']"), "key 'cluster.coordinator_nodes'"),
        (GOOD + "zookeeper: {hosts: [a], root: pvc}\n", "key 'zookeeper.root'"),
        (GOOD + "api: {authentication: {enabled: true}}\n", "no token is configured"),
        (GOOD + "fencing: {agent: lab}\n", "agent lab needs lab_name"),
        (GOOD + "fencing: {agent: ipmi, ipmi: {password: a, password_file: /p}}\n",
         "give password or password_file, not both"),
        (GOOD + "fencing: {agent: drac}\n", "key 'fencing.agent'"),
        (GOOD + "fencing: {margin: 0}\n", "key 'fencing.margin'"),
        (GOOD + "fencing: {actions: {failed_fence: reboot}}\n", "key 'fencing.actions.failed_fence'"),
        ("- just\n- a list\n", "YAML mapping"),
        ("cluster: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/pvc/pvc.conf")
    assert expected in str(info.value)
    assert str(info.value).startswith("/etc/pvc/pvc.conf:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.conf"))


def test_env_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pvc.conf"
    path.write_text(GOOD)
    monkeypatch.setenv("PVC_CONFIG_FILE", str(path))
    assert load_config().source == str(path)
