"""VM snapshots, the pure parts: the name rule, the diff, the item view, the list splice, the
consistency choice over the fake hypervisor and storage, and the CLI's view of them."""

from __future__ import annotations

import json
import uuid as uuidlib

import pytest
from rich.console import Console

from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.hypervisor.fake import FakeHypervisor
from pvc.cli.commands.vm.formats import diff_counts, format_age, snapshot_table
from pvc.cluster import vmsnapshots as cluster_snaps
from pvc.cluster.vms import view
from pvc.cluster.vms.index import VMEntry, _with_snapshots
from pvc.core import vmsnapshots as snaps
from pvc.core.errors import Conflict, InvalidInput
from pvc.core.records import SnapshotVolume, VMRecord, VMSnapshotRecord
from pvc.core.revert import Reverter
from pvc.worker import snapshots as worker

# -- the name rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "Snap-1", "20240101120000", "ab20240101", "x.y_z-1", "A" * 64])
def test_valid_names(name: str) -> None:
    assert snaps.check_name(name) == name
    assert snaps.name_problem(name) is None


@pytest.mark.parametrize(("name", "words"), [
    ("a@b", ["'@'"]), ("a/b", ["'/'"]), ("a:b", ["':'"]), ("", ["required"]),
    (".hidden", ["letter or digit"]),
    ("-x", ["letter or digit"]), ("a b", ["valid snapshot name"]), ("a" * 65, ["too long", "64"]),
    ("[x]", ["valid snapshot name"]), ("é", ["valid snapshot name"]),
])
def test_invalid_names_are_refused_naming_the_rule(name: str, words: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        snaps.check_name(name)
    assert caught.value.message.startswith("snapshot_name: ")
    for word in words:
        assert word in caught.value.message


def test_prefixes_and_origin() -> None:
    assert (snaps.AUTOBACKUP_PREFIX, snaps.AUTOMIRROR_PREFIX, snaps.MIRROR_PREFIX,
            snaps.LEGACY_BACKUP_PREFIX) == ("ab", "am", "mr", "backup_")
    assert [snaps.origin_of(n) for n in ("ab1", "am1", "mr1", "backup_1", "x")] == \
        ["autobackup", "automirror", "mirror", "backup", "manual"]
    assert snaps.reserved_prefix("mr2024") == "mr" and snaps.reserved_prefix("backup_1") is None


def test_reserved_means_prefix_and_datestring() -> None:
    """Only the system's own names (prefix + digits) are reserved; "about", "mrtg", "amber" and
    "backup_old" are manual names that may be renamed and carry the manual origin."""
    for name, prefix, origin in (("ab20261206120000", "ab", "autobackup"),
                                 ("am20261206120000", "am", "automirror"),
                                 ("mr20261206120000", "mr", "mirror")):
        assert snaps.reserved_prefix(name) == prefix and snaps.origin_of(name) == origin
    assert snaps.origin_of("backup_20261206120000") == "backup"
    for name in ("about", "mrtg", "amber", "ab", "ab2026x", "mr-1", "backup_old", "backup_"):
        assert snaps.reserved_prefix(name) is None
        assert snaps.origin_of(name) == "manual"


def test_datestring() -> None:
    text = snaps.datestring(0)
    assert len(text) == 14 and text.isdigit()
    assert len(snaps.datestring()) == 14


# -- the diff and the item --------------------------------------------------------------------------

CURRENT = '<domain>\n  <name>a</name>\n  <memory unit="MiB">512</memory>\n  <vcpu>2</vcpu>\n</domain>'
SNAPSHOT = '<domain>\n  <name>a</name>\n  <memory unit="MiB">256</memory>\n  <vcpu>2</vcpu>\n</domain>'


def test_xml_diff_lines_upstream_shape() -> None:
    lines = snaps.xml_diff_lines(CURRENT, SNAPSHOT)
    assert lines[0] == "--- current" and lines[1] == "+++ snapshot"
    assert lines[2].startswith("@@")
    # one line of context on each side, quotes as the item shows the XML
    assert lines[3:] == ["   <name>a</name>", "-  <memory unit='MiB'>512</memory>",
                         "+  <memory unit='MiB'>256</memory>", "   <vcpu>2</vcpu>"]
    assert snaps.diff_counts(lines) == (1, 1) == diff_counts(lines)
    assert snaps.xml_diff_lines(CURRENT, CURRENT) == []


def record(name: str, created: float, xml: str = SNAPSHOT) -> VMSnapshotRecord:
    return VMSnapshotRecord(name=name, created=created, xml=xml,
                            volumes=[SnapshotVolume(pool="vms", volume="a_sda", snap=name, size=1)])


def vm_record() -> VMRecord:
    return VMRecord(uuid=str(uuidlib.uuid4()), name="a", xml=CURRENT, rbd_volumes=["vms/a_sda"])


def test_snapshots_view_newest_first_in_upstream_shape() -> None:
    vm = vm_record()
    items = view.snapshots_view(vm, [record("old", 1000.0), record("new", 2000.5)], now=2010.9)
    assert [i["name"] for i in items] == ["new", "old"]
    assert items[0] == {"name": "new", "timestamp": "2000", "age": 10,
                        "xml_diff_lines": snaps.xml_diff_lines(CURRENT, SNAPSHOT),
                        "rbd_snapshots": ["vms/a_sda@new"], "consistency": "crash"}   # + ours
    # the diff is computed once per (XML, snapshot)
    assert view.snapshot_diff(vm, record("new", 2000.5)) is view.snapshot_diff(vm, record("new", 2000.5))


def test_list_splice_puts_each_vms_snapshots_in_its_own_item() -> None:
    vms = [vm_record(), vm_record(), vm_record()]
    items = [view.dump({"name": f"v{i}", "uuid": v.uuid, "tags": [{"name": '"snapshots":[]'}],
                        "snapshots": [], "x": 1}) for i, v in enumerate(vms)]
    data = b"[" + b",".join(items) + b"]"
    entries = [VMEntry(v, None) for v in vms]
    out = json.loads(_with_snapshots(data, entries, {vms[1].uuid: [record("s1", 5.0)],
                                                     vms[2].uuid: [record("s2", 6.0), record("s3", 7.0)]}))
    assert [[s["name"] for s in item["snapshots"]] for item in out] == [[], ["s1"], ["s3", "s2"]]
    assert all(item["tags"] == [{"name": '"snapshots":[]'}] for item in out)
    assert view.splice_snapshots(items[0], b"[1]").endswith(b'"snapshots":[1],"x":1}')


# -- the API's checks (pure parts) ----------------------------------------------------------------------

def test_rollback_checks_state_and_disks() -> None:
    vm = vm_record()
    snap = record("s", 1.0)
    assert cluster_snaps.check_rollback(vm, snap, force=False) == []
    with pytest.raises(Conflict, match="state start"):
        cluster_snaps.check_rollback(vm.model_copy(update={"state": "start"}), snap, force=False)
    grown = vm.model_copy(update={"rbd_volumes": ["vms/a_sda", "vms/a_sdb"]})
    with pytest.raises(Conflict, match="vms/a_sdb"):
        cluster_snaps.check_rollback(grown, snap, force=False)
    assert cluster_snaps.check_rollback(grown, snap, force=True) == ["vms/a_sdb"]


def test_rename_refuses_system_prefixes_and_bad_names() -> None:
    vm = vm_record()
    cluster_snaps.check_rename(vm, "s", "t")
    for old, new in (("ab1", "x"), ("x", "am1"), ("mr1", "mr2")):
        with pytest.raises(Conflict, match="followed by a datestring"):
            cluster_snaps.check_rename(vm, old, new)
    cluster_snaps.check_rename(vm, "about", "mrtg")      # manual names that share the letters
    with pytest.raises(InvalidInput, match="new_name"):
        cluster_snaps.check_rename(vm, "s", "a@b")
    with pytest.raises(InvalidInput, match="already has that name"):
        cluster_snaps.check_rename(vm, "s", "s")


def test_owner_round_trip_and_meta_capture() -> None:
    assert cluster_snaps.parse_owner(cluster_snaps.owner("u-1", "s")) == ("u-1", "s")
    assert cluster_snaps.parse_owner("osd:3") is None and cluster_snaps.parse_owner(None) is None
    vm = vm_record().model_copy(update={"node_limit": ["hv1"], "profile": "p"})
    meta = cluster_snaps.capture_meta(vm)
    assert meta["node_limit"] == ["hv1"] and meta["profile"] == "p" and "xml" not in meta
    assert set(meta) == set(cluster_snaps.META_FIELDS)


def test_rename_xml_renames_only_volumes_that_were_renamed() -> None:
    xml = ("<domain type='kvm'><name>a</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
           "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>"
           "<disk type='network' device='disk'><source protocol='rbd' name='vms/a_sda'/>"
           "<target dev='sda' bus='scsi'/></disk>"
           "<disk type='network' device='disk'><source protocol='rbd' name='vms/a_sdb'/>"
           "<target dev='sdb' bus='scsi'/></disk></devices></domain>")
    out = cluster_snaps.rename_xml(xml, "b", {"vms/a_sda": "vms/b_sda"})
    assert "<name>b</name>" in out and "vms/b_sda" in out and "vms/a_sdb" in out


# -- consistency (worker, over the fakes) ---------------------------------------------------------------

DOMAIN = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type>hvm</type></os><devices/></domain>"""


@pytest.fixture
def rig() -> tuple[FakeHypervisor, FakeStorage, str, list[tuple[str, str]]]:
    hv = FakeHypervisor()
    uuid = str(uuidlib.uuid4())
    hv.start(DOMAIN.format(name="a", uuid=uuid))
    storage = FakeStorage()
    storage.create_pool("vms", 8, 3, 2)
    volumes = [("vms", f"a_sd{c}") for c in "abc"]
    for pool, volume in volumes:
        storage.create_volume(pool, volume, 1 << 20)
    return hv, storage, uuid, volumes


def test_a_running_vm_without_agent_is_paused_around_the_snapshots(rig) -> None:
    hv, storage, uuid, volumes = rig
    lines: list[str] = []
    with Reverter(lines.append) as revert:
        consistency, pause_ms = worker.take_disks(storage, hv, uuid, volumes, "s1", revert, lines.append)
        revert.commit()
    assert consistency == "paused" and pause_ms is not None and pause_ms >= 0
    ops = [op for op, _ in hv.calls]
    assert ops.index("suspend") < ops.index("resume")
    assert hv.domain(uuid).state == "running"
    assert all(storage.list_snapshots(p, v) == ["s1"] for p, v in volumes)
    assert any("paused for" in line for line in lines)


def test_a_guest_agent_freezes_and_always_thaws(rig) -> None:
    hv, storage, uuid, volumes = rig
    hv.domain(uuid).guest_agent = True
    with Reverter() as revert:
        assert worker.take_disks(storage, hv, uuid, volumes, "s1", revert, print) == ("fs-frozen", None)
        revert.commit()
    assert not hv.domain(uuid).frozen and "suspend" not in [op for op, _ in hv.calls]
    storage.fail_next("create_snapshot")
    with pytest.raises(worker.SnapshotFailed), Reverter() as revert:
        worker.take_disks(storage, hv, uuid, volumes, "s2", revert, print)
    assert not hv.domain(uuid).frozen
    assert all(storage.list_snapshots(p, v) == ["s1"] for p, v in volumes)     # s2 undone everywhere


def test_a_failed_pause_falls_back_to_crash_and_a_failed_snapshot_resumes(rig) -> None:
    hv, storage, uuid, volumes = rig
    hv.fail_next("suspend")
    lines: list[str] = []
    with Reverter() as revert:
        assert worker.take_disks(storage, hv, uuid, volumes, "s1", revert, lines.append) == ("crash", None)
        revert.commit()
    assert any("could not pause" in line for line in lines)
    storage.fail_next("create_snapshot")
    with pytest.raises(worker.SnapshotFailed, match="s2"), Reverter() as revert:
        worker.take_disks(storage, hv, uuid, volumes, "s2", revert, print)
    assert hv.domain(uuid).state == "running"
    assert all(storage.list_snapshots(p, v) == ["s1"] for p, v in volumes)


def test_a_domain_gone_while_paused_is_said_so(rig, monkeypatch) -> None:
    """Stopped or removed while paused for its snapshot: the message says the domain went away,
    not to resume it by hand, and the snapshot is undone."""
    hv, storage, uuid, volumes = rig
    create = storage.create_snapshot

    def create_and_lose_the_domain(pool: str, volume: str, name: str) -> None:
        create(pool, volume, name)
        if uuid in hv.list_domains():
            hv.destroy(uuid)

    monkeypatch.setattr(storage, "create_snapshot", create_and_lose_the_domain)
    with pytest.raises(worker.SnapshotFailed, match="went away") as failed, Reverter() as revert:
        worker.take_disks(storage, hv, uuid, volumes, "s1", revert, print)
    assert "virsh" not in str(failed.value)
    assert all(storage.list_snapshots(p, v) == [] for p, v in volumes)


def test_a_stopped_vm_is_crash_consistent(rig) -> None:
    _hv, storage, uuid, volumes = rig
    with Reverter() as revert:
        assert worker.take_disks(storage, None, uuid, volumes, "s1", revert, print) == ("crash", None)


# -- the CLI's view --------------------------------------------------------------------------------

def test_cli_age_and_table() -> None:
    assert [format_age(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m 5s", "1h 1m", "1d 1h"]
    assert snapshot_table({"snapshots": []}) is None
    lines = ["--- a", "+++ b", "+x"]
    assert snapshot_table({"snapshots": [{"name": "s", "age": 3, "xml_diff_lines": lines}]})


def test_item_and_table_show_consistency() -> None:
    item = snaps.snapshot_item("s", 100.0, ["vms/a@s"], [], 160.0, "fs-frozen")
    assert item["consistency"] == "fs-frozen" and item["age"] == 60
    assert "consistency" not in snaps.snapshot_item("s", 100.0, [], [], 160.0)    # the send's item
    console = Console(width=120, record=True)
    console.print(snapshot_table({"snapshots": [item, {**item, "name": "t", "consistency": "paused"}]}))
    out = console.export_text()
    assert "Consistency" in out and "fs-frozen" in out and "paused" in out
    console.print(snapshot_table({"snapshots": [{"name": "u", "age": 3, "xml_diff_lines": []}]}))
    assert console.export_text().count("Consistency") == 0        # an upstream API: no column


# -- the hypervisor contract for snapshots: the fake and libvirt's test driver alike ------------------

@pytest.fixture(params=["fake", "libvirt-test-driver"])
def any_hv(request: pytest.FixtureRequest):
    from pvc.adapters.hypervisor import LibvirtHypervisor

    hv = FakeHypervisor() if request.param == "fake" else LibvirtHypervisor("test:///default")
    uuid = str(uuidlib.uuid4())
    hv.start(DOMAIN.format(name=f"snap-{uuid[:8]}", uuid=uuid))
    yield hv, uuid
    hv.destroy(uuid)
    hv.close()


def test_suspend_resume_and_no_agent(any_hv) -> None:
    from pvc.adapters.hypervisor import HypervisorError

    hv, uuid = any_hv
    hv.suspend(uuid)
    assert hv.list_domains()[uuid].state == "paused" and hv.is_running(uuid)
    hv.resume(uuid)
    assert hv.list_domains()[uuid].state == "running"
    assert hv.guest_agent_ready(uuid) is False      # no guest agent channel in this domain
    if isinstance(hv, FakeHypervisor):
        with pytest.raises(HypervisorError):
            hv.fs_freeze(uuid, 1)
    else:                                           # the test driver pretends an agent froze
        assert hv.fs_freeze(uuid, 1) >= 0 and hv.fs_thaw(uuid, 1) >= 0
