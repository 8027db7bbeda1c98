"""TLS for the API against a real pvcapid (real ZooKeeper, real uvicorn, the real `pvc` CLI).

With api.ssl enabled and no certificate files, pvcapid makes a CA and a certificate (keys 0600)
and serves only HTTPS: a plain-HTTP client gets no API answer, the CLI with the cluster CA works,
and the CLI without it (or with another CA) refuses with a message naming the host and CA file.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from pvc.core import pki
from tests.conftest import API_TOKEN, Daemon, start_daemon, wait_for

GLOBAL_ENV = ("PVC_CONNECTION", "PVC_CLIENT_VERIFY_SSL", "PVC_CONFIG_FILE", "PVC_CLIENT_DIR")


def _ssl_section(directory: Path) -> dict[str, object]:
    return {"enabled": True, "certificate": str(directory / "api.crt"),
            "private_key": str(directory / "api.key"), "ca_certificate": str(directory / "ca.crt"),
            "ca_key": str(directory / "ca.key")}


def _start_tls_api(daemons: list[Daemon], config_factory, ssl_dir: Path) -> tuple[Daemon, str]:
    config = config_factory("hv1")
    settings = yaml.safe_load(config.read_text())
    settings["api"]["ssl"] = _ssl_section(ssl_dir)
    config.write_text(yaml.safe_dump(settings))
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    port = settings["api"]["listen"]["port"]

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        if not ((ssl_dir / "api.crt").exists() and "listening on" in daemon.output()):
            return False
        try:        # the line is logged just before uvicorn binds: wait for the port itself
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_for(up, 30, message="pvcapid to listen with TLS")
    return daemon, f"127.0.0.1:{port}"


def _pvc(client_dir: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GLOBAL_ENV}
    env.update({"PVC_CLIENT_DIR": str(client_dir),
                "PVC_CONFIG_FILE": str(config or client_dir / "none.conf")})
    return subprocess.run([sys.executable, "-m", "pvc.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_pvcapid_makes_its_certificates_and_serves_only_https(daemons, config_factory,
                                                              tmp_path: Path) -> None:
    ssl_dir = tmp_path / "ssl"
    daemon, address = _start_tls_api(daemons, config_factory, ssl_dir)
    for name in ("ca.key", "api.key"):
        mode = stat.S_IMODE((ssl_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    ca = (ssl_dir / "ca.crt").read_bytes()
    cert = (ssl_dir / "api.crt").read_bytes()
    pki.verify(cert, ca, ["127.0.0.1", "localhost"])
    assert pki.fingerprint(ca) in daemon.output()     # the log says which CA to trust

    # HTTPS verified against the generated CA answers, with and without a token as usual
    verify = ssl.create_default_context(cafile=str(ssl_dir / "ca.crt"))
    with httpx.Client(base_url=f"https://{address}/api/v1", verify=verify) as https:
        assert https.get("/").status_code == 200
        assert https.get("/node").status_code == 401
        assert https.get("/node", headers={"X-Api-Key": API_TOKEN}).status_code in (200, 404)
    # The system store does not know this CA: refused
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://{address}/api/v1/", timeout=5)
    # Plain HTTP gets no API answer at all (the token is never accepted in clear)
    with pytest.raises(httpx.HTTPError):
        response = httpx.get(f"http://{address}/api/v1/node", headers={"X-Api-Key": API_TOKEN},
                             timeout=5)
        raise AssertionError(f"plain HTTP answered {response.status_code}: {response.text[:200]}")

    # A restart keeps the same files (no new CA behind the clients' backs)
    daemon.stop()
    daemon2, _ = _start_tls_api(daemons, config_factory, ssl_dir)
    assert (ssl_dir / "ca.crt").read_bytes() == ca and (ssl_dir / "api.crt").read_bytes() == cert
    daemon2.stop()


def test_the_cli_verifies_the_api_against_the_ca_file(daemons, config_factory, tmp_path: Path) -> None:
    ssl_dir = tmp_path / "ssl"
    _daemon, address = _start_tls_api(daemons, config_factory, ssl_dir)
    host, port = address.split(":")
    client = tmp_path / "client"
    client.mkdir()

    added = _pvc(client, "connection", "add", "tls", "-a", host, "-p", port, "-k", API_TOKEN,
                 "--ca-file", str(ssl_dir / "ca.crt"))
    assert added.returncode == 0, added.stderr
    assert f"https://{host}:{port}" in added.stdout
    ok = _pvc(client, "-c", "tls", "node", "list", "-f", "json")
    assert ok.returncode == 0, ok.stderr
    # the implicit `local` connection (the node's own pvc.conf) verifies against the node's CA
    local = _pvc(tmp_path / "local-client", "node", "list", "-f", "json", config=_daemon.config)
    assert local.returncode == 0, local.stderr

    # Without the CA (system store): refused, naming the host and where it looked
    _pvc(client, "connection", "add", "nocA", "-a", host, "-p", port, "-k", API_TOKEN, "--ssl")
    refused = _pvc(client, "-c", "nocA", "node", "list")
    assert refused.returncode != 0
    assert f"TLS verification of the PVC API of connection \"nocA\" (host {host}) failed" in refused.stderr
    assert "the system CA store" in refused.stderr and "--ca-file" in refused.stderr
    assert "Traceback" not in refused.stderr

    # With another cluster's CA: refused, naming that CA file
    other = tmp_path / "other-ca.crt"
    other.write_bytes(pki.make_ca("another cluster").certificate)
    _pvc(client, "connection", "add", "other", "-a", host, "-p", port, "-k", API_TOKEN,
         "--ca-file", str(other))
    refused = _pvc(client, "-c", "other", "node", "list")
    assert refused.returncode != 0
    assert f"failed against the CA file {other}" in refused.stderr

    # Plain HTTP to the TLS API: no answer, and a hint
    _pvc(client, "connection", "add", "plain", "-a", host, "-p", port, "-k", API_TOKEN)
    refused = _pvc(client, "-c", "plain", "node", "list")
    assert refused.returncode != 0 and "Cannot reach the PVC API" in refused.stderr

    # A CA file that is not a certificate is refused when the connection is added
    (tmp_path / "junk").write_text("junk")
    bad = _pvc(client, "connection", "add", "bad", "-a", host, "--ca-file", str(tmp_path / "junk"))
    assert bad.returncode != 0 and "holds no PEM certificate" in bad.stderr
    assert "bad" not in _pvc(client, "connection", "list", "-f", "raw").stdout.split()


def test_a_half_present_certificate_is_refused_not_replaced(daemons, config_factory,
                                                            tmp_path: Path) -> None:
    """A certificate without its key (or the reverse) stops pvcapid with the missing file named;
    it never silently issues a new identity over an administrator's file."""
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    ca = pki.make_ca("admin CA")
    pair = pki.issue_server(ca, "api", ["127.0.0.1"])
    (ssl_dir / "api.crt").write_bytes(pair.certificate)
    config = config_factory("hv1")
    settings = yaml.safe_load(config.read_text())
    settings["api"]["ssl"] = _ssl_section(ssl_dir)
    config.write_text(yaml.safe_dump(settings))
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    assert daemon.proc is not None and daemon.proc.wait(30) == 1
    assert f"the API's TLS file {ssl_dir / 'api.key'} is missing" in daemon.output()
    assert sorted(p.name for p in ssl_dir.iterdir()) == ["api.crt"]
    assert (ssl_dir / "api.crt").read_bytes() == pair.certificate
