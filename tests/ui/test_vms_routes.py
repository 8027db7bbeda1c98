"""The VM pages over HTTP against a real pvcapid and ZooKeeper, without a browser: the list's paging,
search and filters, its live stream, a VM's detail, every action (and its CSRF and same-origin
refusals), define with the refusal shown in place, remove, and escaping of what users wrote.

The helpers here (bulk VMs, sample extras) are shared with the browser tests in test_vms.py.
"""

from __future__ import annotations

import html
import re
import time
import uuid as uuidlib
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from pvc.api.web.pages.vms import ListQuery
from pvc.core import domainxml, schema
from pvc.core.records import Tag, VMRecord, VMSnapshotRecord, VMStatus
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.uihelp import UIClient
from tests.ui import sample, waits

EVIL = "https://evil.example"
ROW = re.compile(r'<tr id="vm-row-[0-9a-f-]+" data-vm="([^"]+)" data-state="([^"]+)"')


# -- helpers shared with test_vms.py ----------------------------------------------------------------

def bulk_vms(zk: ZK, count: int, prefix: str = "bulk", nodes: tuple[str, ...] = ("hv1", "hv2", "hv3"),
             states: tuple[str, ...] = ("start", "stop", "disable")) -> list[str]:
    """`count` VMs written as define writes them (record with its summary, name index), with
    running statuses for the started ones; round-robin over nodes and states; tag 'even' or 'odd'."""
    names, docs = [], {}
    for index in range(count):
        name, uuid = f"{prefix}{index:04d}", str(uuidlib.uuid4())
        xml = re.sub(r"<uuid>[^<]+</uuid>", f"<uuid>{uuid}</uuid>",
                     sample.vm_xml(name, f"Bulk VM number {index}"))
        node, state = nodes[index % len(nodes)], states[index % len(states)]
        record = VMRecord(uuid=uuid, name=name, xml=xml, state=state, node=node,
                          tags=[Tag(name="even" if index % 2 == 0 else "odd")],
                          **_derived(xml))
        docs[schema.vm(uuid)] = record.doc()
        docs[schema.vm_name(name)] = uuid
        docs[schema.vm_status(uuid)] = VMStatus(node=node, running=state == "start").doc()
        names.append(name)
    zk.put_many(docs)
    return names


def _derived(xml: str) -> dict[str, Any]:
    from pvc.cluster import vms

    return vms.derived(domainxml.parse(xml), xml)


def wait_listed(ui: UIClient, total: int, path: str = "/vms") -> str:
    """The list page once pvcapid's watch cache holds `total` VMs."""
    deadline = time.monotonic() + 30
    while True:
        page = ui.get(path).text
        if f'data-total="{total}"' in page:
            return page
        if time.monotonic() > deadline:
            found = re.search(r'data-total="(\d+)"', page)
            raise AssertionError(f"the list never showed {total} VMs (last: {found and found.group(1)})")
        time.sleep(0.1)


def rows(page: str) -> list[tuple[str, str]]:
    return ROW.findall(page)


def snapshot(zk: ZK, uuid: str, name: str, created: float, consistency: str = "fs-frozen") -> None:
    record = VMSnapshotRecord(name=name, created=created, xml="<domain/>", consistency=consistency)
    zk.put(schema.vm_snapshot(uuid, name), record.doc())


def said(answer: httpx.Response) -> str:
    """What an answer says, as a person reads it (entities decoded)."""
    return html.unescape(answer.text)


def event_handlers(page: str) -> list[str]:
    """Attributes named on* of any element (a parser, not a regex: an escaped tag in an attribute
    value is text, not an attribute)."""
    found: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(f"{tag} {name}" for name, _value in attrs if name.lower().startswith("on"))

    Parser().feed(page)
    return found


def vm_doc(zk: ZK, name: str) -> dict[str, Any]:
    uuid = zk.get(schema.vm_name(name))
    return dict(zk.get(schema.vm(uuid)))


@pytest.fixture
def ui(api: Api) -> Any:
    client = UIClient(api)
    yield client
    client.close()


@pytest.fixture
def sampled(api: Api, zk: ZK) -> dict[str, Any]:
    return waits.sampled(zk, api.http)     # pages read VMs from pvcapid's watch cache: once it shows them


# -- the list ---------------------------------------------------------------------------------------

def test_list_pages(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    bulk_vms(zk, 120)
    total = 120 + len(sample.VMS)
    first = wait_listed(ui, total)
    assert len(rows(first)) == 50
    assert f"Showing 1\N{EN DASH}50 of {total} VMs." in first
    assert "Page 1 of 3" in first and 'href="/vms?page=2"' in first and 'id="page-last"' in first
    assert [n for n, _s in rows(first)][:3] == ["build", "bulk0000", "bulk0001"]      # sorted by name
    last = ui.get("/vms?page=3").text
    assert len(rows(last)) == total - 100 and "Page 3 of 3" in last
    assert rows(ui.get("/vms?page=99").text) == rows(last)                             # clamped
    assert len(rows(ui.get("/vms?page=2&per=25").text)) == 25
    for odd in ("/vms?per=7", "/vms?page=abc", "/vms?q=&state=&node=&tag=&per=50"):   # as the form sends
        answer = ui.get(odd)
        assert answer.status_code == 303 and answer.headers["location"] == "/vms", odd
    assert ui.get("/vms?per=25&page=2").headers["location"] == "/vms?page=2&per=25"


def test_list_search_and_filters(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    bulk_vms(zk, 30)
    wait_listed(ui, 30 + len(sample.VMS))

    def names(query: str) -> list[str]:
        answer = ui.get("/vms?" + query, follow_redirects=True)
        assert answer.status_code == 200, answer.text
        return [n for n, _s in rows(answer.text)]

    assert names("q=WEB") == ["web1", "web2"]                                  # any case, any part
    assert names("q=db") == ["db1", "db2"]
    web1 = zk.get(schema.vm_name("web1"))
    assert names(f"q={web1.upper()}") == ["web1"]                              # a whole UUID
    assert names("state=disable&node=hv3") == ["bulk0002", "bulk0005", "bulk0008", "bulk0011",
                                               "bulk0014", "bulk0017", "bulk0020", "bulk0023",
                                               "bulk0026", "bulk0029", "mail"]
    assert names("tag=db") == ["db1", "db2"]
    assert names("tag=db&state=stop") == ["db2"]
    assert names("q=bulk001&tag=odd") == ["bulk0011", "bulk0013", "bulk0015", "bulk0017", "bulk0019"]
    assert len(names("tag=even")) == 15
    empty = ui.get("/vms?q=nothing-like-this").text
    assert "No VM matches" in empty and "Show every VM" in empty
    page = ui.get("/vms?state=stop").text
    assert '<option value="stop" selected>stop (' in page                     # the form keeps its choice
    assert 'id="clear-filters"' in page
    assert "that match (of 36 in the cluster)" in page
    unknown = ui.get("/vms?node=hv9")
    assert unknown.status_code == 400 and "Specified node &#39;hv9&#39; is invalid" in unknown.text
    bad = ui.get("/vms?state=explode")
    assert bad.status_code == 400 and "state: &#39;explode&#39; is not one of" in bad.text


def test_list_view_tokens_round_trip() -> None:
    query = ListQuery.parse({"q": "a/b&c=d", "state": "start", "page": "3", "per": "25"})
    assert ListQuery.from_token(query.token()) == query
    assert ListQuery().token() == "all" and ListQuery.from_token("all") == ListQuery()
    assert "/" not in query.token() and "=" not in query.token()
    assert query.url(page=1) == "/vms?q=a%2Fb%26c%3Dd&state=start&per=25"


def test_list_follows_states_live(ui: UIClient, api: Api, zk: ZK, sampled: dict[str, Any]) -> None:
    page = ui.get("/vms?tag=db").text
    live = re.search(r'data-live="([^"]+)"', page)
    assert live and live.group(1).startswith("/events/vms/list/")
    with ui.stream(live.group(1)) as events:
        first = events.fragments_until(lambda f: "vms-table" in f)
        assert 'data-vm="db2" data-state="stop"' in first["vms-table"]
        assert "web1" not in first["vms-table"]                       # the view's own filter
        assert api.post("/vm/db2/state", params={"state": "start"}).status_code == 200
        events.fragments_until(lambda f: 'data-vm="db2" data-state="start"' in f.get("vms-table", ""))
    assert ui.get("/events/vms/list/%%%").status_code == 400


# -- one VM ----------------------------------------------------------------------------------------

def test_detail_page(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    uuid = zk.get(schema.vm_name("db1"))
    now = time.time()
    snapshot(zk, uuid, "before-upgrade", now - 3600)
    snapshot(zk, uuid, "nightly", now - 60, consistency="crash")
    migration = {"time": now - 120, "duration_s": 1.84, "downtime_ms": 42, "from": "hv1", "to": "hv2",
                 "method": "live"}
    error = {"time": now - 600, "to": "hv3", "error": "hv3: <b>no route</b>"}
    zk.put(schema.vm_status(uuid), {"node": "hv2", "running": True, "last_migration": migration,
                                    "last_migration_error": error})
    answer = ui.get("/vms/db1")
    assert answer.status_code == 200
    page = answer.text
    assert "<h1>VM db1</h1>" in page and uuid in page
    assert page.index("nightly") < page.index("before-upgrade")             # newest first
    assert "fs-frozen" in page and "crash" in page
    assert "hv1 → hv2 · live" in page and "paused 42 ms" in page
    assert "hv3: &lt;b&gt;no route&lt;/b&gt;" in page
    assert "52:54:00:00:00:01" in page and "vmbr100" in page               # its NIC
    assert 'data-live="/events/vms/' + uuid in page
    by_uuid = ui.get(f"/vms/{uuid}")
    assert by_uuid.status_code == 200 and "<h1>VM db1</h1>" in by_uuid.text
    missing = ui.get("/vms/nope")
    assert missing.status_code == 404 and "VM not found" in missing.text
    assert ui.get("/events/vms/nope").status_code == 404


def test_detail_stream_follows_the_vm(ui: UIClient, api: Api, zk: ZK, sampled: dict[str, Any]) -> None:
    uuid = zk.get(schema.vm_name("web2"))
    with ui.stream(f"/events/vms/{uuid}") as events:
        first = events.fragments_until(lambda f: "vm-states" in f and "vm-tags" in f)
        assert set(first) >= {"vm-states", "vm-overview", "vm-migration", "vm-unmigrate", "vm-disks",
                              "vm-nics", "vm-snapshots", "vm-tags"}
        assert 'data-state="start"' in first["vm-states"]
        assert api.post("/vm/web2/node", params={"action": "migrate", "node": "hv3"}).status_code == 200
        seen = events.fragments_until(lambda f: 'data-node="hv3"' in f.get("vm-states", "")
                                      and "Unmigrate to hv1" in f.get("vm-unmigrate", ""))
        assert 'data-state="migrate' in seen["vm-states"]
        assert api.post("/vm/web2/tags", params={"action": "add", "tag": "<live>"}).status_code == 200
        events.fragments_until(lambda f: "&lt;live&gt;" in f.get("vm-tags", ""))


# -- actions ---------------------------------------------------------------------------------------

VM_ACTIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/vms/db2/state", {"state": "start"}),
    ("/vms/db2/node", {"action": "migrate", "node": "hv3"}),
    ("/vms/db2/vcpu", {"vcpus": "4"}),
    ("/vms/db2/memory", {"memory": "4G"}),
    ("/vms/db2/tags", {"action": "add", "tag": "forged"}),
    ("/vms/db2/meta", {"selector": "mem", "migration_method": "live", "migration_max_downtime": "100"}),
    ("/vms/db2/nics/add", {"network": "vmbr7", "model": "virtio"}),
    ("/vms/db2/nics/remove", {"mac": "52:54:00:00:00:01"}),
    ("/vms/db2/volumes/add", {"volume": "vms/db2_sdb", "bus": "scsi"}),
    ("/vms/db2/volumes/remove", {"volume": "vda"}),
    ("/vms/db2/remove", {"confirm_name": "db2"}),
    ("/vms/define", {"xml": "<domain/>"}),
)


def test_every_vm_action_refuses_forgeries(ui: UIClient, api: Api, zk: ZK, sampled: dict[str, Any]) -> None:
    """Without the session's token, with another session's, or from another site: 403 and nothing
    changed; then each action with the right token is not a 403."""
    before = vm_doc(zk, "db2")
    other = UIClient(api)
    try:
        for path, data in VM_ACTIONS:
            for token, headers, words in (("", {}, "CSRF token is missing"),
                                          (other.csrf, {}, "not this session"),
                                          (None, {"Origin": EVIL}, "cross-site request"),
                                          (None, {"Sec-Fetch-Site": "cross-site"}, "cross-site request")):
                for htmx in (False, True):
                    answer = ui.action(path, data, htmx=htmx, token=token, headers=headers)
                    assert answer.status_code == 403, (path, headers, htmx, answer.text)
                    assert words in answer.text, (path, words)
        with httpx.Client(base_url=ui.base) as stranger:           # no session at all
            assert stranger.post("/vms/db2/state", data={"state": "start"}).status_code == 401
    finally:
        other.close()
    assert vm_doc(zk, "db2") == before
    assert not zk.exists(schema.vm_name("forged"))


def test_power_and_placement(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    start = ui.action("/vms/db2/state", {"state": "start", "next": "/vms/db2"})
    assert start.status_code == 303 and start.headers["location"] == "/vms/db2"
    assert vm_doc(zk, "db2")["state"] == "start"
    assert "Starting VM" in ui.get("/vms/db2").text                       # the message, once
    for state in ("shutdown", "stop", "start", "restart", "disable"):
        answer = ui.action("/vms/build/state", {"state": state}, htmx=True)
        assert answer.status_code == 200, (state, answer.text)
        assert 'class="flash flash-ok"' in answer.text
        assert vm_doc(zk, "build")["state"] == state
    refused = ui.action("/vms/build/state", {"state": "restart"}, htmx=True)       # not running
    assert refused.status_code == 400 and "is not in" in said(refused)
    bad = ui.action("/vms/build/state", {"state": "explode"}, htmx=True)
    assert bad.status_code == 400 and "state: &#39;explode&#39; is not one of" in bad.text
    migrate = ui.action("/vms/web2/node", {"action": "migrate", "node": "hv3"}, htmx=True)
    assert migrate.status_code == 200, migrate.text
    doc = vm_doc(zk, "web2")
    assert (doc["state"], doc["node"], doc["last_node"]) == ("migrate", "hv3", "hv1")
    zk.update(schema.vm(doc["uuid"]), lambda d: {**d, "state": "start"})       # as hv3 would settle it
    refused = ui.action("/vms/web2/node", {"action": "migrate", "node": "hv3"}, htmx=True)
    assert refused.status_code >= 400 and 'class="flash flash-bad"' in refused.text
    back = ui.action("/vms/web2/node", {"action": "unmigrate", "node": "hv2"}, htmx=True)
    assert back.status_code == 200, back.text
    doc = vm_doc(zk, "web2")
    assert (doc["node"], doc["last_node"]) == ("hv1", "")                 # unmigrate ignores a node
    zk.update(schema.vm(doc["uuid"]), lambda d: {**d, "state": "start"})
    move = ui.action("/vms/web2/node", {"action": "move", "node": "hv2"}, htmx=True)
    assert move.status_code == 200, move.text
    doc = vm_doc(zk, "web2")
    assert (doc["node"], doc["last_node"]) == ("hv2", "")
    auto = ui.action("/vms/db1/node", {"action": "migrate", "node": ""}, htmx=True)      # the selector
    assert auto.status_code == 200, auto.text
    assert vm_doc(zk, "db1")["node"] in ("hv1", "hv3")


def test_vcpu_memory_and_in_place_errors(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    done = ui.action("/vms/db2/vcpu", {"vcpus": "4", "topology": "1,2,2"}, htmx=True)
    assert done.status_code == 200 and "Successfully modified configuration" in done.text
    summary = domainxml.summary(domainxml.parse(vm_doc(zk, "db2")["xml"]))
    assert summary["vcpu"] == 4 and summary["vcpu_topology"] == "1/2/2"
    done = ui.action("/vms/db2/memory", {"memory": "3G"}, htmx=True)
    assert done.status_code == 200
    assert domainxml.summary(domainxml.parse(vm_doc(zk, "db2")["xml"]))["memory"] == 3072
    running = ui.action("/vms/db1/memory", {"memory": "1024"}, htmx=True)        # db1 runs: not restarted
    assert "applied on next VM start/restart" in running.text
    restarted = ui.action("/vms/db1/vcpu", {"vcpus": "3", "restart": "on"}, htmx=True)
    assert "Restarting it to apply the change" in restarted.text and vm_doc(zk, "db1")["state"] == "restart"
    for path, data, words in (
            ("/vms/db2/vcpu", {"vcpus": "0"}, "vcpus: &#39;0&#39; is not a whole number"),
            ("/vms/db2/vcpu", {"vcpus": "4", "topology": "2,2,2"}, "gives 8 vCPUs, not 4"),
            ("/vms/db2/memory", {"memory": "lots"}, "memory: &#39;lots&#39;"),
            ("/vms/db2/memory", {"memory": "900000G"}, "memory"),
            ("/vms/db2/vcpu", {"vcpus": "100000"}, "vcpus")):
        answer = ui.action(path, data, htmx=True)
        assert answer.status_code == 400, (data, answer.text)
        assert 'class="flash flash-bad"' in answer.text and words in answer.text, (data, answer.text)
    plain = ui.action("/vms/db2/memory", {"memory": "lots"})                       # without JavaScript
    assert plain.status_code == 400 and "memory: &#39;lots&#39;" in plain.text and "<h1>" in plain.text


def test_tags_and_metadata(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    added = ui.action("/vms/db2/tags", {"action": "add", "tag": "backup", "protected": "on"}, htmx=True)
    assert added.status_code == 200 and 'Successfully added tag "backup"' in said(added)
    tags = {t["name"]: t["protected"] for t in vm_doc(zk, "db2")["tags"]}
    assert tags == {"db": False, "backup": True}
    refused = ui.action("/vms/db2/tags", {"action": "remove", "tag": "backup"}, htmx=True)
    assert refused.status_code == 400 and "is protected and cannot be removed" in refused.text
    removed = ui.action("/vms/db2/tags", {"action": "remove", "tag": "db"}, htmx=True)
    assert removed.status_code == 200
    assert [t["name"] for t in vm_doc(zk, "db2")["tags"]] == ["backup"]
    invalid = ui.action("/vms/db2/tags", {"action": "add", "tag": "a/b"}, htmx=True)
    assert invalid.status_code == 400 and "is not a valid tag" in invalid.text
    meta = ui.action("/vms/db2/meta", {"limit": "hv2", "selector": "mem", "migration_method": "shutdown",
                                       "migration_max_downtime": "150", "autostart": "on"}, htmx=True)
    assert meta.status_code == 200 and "Successfully modified PVC metadata" in meta.text
    doc = vm_doc(zk, "db2")
    assert (doc["node_limit"], doc["node_selector"], doc["migration_method"], doc["migration_max_downtime"],
            doc["node_autostart"]) == (["hv2"], "mem", "shutdown", 150, True)
    cleared = ui.action("/vms/db2/meta", {"selector": "none", "migration_method": "none",
                                          "migration_max_downtime": "300"}, htmx=True)
    assert cleared.status_code == 200
    doc = vm_doc(zk, "db2")
    assert (doc["node_limit"], doc["node_autostart"]) == ([], False)
    unknown = ui.action("/vms/db2/meta", {"limit": "hv9", "selector": "none", "migration_method": "none",
                                          "migration_max_downtime": "300"}, htmx=True)
    assert unknown.status_code == 400 and "hv9" in unknown.text


def test_nics_and_volumes(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    added = ui.action("/vms/db2/nics/add", {"network": "vmbr200", "model": "e1000"}, htmx=True)
    assert added.status_code == 200, added.text
    nets = domainxml.parse(vm_doc(zk, "db2")["xml"]).interfaces
    assert [(n.source, n.model) for n in nets] == [("vmbr100", "virtio"), ("vmbr200", "e1000")]
    missing = ui.action("/vms/db2/nics/add", {"network": "4242", "model": "virtio"}, htmx=True)
    assert missing.status_code == 400 and "network 4242 does not exist" in missing.text
    taken = ui.action("/vms/db2/nics/add", {"network": "vmbr9", "model": "virtio",
                                            "mac": "52:54:00:00:00:01"}, htmx=True)
    assert taken.status_code == 400 and "already used" in taken.text
    removed = ui.action("/vms/db2/nics/remove", {"mac": "52:54:00:00:00:01"}, htmx=True)
    assert removed.status_code == 200
    assert [n.source for n in domainxml.parse(vm_doc(zk, "db2")["xml"]).interfaces] == ["vmbr200"]
    # volumes: the pool and volume must be known to the cluster
    nope = ui.action("/vms/db2/volumes/add", {"volume": "vms/db2_sda", "bus": "scsi"}, htmx=True)
    assert nope.status_code == 404 and "No pool with name" in nope.text
    zk.put(schema.pool("vms"), {"name": "vms", "tier": "default"})
    zk.put(schema.volume("vms", "db2_sda"), {"name": "db2_sda", "pool": "vms", "stats": {"size": 1 << 30}})
    form = ui.action("/vms/db2/volumes/add", {"volume": "db2_sda", "bus": "scsi"}, htmx=True)
    assert form.status_code == 400 and "not in the form pool/volume" in form.text
    attached = ui.action("/vms/db2/volumes/add", {"volume": "vms/db2_sda", "bus": "scsi"}, htmx=True)
    assert attached.status_code == 200, attached.text
    doc = vm_doc(zk, "db2")
    assert doc["rbd_volumes"] == ["vms/db2_sda"]
    assert [d.target for d in domainxml.parse(doc["xml"]).disks] == ["sda"]
    detail = ui.get("/vms/db2").text
    assert "vms/db2_sda" in detail and 'id="detach-1"' in detail
    again = ui.action("/vms/db2/volumes/add", {"volume": "vms/db2_sda", "bus": "scsi"}, htmx=True)
    assert again.status_code == 400 and "already attached" in again.text
    detached = ui.action("/vms/db2/volumes/remove", {"volume": "sda"}, htmx=True)
    assert detached.status_code == 200, detached.text
    assert vm_doc(zk, "db2")["rbd_volumes"] == []


def test_a_running_vm_gets_devices_hot_plugged(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    answer = ui.action("/vms/db1/nics/add", {"network": "vmbr300", "model": "virtio"}, htmx=True)
    assert answer.status_code == 200, answer.text
    assert "Live attach queued on hv2 (task " in answer.text
    task_ids = zk.children(schema.TASKS)
    kinds = [zk.get(schema.task(t)).get("kind") for t in task_ids]
    assert "vm.device_attach" in kinds


def test_define_shows_refusals_in_place(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    form = ui.get("/vms/define")
    assert form.status_code == 200 and 'for="define-xml"' in form.text
    typed = "<domain type='kvm'><name>half <b>done</b></name>"
    bad = ui.action("/vms/define", {"xml": typed, "node": "hv2", "user_tags": "a\nb"})
    assert bad.status_code == 400
    page = bad.text
    error = re.search(r'<p class="field-error" id="xml-error" role="alert">'
                      r"<strong>Refused:</strong> ([^<]+)</p>", page)
    assert error and error.group(1).startswith("xml: domain XML is not XML")
    assert page.index('id="xml-error"') < page.index('id="define-xml"')          # beside its field
    assert 'aria-invalid="true" aria-describedby="xml-error xml-help"' in page
    assert html.escape(typed) in page.replace("&#39;", "&#x27;")                     # what was typed, kept
    assert '<option value="hv2" selected>' in page and ">a\nb</textarea>" in page
    no_uuid = ui.action("/vms/define", {"xml": "<domain type='kvm'><name>x</name></domain>"})
    assert no_uuid.status_code == 400 and "xml: no &lt;uuid&gt;" in no_uuid.text
    badtag = ui.action("/vms/define", {"xml": sample.vm_xml("newvm", "new"), "user_tags": "ok\nx/y"})
    assert badtag.status_code == 400 and 'id="user_tags-error"' in badtag.text
    host_path = sample.vm_xml("hostvm", "x").replace(
        "<devices>", "<devices><disk type='file'><source file='/etc/shadow'/><target dev='vdb'/></disk>")
    refused = ui.action("/vms/define", {"xml": host_path})
    assert refused.status_code == 400 and "/etc/shadow" in refused.text           # the domain XML policy
    taken = ui.action("/vms/define", {"xml": sample.vm_xml("web1", "again")})
    assert taken.status_code == 400 and 'A VM named "web1" already exists' in said(taken)
    assert 'id="xml-error"' in taken.text
    assert not zk.exists(schema.vm_name("newvm")) and not zk.exists(schema.vm_name("hostvm"))


def test_define_a_vm(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    xml = sample.vm_xml("fresh", "A <fresh> VM")
    done = ui.action("/vms/define", {"xml": xml, "node": "hv3", "limit": "hv3", "selector": "load",
                                     "migration_method": "live", "user_tags": "new\nweb",
                                     "protected_tags": "keep", "autostart": "on", "start": "on"})
    assert done.status_code == 303 and done.headers["location"] == "/vms/fresh"
    doc = vm_doc(zk, "fresh")
    assert (doc["node"], doc["node_limit"], doc["node_selector"], doc["node_autostart"], doc["state"]) == \
        ("hv3", ["hv3"], "load", True, "start")
    assert [(t["name"], t["protected"]) for t in doc["tags"]] == [("new", False), ("web", False),
                                                                  ("keep", True)]
    page = ui.get("/vms/fresh").text
    assert "Added new VM with Name &#34;fresh&#34;" in page and "Starting VM" in page
    assert "A &lt;fresh&gt; VM" in page
    htmx = ui.action("/vms/define", {"xml": sample.vm_xml("fresh2", "x")}, htmx=True)
    assert htmx.status_code == 200 and htmx.headers["HX-Redirect"] == "/vms/fresh2"


def test_remove_needs_the_name(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    wrong = ui.action("/vms/mail/remove", {"confirm_name": "mai"}, htmx=True)
    assert wrong.status_code == 400 and "type its name to confirm" in wrong.text
    assert zk.exists(schema.vm_name("mail"))
    done = ui.action("/vms/mail/remove", {"confirm_name": "mail"})
    assert done.status_code == 303 and done.headers["location"] == "/vms"
    assert not zk.exists(schema.vm_name("mail"))
    assert 'data-vm="mail"' not in wait_listed(ui, len(sample.VMS) - 1)


# -- escaping --------------------------------------------------------------------------------------

def test_what_users_wrote_is_escaped(ui: UIClient, zk: ZK, sampled: dict[str, Any]) -> None:
    uuid = zk.get(schema.vm_name("web1"))
    pages = {path: ui.get(path, follow_redirects=True).text
             for path in ("/vms", "/vms/web1", "/vms?tag=" + sample.XSS_TAG)}
    for path, text in pages.items():
        assert "<script>window.__pvc_xss" not in text and "<img src=x" not in text, path
    escaped_tag = "&lt;img src=x onerror=window.__pvc_xss=3&gt;"
    escaped_description = "Web tier &lt;script&gt;window.__pvc_xss=1&lt;/script&gt;"
    for path in ("/vms", "/vms/web1"):
        assert escaped_tag in pages[path] and escaped_description in pages[path], path
    assert [n for n, _s in rows(pages["/vms?tag=" + sample.XSS_TAG])] == ["web1"]
    xml = pages["/vms/web1"].split('aria-label="The libvirt XML', 1)[1]
    assert "&amp;lt;script&amp;gt;window.__pvc_xss=1" in xml                     # the XML, as text
    for stream in ("/events/vms/list/all", f"/events/vms/{uuid}"):
        with ui.stream(stream) as events:
            seen = events.fragments_until(lambda f: "vms-table" in f or "vm-tags" in f)
        joined = "".join(seen.values())
        assert "<script>window.__pvc_xss" not in joined and "<img src=x" not in joined
        assert escaped_tag in joined


def test_no_inline_script_or_style(ui: UIClient, sampled: dict[str, Any]) -> None:
    for path in ("/vms", "/vms/web1", "/vms/define", "/vms?q=x"):
        page = ui.get(path).text
        assert "<style" not in page and " style=" not in page, path
        for tag in page.split("<script")[1:]:
            assert tag.split(">", 1)[0].strip().startswith("src="), path
        assert event_handlers(page) == [], path


def test_every_live_fragment_exists() -> None:
    from pvc.api.web.pages import vms
    from pvc.web import TEMPLATES

    for fragments in (vms.LIST_FRAGMENTS, vms.DETAIL_FRAGMENTS):
        for element, template in fragments.items():
            assert (TEMPLATES / template).exists(), template
            assert template.rsplit("/", 1)[-1].startswith("_"), template
            assert re.fullmatch(r"[a-z-]+", element)
            page = "list.html" if fragments is vms.LIST_FRAGMENTS else "detail.html"
            assert f'id="{element}"' in (TEMPLATES / "vms" / page).read_text(), element
