"""VM routes over real HTTP against a real ZooKeeper, with fake ready nodes (no node daemon).

Without a node daemon nothing ever runs, so a VM's status says "not running": undefine removes a
stopped (or never-started) VM at once, and state changes are checked as the desired state written.
"""

from __future__ import annotations

import json
import threading
import uuid as uuidlib
from typing import Any

import httpx

from pvc.cluster import vms as vms_mod
from pvc.core import schema
from pvc.core.records import Memory, VMStatus
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, Api, wait_for
from tests.integration.apihelp import message_text, node_record, raw_request, register_nodes

VM_KEYS = {
    "name", "uuid", "state", "node", "last_node", "migrated", "failed_reason", "node_limit",
    "node_selector", "node_autostart", "migration_method", "migration_max_downtime", "tags", "snapshots",
    "description", "profile", "memory", "memory_stats", "vcpu", "vcpu_topology", "vcpu_stats", "networks",
    "type", "arch", "machine", "console", "vnc", "emulator", "features", "disks", "controllers", "xml",
}


def vm_xml(name: str, uuid: str | None = None, memory: int = 512, vcpus: int = 1, rbd: bool = False) -> str:
    uuid = uuid or str(uuidlib.uuid4())
    disk = (f"<disk type='network' device='disk'><source protocol='rbd' name='vms/{name}_sda'/>"
            f"<target dev='sda' bus='scsi'/></disk>") if rbd else ""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <description>test VM {name}</description>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk}
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>"""


def cluster(zk: ZK, api: Api | None) -> None:
    """hv1..hv3 ready with 8 GiB (hv2 has the most free memory), hv4 flushed."""
    free = {"hv1": 4000, "hv2": 6000, "hv3": 5000, "hv4": 7000}
    records = [
        node_record(name, memory=Memory(total=8192, free=free[name], used=8192 - free[name]), cpu_count=8,
                    domain_state="flushed" if name == "hv4" else "ready")
        for name in ("hv1", "hv2", "hv3", "hv4")
    ]
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, api, *records)


def define(api: Api, xml: str, **params: Any) -> httpx.Response:
    return api.post("/vm", params=params, data={"xml": xml})


def defined(api: Api, name: str, **params: Any) -> dict[str, Any]:
    response = define(api, vm_xml(name), **params)
    assert response.status_code == 200, response.text
    return info(api, name)


def said(response: httpx.Response) -> str:
    """The answer's message as text (argument errors, `{"<argument>": "<what>"}`, as '<argument>: <what>')."""
    return message_text(response.json()["message"])


def info(api: Api, vm: str) -> dict[str, Any]:
    response = api.get(f"/vm/{vm}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    return body[0]


def names(api: Api, **params: Any) -> list[str]:
    response = api.get("/vm", params=params)
    if response.status_code == 404:
        assert response.json() == {"message": "VM not found."}
        return []
    assert response.status_code == 200, response.text
    return [v["name"] for v in response.json()]


def listed(api: Api, expected: list[str], **params: Any) -> None:
    """The list is served from a watch cache: wait (briefly) for it to catch up with writes."""
    wait_for(lambda: names(api, **params) == expected, 10, 0.02, f"list {params} == {expected}")


def state_of(api: Api, vm: str) -> str:
    response = api.get(f"/vm/{vm}/state")
    assert response.status_code == 200, response.text
    return response.json()["state"]


def set_state(api: Api, vm: str, state: str, **params: Any) -> httpx.Response:
    return api.post(f"/vm/{vm}/state", params={"state": state, **params})


def nothing_written(zk: ZK) -> None:
    assert zk.children(schema.VMS) == []
    assert zk.children(schema.VM_NAMES) == []


# -- define ---------------------------------------------------------------------------------------

def test_define_and_info(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = str(uuidlib.uuid4())
    response = api.post("/vm", params={"limit": "hv1,hv2", "selector": "mem", "autostart": "true",
                                       "migration_max_downtime": "500", "user_tags": ["web", "prod"],
                                       "protected_tags": ["keep"]},
                        data={"xml": vm_xml("web1", uuid)})
    assert response.status_code == 200, response.text
    assert response.json() == {"message": f"Added new VM with Name 'web1' and UUID '{uuid}' to database."}
    item = info(api, "web1")
    assert set(item) >= VM_KEYS
    assert item["uuid"] == uuid
    assert item["node"] == "hv2"          # most free memory within the limit
    assert item["node_limit"] == ["hv1", "hv2"]   # a comma string is stored as a list (§13.5)
    assert item["node_selector"] == "mem"
    assert item["node_autostart"] is True
    assert item["migration_max_downtime"] == 500
    assert item["migrated"] == "no" and item["last_node"] == ""
    assert item["state"] == "stop"
    assert {(t["name"], t["protected"]) for t in item["tags"]} == {("web", False), ("prod", False),
                                                                   ("keep", True)}
    assert item["memory"] == 512 and item["vcpu"] == 1
    assert item["networks"][0]["vni"] == "100" and item["networks"][0]["rd_bytes"] == 0
    assert item["vnc"] == {"listen": None, "port": None}       # not running: as upstream, null
    assert item["migration_method"] is None                      # "none" (the default) is null
    assert '"' not in item["xml"] and "<name>web1</name>" in item["xml"]
    assert item["snapshots"] == []
    # by UUID too (exact), and the one-element array shape
    assert info(api, uuid)["name"] == "web1"
    # POST /vm/<anything> defines as well (the XML's name counts)
    response = api.post("/vm/ignored", data={"xml": vm_xml("web2")})
    assert response.status_code == 200, response.text
    assert info(api, "web2")["node"] == "hv2"
    # node given explicitly; limit as repeated keys
    response = api.post("/vm", params={"node": "hv3", "limit": ["hv3", "hv1"]}, data={"xml": vm_xml("db1")})
    assert response.status_code == 200, response.text
    assert info(api, "db1")["node"] == "hv3"
    assert info(api, "db1")["node_limit"] == ["hv3", "hv1"]


def test_define_refusals_change_nothing(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    cases: list[tuple[dict[str, Any], str | None, int, str]] = [
        ({}, "<domain><name>x</name>", 400, "xml: "),
        ({}, "<domain type='kvm'><name>x</name></domain>", 400, "xml: "),
        ({}, "", 400, "xml: "),
        ({"node": "hv9"}, vm_xml("a"), 404, "Node not found: hv9"),
        ({}, vm_xml("big", memory=8192), 400, "8192 MiB of memory is not less than node"),
        ({"node": "hv1"}, vm_xml("big", memory=9000), 400, "node hv1's total (8192 MiB)"),
        ({"node": "hv1"}, vm_xml("wide", vcpus=9), 400, "9 vCPUs is more than node hv1 has (8)"),
        ({"selector": "fastest"}, vm_xml("a"), 400, "selector: 'fastest' is not one of"),
        ({"migration_method": "teleport"}, vm_xml("a"), 400, "migration_method: 'teleport' is not one of"),
        ({"migration_max_downtime": "0"}, vm_xml("a"), 400, "migration_max_downtime: must be at least 1"),
        ({"limit": "hv1,bad/name"}, vm_xml("a"), 400, "limit: 'bad/name' is not a valid node name"),
        ({"node": "hv3", "limit": "hv1"}, vm_xml("a"), 400, "node: 'hv3' is not in the VM's node limit"),
        ({"limit": "hv4"}, vm_xml("a"), 400, "No node can take VM a"),
        ({}, vm_xml("bad name"), 400, "is not a valid VM name"),
    ]
    for params, xml, status, text in cases:
        response = api.post("/vm", params=params, data={"xml": xml} if xml is not None else None)
        assert response.status_code == status, (params, response.text)
        assert text in message_text(response.json()["message"]), (params, response.json())
        nothing_written(zk)
    missing = api.post("/vm")
    assert missing.status_code == 400 and missing.json()["message"]["xml"].startswith("required")


def test_duplicates_are_refused(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = str(uuidlib.uuid4())
    assert define(api, vm_xml("one", uuid)).status_code == 200
    same_name = define(api, vm_xml("one"))
    assert same_name.status_code == 400
    assert same_name.json()["message"] == "A VM named 'one' already exists in the cluster."
    same_uuid = define(api, vm_xml("two", uuid))
    assert same_uuid.status_code == 400
    assert same_uuid.json()["message"] == f"A VM with UUID '{uuid}' already exists in the cluster."
    assert zk.children(schema.VMS) == [uuid]
    assert zk.children(schema.VM_NAMES) == ["one"]


def test_concurrent_defines_of_one_name(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        with httpx.Client(base_url=api.base + "/api/v1", headers={"X-Api-Key": API_TOKEN}, timeout=30) as c:
            barrier.wait()
            results.append(c.post("/vm", data={"xml": vm_xml("race")}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [200] + [400] * 7
    assert len(zk.children(schema.VMS)) == 1
    assert zk.children(schema.VM_NAMES) == ["race"]


# -- list -----------------------------------------------------------------------------------------

def test_list_filters(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    assert names(api) == []
    web1 = defined(api, "web1", node="hv1", user_tags="web")
    defined(api, "web2", node="hv2", user_tags="web")
    defined(api, "db1", node="hv1", user_tags="db")
    assert set_state(api, "web1", "start").status_code == 200
    listed(api, ["db1", "web1", "web2"])
    listed(api, ["web1", "web2"], limit="web")
    listed(api, ["web1"], limit="^web1$")
    listed(api, [], limit="^eb")
    listed(api, ["web1"], limit=web1["uuid"])
    listed(api, ["db1", "web1"], node="hv1")
    listed(api, ["web2"], node="hv1", negate="true")
    listed(api, ["web1"], state="start")
    listed(api, ["db1", "web2"], state="start", negate="true")
    listed(api, ["web1", "web2"], tag="web")
    listed(api, ["db1"], tag="web", negate="true")
    listed(api, ["db1"], node="hv1", state="stop")
    # form fields work as well as the query string
    response = api.http.request("GET", "/vm", data={"limit": "db"})
    assert [v["name"] for v in response.json()] == ["db1"]
    for params, text in [({"state": "dancing"}, "state: 'dancing' is not one of"),
                         ({"node": "hv9"}, "node: Specified node 'hv9' is invalid."),
                         ({"limit": "(x"}, "limit: '(x' is not a valid regular expression")]:
        response = api.get("/vm", params=params)
        assert response.status_code == 400 and said(response).startswith(text), response.text


def test_unknown_vm_is_404_everywhere(api: Api, zk: ZK) -> None:
    cluster(zk, None)
    for method, path, params in [
        ("GET", "/vm/nope", {}), ("GET", "/vm/nope/state", {}), ("GET", "/vm/nope/meta", {}),
        ("GET", "/vm/nope/node", {}), ("GET", "/vm/nope/tags", {}), ("GET", "/vm/nope/console", {}),
        ("DELETE", "/vm/nope", {}), ("PUT", "/vm/nope", {"xml": vm_xml("nope")}),
        ("POST", "/vm/nope/state", {"state": "start"}), ("POST", "/vm/nope/locks", {}),
        ("POST", "/vm/nope/rename", {"new_name": "x"}), ("GET", f"/vm/{uuidlib.uuid4()}", {}),
    ]:
        response = api.http.request(method, path, params=params)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"message": "VM not found."}
    assert raw_request(api, "GET", "/vm/..") == (404, {"message": "VM not found."})
    assert api.get("/vm/a%2Fb").status_code == 404


# -- modify, meta, tags ---------------------------------------------------------------------------

def test_modify(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    vm = defined(api, "app", node="hv1")
    uuid = vm["uuid"]
    response = api.put("/vm/app", data={"xml": vm_xml("app", uuid, memory=1024, vcpus=2)})
    assert response.status_code == 200, response.text
    assert said(response).startswith("Successfully modified configuration of VM 'app'.")
    assert (info(api, "app")["memory"], info(api, "app")["vcpu"]) == (1024, 2)
    # restart applies only to a running VM
    assert set_state(api, "app", "start").status_code == 200
    response = api.put("/vm/app", params={"restart": "true"}, data={"xml": vm_xml("app", uuid, memory=768)})
    assert response.status_code == 200
    assert state_of(api, "app") == "restart"
    # refusals change nothing
    for xml, text in [(vm_xml("app", str(uuidlib.uuid4())), "a VM's UUID cannot change"),
                      (vm_xml("app", uuid, memory=8192), "not less than node hv1's total"),
                      (vm_xml("app", uuid, vcpus=64), "64 vCPUs is more than node hv1 has"),
                      ("<domain>", "xml: ")]:
        response = api.put("/vm/app", data={"xml": xml})
        assert response.status_code == 400 and text in response.json()["message"], response.text
    assert info(api, "app")["memory"] == 768
    # a new name in the XML renames the VM, index included
    defined(api, "other")
    taken = api.put("/vm/app", data={"xml": vm_xml("other", uuid)})
    assert taken.status_code == 400 and "already exists" in taken.json()["message"]
    assert api.put("/vm/app", data={"xml": vm_xml("app2", uuid)}).status_code == 200
    assert info(api, "app2")["uuid"] == uuid
    assert api.get("/vm/app").status_code == 404
    assert sorted(zk.children(schema.VM_NAMES)) == ["app2", "other"]


def test_etag_and_if_match(api: Api, zk: ZK) -> None:
    """Optimistic concurrency: an edit based on a version the caller read is refused with 412 once
    the VM changed, and changes nothing; without If-Match the edit applies as upstream's does."""
    cluster(zk, api)
    uuid = defined(api, "ed", node="hv1")["uuid"]
    read = api.get("/vm/ed")
    etag = read.headers["ETag"]
    assert etag == f'"{zk.get_doc(schema.vm(uuid)).version}"'
    assert api.get("/vm/ed/meta").headers["ETag"] == etag
    assert api.get("/vm/ed/tags").headers["ETag"] == etag
    # someone else changes the VM meanwhile
    assert api.post("/vm/ed/tags", params={"action": "add", "tag": "other"}).status_code == 200
    stale = {"If-Match": etag}
    before = zk.get_doc(schema.vm(uuid))
    for response in (
        api.put("/vm/ed", data={"xml": vm_xml("ed", uuid, memory=1024)}, headers=stale),
        api.post("/vm/ed/state", params={"state": "start"}, headers=stale),
        api.post("/vm/ed/node", params={"action": "migrate", "node": "hv2"}, headers=stale),
        api.post("/vm/ed/meta", params={"autostart": "true"}, headers=stale),
        api.post("/vm/ed/tags", params={"action": "add", "tag": "mine"}, headers=stale),
        api.put("/vm/ed", data={"xml": vm_xml("renamed", uuid)}, headers=stale),
    ):
        assert response.status_code == 412, response.text
        assert "changed since version" in response.json()["message"]
    after = zk.get_doc(schema.vm(uuid))
    assert (after.data, after.version) == (before.data, before.version)
    assert zk.children(schema.VM_NAMES) == ["ed"]
    # the current version, a weak form of it and `*` are accepted; garbage is a 400
    fresh = api.get("/vm/ed").headers["ETag"]
    assert api.post("/vm/ed/meta", params={"autostart": "true"},
                    headers={"If-Match": fresh}).status_code == 200
    fresh = api.get("/vm/ed").headers["ETag"]
    assert api.post("/vm/ed/meta", params={"autostart": "false"},
                    headers={"If-Match": f"W/{fresh}"}).status_code == 200
    assert api.post("/vm/ed/meta", params={"profile": "p"}, headers={"If-Match": "*"}).status_code == 200
    bad = api.post("/vm/ed/meta", params={"profile": "q"}, headers={"If-Match": "yesterday"})
    assert bad.status_code == 400 and "If-Match" in bad.json()["message"]
    assert api.get("/vm/ed/meta").json()["profile"] == "p"


def test_meta(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "m1")
    meta = api.get("/vm/m1/meta").json()
    assert meta == {"name": "m1", "node_limit": None, "node_selector": "none", "node_autostart": False,
                    "migration_method": "none", "migration_max_downtime": 300, "profile": ""}
    response = api.post("/vm/m1/meta", params={"limit": "hv1,hv3", "selector": "vcpus", "autostart": "yes",
                                               "profile": "std", "migration_method": "shutdown",
                                               "migration_max_downtime": "1000"})
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Successfully modified PVC metadata of VM 'm1'."}
    assert api.get("/vm/m1/meta").json() == {
        "name": "m1", "node_limit": ["hv1", "hv3"], "node_selector": "vcpus", "node_autostart": True,
        "migration_method": "shutdown", "migration_max_downtime": 1000, "profile": "std"}
    # only given fields change
    assert api.post("/vm/m1/meta", params={"autostart": "false"}).status_code == 200
    assert api.get("/vm/m1/meta").json()["node_selector"] == "vcpus"
    nothing = api.post("/vm/m1/meta")
    assert nothing.status_code == 400 and nothing.json() == {"message": "No updates to apply."}
    bad = api.post("/vm/m1/meta", params={"selector": "x"})
    assert bad.status_code == 400 and said(bad).startswith("selector: 'x' is not one of")
    bad = api.post("/vm/m1/meta", params={"migration_max_downtime": "-5"})
    assert bad.status_code == 400 and said(bad).startswith("migration_max_downtime:")


def test_tags(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "t1", protected_tags="pinned")
    assert api.post("/vm/t1/tags", params={"action": "add", "tag": "web"}).json() == \
        {"message": "Successfully added tag 'web' to VM 't1'."}
    tags = api.get("/vm/t1/tags").json()
    assert tags["name"] == "t1"
    assert {t["name"]: t["protected"] for t in tags["tags"]} == {"pinned": True, "web": False}
    removed = api.post("/vm/t1/tags", params={"action": "remove", "tag": "web"})
    assert removed.status_code == 200
    for tag, text in [("pinned", "The tag 'pinned' is protected and cannot be removed."),
                      ("ghost", "The tag 'ghost' does not exist.")]:
        response = api.post("/vm/t1/tags", params={"action": "remove", "tag": tag})
        assert response.status_code == 400 and response.json() == {"message": text}
    assert [t["name"] for t in api.get("/vm/t1/tags").json()["tags"]] == ["pinned"]
    bad = api.post("/vm/t1/tags", params={"action": "toggle", "tag": "x"})
    assert bad.status_code == 400 and said(bad).startswith("action: 'toggle' is not one of")


# -- states and nodes -----------------------------------------------------------------------------

def test_states(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "s1", node="hv1")
    assert state_of(api, "s1") == "stop"
    assert api.get("/vm/s1/state").json() == {"name": "s1", "state": "stop"}
    for state in ("restart", "shutdown"):
        refused = set_state(api, "s1", state)
        assert refused.status_code == 400
        assert refused.json() == {"message": "VM 's1' is not in 'start' state!"}
        assert state_of(api, "s1") == "stop"
    assert set_state(api, "s1", "start").json() == {"message": "Starting VM 's1'."}
    assert state_of(api, "s1") == "start"
    assert set_state(api, "s1", "shutdown").json() == {"message": "Shutting down VM 's1'."}
    assert state_of(api, "s1") == "shutdown"
    assert set_state(api, "s1", "stop").json() == {"message": "Forcibly stopping VM 's1'."}
    assert set_state(api, "s1", "start").status_code == 200
    # disable a VM that should run: shut it down first; its node reports it down (no daemon: at once)
    assert set_state(api, "s1", "disable").json() == {"message": "Disabled VM 's1'."}
    assert state_of(api, "s1") == "disable"
    bad = set_state(api, "s1", "pause")
    assert bad.status_code == 400 and said(bad).startswith("state: 'pause' is not one of")
    # wait=true returns once the node has moved the VM on from the transitional state
    assert set_state(api, "s1", "start").status_code == 200

    def node_finishes() -> None:
        wait_for(lambda: zk.get(schema.vm(uuid))["state"] == "restart", 10, 0.02, "restart requested")
        zk.update(schema.vm(uuid), lambda d: {**d, "state": "start"})

    uuid = info(api, "s1")["uuid"]
    helper = threading.Thread(target=node_finishes)
    helper.start()
    response = set_state(api, "s1", "restart", wait="true")
    helper.join(10)
    assert response.json() == {"message": "Restarted VM 's1'."}


def test_disable_waits_for_the_node_to_stop_it(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = defined(api, "d1", node="hv1")["uuid"]
    assert set_state(api, "d1", "start").status_code == 200
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True).doc())

    def node_stops() -> None:
        wait_for(lambda: zk.get(schema.vm(uuid))["state"] == "stop", 10, 0.02, "stop requested")
        zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=False).doc())

    helper = threading.Thread(target=node_stops)
    helper.start()
    response = set_state(api, "d1", "disable", force="true")
    helper.join(10)
    assert response.status_code == 200, response.text
    assert state_of(api, "d1") == "disable"


def test_stats_come_from_the_node_shards(api: Api, zk: ZK) -> None:
    """Stats live in /vmstats/<node>/<shard> (schema 5): the API's caches and direct reads agree."""
    cluster(zk, api)
    uuid = defined(api, "st1", node="hv1")["uuid"]
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True, libvirt_state="running").doc())
    stats = {"mem_stats": {"rss": 1000}, "cpu_stats": {"cpu_time": 5},
             "net_stats": [{"mac": "52:54:00:00:00:01", "rd_bytes": 10}]}
    zk.put(schema.vm_stats("hv2", 0), {uuid: {"mem_stats": {"rss": 1}}})     # another node: ignored
    zk.put(schema.vm_stats("hv1", 0), {uuid: stats})

    def listed() -> dict[str, Any]:
        return next(v for v in api.get("/vm").json() if v["name"] == "st1")

    wait_for(lambda: info(api, "st1")["memory_stats"] == {"rss": 1000}, 10, 0.02, "stats in the item")
    wait_for(lambda: listed()["memory_stats"] == {"rss": 1000}, 10, 0.02, "stats in the list")
    item = info(api, "st1")
    assert item["vcpu_stats"] == {"cpu_time": 5} and item["networks"][0]["rd_bytes"] == 10
    # in-process there is no watch cache: the same item from direct reads
    direct = json.loads(vms_mod.item_json(zk, vms_mod.get_entry(zk, "st1")))
    assert {k: v for k, v in direct.items() if k != "running"} == \
        {k: v for k, v in item.items() if k != "running"}
    entry = next(e for e in vms_mod.load_entries(zk) if e.record.name == "st1")
    assert entry.stats == stats
    zk.put(schema.vm_stats("hv1", 0), {uuid: {**stats, "mem_stats": {"rss": 2000}}})
    wait_for(lambda: listed()["memory_stats"] == {"rss": 2000}, 10, 0.02, "new stats in the list")
    zk.put(schema.vm_stats("hv1", 0), {})                   # the VM left the node's shard
    wait_for(lambda: listed()["memory_stats"] == {}, 10, 0.02, "stats gone from the list")
    assert info(api, "st1")["networks"][0]["rd_bytes"] == 0


def node_of(api: Api, vm: str) -> dict[str, str]:
    response = api.get(f"/vm/{vm}/node")
    assert response.status_code == 200, response.text
    return response.json()


def move(api: Api, vm: str, action: str, **params: Any) -> httpx.Response:
    return api.post(f"/vm/{vm}/node", params={"action": action, **params})


def test_migrate_move_unmigrate(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "mv", node="hv1", limit="hv1,hv2,hv3")
    assert set_state(api, "mv", "start").status_code == 200
    response = move(api, "mv", "migrate", node="hv2")
    assert response.json() == {"message": "Migrating VM 'mv' to node 'hv2'."}
    assert node_of(api, "mv") == {"name": "mv", "node": "hv2", "last_node": "hv1"}
    assert state_of(api, "mv") == "migrate"
    assert info(api, "mv")["migrated"] == "from hv1"
    zk.update(schema.vm(info(api, "mv")["uuid"]), lambda d: {**d, "state": "start"})  # the nodes did it
    again = move(api, "mv", "migrate", node="hv3")
    assert again.status_code == 400 and again.json() == {"message": "VM 'mv' has been previously migrated."}
    # forcing keeps the origin, so unmigrate still goes home
    assert move(api, "mv", "migrate", node="hv3", force="true", force_live="true").status_code == 200
    assert node_of(api, "mv") == {"name": "mv", "node": "hv3", "last_node": "hv1"}
    assert state_of(api, "mv") == "migrate-live"
    zk.update(schema.vm(info(api, "mv")["uuid"]), lambda d: {**d, "state": "start"})
    assert move(api, "mv", "unmigrate").json() == {"message": "Unmigrating VM 'mv' back to node 'hv1'."}
    assert node_of(api, "mv") == {"name": "mv", "node": "hv1", "last_node": ""}
    # while a migration runs, no other node change is taken: the running one finishes first
    busy = move(api, "mv", "move", node="hv2")
    assert busy.status_code == 400 and busy.json() == {
        "message": "VM 'mv' is being migrated to node 'hv1' now; try again once that migration has finished."}
    zk.update(schema.vm(info(api, "mv")["uuid"]), lambda d: {**d, "state": "start"})
    never = move(api, "mv", "unmigrate")
    assert never.status_code == 400
    assert never.json() == {"message": "VM 'mv' has not been previously migrated."}
    # a stopped VM is just reassigned
    assert set_state(api, "mv", "stop").status_code == 200
    assert move(api, "mv", "move", node="hv2").json() == \
        {"message": "Permanently migrating VM 'mv' to node 'hv2'."}
    assert node_of(api, "mv") == {"name": "mv", "node": "hv2", "last_node": ""}
    assert state_of(api, "mv") == "stop"
    # without a node, the selector picks among the other ready nodes in the limit (hv1 free 4000, hv3 5000)
    assert move(api, "mv", "migrate").json() == {"message": "Migrating VM 'mv' to node 'hv3'."}
    # moving to the current node of a migrated VM makes the migration permanent
    assert move(api, "mv", "move", node="hv3").json() == \
        {"message": "Making temporary migration permanent for VM 'mv'."}
    assert node_of(api, "mv") == {"name": "mv", "node": "hv3", "last_node": ""}
    for params, status, text in [
        ({"action": "move", "node": "hv3"}, 400, "VM 'mv' is already running on node 'hv3'."),
        ({"action": "move", "node": "hv4"}, 400, "Specified node 'hv4' is not in the allowed list"),
        ({"action": "move", "node": "hv9"}, 404, "Node not found: hv9"),
        ({"action": "jump"}, 400, "action: 'jump' is not one of"),
    ]:
        response = api.post("/vm/mv/node", params=params)
        assert response.status_code == status and said(response).startswith(text), response.text
    assert node_of(api, "mv") == {"name": "mv", "node": "hv3", "last_node": ""}


# -- rename, undefine, console, tasks -------------------------------------------------------------

def test_rename(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = api.post("/vm", data={"xml": vm_xml("old", rbd=True)}).status_code and info(api, "old")["uuid"]
    defined(api, "taken")
    response = api.post("/vm/old/rename", params={"new_name": "new"})
    assert response.json() == {"message": "Successfully renamed VM 'old' to 'new'."}
    item = info(api, "new")
    assert item["uuid"] == uuid and "<name>new</name>" in item["xml"]
    # a volume PVC's storage does not know keeps its name (and its disk source)
    assert item["disks"][0]["name"] == "vms/old_sda"
    assert api.get("/vm/old").status_code == 404
    assert sorted(zk.children(schema.VM_NAMES)) == ["new", "taken"]
    for new_name, text in [("taken", "A VM named 'taken' already exists"), ("bad/name", "new_name: ")]:
        response = api.post("/vm/new/rename", params={"new_name": new_name})
        assert response.status_code == 400 and said(response).startswith(text), response.text
    assert set_state(api, "new", "start").status_code == 200
    running = api.post("/vm/new/rename", params={"new_name": "newer"})
    assert running.status_code == 400 and "cannot be renamed while running" in running.json()["message"]


def test_undefine_and_remove(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = defined(api, "gone")["uuid"]
    zk.put(schema.vm_console(uuid), "boot\n")
    response = api.delete("/vm/gone")
    assert response.json() == {"message": "Undefined VM 'gone' from the cluster."}
    assert api.get("/vm/gone").status_code == 404
    nothing_written(zk)
    # a VM that should run but is not running anywhere is stopped and removed at once
    defined(api, "runner")
    assert set_state(api, "runner", "start").status_code == 200
    assert api.delete("/vm/runner").status_code == 200
    nothing_written(zk)
    # volumes PVC's storage does not know are left alone, and said so
    assert define(api, vm_xml("disky", rbd=True)).status_code == 200
    removed = api.delete("/vm/disky", params={"delete_disks": "true"})
    assert removed.status_code == 200 and "left alone: vms/disky_sda" in removed.json()["message"]
    assert api.get("/vm/disky").status_code == 404
    defined(api, "diskless")
    assert api.delete("/vm/diskless", params={"delete_disks": "true"}).json() == \
        {"message": "Removed VM 'diskless' and its disks from the cluster."}


def test_console(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    uuid = defined(api, "c1")["uuid"]
    assert api.get("/vm/c1/console").json() == {"name": "c1", "data": ""}
    zk.put(schema.vm_console(uuid), "\n".join(f"line {i}" for i in range(30)))
    assert api.get("/vm/c1/console").json()["data"].split("\n") == [f"line {i}" for i in range(20, 30)]
    assert api.get("/vm/c1/console", params={"lines": 2}).json()["data"] == "line 28\nline 29"
    assert api.get("/vm/c1/console", params={"lines": -1}).status_code == 400


def test_locks_and_devices_are_tasks_on_the_vm_node(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "k1", node="hv3")
    response = api.post("/vm/k1/locks")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task_name"] == "vm.flush_locks" and body["run_on"] == "hv3"
    assert response.headers["Location"] == f"/api/v1/tasks/{body['task_id']}"
    task = zk.get(schema.task(body["task_id"]))
    assert task["target"] == "hv3" and task["args"]["domain"] == "k1"
    device = "<interface type='bridge'><source bridge='vmbr100'/></interface>"
    stopped = api.post("/vm/k1/device", data={"xml": device})
    assert stopped.status_code == 400 and "not in started state" in stopped.json()["message"]
    assert set_state(api, "k1", "start").status_code == 200
    running = api.post("/vm/k1/locks")
    assert running.status_code == 400 and "flushing RBD locks on a running VM" in running.json()["message"]
    for method, kind in (("POST", "vm.device_attach"), ("DELETE", "vm.device_detach")):
        response = api.http.request(method, "/vm/k1/device", data={"xml": device})
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["task_name"] == kind and body["run_on"] == "hv3"
        assert zk.get(schema.task(body["task_id"]))["args"]["xml"] == device
    for xml, text in [("<interface", "xml: not well-formed XML"), ("<domain/>", "xml: <domain> is not")]:
        response = api.post("/vm/k1/device", data={"xml": xml})
        assert response.status_code == 400 and said(response).startswith(text), response.text


def test_status_counts_vms(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    defined(api, "a")
    defined(api, "b")
    assert set_state(api, "a", "start").status_code == 200
    status = api.get("/status").json()
    assert status["vms"] == {"total": 2, "start": 1, "stop": 1}
    assert [v["name"] for v in status["detail"]["vm"]] == ["a", "b"]
