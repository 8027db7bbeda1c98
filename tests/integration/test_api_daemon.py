"""pvcapid as a process: configuration errors, clean SIGTERM, TLS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer, free_port
from tests.conftest import API_TOKEN, Api, start_daemon, wait_for, write_config


def run_daemon(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_CONFIG_FILE": str(config)}
    return subprocess.run([sys.executable, "-m", "pvc.api.daemon"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_bad_config_exits_1_with_the_message(tmp_path: Path) -> None:
    config = tmp_path / "pvc.conf"
    config.write_text(yaml.safe_dump({"cluster": {"name": "x", "coordinator_nodes": ["hv1"]},
                                      "zookeeper": {"hosts": ["127.0.0.1:2181"], "acl": False},
                                      "api": {"listen": {"port": "seventy"}}}))
    result = run_daemon(config)
    assert result.returncode == 1
    assert "api.listen.port" in result.stderr
    assert str(config) in result.stderr
    missing = run_daemon(tmp_path / "nope.conf")
    assert missing.returncode == 1
    assert "cannot read configuration file" in missing.stderr


def test_a_short_token_in_the_token_file_is_a_config_error(tmp_path: Path) -> None:
    """Without api.token, pvcapid reads api.token_file; its tokens are held to the same minimum."""
    token_file = tmp_path / "api-token"
    token_file.write_text("too-short-token\n")
    config = tmp_path / "pvc.conf"
    config.write_text(yaml.safe_dump({"cluster": {"name": "x", "coordinator_nodes": ["hv1"]},
                                      "zookeeper": {"hosts": ["127.0.0.1:2181"], "acl": False},
                                      "api": {"token_file": str(token_file)}}))
    result = run_daemon(config)
    assert result.returncode == 1
    assert f"api.token_file {token_file}: token 1 is shorter than 32 characters" in result.stderr
    assert "too-short-token" not in result.stderr


def test_sigterm_exits_cleanly(api: Api) -> None:
    assert api.get("/status").status_code == 200
    assert api.daemon.stop() == 0
    assert "pvcapid stopped" in api.daemon.output()
    assert "Traceback" not in api.daemon.output()


def test_tls(daemons, config_factory, zk: ZK, tmp_path: Path) -> None:
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = config_factory("hv1", api={"ssl": {"enabled": True, "certificate": str(cert),
                                                "private_key": str(key)}})
    port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
    trust = ssl.create_default_context(cafile=str(cert))
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"https://127.0.0.1:{port}/api/v1"

    def up() -> bool:
        assert daemon.running, daemon.output()
        try:
            return httpx.get(base + "/", verify=trust, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid over TLS")
    response = httpx.get(base + "/status", headers={"X-Api-Key": API_TOKEN}, verify=trust)
    assert response.status_code == 200
    with httpx.Client(base_url=base, verify=trust) as client:
        login = client.post("/login", data={"token": API_TOKEN})
        assert "secure" in login.headers["set-cookie"].lower()  # session cookies only over TLS
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/v1/", timeout=2)
        plain_ok = True
    except httpx.HTTPError:
        plain_ok = False
    assert not plain_ok
    assert daemon.stop() == 0


@pytest.mark.slow
def test_zookeeper_outage_is_503_and_the_api_recovers(daemons, tmp_path: Path) -> None:
    """A private ZooKeeper (the shared one must stay up): stop it, expect 503s, restart it."""
    server = ZooKeeperServer(tmp_path / "zk", free_port()).start()
    try:
        config = write_config(tmp_path / "pvc.conf", [server.address], "/outage")
        port = yaml.safe_load(config.read_text())["api"]["listen"]["port"]
        daemon = start_daemon(daemons, "pvc.api.daemon", config)
        base = f"http://127.0.0.1:{port}/api/v1"
        headers = {"X-Api-Key": API_TOKEN}

        def up() -> bool:
            assert daemon.running, daemon.output()
            try:
                return httpx.get(base + "/status", headers=headers, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, message="pvcapid")
        server.stop()
        response = httpx.get(base + "/status", headers=headers, timeout=90)
        assert response.status_code == 503
        assert response.json()["message"].startswith("ZooKeeper unavailable")
        assert httpx.get(base + "/", timeout=5).status_code == 200  # needs no ZooKeeper
        server.start()
        wait_for(up, 60, 0.5, "pvcapid to answer again after ZooKeeper came back")
        assert daemon.running
    finally:
        server.stop()
