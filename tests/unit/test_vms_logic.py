"""Pure VM decisions of pvc.cluster.vms: state rules, migration targets, list filters, the VM item."""

from __future__ import annotations

from typing import Any

import pytest

from pvc.cluster import vms
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import Memory, NodeRecord, Tag, VMRecord, VMStatus

UUID = "7e2f6c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
XML = f"""<domain type='kvm'>
  <name>web1</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'><source protocol='rbd' name='vms/web1_sda'/>
      <target dev='sda' bus='scsi'/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
    <graphics type='vnc' port='5900' listen='0.0.0.0'/>
  </devices>
</domain>"""


def vm(**fields: Any) -> VMRecord:
    base: dict[str, Any] = {"uuid": UUID, "name": "web1", "xml": XML, "state": "start", "node": "hv1"}
    return VMRecord(**{**base, **fields})


def node(name: str, free: int = 4000, **fields: Any) -> NodeRecord:
    defaults: dict[str, Any] = {"daemon_state": "run", "domain_state": "ready", "cpu_count": 8,
                                "memory": Memory(total=8192, free=free)}
    return NodeRecord(name=name, **{**defaults, **fields})


NODES = [node("hv1", 1000), node("hv2", 3000), node("hv3", 2000), node("hv4", 9000, domain_state="flushed")]


# -- states ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "target", "force", "first", "then"), [
    ("stop", "start", False, "start", None),
    ("fail", "start", False, "start", None),
    ("start", "restart", False, "restart", None),
    ("start", "shutdown", False, "shutdown", None),
    ("start", "stop", False, "stop", None),
    ("stop", "disable", False, "disable", None),
    ("start", "disable", False, "shutdown", "disable"),
    ("start", "disable", True, "stop", "disable"),
    ("disable", "disable", False, None, None),
    ("mirror", "start", True, "start", None),
])
def test_state_plans(current: str, target: str, force: bool, first: str | None, then: str | None) -> None:
    plan = vms.plan_state("web1", current, target, force)
    assert (plan.first, plan.then) == (first, then)


@pytest.mark.parametrize(("current", "target", "message"), [
    ("stop", "restart", "VM \"web1\" is not in \"start\" state!"),
    ("disable", "shutdown", "VM \"web1\" is not in \"start\" state!"),
    ("mirror", "start", "snapshot mirror"),
    ("mirror", "disable", "snapshot mirror"),
])
def test_state_refusals(current: str, target: str, message: str) -> None:
    with pytest.raises(Conflict, match=message):
        vms.plan_state("web1", current, target)


def test_unknown_target_state() -> None:
    with pytest.raises(InvalidInput, match="state: 'migrate' is not one of"):
        vms.plan_state("web1", "start", "migrate")


def test_wait_messages() -> None:
    assert vms.wait_message(vms.plan_state("a", "start", "restart"), "a") == 'Restarted VM "a".'
    assert vms.wait_message(vms.plan_state("a", "stop", "start"), "a") == 'Starting VM "a".'


# -- migrate / move / unmigrate --------------------------------------------------------------------

def test_migrate_running_vm_to_given_node() -> None:
    change = vms.plan_node_change(vm(), "migrate", NODES, "hv2")
    assert (change.state, change.node, change.last_node, change.wait_while) == ("migrate", "hv2", "hv1",
                                                                                "migrate")
    assert vms.plan_node_change(vm(), "migrate", NODES, "hv2", force_live=True).state == "migrate-live"


def test_migrate_stopped_vm_only_reassigns() -> None:
    change = vms.plan_node_change(vm(state="stop"), "migrate", NODES, "hv3")
    assert (change.state, change.node, change.last_node, change.wait_while) == ("stop", "hv3", "hv1", None)


@pytest.mark.parametrize("state", ["migrate", "migrate-live", "unmigrate"])
@pytest.mark.parametrize("action", ["migrate", "move", "unmigrate"])
def test_no_node_change_while_a_migration_runs(state: str, action: str) -> None:
    """A second target mid-migration made the nodes chase each other (a guest was rebooted)."""
    with pytest.raises(Conflict, match='is being migrated to node "hv2" now'):
        vms.plan_node_change(vm(state=state, node="hv2", last_node="hv1"), action, NODES, "hv3", force=True)


def test_migrate_picks_by_selector_excluding_current_and_unready() -> None:
    assert vms.plan_node_change(vm(), "migrate", NODES).node == "hv2"           # most free memory
    assert vms.plan_node_change(vm(node="hv2"), "migrate", NODES).node == "hv3"
    assert vms.plan_node_change(vm(node_limit=["hv1", "hv3"]), "migrate", NODES).node == "hv3"
    with pytest.raises(Conflict, match="Could not find a valid migration target"):
        vms.plan_node_change(vm(node_limit=["hv1", "hv4"]), "migrate", NODES)


def test_migrate_refusals() -> None:
    with pytest.raises(Conflict, match="has been previously migrated"):
        vms.plan_node_change(vm(node="hv2", last_node="hv1"), "migrate", NODES, "hv3")
    with pytest.raises(Conflict, match="not in the allowed list"):
        vms.plan_node_change(vm(node_limit=["hv1", "hv2"]), "migrate", NODES, "hv3")
    with pytest.raises(Conflict, match="already running on node"):
        vms.plan_node_change(vm(), "migrate", NODES, "hv1")
    with pytest.raises(NotFound, match="Node not found: hv9"):
        vms.plan_node_change(vm(), "migrate", NODES, "hv9")
    with pytest.raises(InvalidInput, match="action"):
        vms.plan_node_change(vm(), "teleport", NODES, "hv2")


def test_forced_remigration_keeps_origin() -> None:
    change = vms.plan_node_change(vm(node="hv2", last_node="hv1"), "migrate", NODES, "hv3", force=True)
    assert (change.node, change.last_node) == ("hv3", "hv1")


def test_move_and_unmigrate() -> None:
    assert vms.plan_node_change(vm(node="hv2", last_node="hv1"), "move", NODES, "hv3").last_node == ""
    permanent = vms.plan_node_change(vm(node="hv2", last_node="hv1"), "move", NODES, "hv2")
    assert (permanent.node, permanent.last_node, permanent.state, permanent.wait_while) == \
        ("hv2", "", "start", None)
    back = vms.plan_node_change(vm(node="hv2", last_node="hv1"), "unmigrate", NODES)
    assert (back.node, back.last_node, back.state) == ("hv1", "", "migrate")
    with pytest.raises(Conflict, match="has not been previously migrated"):
        vms.plan_node_change(vm(), "unmigrate", NODES)


# -- inputs ------------------------------------------------------------------------------------------

def test_limits_as_list_or_comma_string() -> None:
    assert vms.parse_limit("hv1,hv2") == ["hv1", "hv2"]
    assert vms.parse_limit(["hv1", "hv2,hv3", "hv1"]) == ["hv1", "hv2", "hv3"]
    assert vms.parse_limit("") == [] and vms.parse_limit(None) == []
    with pytest.raises(InvalidInput, match="limit: 'a b' is not a valid node name"):
        vms.parse_limit("hv1,a b")


def test_small_validators() -> None:
    assert vms.check_method("Live") == "live"
    with pytest.raises(InvalidInput, match="migration_method"):
        vms.check_method("teleport")
    assert vms.check_downtime("250") == 250
    for bad in ("0", "-1", "x"):
        with pytest.raises(InvalidInput, match="migration_max_downtime"):
            vms.check_downtime(bad)
    with pytest.raises(InvalidInput, match="not a valid VM name"):
        vms.check_vm_name("a/b")
    assert vms.canonical_uuid(UUID.upper()) == UUID
    assert vms.canonical_uuid("web1") is None
    tags = vms.make_tags(["a", "b"], ["b"])
    assert [(t.name, t.protected) for t in tags] == [("a", False), ("b", True)]


def test_device_xml() -> None:
    assert vms.check_device_xml("<disk type='file'/>")
    with pytest.raises(InvalidInput, match="not well-formed"):
        vms.check_device_xml("<disk")
    with pytest.raises(InvalidInput, match="not a libvirt device"):
        vms.check_device_xml("<domain/>")


def test_capacity() -> None:
    domain = vms.parse_xml(XML)
    vms.check_fits(node("hv1"), domain)
    with pytest.raises(InvalidInput, match="not less than node small's total"):
        vms.check_fits(node("small", memory=Memory(total=1024)), domain)
    with pytest.raises(InvalidInput, match="2 vCPUs is more than node one has"):
        vms.check_fits(node("one", cpu_count=1), domain)
    assert vms.choose_node(NODES, domain, None, "mem", []).name == "hv2"
    assert vms.choose_node(NODES, domain, "vms", "mem", ["hv3"]).name == "hv3"
    with pytest.raises(Conflict, match="no node within its node limit"):
        vms.choose_node(NODES, domain, None, "mem", ["hv4"])
    tiny = [node("t1", memory=Memory(total=512, free=500))]
    with pytest.raises(InvalidInput, match="does not fit on any eligible node"):
        vms.choose_node(tiny, domain, None, "mem", [])


def test_parse_xml_names_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"^xml: "):
        vms.parse_xml("<domain>")
    with pytest.raises(InvalidInput, match=r"^xml: required"):
        vms.parse_xml("  ")


# -- tags ----------------------------------------------------------------------------------------------

def test_tag_rules() -> None:
    tags = [Tag(name="a"), Tag(name="p", protected=True), Tag(name="s", type="system")]
    assert [t.name for t in vms.plan_tags(tags, "remove", "a")] == ["p", "s"]
    added = vms.plan_tags(tags, "add", "a", protected=True)
    assert [(t.name, t.protected) for t in added if t.name == "a"] == [("a", True)]
    for tag, message in (("p", "is protected"), ("s", "is not a user tag"), ("x", "does not exist")):
        with pytest.raises(Conflict, match=message):
            vms.plan_tags(tags, "remove", tag)


# -- list filters --------------------------------------------------------------------------------------

RECORDS = [
    vm(name="web1", uuid="00000000-0000-4000-8000-000000000001", node="hv1", state="start",
       tags=[Tag(name="web")]),
    vm(name="web2", uuid="00000000-0000-4000-8000-000000000002", node="hv2", state="stop",
       tags=[Tag(name="web")]),
    vm(name="db1", uuid="00000000-0000-4000-8000-000000000003", node="hv1", state="stop"),
]


def matching(**kwargs: Any) -> list[str]:
    keep = vms.vm_filter(**kwargs)
    return [r.name for r in RECORDS if keep(r)]


def test_filters() -> None:
    assert matching() == ["web1", "web2", "db1"]
    assert matching(limit="web") == ["web1", "web2"]
    assert matching(limit="^web") == ["web1", "web2"]
    assert matching(limit="eb1$") == ["web1"]
    assert matching(limit="^eb") == []
    assert matching(limit="00000000-0000-4000-8000-000000000003") == ["db1"]
    assert matching(node="hv1") == ["web1", "db1"]
    assert matching(node="hv1", negate=True) == ["web2"]
    assert matching(state="stop") == ["web2", "db1"]
    assert matching(state="stop", negate=True) == ["web1"]
    assert matching(tag="web") == ["web1", "web2"]
    assert matching(tag="web", negate=True) == ["db1"]
    assert matching(limit="web", node="hv1", negate=True) == ["web2"]


# -- the VM item -------------------------------------------------------------------------------------

def test_view_shape_and_stats() -> None:
    status = VMStatus(node="hv1", running=True, failed_reason="", vnc="10.0.0.1:5901", stats={
        "mem_stats": {"rss": 1000}, "cpu_stats": {"cpu_time": 5},
        "net_stats": [{"mac": "52:54:00:00:00:01", "rd_bytes": 10, "wr_packets": 3}],
        "disk_stats": [{"name": "vms/web1_sda", "rd_req": 7, "wr_bytes": 9}],
    })
    item = vms.vm_view(vm(last_node="hv2", node_limit=["hv1"], tags=[Tag(name="a", protected=True)]), status)
    assert item["migrated"] == "from hv2"
    assert item["node_limit"] == ["hv1"]
    assert item["tags"] == [{"name": "a", "type": "user", "protected": True}]
    assert item["memory"] == 1024 and item["vcpu"] == 2
    assert item["memory_stats"] == {"rss": 1000} and item["vcpu_stats"] == {"cpu_time": 5}
    assert item["networks"][0]["vni"] == "100"
    assert (item["networks"][0]["rd_bytes"], item["networks"][0]["wr_packets"]) == (10, 3)
    assert item["networks"][0]["rd_drops"] == 0
    assert (item["disks"][0]["rd_req"], item["disks"][0]["wr_bytes"]) == (7, 9)
    assert item["vnc"] == {"listen": "10.0.0.1", "port": "5901"}    # the live address wins
    assert '"' not in item["xml"] and "'kvm'" in item["xml"]
    assert item["snapshots"] == []


def test_view_without_status() -> None:
    item = vms.vm_view(vm())
    assert item["migrated"] == "no" and item["node_limit"] is None
    # as upstream: VNC comes only from a running VM's live XML (the node writes it), never from
    # the stored definition
    assert item["vnc"] == {"listen": None, "port": None}
    assert item["failed_reason"] == "" and item["memory_stats"] == {}
    assert item["disks"][0]["rd_bytes"] == 0


def test_allocation() -> None:
    entries = [vms.VMEntry(vm(state="start"), None), vms.VMEntry(vm(uuid="x", state="stop"), None)]
    assert vms.allocation(entries) == {"hv1": {"domains": 2, "vcpu_allocated": 2, "memory_allocated": 1024,
                                               "memory_provisioned": 2048}}


def test_summary_is_derived_when_the_xml_is_written_and_ignored_once_stale() -> None:
    """A list parses no XML: the summary is stored with the record, checked against its XML."""
    from pvc.core import domainxml
    from pvc.core.records import VMRecord

    xml = ("<domain type='kvm'><name>s1</name><uuid>6ab6a0ab-cc71-46e3-b5e9-4a66de1a3025</uuid>"
           "<memory unit='MiB'>512</memory><vcpu>2</vcpu><os><type>hvm</type></os><devices/></domain>")
    record = VMRecord(uuid="6ab6a0ab-cc71-46e3-b5e9-4a66de1a3025", name="s1", xml=xml,
                      **vms.derived(domainxml.parse(xml), xml))
    assert record.summary["memory"] == 512 and record.summary["vcpu"] == 2
    assert vms.record_summary(record) is record.summary
    changed = record.model_copy(update={"xml": xml.replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>")})
    assert vms.record_summary(changed)["vcpu"] == 4          # stale summary: parsed from the XML


def test_encoded_stats_half_equals_the_view() -> None:
    """The list encodes an item's stats half from pre-encoded NIC and disk facts; it must say
    exactly what stats_view says, whatever the node reported (missing, partial, odd counters)."""
    import json

    summary = {"networks": [{"type": "bridge", "mac": "52:54:00:00:00:01", "source": "vmbr1", "vni": "1"},
                            {"type": "bridge", "mac": "52:54:00:00:00:02", "source": "vmbr2", "vni": "2"}],
               "disks": [{"type": "rbd", "name": "vms/a_sda", "dev": "sda", "bus": "scsi"}, {}]}
    for stats in ({}, {"mem_stats": {"rss": 5}, "cpu_stats": {"cpu_time": 9}},
                  {"net_stats": [{"mac": "52:54:00:00:00:02", "rd_bytes": 7, "wr_drops": None}],
                   "disk_stats": [{"dev": "sda", "rd_req": "3", "wr_bytes": 1}]},
                  {"net_stats": "garbage", "disk_stats": [None]}):
        encoded = vms.encode_stats(summary, vms.stats_prefixes(summary), stats)
        assert json.loads(encoded) == vms.stats_view(summary, stats)
