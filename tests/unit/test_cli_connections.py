"""The CLI's connection store: file handling, the implicit `local` connection, default selection."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pvc.cli import connections as store
from pvc.cli.main import cli


def write_conf(path: Path, **api: Any) -> Path:
    path.write_text(yaml.safe_dump({"cluster": {"name": "c1", "coordinator_nodes": ["hv1"]}, "api": api}))
    return path


def test_store_dir_prefers_client_dir_then_home() -> None:
    assert store.store_dir({"PVC_CLIENT_DIR": "/x", "HOME": "/h"}) == Path("/x")
    assert store.store_dir({"HOME": "/h"}) == Path("/h/.config/pvc")
    assert store.store_dir({}) == Path("/tmp/pvc")
    assert store.store_path({"PVC_CLIENT_DIR": "/x"}) == Path("/x/pvc.json")


def test_save_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pvc.json"
    data: dict[str, dict[str, Any]] = {}
    store.add_connection(data, "c1", "first", "10.0.0.1", 7371, "key", ssl=True)
    store.save_store(path, data, perms=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "c1": {"description": "first", "host": "10.0.0.1", "port": 7371, "scheme": "https", "api_key": "key"}
    }
    assert store.load_store(path) == json.loads(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["pvc.json"]  # no temp file left behind


def test_load_missing_empty_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "pvc.json"
    assert store.load_store(path) == {}
    path.write_text("")
    assert store.load_store(path) == {}
    path.write_text("{nope")
    with pytest.raises(store.ConnectionStoreError, match="not valid JSON"):
        store.load_store(path)


def test_add_defaults_and_validation() -> None:
    data: dict[str, dict[str, Any]] = {}
    conn = store.add_connection(data, "c1")
    assert (conn.description, conn.host, conn.port, conn.scheme, conn.api_key) == (
        "c1", "127.0.0.1", 7370, "http", None)
    assert conn.base_url == "http://127.0.0.1:7370/api/v1"
    with pytest.raises(store.ConnectionStoreError):
        store.add_connection(data, "")
    with pytest.raises(store.ConnectionStoreError):
        store.add_connection(data, "x", port=0)


def test_remove_unknown_is_an_error() -> None:
    data = {"a": {"host": "h"}}
    store.remove_connection(data, "a")
    assert data == {}
    with pytest.raises(store.ConnectionStoreError, match='No connection found with name "a"'):
        store.remove_connection(data, "a")


def test_mask_key_keeps_length() -> None:
    assert store.mask_key("Ab-12") == "xx-xx"
    assert store.mask_key(None) is None


def test_local_from_config_rewrites_wildcard_and_reads_token(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "pvc.conf", listen={"address": "0.0.0.0", "port": 7999},
                      authentication={"enabled": True, "secret_key": "s"},
                      token=[{"description": "a", "token": "first-token"}, {"token": "second"}],
                      ssl={"enabled": True, "certificate": "c", "private_key": "k"})
    conn = store.read_config_file(str(conf))
    assert (conn.name, conn.host, conn.port, conn.scheme, conn.api_key) == (
        "local", "127.0.0.1", 7999, "https", "first-token")
    assert conn.verify_ssl is False  # as upstream: the local API's certificate is usually self-signed


def test_local_without_auth_has_no_key(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "pvc.conf", listen={"address": "10.1.1.1"},
                      authentication={"enabled": False}, token=[{"token": "unused-token"}],
                      ssl={"enabled": False})
    conn = store.read_config_file(str(conf))
    assert (conn.host, conn.port, conn.scheme, conn.api_key) == ("10.1.1.1", 7370, "http", None)


def test_local_is_https_by_default_and_verified_against_the_node_ca(tmp_path: Path) -> None:
    """pvcapid serves TLS unless api.ssl.enabled is false; `local` verifies against the node's
    CA file when it can read it (upstream never verifies `local`)."""
    from pvc.core import pki

    conn = store.read_config_file(str(write_conf(tmp_path / "a.conf", ssl={
        "ca_certificate": str(tmp_path / "missing-ca.crt")})))
    assert (conn.scheme, conn.verify_ssl, conn.ca_file) == ("https", False, None)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(pki.make_ca("test").certificate)
    conn = store.read_config_file(str(write_conf(tmp_path / "b.conf", ssl={"ca_certificate": str(ca)})))
    assert (conn.scheme, conn.verify_ssl, conn.ca_file) == ("https", True, str(ca))


def test_ca_file_is_checked_stored_and_implies_https(tmp_path: Path) -> None:
    from pvc.core import pki

    data: dict = {}
    with pytest.raises(store.ConnectionStoreError, match=f"The CA file {tmp_path}/nope does not exist"):
        store.add_connection(data, "c", ca_file=str(tmp_path / "nope"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(store.ConnectionStoreError, match=r"junk\.pem holds no PEM certificate"):
        store.add_connection(data, "c", ca_file=str(tmp_path / "junk.pem"))
    assert data == {}
    (tmp_path / "ca.crt").write_bytes(pki.make_ca("test").certificate)
    conn = store.add_connection(data, "c", host="10.0.0.1", ca_file=str(tmp_path / "ca.crt"))
    assert conn.scheme == "https" and data["c"]["ca_file"] == str(tmp_path / "ca.crt")
    again = store.resolve_entry("c", data["c"], verify_ssl=True)
    assert again.ca_file == str(tmp_path / "ca.crt") and again.base_url == "https://10.0.0.1:7370/api/v1"
    store.add_connection(data, "plain", host="10.0.0.2")
    assert "ca_file" not in data["plain"]       # upstream's entry shape when unused


def test_implicit_local_only_when_config_exists(tmp_path: Path) -> None:
    env = {"PVC_CONFIG_FILE": str(tmp_path / "missing.conf")}
    assert store.all_connections({}, env) == {}
    write_conf(tmp_path / "pvc.conf")
    env = {"PVC_CONFIG_FILE": str(tmp_path / "pvc.conf")}
    assert list(store.all_connections({}, env)) == ["local"]


def test_upstream_cfgfile_entries_are_resolved(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "node.conf", listen={"address": "10.0.0.5", "port": 7370})
    data = {"local": {"cfgfile": str(conf)}, "gone": {"cfgfile": str(tmp_path / "nope")}}
    conns = store.all_connections(data, {"PVC_CONFIG_FILE": "/nonexistent"})
    assert list(conns) == ["local"] and conns["local"].host == "10.0.0.5"
    with pytest.raises(store.ConnectionStoreError, match="Cannot read"):
        store.all_connections(data, {}, strict=True)


def test_select_connection_rules(tmp_path: Path) -> None:
    none_env = {"PVC_CONFIG_FILE": str(tmp_path / "missing.conf")}
    with pytest.raises(store.ConnectionStoreError, match="No connection specified"):
        store.select_connection({}, None, none_env)
    one = {"only": {"host": "h1", "port": 1, "scheme": "http", "description": "d", "api_key": None}}
    assert store.select_connection(one, None, none_env).name == "only"
    two = {**one, "other": {"host": "h2"}}
    with pytest.raises(store.ConnectionStoreError, match="several are defined"):
        store.select_connection(two, None, none_env)
    assert store.select_connection(two, "other", none_env).host == "h2"
    with pytest.raises(store.ConnectionStoreError, match=r'Invalid connection "x".*known: only, other'):
        store.select_connection(two, "x", none_env)
    write_conf(tmp_path / "pvc.conf")
    local_env = {"PVC_CONFIG_FILE": str(tmp_path / "pvc.conf")}
    assert store.select_connection(two, None, local_env).name == "local"
    assert store.select_connection({}, "local", local_env).name == "local"


def test_verify_ssl_from_environment() -> None:
    data = {"c": {"host": "h", "scheme": "https"}}
    assert store.select_connection(data, "c", {}).verify_ssl is True
    assert store.select_connection(data, "c", {"PVC_CLIENT_VERIFY_SSL": "false"}).verify_ssl is False


# -- the commands, end to end on the file system -------------------------------------------------------

CLEAN_ENV: dict[str, str | None] = {name: None for name in (
    "PVC_CONNECTION", "PVC_DEBUG", "PVC_QUIET", "PVC_SILENT", "PVC_UNSAFE", "PVC_COLOUR")}


def run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj={"env": env, "no_audit": True}, env=CLEAN_ENV)


def test_connection_commands(tmp_path: Path) -> None:
    env = {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}
    result = run(env, "connection", "add", "c1", "-d", "Cluster one", "-a", "10.0.0.9", "-p", "7000",
                 "-k", "abc123", "--ssl")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == 'Added connection "c1" (https://10.0.0.9:7000) to client database'
    assert stat.S_IMODE((tmp_path / "pvc.json").stat().st_mode) == 0o600

    listed = json.loads(run(env, "connection", "list", "-f", "json").stdout)
    assert listed == [{"name": "c1", "description": "Cluster one", "address": "10.0.0.9", "port": 7000,
                       "scheme": "https", "api_key": "xxxxxx"}]
    shown = json.loads(run(env, "connection", "list", "-k", "-f", "json").stdout)
    assert shown[0]["api_key"] == "abc123"
    assert run(env, "connection", "list", "-f", "raw").stdout == "c1\n"
    pretty = run(env, "connection", "list").stdout
    assert "Cluster one" in pretty and "abc123" not in pretty

    result = run(env, "connection", "remove", "c1")
    assert result.exit_code == 0 and "Removed connection" in result.stdout
    result = run(env, "connection", "remove", "c1")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'No connection found with name "c1" in local database'
    assert result.stdout == ""


def test_unknown_connection_is_one_line(tmp_path: Path) -> None:
    env = {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}
    result = run(env, "-c", "nope", "node", "list")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert 'Invalid connection "nope"' in result.stderr
    assert "Traceback" not in result.output


def test_local_uses_the_token_file_when_the_config_has_no_token(tmp_path: Path) -> None:
    """Authentication is on by default; with no api.token, `local` reads pvcapid's token file."""
    token_file = tmp_path / "api-token"
    token_file.write_text("# made by pvcapid\n" + "t" * 43 + "\n")
    conf = write_conf(tmp_path / "pvc.conf", token_file=str(token_file))
    assert store.read_config_file(str(conf)).api_key == "t" * 43
    missing = write_conf(tmp_path / "other.conf", token_file=str(tmp_path / "nope"))
    assert store.read_config_file(str(missing)).api_key is None   # no key: the API answers 401
    configured = write_conf(tmp_path / "third.conf", token_file=str(token_file),
                            token=[{"token": "c" * 32}])
    assert store.read_config_file(str(configured)).api_key == "c" * 32


def test_the_api_key_can_come_from_a_file_or_stdin_not_the_command_line(tmp_path: Path) -> None:
    env = {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}
    key_file = tmp_path / "api-token"
    key_file.write_text("# the cluster's token\nk0123456789abcdef0123456789abcdef\n")
    assert run(env, "connection", "add", "c1", "--api-key-file", str(key_file)).exit_code == 0
    result = CliRunner().invoke(cli, ["connection", "add", "c2", "--api-key-file", "-"],
                                obj={"env": env, "no_audit": True}, env=CLEAN_ENV, input="from-stdin-key\n")
    assert result.exit_code == 0, result.output
    listed = json.loads(run(env, "connection", "list", "-k", "-f", "json").stdout)
    shown = {c["name"]: c["api_key"] for c in listed}
    assert shown == {"c1": "k0123456789abcdef0123456789abcdef", "c2": "from-stdin-key"}
    both = run(env, "connection", "add", "c3", "-k", "x", "--api-key-file", str(key_file))
    assert both.exit_code != 0 and "not both" in both.output
    key_file.write_text("# nothing\n")
    empty = run(env, "connection", "add", "c3", "--api-key-file", str(key_file))
    assert empty.exit_code != 0 and "holds no API key" in empty.output
