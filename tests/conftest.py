"""Shared fixtures: a real ZooKeeper server, per-test cluster roots, config files, daemons.

One private ZooKeeper (Debian's jars, loopback, free port) serves the whole run; every test gets
its own chroot so tests never see each other's state.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, settings

from pvc.core import schema
from pvc.core.zk import ZK
from pvc.lab.zkserver import ZooKeeperServer, free_port

API_TOKEN = "test-token-0123456789-abcdefghijklmnop"

# Timing is not what property tests check: a loaded 2-core CI machine must not fail them.
settings.register_profile("pvc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pvc")


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    # tickTime 1 s lets tests use session timeouts down to 2 s (ZooKeeper allows 2-20 ticks).
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"), free_port(), tick_ms=1000).start()
    yield server
    server.stop()


@pytest.fixture
def zk_root() -> str:
    return f"/test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def zk(zk_server: ZooKeeperServer, zk_root: str) -> Iterator[ZK]:
    """A session on a fresh, migrated cluster root."""
    client = ZK([zk_server.address], zk_root, session_timeout=6).start()
    schema.migrate(client)
    yield client
    client.stop()


def write_config(path: Path, zk_hosts: list[str], root: str, node: str = "hv1",
                 coordinators: tuple[str, ...] = ("hv1", "hv2", "hv3"), **sections: Any) -> Path:
    """A pvc.conf for tests; keyword sections are merged over the defaults."""
    config: dict[str, Any] = {
        "cluster": {"name": "test", "coordinator_nodes": list(coordinators)},
        # ZooKeeper ACLs explicitly off: the `zk` fixture and many tests open sessions without
        # credentials on the same root. tests/security/test_zk_acl.py and test_secrets.py run
        # daemons and sessions with credentials (the default).
        "zookeeper": {"hosts": zk_hosts, "root": root, "session_timeout": 4, "acl": False},
        "node": {"name": node},
        "timer": {"keepalive_interval": 1},
        "logging": {"level": "info", "stdout": True},
        "api": {
            "listen": {"address": "127.0.0.1", "port": free_port()},
            "authentication": {"enabled": True, "secret_key": "s3cret"},
            "token": [{"description": "tests", "token": API_TOKEN}],
            # TLS is on by default; integration tests speak plain HTTP to a loopback pvcapid
            # (tests/security/test_tls.py covers TLS against a real pvcapid).
            "ssl": {"enabled": False},
        },
        "hypervisor": {"libvirt_uri": "test:///default"},
        # Node daemons in tests do not spawn pvcapid; the `api` fixture runs it directly.
        # No Ceph in integration tests (the lab and system tests have one).
        "subsystem": {"enable_api": False, "enable_storage": False, "enable_networking": False},
        "path": {"dynamic_directory": str(path.parent / "run")},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


class Daemon:
    """A PVC daemon (`python -m <module>`) as a real process with its own config file.

    Forked from a server that imported the daemons once (tests/forking.py: ~1.5 s less per start,
    over a hundred starts per run); PVC_TEST_DAEMON_EXEC=1 starts a fresh interpreter instead."""

    def __init__(self, module: str, config: Path, log: Path) -> None:
        self.module, self.config, self.log = module, config, log
        self.proc: Any = None       # subprocess.Popen, or tests.forking.ForkedProcess (same calls)

    def start(self) -> Daemon:
        env = {**os.environ, "PVC_CONFIG_FILE": str(self.config), "PYTHONUNBUFFERED": "1"}
        from tests import forking

        if not os.environ.get("PVC_TEST_DAEMON_EXEC") and forking.usable():
            self.proc = forking.ForkedProcess(self.module, env, str(self.log))
            return self
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> int | None:
        if not self.running:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Collects daemons a test starts and kills whatever is still running at the end."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def config_factory(tmp_path: Path, zk_server: ZooKeeperServer, zk_root: str):
    def make(node: str = "hv1", **sections: Any) -> Path:
        directory = tmp_path / node
        directory.mkdir(exist_ok=True)
        return write_config(directory / "pvc.conf", [zk_server.address], zk_root, node=node, **sections)

    return make


def start_daemon(daemons: list[Daemon], module: str, config: Path) -> Daemon:
    daemon = Daemon(module, config, config.parent / f"{module.rsplit('.', 2)[1]}.log").start()
    daemons.append(daemon)
    return daemon


def raw_task(zk: ZK, kind: str, args: dict[str, Any] | None = None, target: str = "primary",
             total: int = 1) -> Any:
    """A task document written directly, as an older or foreign writer would (no argument check
    of pvc.core.taskkinds): for tests of the task routes and of the worker's own checks."""
    from pvc.cluster import tasks
    from pvc.core.records import TaskRecord

    task = TaskRecord(id=tasks.new_task_id(), kind=kind, args=args or {}, target=target, total=total)
    zk.create(schema.task(task.id), task.doc())
    return task


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    """Poll until predicate() is truthy; return its value (not a timing assertion: a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Api:
    """A running pvcapid and an HTTP client for it."""

    def __init__(self, daemon: Daemon, base: str) -> None:
        self.daemon = daemon
        self.base = base
        self.http = httpx.Client(base_url=base + "/api/v1", headers={"X-Api-Key": API_TOKEN}, timeout=30)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.put(path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)


@pytest.fixture
def api(daemons: list[Daemon], config_factory, zk: ZK) -> Iterator[Api]:
    """pvcapid as a real process on a free loopback port, against this test's cluster root."""
    config = config_factory("hv1")
    settings = yaml.safe_load(config.read_text())
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{settings['api']['listen']['port']}"

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        try:
            return httpx.get(base + "/api/v1/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid to answer")
    client = Api(daemon, base)
    yield client
    client.http.close()
    daemon.stop()


# -- the lab cluster ------------------------------------------------------------------------------
# One session-scoped lab for every test that needs real nodes (tests/system, tests/security):
# fixtures defined here, at the root, are shared, so a run builds one lab, not one per directory.

LAB_NAME = "pst"


def _lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts)"
    if os.environ.get("PVC_TEST_SKIP_LAB"):
        return "PVC_TEST_SKIP_LAB is set (a quick run without the lab)"
    return None


@pytest.fixture(scope="session")
def lab() -> Iterator[Any]:
    reason = _lab_skip_reason()
    if reason:
        pytest.skip(reason)
    import tempfile

    from pvc.lab.main import lab_down, lab_up

    # Keep the CLI connection the lab adds out of the user's own store.
    os.environ.setdefault("PVC_CLIENT_DIR", tempfile.mkdtemp(prefix="pvc-client-"))
    # One test session at a time owns the test labs: a second run on the same machine would
    # tear down this one's lab ("leftovers") under its feet. It waits here instead.
    os.makedirs(os.path.dirname(LAB_LOCK), exist_ok=True)
    with open(LAB_LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        lab_down(LAB_NAME)  # leftovers of an interrupted run
        try:
            # a chaos lab (size-limited state directories): the chaos tests share it
            yield lab_up(LAB_NAME, 3, chaos=True)
        finally:
            if not os.environ.get("PVC_LAB_KEEP"):     # keep it to look at after a failure
                lab_down(LAB_NAME)


@pytest.fixture(scope="session")
def lab_api(lab: Any) -> Iterator[httpx.Client]:
    """An HTTPS client of the lab's API (verified against the lab's CA only), authenticated
    with the lab's token."""
    from pvc.lab import labtls

    client = labtls.api_client(lab, timeout=240)
    yield client
    client.close()


LAB2_NAME = "pst2"
LAB_LOCK = "/run/lock/pvc-test-labs.lock"


@pytest.fixture(scope="session")
def lab2(lab: Any) -> Iterator[Any]:
    """A second, one-node lab beside `lab`: sends between two clusters, two labs side by side.
    Up once per run (not once per test module), and its tests run last (below), so it is up
    only while they run. Its teardown checks that `down` leaves no trace and is safe twice."""
    from pvc.lab.main import lab_down, lab_up
    from tests.system.helpers import lab_traces

    lab_down(LAB2_NAME)  # leftovers of an interrupted run
    try:
        yield lab_up(LAB2_NAME, 1)
    finally:
        if not os.environ.get("PVC_LAB_KEEP"):
            lab_down(LAB2_NAME)
            left = lab_traces(LAB2_NAME)
            assert left == [], f"pvc-lab down left traces of {LAB2_NAME}: {left}"
            assert lab_down(LAB2_NAME), "a second pvc-lab down failed"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the lab run last and together (security, then system), so the one lab is up
    only while they run and nothing else competes with it for the machine's two cores; those
    that also need the second lab run at the very end, so it is up once and only then. The
    chaos tests (faults injected, nodes fenced) come after the other tests of the first lab, so
    whatever they leave behind cannot make an unrelated test fail."""
    def key(item: pytest.Item) -> tuple[bool, bool, bool]:
        names = getattr(item, "fixturenames", ())
        return "lab" in names, "lab2" in names, "/test_chaos" in item.nodeid

    items.sort(key=key)


_CALL_FAILED = pytest.StashKey[bool]()
_LAB_LOG_MARKS = pytest.StashKey[dict[str, int]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remembers a failed call (the lab is healed after it); a failed lab test's report carries
    what the lab's node daemons and ZooKeeper members logged while it ran (the lab and its logs
    go down with the run)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    log_dir = getattr(getattr(item, "funcargs", {}).get("lab"), "log_dir", None)
    if report.when == "setup" and report.passed and log_dir is not None:
        from tests.system.helpers import lab_log_marks

        item.stash[_LAB_LOG_MARKS] = lab_log_marks(log_dir)
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
        if report.failed and log_dir is not None and _LAB_LOG_MARKS in item.stash:
            from tests.system.helpers import lab_log_news

            for title, text in lab_log_news(log_dir, item.stash[_LAB_LOG_MARKS]):
                report.sections.append((title, text))


@pytest.fixture(autouse=True)
def _lab_healed_after_a_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A lab test that fails half-way may leave a node fenced, killed, frozen or cut off: heal the
    lab before the next test, so one failure is reported once and not as a cascade of failures
    and timeouts in every lab test after it. What was healed is reported as a warning."""
    yield
    if "lab" not in request.fixturenames or not request.node.stash.get(_CALL_FAILED, False):
        return
    from tests.system.helpers import heal_lab

    healed = heal_lab(request.getfixturevalue("lab"))
    if healed:
        import warnings

        warnings.warn(f"the lab was healed after {request.node.nodeid} failed: {'; '.join(healed)}",
                      stacklevel=1)


@pytest.fixture(scope="session", autouse=True)
def _host_config_untouched() -> Iterator[None]:
    """No test may write the host's own /etc/pvc (secure defaults generate keys, tokens and
    certificates there when a test config forgets to point them elsewhere)."""
    before = sorted(str(p) for p in Path("/etc/pvc").rglob("*")) if Path("/etc/pvc").exists() else None
    yield
    after = sorted(str(p) for p in Path("/etc/pvc").rglob("*")) if Path("/etc/pvc").exists() else None
    assert after == before, f"the tests wrote into the host's /etc/pvc: {after}"
