"""Config validation: one clear message naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.core.config import load_config, parse_config
from pvc.core.errors import ConfigError

GOOD = """
cluster: {name: c1, coordinator_nodes: [hv1, hv2, hv3]}
zookeeper: {hosts: ["hv1:2181"], auth: {username: pvc, password: zk-password-0123456789}}
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
        (GOOD + "api: {token: [{token: short-token-0123456789}]}\n",
         "key 'api.token.0.token': a token must be at least 32 characters long (this one has 22)"),
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


def test_api_secure_defaults() -> None:
    """Authentication is on without a token in the file: pvcapid then uses api.token_file."""
    api = parse_config(GOOD).api
    assert api.authentication.enabled and not api.authentication.allow_insecure_listen
    assert api.token == [] and api.token_file == "/etc/pvc/api-token"
    assert api.listen.is_loopback
    assert (api.authentication.session_lifetime, api.authentication.session_idle_timeout) == (43200, 3600)
    assert api.max_body_size == 1024 * 1024 and api.max_upload_size == 1024 ** 4
    wide = parse_config(GOOD + "api: {listen: {address: 0.0.0.0}}\n").api
    assert not wide.listen.is_loopback


def test_short_token_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + "api: {token: [{token: hunter2-secret}]}\n")
    assert "hunter2" not in str(info.value)


def test_zookeeper_acls_need_credentials_or_an_explicit_opt_out() -> None:
    settings = parse_config(GOOD)
    assert settings.zookeeper.acl and settings.zookeeper.auth is not None
    assert settings.cluster.key_file == "/etc/pvc/cluster.key"
    bare = 'zookeeper: {hosts: ["hv1:2181"]}\n'
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + bare, "/etc/pvc/pvc.conf")
    assert "zookeeper.auth" in str(info.value) and "zookeeper.acl: false" in str(info.value)
    assert parse_config(GOOD + 'zookeeper: {hosts: ["hv1:2181"], acl: false}\n').zookeeper.auth is None
    with pytest.raises(ConfigError, match="remove one of the two"):
        parse_config(GOOD.replace("auth:", "acl: false, auth:"))


@pytest.mark.parametrize(("auth", "key"), [
    ("{username: pvc, password: short}", "zookeeper.auth.password"),
    ("{username: 'a:b', password: zk-password-0123456789}", "zookeeper.auth.username"),
    ("{password: zk-password-0123456789}", "zookeeper.auth.username"),
])
def test_zookeeper_bad_credentials_name_the_key_not_the_value(auth: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD + f'zookeeper: {{hosts: ["hv1:2181"], auth: {auth}}}\n')
    assert key in str(info.value) and "short" not in str(info.value).split(key)[1]
