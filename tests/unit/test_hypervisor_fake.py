"""The hypervisor contract, run against FakeHypervisor and against libvirt's built-in test driver.

One suite for both keeps the fake honest: whatever the reconciler's unit tests and the HA
simulator learn from the fake holds for LibvirtHypervisor too. Calls the test driver cannot make
(hot-plug, migration) are skipped with the driver's own reason; the lab test does them for real.
Then the fake's failure-injection hooks, and LibvirtHypervisor's own parts (KVM detection,
reconnection, XML helpers).
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pvc.adapters import hypervisor
from pvc.adapters.hypervisor import (
    HOST_RESOURCE_KEYS,
    DomainExists,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    LibvirtHypervisor,
    Unsupported,
)
from pvc.adapters.hypervisor.fake import FakeHypervisor, FakeHypervisorNetwork

T = TypeVar("T")
STATS_KEYS = {"state", "maxmem", "livemem", "cpus", "cputime", "mem_stats", "cpu_stats", "disk_stats",
              "net_stats"}
DISK_KEYS = {"name", "dev", "rd_req", "rd_bytes", "wr_req", "wr_bytes", "err"}
NIC_KEYS = {"name", "bridge", "rd_bytes", "rd_packets", "rd_errors", "rd_drops", "wr_bytes", "wr_packets",
            "wr_errors", "wr_drops"}


def domain_xml(name: str, uuid: str, vcpus: int = 1, max_vcpus: int = 2, mib: int = 128) -> str:
    # type='test' for libvirt's test driver; the fake reads only uuid/name/vcpu/memory/devices
    return f"""<domain type='test'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>{mib}</memory><currentMemory unit='MiB'>{mib}</currentMemory>
  <vcpu current='{vcpus}'>{max_vcpus}</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/tmp/{name}.img'/><target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='vmbr100'/></interface>
  </devices>
</domain>"""


@dataclass
class Subject:
    hv: Hypervisor
    kind: str
    peer: Hypervisor               # a second host to migrate to
    peer_uri: str
    started: list[str]

    def boot(self, vcpus: int = 1, max_vcpus: int = 2, mib: int = 128) -> str:
        uuid = str(uuidlib.uuid4())
        self.started.append(uuid)
        self.hv.start(domain_xml(f"ct-{uuid[:8]}", uuid, vcpus, max_vcpus, mib))
        return uuid


def unless_unsupported(subject: Subject, what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Unsupported as exc:
        pytest.skip(f"{subject.kind} cannot {what}: {exc}")


@pytest.fixture(params=["fake", "libvirt-test-driver"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    hv: Hypervisor
    peer: Hypervisor
    if request.param == "fake":
        net = FakeHypervisorNetwork()
        hv, peer = FakeHypervisor("fake:///hv1", net), FakeHypervisor("fake:///hv2", net)
        peer_uri = "fake:///hv2"
    else:
        hv = LibvirtHypervisor("test:///default")   # one shared instance per process: clean up
        (tmp_path / "node.xml").write_text("<node/>")
        peer_uri = f"test://{tmp_path / 'node.xml'}"  # a private test-driver instance per open
        peer = LibvirtHypervisor(peer_uri)
    subject = Subject(hv, request.param, peer, peer_uri, [])
    yield subject
    for uuid in subject.started:
        for host in (hv, peer):
            try:
                host.destroy(uuid)
            except DomainNotFound:
                pass
    hv.close()
    peer.close()


def wait_stopped(hv: Hypervisor, uuid: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while hv.is_running(uuid):
        assert time.monotonic() < deadline, f"{uuid} still running after {timeout}s"
        time.sleep(0.05)


# ---- the contract ----------------------------------------------------------------------------


def test_start_then_list_and_inspect(subject: Subject) -> None:
    hv = subject.hv
    uuid = subject.boot()
    info = hv.list_domains()[uuid]
    assert (info.uuid, info.name, info.state, info.running) == (uuid, f"ct-{uuid[:8]}", "running", True)
    assert (info.vcpus, info.memory_mib, info.max_memory_mib) == (1, 128, 128)
    assert info.reason in ("booted", "unknown")
    assert hv.is_running(uuid)
    xml = hv.live_xml(uuid)
    assert uuid in xml and f"ct-{uuid[:8]}" in xml


def test_start_twice_is_refused(subject: Subject) -> None:
    uuid = subject.boot()
    with pytest.raises(DomainExists, match="already running"):
        subject.hv.start(domain_xml(f"ct-{uuid[:8]}", uuid))
    assert list(subject.hv.list_domains()).count(uuid) == 1


@pytest.mark.parametrize(("xml", "message"), [
    ("<domain", "malformed domain XML"),
    ("<network><name>n</name></network>", "not a libvirt domain XML"),
    ("<domain type='test'><name>x</name><memory>1024</memory></domain>", "no <uuid>"),
    (f"<domain type='test'><uuid>{uuidlib.uuid4()}</uuid><memory>1024</memory></domain>", "no <name>"),
    ("<domain type='test'><name>x</name><uuid>nope</uuid></domain>", "is not a UUID"),
])
def test_unusable_xml_is_refused_and_changes_nothing(subject: Subject, xml: str, message: str) -> None:
    before = set(subject.hv.list_domains())
    with pytest.raises(HypervisorError, match=message):
        subject.hv.start(xml)
    assert set(subject.hv.list_domains()) == before


def test_unknown_domains(subject: Subject) -> None:
    hv, missing = subject.hv, str(uuidlib.uuid4())
    assert hv.is_running(missing) is False
    assert hv.is_running("not-a-uuid") is False
    for call in (hv.live_xml, hv.stats, hv.shutdown, hv.destroy, lambda u: hv.set_vcpus(u, 1),
                 lambda u: hv.set_memory(u, 64)):
        with pytest.raises(DomainNotFound):
            call(missing)
    with pytest.raises(DomainNotFound, match="not a UUID"):
        hv.destroy("not-a-uuid")


def test_acpi_shutdown_stops_the_domain(subject: Subject) -> None:
    uuid = subject.boot()
    subject.hv.shutdown(uuid)
    wait_stopped(subject.hv, uuid)
    assert uuid not in subject.hv.list_domains()      # transient: gone once off


def test_destroy(subject: Subject) -> None:
    uuid = subject.boot()
    subject.hv.destroy(uuid)
    assert not subject.hv.is_running(uuid)
    assert uuid not in subject.hv.list_domains()
    with pytest.raises(DomainNotFound):
        subject.hv.destroy(uuid)


def test_stats_in_pvc_shape(subject: Subject) -> None:
    hv = subject.hv
    uuid = subject.boot()
    one = hv.stats(uuid)
    assert set(one) == STATS_KEYS
    assert (one["state"], one["maxmem"], one["livemem"], one["cpus"]) == ("RUNNING", 131072, 131072, 1)
    assert isinstance(one["cputime"], int) and one["cputime"] >= 0
    assert one["cpu_stats"]["cpu_time"] == one["cputime"]
    for disk in one["disk_stats"]:
        assert set(disk) == DISK_KEYS
    for nic in one["net_stats"]:
        assert set(nic) == NIC_KEYS
    everything = hv.all_stats()
    assert uuid in everything and set(everything[uuid]) == STATS_KEYS
    gone = subject.boot()
    hv.destroy(gone)
    assert gone not in hv.all_stats()


def test_live_vcpus_and_memory(subject: Subject) -> None:
    hv = subject.hv
    uuid = subject.boot(vcpus=1, max_vcpus=2, mib=128)
    hv.set_vcpus(uuid, 2)
    hv.set_memory(uuid, 64)
    info = hv.list_domains()[uuid]
    assert (info.vcpus, info.memory_mib, info.max_memory_mib) == (2, 64, 128)
    with pytest.raises(HypervisorError, match="exceed"):
        hv.set_vcpus(uuid, 3)
    with pytest.raises(HypervisorError):
        hv.set_vcpus(uuid, 0)
    assert hv.list_domains()[uuid].vcpus == 2


def test_hot_plug(subject: Subject) -> None:
    hv = subject.hv
    uuid = subject.boot()
    disk = ("<disk type='file' device='disk'><source file='/tmp/extra.img'/>"
            "<target dev='vdb' bus='virtio'/></disk>")
    unless_unsupported(subject, "hot-plug devices", lambda: hv.attach_device(uuid, disk))
    assert "vdb" in hv.live_xml(uuid)
    hv.detach_device(uuid, disk)
    assert "vdb" not in hv.live_xml(uuid)


def test_live_migration(subject: Subject) -> None:
    hv, peer = subject.hv, subject.peer
    uuid = subject.boot()
    seen: list[dict[str, int]] = []
    result = unless_unsupported(subject, "migrate", lambda: hv.migrate(
        uuid, subject.peer_uri, None, max_downtime_ms=100, timeout=30, progress=seen.append))
    assert not hv.is_running(uuid) and peer.is_running(uuid)
    assert peer.list_domains()[uuid].reason == "migrated"
    assert result.duration_s > 0
    assert result.downtime_ms is not None and result.downtime_ms >= 0
    with pytest.raises(DomainNotFound):
        hv.migrate(uuid, subject.peer_uri)                # not here any more


def test_failed_migration_leaves_the_domain_running(subject: Subject) -> None:
    uuid = subject.boot()
    with pytest.raises(HypervisorError):
        subject.hv.migrate(uuid, "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert subject.hv.is_running(uuid)


def test_host_resources(subject: Subject) -> None:
    res = subject.hv.host_resources()
    assert tuple(res) == HOST_RESOURCE_KEYS
    assert res["cpus"] > 0 and res["memory_mib"] > 0


def test_kvm_answer_is_a_bool(subject: Subject) -> None:
    assert isinstance(subject.hv.kvm_available(), bool)


def test_concurrent_callers(subject: Subject) -> None:
    """One adapter is shared by the reconciler, keepalive and migration threads."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                uuid = subject.boot()
                assert subject.hv.is_running(uuid)
                subject.hv.all_stats()
                subject.hv.destroy(uuid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


# ---- migration (the fake between two hosts; libvirt's test driver cannot) ----------------------


@pytest.fixture
def pair() -> tuple[FakeHypervisor, FakeHypervisor]:
    net = FakeHypervisorNetwork()
    return FakeHypervisor("fake:///hv1", net), FakeHypervisor("fake:///hv2", net)


def test_fake_live_migration(pair: tuple[FakeHypervisor, FakeHypervisor]) -> None:
    hv1, hv2 = pair
    uuid = str(uuidlib.uuid4())
    hv1.start(domain_xml("mig", uuid))
    seen: list[dict[str, int]] = []
    result = hv1.migrate(uuid, hv2.uri, "tcp://10.0.0.2", max_downtime_ms=100, progress=seen.append)
    assert not hv1.is_running(uuid) and hv2.is_running(uuid)
    assert hv2.list_domains()[uuid].reason == "migrated"
    assert result.downtime_ms is not None and 0 < result.downtime_ms <= 100
    assert result.duration_s > 0 and seen
    with pytest.raises(DomainNotFound):
        hv1.migrate(uuid, hv2.uri)                  # not here any more
    hv1.start(domain_xml("mig", uuid))              # split brain in the making...
    with pytest.raises(DomainExists, match="destination"):
        hv1.migrate(uuid, hv2.uri)                  # ...is refused before anything moves
    with pytest.raises(HypervisorError, match="same host"):
        hv1.migrate(uuid, hv1.uri)
    with pytest.raises(HypervisorUnavailable):
        hv1.migrate(uuid, "fake:///nowhere")


def test_libvirt_test_driver_cannot_migrate(tmp_path: Path) -> None:
    """Documents the gap the lab test fills: the test driver has no migration at all."""
    node = tmp_path / "node.xml"
    node.write_text("<node/>")                       # a second, private test-driver "host"
    hv = LibvirtHypervisor("test:///default")
    uuid = str(uuidlib.uuid4())
    hv.start(domain_xml(f"ct-{uuid[:8]}", uuid))
    try:
        with pytest.raises(Unsupported, match="not supported"):
            hv.migrate(uuid, f"test://{node}", max_downtime_ms=100)
        assert hv.is_running(uuid)
    finally:
        hv.destroy(uuid)
        hv.close()


# ---- the fake's failure injection --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fake_start_failure_then_success() -> None:
    hv = FakeHypervisor()
    uuid = str(uuidlib.uuid4())
    hv.fail_start(uuid=uuid)
    with pytest.raises(HypervisorError, match="injected"):
        hv.start(domain_xml("x", uuid))
    assert not hv.is_running(uuid)
    hv.start(domain_xml("x", uuid))
    assert hv.is_running(uuid)
    assert [c for c in hv.calls if c[0] == "start"] == [("start", uuid), ("start", uuid)]


def test_fake_migration_fails_n_times(pair: tuple[FakeHypervisor, FakeHypervisor]) -> None:
    """The caller's "up to 3 live attempts" loop, against a migration that fails twice."""
    hv1, hv2 = pair
    uuid = str(uuidlib.uuid4())
    hv1.start(domain_xml("m", uuid))
    hv1.fail_migrations(2)
    outcomes = []
    for _attempt in range(3):
        try:
            hv1.migrate(uuid, hv2.uri, max_downtime_ms=300)
            outcomes.append("ok")
            break
        except HypervisorError:
            outcomes.append("failed")
            assert hv1.is_running(uuid) and not hv2.is_running(uuid)   # stays put on failure
    assert outcomes == ["failed", "failed", "ok"]
    assert hv2.is_running(uuid)


def test_fake_migration_timeout_and_downtime(pair: tuple[FakeHypervisor, FakeHypervisor]) -> None:
    hv1, hv2 = pair
    hv1.migration_duration_s, hv1.migration_downtime_ms = 5.0, 250
    uuid = str(uuidlib.uuid4())
    hv1.start(domain_xml("m", uuid))
    with pytest.raises(HypervisorError, match="aborted"):
        hv1.migrate(uuid, hv2.uri, timeout=2)
    assert hv1.is_running(uuid)
    assert hv1.migrate(uuid, hv2.uri, max_downtime_ms=100).downtime_ms == 100
    assert hv2.migrate(uuid, hv1.uri, live=False).downtime_ms == hv2.migration_duration_s * 1000


def test_fake_crash() -> None:
    hv = FakeHypervisor()
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    hv.start(domain_xml("a", a))
    hv.start(domain_xml("b", b))
    hv.crash(a)                                   # on_crash=destroy: the transient domain is gone
    hv.crash(b, preserve=True)                    # on_crash=preserve: left in state crashed
    assert not hv.is_running(a) and a not in hv.list_domains()
    assert not hv.is_running(b) and hv.list_domains()[b].state == "crashed"
    assert b not in hv.all_stats() and hv.crashed == [a, b]


def test_fake_acpi_takes_time_and_can_be_ignored() -> None:
    clock = Clock()
    hv = FakeHypervisor(clock=clock, shutdown_delay_s=3.0)
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    hv.start(domain_xml("a", a))
    hv.start(domain_xml("b", b))
    hv.ignore_acpi(b)
    hv.shutdown(a)
    hv.shutdown(b)
    assert hv.is_running(a)
    clock.now += 3.0
    assert not hv.is_running(a)
    clock.now += 180.0                            # upstream's shutdown timeout: then stop
    assert hv.is_running(b)
    hv.destroy(b)
    assert not hv.is_running(b)


def test_fake_cputime_follows_the_clock() -> None:
    clock = Clock()
    hv = FakeHypervisor(clock=clock, cpu_share=0.5)
    uuid = str(uuidlib.uuid4())
    hv.start(domain_xml("c", uuid, vcpus=2))
    assert hv.stats(uuid)["cputime"] == 0
    clock.now += 10
    assert hv.stats(uuid)["cputime"] == 10 * 10**9       # 10 s x 2 vCPUs x half a core
    stats = hv.stats(uuid)
    assert stats["disk_stats"][0]["name"] == "/tmp/c.img"
    assert stats["net_stats"][0]["bridge"] == "vmbr100"


def test_fake_libvirtd_down(pair: tuple[FakeHypervisor, FakeHypervisor]) -> None:
    hv1, hv2 = pair
    uuid = str(uuidlib.uuid4())
    hv1.start(domain_xml("d", uuid))
    hv2.available = False
    with pytest.raises(HypervisorUnavailable):
        hv1.migrate(uuid, hv2.uri)
    with pytest.raises(HypervisorUnavailable):
        hv2.list_domains()
    hv2.available = True
    assert hv2.list_domains() == {}


def test_fake_generic_fault_for_one_domain() -> None:
    hv = FakeHypervisor()
    a, b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    hv.start(domain_xml("a", a))
    hv.start(domain_xml("b", b))
    hv.fail_next("destroy", uuid=b, error=HypervisorUnavailable)
    hv.destroy(a)
    with pytest.raises(HypervisorUnavailable):
        hv.destroy(b)
    hv.destroy(b)


# ---- LibvirtHypervisor's own parts ------------------------------------------------------------


def test_kvm_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LibvirtHypervisor("test:///default", kvm=True).kvm_available() is True
    monkeypatch.setenv(hypervisor.KVM_ENV, "1")
    hv = LibvirtHypervisor("test:///default")
    assert hv.kvm_available() is True and hypervisor.KVM_ENV in hv.kvm_reason
    assert LibvirtHypervisor("test:///default", kvm=False).kvm_available() is False


def test_kvm_not_claimed_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hypervisor.KVM_ENV, raising=False)
    flags = Path("/proc/cpuinfo").read_text()
    hv = LibvirtHypervisor("test:///default")
    if " vmx" in flags or " svm" in flags:
        # hardware virtualisation: libvirt's test driver offers no kvm domains, so still no
        assert hv.kvm_available() is False
    else:
        assert hv.kvm_available() is False and "vmx/svm" in hv.kvm_reason


def test_hardware_virtualization_check(tmp_path: Path) -> None:
    (tmp_path / "kvm_pvm").mkdir()
    ok, why = hypervisor.hardware_virtualization("flags\t: fpu sse2 hypervisor\n", tmp_path)
    assert not ok and "vmx/svm" in why and "kvm_pvm" in why
    ok, why = hypervisor.hardware_virtualization("flags\t: fpu vmx\n", tmp_path)
    assert not ok and "kvm_intel" in why
    (tmp_path / "kvm_intel").mkdir()
    assert hypervisor.hardware_virtualization("flags\t: fpu vmx\n", tmp_path) == (True, "")


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="no /dev/kvm")
def test_kvm_run_probe_answers() -> None:
    ok, why = hypervisor.kvm_run_probe()
    assert isinstance(ok, bool) and (ok or why)


def test_xml_helpers() -> None:
    assert "type='qemu'" in hypervisor.force_tcg("<domain type='kvm' id='1'><name>x</name></domain>")
    assert hypervisor.force_tcg('<domain xmlns:q="x" type="kvm">') == '<domain xmlns:q="x" type="qemu">'
    assert hypervisor.force_tcg("<domain type='qemu'>") == "<domain type='qemu'>"
    rbd = ("<domain><devices><disk type='network' device='disk'><source protocol='rbd' name='vms/a'/>"
           "</disk><disk type='file' device='cdrom'><target dev='hdc'/></disk></devices></domain>")
    assert hypervisor.disks_need_unsafe(rbd) is False
    local = rbd.replace("</devices>", "<disk type='file'><source file='/x.img'/></disk></devices>")
    assert hypervisor.disks_need_unsafe(local) is True
    facts = hypervisor.domain_facts(domain_xml("f", "0E4B8B1C-0000-4000-8000-000000000001", 2, 4, 1))
    assert (facts.uuid, facts.vcpus, facts.max_vcpus, facts.memory_kib) == (
        "0e4b8b1c-0000-4000-8000-000000000001", 2, 4, 1024)


def test_state_tables_match_libvirt() -> None:
    libvirt: Any = pytest.importorskip("libvirt")
    for state in hypervisor.DOMAIN_STATES:
        assert getattr(libvirt, f"VIR_DOMAIN_{state.upper()}") == hypervisor.DOMAIN_STATES.index(state)
    for state, reasons in hypervisor.STATE_REASONS.items():
        for code, reason in enumerate(reasons):
            name = f"VIR_DOMAIN_{state.upper()}_{reason.upper().replace('-', '_')}"
            assert getattr(libvirt, name, code) == code, name    # newer reasons: newer libvirt


def test_reconnects_after_the_connection_breaks() -> None:
    hv = LibvirtHypervisor("test:///default")
    hv.list_domains()
    hv._conn.close()                 # what a libvirtd restart looks like to the client
    assert isinstance(hv.list_domains(), dict)                      # a read: retried
    hv._conn.close()
    uuid = str(uuidlib.uuid4())
    hv.start(domain_xml(f"ct-{uuid[:8]}", uuid))                     # an action: checked first
    try:
        assert hv.is_running(uuid)
    finally:
        hv.destroy(uuid)
        hv.close()


def test_unreachable_libvirtd() -> None:
    hv = LibvirtHypervisor("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(HypervisorUnavailable, match="cannot connect"):
        hv.list_domains()
    with pytest.raises(HypervisorUnavailable):
        hv.start(domain_xml("u", str(uuidlib.uuid4())))
    with pytest.raises(HypervisorUnavailable):           # "unknown", never a false "not running"
        hv.is_running(str(uuidlib.uuid4()))


def test_probe_is_unchanged() -> None:
    info = hypervisor.probe("test:///default")
    assert info["uri"] == "test:///default" and info["domains"] >= 1
    with pytest.raises(HypervisorUnavailable):
        hypervisor.probe("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
