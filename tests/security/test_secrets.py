"""Secrets at rest (DESIGN D14), against real processes and a real ZooKeeper: a node's IPMI password
is sealed with the cluster key in `/fenceinfo/<node>`, opened by the primary only to fence (and
handed to ipmitool in its environment), never in a backup, never written back by a restore, and
masked in every log line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.fence import DispatchAgent, IpmiAgent
from pvc.core import schema, secrets
from pvc.core.secrets import SecretError
from pvc.core.zk import ZK
from pvc.node.fencing import FencePolicy, HAMonitor
from pvc.node.hastore import ZKHAStore
from tests.conftest import Api, start_daemon, wait_for
from tests.integration.test_fence_agents import FakeBMC
from tests.integration.test_fence_agents import wait_for as finished

PASSWORD = "bmc-Pa55word-do-not-leak"
ZK_PASSWORD = "zk-digest-password-do-not-leak"


def key_file(directory: Path, name: str = "cluster.key") -> Path:
    path = directory / name
    secrets.write_key_file(path)
    return path


def ipmi_node_config(config_factory, tmp_path: Path, key: Path, node: str = "hv1") -> Path:
    """A node fenced over IPMI, its BMC password in a root-only file."""
    password_file = tmp_path / f"{node}-ipmi.pw"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    return config_factory(node, cluster={"key_file": str(key)},
                          fencing={"agent": "ipmi", "ipmi": {"password_file": str(password_file)}})


def fence_with(zk: ZK, node: str, key: Path | None) -> Any:
    """What the primary's HA monitor does at fence time: read the node's fence info, open its
    secrets with this key file, start the IPMI agent (a fake ipmitool first on PATH)."""
    monitor = HAMonitor("hv9", ZKHAStore(zk), DispatchAgent({"ipmi": IpmiAgent(status_tries=3,
                                                                              status_interval=0.05)}),
                        storage=None, policy=FencePolicy(key_file=str(key) if key else None),  # type: ignore[arg-type]
                        clock=time.time)
    return finished(monitor._start_agent(node, ZKHAStore(zk).fence_info(node)))


def test_fence_password_is_sealed_in_zookeeper_and_opened_only_to_fence(
        zk: ZK, daemons, config_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = key_file(tmp_path)
    node = start_daemon(daemons, "pvc.node.daemon", ipmi_node_config(config_factory, tmp_path, key))
    raw = wait_for(lambda: (zk.get_raw(schema.node_fence_info("hv1")) or (b"",))[0], 30,
                   message="hv1 to publish its fence info")
    assert PASSWORD.encode() not in raw
    info = json.loads(raw)
    assert secrets.is_sealed(info["password"]) and info["agent"] == "ipmi"
    assert secrets.load_key(key).open(info["password"]) == PASSWORD
    # Nothing else under the root holds it either (node document, logs, faults...).
    assert not [p for p, (data, _eph) in zk.walk("/").items() if PASSWORD.encode() in data]

    # The primary opens it at fence time; ipmitool gets it in its environment, never in argv.
    bmc = FakeBMC(tmp_path, monkeypatch)
    outcome = fence_with(zk, "hv1", key)
    assert outcome.success, outcome.message
    assert bmc.calls() and all(call["env_password"] == PASSWORD for call in bmc.calls())
    assert not any(PASSWORD in arg for call in bmc.calls() for arg in call["argv"])
    node.stop()
    assert PASSWORD not in node.output()


def test_a_primary_with_the_wrong_key_or_none_fences_nothing_and_says_why(
        zk: ZK, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    right, wrong = key_file(tmp_path, "right.key"), key_file(tmp_path, "wrong.key")
    sealed = secrets.load_key(right).seal(PASSWORD)
    zk.put(schema.node_fence_info("hv2"), {"agent": "ipmi", "node": "hv2", "hostname": "hv2-lom",
                                           "username": "admin", "password": sealed})
    before = zk.get_raw(schema.node_fence_info("hv2"))
    bmc = FakeBMC(tmp_path, monkeypatch)
    outcome = fence_with(zk, "hv2", wrong)
    assert not outcome.success
    assert f"does not open with the cluster key {wrong}" in outcome.message
    outcome = fence_with(zk, "hv2", tmp_path / "missing.key")
    assert not outcome.success and "missing.key (cluster.key_file): missing" in outcome.message
    outcome = fence_with(zk, "hv2", None)
    assert not outcome.success and "no cluster.key_file" in outcome.message
    assert bmc.calls() == []                       # ipmitool never ran with a guessed password
    assert zk.get_raw(schema.node_fence_info("hv2")) == before


def test_a_bmc_that_echoes_the_password_does_not_put_it_in_the_fence_record(
        zk: ZK, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence outcome (stored in /fencing/<node>, shown by the API) carries ipmitool's stderr:
    the password the primary opened is masked in it."""
    key = key_file(tmp_path)
    sealed = secrets.load_key(key).seal(PASSWORD)
    zk.put(schema.node_fence_info("hv2"), {"agent": "ipmi", "node": "hv2", "hostname": "hv2-lom",
                                           "username": "admin", "password": sealed})
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ipmitool"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    "print('Error: login as admin/' + os.environ['IPMI_PASSWORD'] + ' refused',\n"
                    "      file=sys.stderr)\n"
                    "sys.exit(1)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    outcome = fence_with(zk, "hv2", key)
    assert not outcome.success and "login as admin/*** refused" in outcome.message
    assert PASSWORD not in outcome.message


def test_a_node_with_a_secret_but_no_key_refuses_to_start(
        zk: ZK, daemons, config_factory, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cluster.key"
    node = start_daemon(daemons, "pvc.node.daemon", ipmi_node_config(config_factory, tmp_path, missing))
    assert node.proc is not None and node.proc.wait(30) == 1
    assert f"cluster key {missing} (cluster.key_file): missing" in node.output()
    assert zk.get(schema.node_fence_info("hv1"), None) is None       # nothing published
    assert not zk.exists(schema.node("hv1"))
    # A key other users can read is refused too, naming the fix.
    loose = key_file(tmp_path, "loose.key")
    loose.chmod(0o644)
    node = start_daemon(daemons, "pvc.node.daemon", ipmi_node_config(config_factory, tmp_path, loose, "hv2"))
    assert node.proc is not None and node.proc.wait(30) == 1
    assert f"chmod 600 {loose}" in node.output()


def test_a_coordinator_that_could_not_open_a_sealed_fence_secret_refuses_to_start(
        zk: ZK, daemons, config_factory, tmp_path: Path) -> None:
    key = key_file(tmp_path)
    sealed = secrets.load_key(key).seal(PASSWORD)
    zk.put(schema.node_fence_info("hv2"), {"agent": "ipmi", "node": "hv2", "hostname": "hv2-lom",
                                           "username": "admin", "password": sealed})
    missing = tmp_path / "elsewhere.key"
    config = config_factory("hv1", cluster={"key_file": str(missing)})
    node = start_daemon(daemons, "pvc.node.daemon", config)
    assert node.proc is not None and node.proc.wait(30) == 1
    assert ("coordinator hv1 may have to fence hv2, whose fence secrets are sealed, but: "
            f"cluster key {missing}") in node.output()
    assert not zk.exists(schema.node("hv1"))
    other = key_file(tmp_path, "other.key")                  # a key, but not the cluster's
    node = start_daemon(daemons, "pvc.node.daemon", config_factory("hv1", cluster={"key_file": str(other)}))
    assert node.proc is not None and node.proc.wait(30) == 1
    assert f"does not open with the cluster key {other}" in node.output()
    assert not zk.exists(schema.node("hv1"))


def test_backup_holds_no_fence_secret_or_session_and_restore_writes_none(
        api: Api, zk: ZK, tmp_path: Path) -> None:
    key = secrets.load_key(key_file(tmp_path))
    sealed = {"agent": "ipmi", "node": "hv1", "hostname": "hv1-lom", "username": "admin",
              "password": key.seal(PASSWORD)}
    zk.put(schema.node_fence_info("hv1"), sealed)
    # Written before secrets were sealed: plaintext.
    zk.put(schema.node_fence_info("hv2"), {**sealed, "node": "hv2", "password": PASSWORD})
    zk.put(schema.session("a" * 64), {"token_hmac": "x", "expires": 1})     # an API login session
    response = api.get("/backup")
    assert response.status_code == 200
    assert PASSWORD not in response.text and secrets.SEALED not in response.text
    data = json.loads(response.json())
    assert not [p for p in data if p.startswith((schema.FENCE_INFO + "/", schema.SESSIONS + "/"))]
    assert schema.ACL_MARKER not in data

    # A backup from before (or a forged one) carrying fence info: restored data, never the secret.
    data[schema.node_fence_info("hv1")] = json.dumps({**sealed, "password": "attacker-chosen"})
    data[schema.node_fence_info("hv3")] = json.dumps({**sealed, "node": "hv3", "password": PASSWORD})
    data[schema.session("b" * 64)] = json.dumps({"token_hmac": "x", "expires": 2 ** 40})  # a revoked one
    fence_before = {n: zk.get_raw(schema.node_fence_info(n)) for n in ("hv1", "hv2")}
    response = api.post("/restore", data={"yes-i-really-mean-it": "yes", "cluster_data": json.dumps(data)})
    assert response.status_code == 200, response.text
    assert not zk.exists(schema.node_fence_info("hv3")) and not zk.exists(schema.session("b" * 64))
    assert {n: zk.get_raw(schema.node_fence_info(n)) for n in ("hv1", "hv2")} == fence_before


def test_every_log_line_masks_known_secrets(config_factory, tmp_path: Path) -> None:
    """A daemon's logging set-up (secrets.for_daemon): a secret in a message, its arguments or a
    traceback is masked on stdout and in the log file alike."""
    key = key_file(tmp_path)
    config = ipmi_node_config(config_factory, tmp_path, key)
    text = config.read_text().replace("acl: false", f"auth: {{username: pvc, password: {ZK_PASSWORD}}}")
    log_file = tmp_path / "daemon.log"
    config.write_text(text + f"\nlogging: {{level: info, stdout: true, file: {log_file}}}\n")
    script = f"""
import logging
from pvc.core import secrets
from pvc.core.config import load_config
from pvc.core.logs import configure_logging
settings = secrets.for_daemon(load_config())
log = configure_logging(settings, "pvcnoded")
log.warning("zk %s ipmi %s token %s", settings.zookeeper.auth.password, {PASSWORD!r},
            settings.api.token[0].token)
logging.getLogger("kazoo.client").error("auth " + settings.zookeeper.auth.password)
try:
    raise RuntimeError("opened {PASSWORD}")
except RuntimeError:
    log.exception("fence failed")

class Shape(logging.Filter):        # filters further on still get the arguments as a tuple
    def filter(self, record):
        print("ARGS", type(record.args).__name__, record.args, flush=True)
        return True

access = logging.getLogger("uvicorn.access")
access.addFilter(Shape())
access.warning('%s - "%s %s HTTP/%s" %d', "127.0.0.1", "GET", "/api/v1/?k=" + settings.api.token[0].token,
               "1.1", 200)
"""
    from tests.conftest import API_TOKEN

    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PVC_CONFIG_FILE": str(config)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ARGS tuple ('127.0.0.1', 'GET', '/api/v1/?k=***', '1.1', 200)" in done.stdout
    for output in (done.stdout + done.stderr, log_file.read_text()):
        assert "zk *** ipmi *** token ***" in output
        assert "RuntimeError: opened ***" in output and "auth ***" in output
        assert '"GET /api/v1/?k=*** HTTP/1.1" 200' in output
        for secret in (PASSWORD, ZK_PASSWORD, API_TOKEN, key.read_text().strip()):
            assert secret not in output


def test_wrong_key_and_tampering_fail_clearly(tmp_path: Path) -> None:
    right, wrong = key_file(tmp_path, "a.key"), key_file(tmp_path, "b.key")
    sealed = secrets.load_key(right).seal(PASSWORD)
    with pytest.raises(SecretError, match=f"does not open with the cluster key {wrong}"):
        secrets.load_key(wrong).open(sealed)
    token = sealed[secrets.SEALED]
    tampered = {secrets.SEALED: token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]}
    with pytest.raises(SecretError, match=r"sealed with another key .* or was altered"):
        secrets.load_key(right).open(tampered)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    with pytest.raises(SecretError, match=f"cluster key {garbage}: not a Fernet key"):
        secrets.load_key(garbage)
    with pytest.raises(SecretError, match="already exists; refusing to replace it"):
        secrets.write_key_file(right)
    assert secrets.load_key(right).open(sealed) == PASSWORD
