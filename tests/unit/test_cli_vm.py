"""`pvc vm` against a scripted API (httpx.MockTransport): the client-side XML edit flows, what is
sent where (query vs form, PUT then live /device), and the VM formatters.

The real API is exercised in tests/integration/test_cli_vm.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from click.testing import Result

from pvc.cli.commands import vm as vmcli
from pvc.cli.output import render
from pvc.core import domainxml
from tests.unit.test_cli_flows import FakeApi, pvc

UUID = "3f9c1a52-8b1e-4d6a-9c0b-2a7e5d4c3b21"
XML = f"""<domain type="kvm">
  <name>web1</name>
  <uuid>{UUID}</uuid>
  <memory unit="MiB">1024</memory>
  <vcpu>2</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type="network" device="disk">
      <driver name="qemu" type="raw" cache="none"/>
      <source protocol="rbd" name="vms/web1_disk0"/>
      <target dev="sda" bus="scsi"/>
    </disk>
    <interface type="bridge">
      <mac address="52:54:00:12:34:56"/>
      <source bridge="vmbr100"/>
      <model type="virtio"/>
    </interface>
  </devices>
</domain>
"""


def vm_item(state: str = "start", **extra: Any) -> dict[str, Any]:
    """A VM item as GET /vm/<vm> answers (API v1 shape), built from XML like the server does."""
    item = {
        **domainxml.summary(domainxml.parse(XML)),
        "state": state, "node": "hv1", "last_node": "", "migrated": "no", "failed_reason": "",
        "node_limit": None, "node_selector": "none", "node_autostart": False,
        "migration_method": "live", "migration_max_downtime": 300, "tags": [], "snapshots": [],
        "profile": "", "memory_stats": {}, "vcpu_stats": {}, "xml": XML.replace('"', "'"),
    }
    item.update(extra)
    return item


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pvc.json").write_text(json.dumps({"c1": {
        "description": "test", "host": "pvc.example", "port": 7370, "scheme": "http", "api_key": "KEY"}}))
    return {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}


def run(api: FakeApi, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return pvc(api, env, "-q", *args, input=input)


def form(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True)


def serve_vm(api: FakeApi, item: dict[str, Any]) -> None:
    api.on("GET", "/vm/web1", [item])
    api.on("PUT", "/vm/web1", {"message": 'Modified VM "web1".'})


# -- client-side XML edits ---------------------------------------------------------------------------

def test_vcpu_set_puts_edited_xml_and_says_restart_is_needed(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    result = run(api, env, "vm", "vcpu", "set", "web1", "4", "--topology", "2,2,1", "-R")
    assert result.exit_code == 0, result.output
    (put,) = api.sent("PUT", "/vm/web1")
    assert put.url.params["restart"] == "false"
    sent = form(put)["xml"][0]
    domain = domainxml.parse(sent)
    assert domain.vcpus == 4 and str(domain.topology) == "2/2/1"
    assert domain.disks == domainxml.parse(XML).disks  # nothing else touched
    assert "applied on next VM start/restart" in result.stdout
    assert not api.sent("POST", "/vm/web1/device")


def test_vcpu_set_bad_topology_sends_nothing(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    result = run(api, env, "vm", "vcpu", "set", "web1", "4", "-t", "2,1,1")
    assert result.exit_code == 1
    assert result.stderr.strip() == "The topology '2,1,1' gives 2 vCPUs, not 4."
    assert not api.sent("PUT", "/vm/web1")


def test_vcpu_set_restart_sends_restart_only_for_running_vm(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    assert run(api, env, "vm", "vcpu", "set", "web1", "3", "-r", "-y").exit_code == 0
    assert api.sent("PUT", "/vm/web1")[-1].url.params["restart"] == "true"
    serve_vm(api, vm_item("stop"))
    result = run(api, env, "vm", "vcpu", "set", "web1", "3", "-r", "-y")
    assert api.sent("PUT", "/vm/web1")[-1].url.params["restart"] == "false"  # would start a stopped VM
    assert "next VM start" not in result.stdout


def test_restart_without_yes_is_confirmed(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    result = run(api, env, "vm", "memory", "set", "web1", "2G", "-r", input="n\n")
    assert result.exit_code == 1 and "Aborted." in result.stderr
    assert not api.sent("PUT", "/vm/web1")
    # unset restart on a running VM asks; answering no keeps it running
    result = run(api, env, "vm", "memory", "set", "web1", "2G", input="n\n")
    assert result.exit_code == 0
    assert api.sent("PUT", "/vm/web1")[-1].url.params["restart"] == "false"


@pytest.mark.parametrize(("given", "mib"), [("2048", 2048), ("2G", 2048), ("512M", 512), ("1.5GiB", 1536)])
def test_memory_set_units(api: FakeApi, env: dict[str, str], given: str, mib: int) -> None:
    serve_vm(api, vm_item("stop"))
    result = run(api, env, "vm", "memory", "set", "web1", given)
    assert result.exit_code == 0, result.output
    assert domainxml.parse(form(api.sent("PUT", "/vm/web1")[-1])["xml"][0]).memory_mib == mib


def test_memory_set_rejects_nonsense(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    result = run(api, env, "vm", "memory", "set", "web1", "lots")
    assert result.exit_code == 1 and "not a size" in result.stderr
    assert not api.sent("PUT", "/vm/web1")


def test_network_add_running_vm_hot_plugs_after_put(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    api.on("POST", "/vm/web1/device", httpx.Response(202, json={
        "task_id": "ab12cd34", "task_name": "vm.device_attach", "run_on": "hv1"}))
    api.on("GET", "/tasks/ab12cd34", {"state": "SUCCESS", "current": 1, "total": 1,
                                      "status": "Attached device to VM web1"})
    result = run(api, env, "vm", "network", "add", "web1", "200", "-a", "52:54:00:aa:bb:cc")
    assert result.exit_code == 0, result.output
    methods = [(r.method, r.url.path) for r in api.requests if r.method != "GET"]
    assert methods == [("PUT", "/api/v1/vm/web1"), ("POST", "/api/v1/vm/web1/device")]
    new = domainxml.parse(form(api.sent("PUT", "/vm/web1")[0])["xml"][0])
    assert [n.source for n in new.interfaces] == ["vmbr100", "vmbr200"]
    device = form(api.sent("POST", "/vm/web1/device")[0])["xml"][0]
    assert device.startswith("<interface") and 'bridge="vmbr200"' in device and "52:54:00:aa:bb:cc" in device
    assert api.sent("PUT", "/vm/web1")[0].url.params["restart"] == "false"
    assert "SUCCESS: Attached device to VM web1" in result.stdout
    assert "next VM start" not in result.stdout  # it is live already


def test_network_add_stopped_or_restart_does_not_hot_plug(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    assert run(api, env, "vm", "network", "add", "web1", "vmbr7").exit_code == 0
    serve_vm(api, vm_item("start"))
    assert run(api, env, "vm", "network", "add", "web1", "200", "-r", "-y").exit_code == 0
    assert not api.sent("POST", "/vm/web1/device")
    assert len(api.sent("PUT", "/vm/web1")) == 2


def test_network_add_failed_hot_plug_says_what_happened(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    api.on("POST", "/vm/web1/device", httpx.Response(400, json={"message": "VM is not running"}))
    result = run(api, env, "vm", "network", "add", "web1", "200")
    assert result.exit_code == 1
    assert result.stderr.strip() == ('Modified VM "web1". Live attach failed: VM is not running; '
                                     "the change applies at the next restart.")


def test_network_remove_detaches_old_device(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("start"))
    api.on("DELETE", "/vm/web1/device", {"message": "Detached."})
    result = run(api, env, "vm", "network", "remove", "web1", "100")
    assert result.exit_code == 0, result.output
    assert domainxml.parse(form(api.sent("PUT", "/vm/web1")[0])["xml"][0]).interfaces == ()
    device = form(api.sent("DELETE", "/vm/web1/device")[0])["xml"][0]
    assert "52:54:00:12:34:56" in device
    result = run(api, env, "vm", "network", "remove", "web1", "300")
    assert result.exit_code == 1 and "has no interface with bridge vmbr300" in result.stderr


def test_volume_add_and_remove(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    assert run(api, env, "vm", "volume", "add", "web1", "vms/web1_data").exit_code == 1   # no such volume
    assert not api.sent("PUT", "/vm/web1")
    api.on("GET", "/storage/ceph/volume/vms/web1_data", [{"name": "web1_data", "pool": "vms", "stats": {}}])
    result = run(api, env, "vm", "volume", "add", "web1", "vms/web1_data", "--monitor", "10.0.0.1:6789",
                 "--secret-uuid", "11111111-2222-3333-4444-555555555555")
    assert result.exit_code == 0, result.output
    new = domainxml.parse(form(api.sent("PUT", "/vm/web1")[0])["xml"][0])
    disk = new.disks[-1]
    assert disk.source is not None and disk.source.name == "vms/web1_data"
    assert disk.target == "sdb" and disk.source.hosts == (("10.0.0.1", "6789"),)
    assert disk.auth is not None and disk.auth.secret_uuid == "11111111-2222-3333-4444-555555555555"
    assert run(api, env, "vm", "volume", "add", "web1", "nopool").exit_code == 1

    serve_vm(api, vm_item("start"))
    api.on("DELETE", "/vm/web1/device", {"message": "Detached."})
    result = run(api, env, "vm", "volume", "remove", "web1", "vms/web1_disk0")
    assert result.exit_code == 0, result.output
    assert domainxml.parse(form(api.sent("PUT", "/vm/web1")[-1])["xml"][0]).disks == ()
    assert "vms/web1_disk0" in form(api.sent("DELETE", "/vm/web1/device")[0])["xml"][0]


# -- other flows -------------------------------------------------------------------------------------

def test_define_sends_xml_as_form_and_options_as_query(api: FakeApi, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    api.on("POST", "/vm", {"message": 'Added new VM "web1" to database.'})
    path = tmp_path / "web1.xml"
    path.write_text(XML)
    result = run(api, env, "vm", "define", str(path), "--node", "hv2", "-l", "hv1,hv2", "-s", "mem", "-a",
                 "--migration-method", "live", "-d", "500", "-g", "web", "-g", "prod", "-G", "keep")
    assert result.exit_code == 0, result.output
    (request,) = api.sent("POST", "/vm")
    params = request.url.params
    assert params["node"] == "hv2" and params["limit"] == "hv1,hv2" and params["selector"] == "mem"
    assert params["autostart"] == "true" and params["migration_method"] == "live"
    assert params["migration_max_downtime"] == "500"
    assert params.get_list("user_tags") == ["web", "prod"] and params.get_list("protected_tags") == ["keep"]
    assert form(request)["xml"] == [XML]
    # from stdin too
    assert run(api, env, "vm", "define", "-", input=XML).exit_code == 0


def test_define_bad_xml_fails_locally(api: FakeApi, env: dict[str, str]) -> None:
    result = run(api, env, "vm", "define", "-", input="<domain><name>x</name>")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: XML is malformed or invalid:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not api.requests


def test_api_error_printed_once(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/vm/web1/state", httpx.Response(400, json={"message": 'VM "web1" is not running.'}))
    result = run(api, env, "vm", "shutdown", "web1", "-y")
    assert result.exit_code == 1
    assert result.stderr == 'VM "web1" is not running.\n' and result.stdout == ""


def test_state_and_node_params(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/vm/web1/state", {"message": "ok"})
    api.on("POST", "/vm/web1/node", {"message": "ok"})
    assert run(api, env, "vm", "restart", "web1", "--wait", "-y").exit_code == 0
    assert run(api, env, "vm", "start", "web1").exit_code == 0
    assert run(api, env, "vm", "disable", "web1", "--force", "-y").exit_code == 0
    states = [dict(r.url.params) for r in api.sent("POST", "/vm/web1/state")]
    assert states == [{"state": "restart", "wait": "true"}, {"state": "start"},
                      {"state": "disable", "force": "true"}]
    assert run(api, env, "vm", "migrate", "web1", "hv2", "--wait", "--force-live").exit_code == 0
    assert run(api, env, "vm", "move", "web1", "-t", "hv3").exit_code == 0
    assert run(api, env, "vm", "unmigrate", "web1").exit_code == 0
    moves = [dict(r.url.params) for r in api.sent("POST", "/vm/web1/node")]
    assert moves[0] == {"action": "migrate", "node": "hv2", "force": "false", "wait": "true",
                        "force_live": "true"}
    assert moves[1]["action"] == "move" and moves[1]["node"] == "hv3"
    assert moves[2]["action"] == "unmigrate" and "node" not in moves[2]
    # restart without -y asks, and no means nothing is sent
    result = run(api, env, "vm", "stop", "web1", input="n\n")
    assert result.exit_code == 1 and len(api.sent("POST", "/vm/web1/state")) == 3


def test_undefine_and_remove_need_confirmation(api: FakeApi, env: dict[str, str]) -> None:
    api.on("DELETE", "/vm/web1", {"message": 'Undefined VM "web1".'})
    result = run(api, env, "vm", "undefine", "web1", input="n\n")
    assert result.exit_code == 1 and not api.requests
    assert run(api, env, "vm", "undefine", "web1", "-y").exit_code == 0
    assert run(api, env, "vm", "remove", "web1", "-y").exit_code == 0
    assert [r.url.params["delete_disks"] for r in api.sent("DELETE", "/vm/web1")] == ["false", "true"]


def test_meta_sends_only_given_fields(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/vm/web1/meta", {"message": "ok"})
    result = run(api, env, "vm", "meta", "web1")
    assert result.exit_code == 1 and "At least one metadata option" in result.stderr
    assert run(api, env, "vm", "meta", "web1", "--no-node-autostart", "-l", "").exit_code == 0
    assert dict(api.sent("POST", "/vm/web1/meta")[0].url.params) == {"limit": "", "autostart": "false"}


def test_flush_locks_waits_for_task(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/vm/web1/locks", httpx.Response(202, json={
        "task_id": "f00dfeed", "task_name": "vm.flush_locks", "run_on": "hv1"}))
    api.on("GET", "/tasks/f00dfeed", {"state": "SUCCESS", "current": 1, "total": 1, "status": "Flushed"})
    result = run(api, env, "vm", "flush-locks", "web1")
    assert result.exit_code == 0 and result.stdout.strip() == "SUCCESS: Flushed"
    result = run(api, env, "vm", "flush-locks", "web1", "--no-wait")
    assert result.stdout.strip() == "Task ID: f00dfeed assigned to node hv1"


def test_modify_shows_diff_and_confirms(api: FakeApi, env: dict[str, str], tmp_path: Path) -> None:
    serve_vm(api, vm_item("stop"))
    path = tmp_path / "new.xml"
    path.write_text(XML.replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu>"))
    result = pvc(api, env, "vm", "modify", "web1", str(path), input="n\n")
    assert result.exit_code == 1 and "+  <vcpu>3</vcpu>" in result.stderr and not api.sent("PUT", "/vm/web1")
    result = run(api, env, "vm", "modify", "web1", str(path), "-y")
    assert result.exit_code == 0
    assert "<vcpu>3</vcpu>" in form(api.sent("PUT", "/vm/web1")[0])["xml"][0]
    path.write_text(XML)
    result = pvc(api, env, "vm", "modify", "web1", str(path))
    assert result.exit_code == 0 and "no modifications" in result.stderr
    assert len(api.sent("PUT", "/vm/web1")) == 1


def test_dump_log_and_list_filters(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item())
    dumped = run(api, env, "vm", "dump", "web1").stdout
    assert domainxml.parse(dumped).name == "web1" and '<target dev="sda" bus="scsi"/>' in dumped
    api.on("GET", "/vm/web1/console", {"name": "web1", "data": "\n".join(f"l{i}" for i in range(20))})
    assert run(api, env, "vm", "log", "web1", "-l", "3").stdout.split() == ["l17", "l18", "l19"]
    api.on("GET", "/vm", httpx.Response(404, json={"message": "VM not found."}))
    result = run(api, env, "vm", "list", "web", "-t", "hv1", "-s", "start", "-g", "prod", "-n")
    assert result.exit_code == 0 and result.stdout.strip() == "No VMs found."
    assert dict(api.sent("GET", "/vm")[0].url.params) == {"limit": "web", "node": "hv1", "state": "start",
                                                         "tag": "prod", "negate": "true"}
    api.on("GET", "/vm", [vm_item(), {**vm_item("stop"), "name": "db1"}])
    assert run(api, env, "vm", "list", "-r").stdout.split() == ["db1", "web1"]


def test_gets_in_upstream_shapes(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item(vcpu_topology="1/2/1"))
    assert json.loads(run(api, env, "vm", "vcpu", "get", "web1", "-f", "json").stdout) == {
        "name": "web1", "vcpus": 2, "sockets": 1, "cores": 2, "threads": 1}
    assert json.loads(run(api, env, "vm", "memory", "get", "web1", "-f", "json").stdout) == {
        "name": "web1", "memory": 1024}
    assert run(api, env, "vm", "network", "get", "web1", "-f", "raw").stdout.strip() == "100"
    assert run(api, env, "vm", "volume", "get", "web1", "-f", "raw").stdout.strip() == "rbd:vms/web1_disk0"
    api.on("GET", "/vm/web1/tags", {"name": "web1", "tags": [{"name": "prod", "type": "user",
                                                               "protected": True}]})
    assert run(api, env, "vm", "tag", "get", "web1", "-f", "raw").stdout.strip() == "prod"
    api.on("POST", "/vm/web1/tags", {"message": "ok"})
    assert run(api, env, "vm", "tag", "add", "web1", "x", "-p").exit_code == 0
    assert run(api, env, "vm", "tag", "remove", "web1", "x").exit_code == 0
    assert [dict(r.url.params) for r in api.sent("POST", "/vm/web1/tags")] == [
        {"action": "add", "tag": "x", "protected": "true"}, {"action": "remove", "tag": "x"}]


# -- formatters --------------------------------------------------------------------------------------

def test_list_table_and_colours() -> None:
    web = vm_item("start", tags=[{"name": "prod", "type": "user", "protected": False}])
    db = {**vm_item("fail"), "name": "db1", "node": "hv2", "last_node": "hv1", "migrated": "from hv1",
          "memory": 16384, "vcpu": 8}
    text = render(vmcli.format_list_pretty([web, db]))
    rows = [line.split() for line in text.splitlines()]
    assert rows[0] == ["Name", "State", "Tags", "Snapshots", "Networks", "RAM", "vCPUs", "Node", "Migrated"]
    assert rows[1] == ["db1", "fail", "N/A", "0", "100", "16G", "8", "hv2", "from", "hv1"]
    assert rows[2] == ["web1", "start", "prod", "0", "100", "1G", "2", "hv1", "no"]
    coloured = render(vmcli.format_list_pretty([web, db]), colour=True)
    assert "\x1b[32mstart" in coloured and "\x1b[1;31mfail" in coloured
    assert render(vmcli.format_list_pretty([])) == "No VMs found."
    assert [vmcli.vm_state_style(s) for s in ("start", "shutdown", "disable", "stop", "migrate")] == [
        "green", "yellow", "yellow", "red", "blue"]


def test_info_pretty_and_long() -> None:
    item = vm_item("start", vnc={"listen": "127.0.0.1", "port": "5900"},
                   node_limit=["hv1", "hv2"], memory_stats={"rss": 123},
                   disks=[{"type": "rbd", "name": "vms/web1_disk0", "dev": "sda", "bus": "scsi",
                           "rd_req": 1500, "rd_bytes": 1048576, "wr_req": 2, "wr_bytes": 0}])
    pretty = render(vmcli.format_info(item))
    assert "UUID:" in pretty and UUID in pretty and "1G" in pretty
    assert "127.0.0.1:5900" in pretty and "hv1, hv2" in pretty
    assert "Disks" not in pretty and "rss" not in pretty
    long = render(vmcli.format_info(item, long=True))
    assert "rss=123" in long and "vms/web1_disk0" in long and "1.5K/2" in long and "1M/0B" in long
    assert "52:54:00:12:34:56" in long and "Controllers" in long


def test_parsers() -> None:
    assert vmcli.bridge_of("100") == "vmbr100" and vmcli.bridge_of("br0") == "br0"
    assert vmcli.parse_memory("4G") == 4096
    assert str(vmcli.parse_topology("2,2,2", 8)) == "2/2/2"
    assert vmcli.pretty_xml("not xml") == "not xml"


# -- optimistic concurrency: the ETag read is sent back as If-Match ---------------------------------

def serve_versioned_vm(api: FakeApi, item: dict[str, Any], etag: str | None = '"7"',
                       put: httpx.Response | None = None) -> None:
    """GET /vm/web1 answers with an ETag (when given); PUT answers `put` or success."""
    headers = {"ETag": etag} if etag else {}
    api.on("GET", "/vm/web1", lambda _r: httpx.Response(200, json=[item], headers=headers))
    api.on("GET", "/storage/ceph/volume/vms/web1_data", [{"name": "web1_data", "pool": "vms", "stats": {}}])
    api.on("PUT", "/vm/web1", lambda _r: put if put is not None else httpx.Response(
        200, json={"message": 'Modified VM "web1".'}))


EDITS = {
    "vcpu set": ["vm", "vcpu", "set", "web1", "4"],
    "memory set": ["vm", "memory", "set", "web1", "2G"],
    "network add": ["vm", "network", "add", "web1", "vmbr7"],
    "network remove": ["vm", "network", "remove", "web1", "100"],
    "volume add": ["vm", "volume", "add", "web1", "vms/web1_data"],
    "volume remove": ["vm", "volume", "remove", "web1", "vms/web1_disk0"],
}


@pytest.mark.parametrize("args", EDITS.values(), ids=EDITS.keys())
def test_edit_sends_if_match_with_the_etag_it_read(api: FakeApi, env: dict[str, str],
                                                   args: list[str]) -> None:
    serve_versioned_vm(api, vm_item("stop"))
    result = run(api, env, *args)
    assert result.exit_code == 0, result.output
    (put,) = api.sent("PUT", "/vm/web1")
    assert put.headers["If-Match"] == '"7"'


@pytest.mark.parametrize("args", EDITS.values(), ids=EDITS.keys())
def test_edit_without_etag_sends_no_if_match(api: FakeApi, env: dict[str, str], args: list[str]) -> None:
    serve_versioned_vm(api, vm_item("stop"), etag=None)
    result = run(api, env, *args)
    assert result.exit_code == 0, result.output
    (put,) = api.sent("PUT", "/vm/web1")
    assert "If-Match" not in put.headers


CHANGED = 'VM "web1" was changed by someone else since it was read (version 8, not 7); read it again.'


@pytest.mark.parametrize("args", EDITS.values(), ids=EDITS.keys())
def test_edit_of_a_vm_changed_meanwhile_fails_with_the_api_message(api: FakeApi, env: dict[str, str],
                                                                   args: list[str]) -> None:
    serve_versioned_vm(api, vm_item("start"), put=httpx.Response(412, json={"message": CHANGED}))
    api.on("POST", "/vm/web1/device", {"message": "Attached."})
    api.on("DELETE", "/vm/web1/device", {"message": "Detached."})
    result = run(api, env, *args, "-R", "-y")
    assert result.exit_code != 0
    assert result.stderr.strip() == CHANGED and result.stdout == ""
    assert api.sent("PUT", "/vm/web1")[0].headers["If-Match"] == '"7"'
    assert not api.sent("POST", "/vm/web1/device") and not api.sent("DELETE", "/vm/web1/device")


def test_hot_plug_after_a_versioned_put_carries_no_if_match(api: FakeApi, env: dict[str, str]) -> None:
    """Our own PUT moved the version on; the device call must not be refused for it."""
    serve_versioned_vm(api, vm_item("start"))
    api.on("POST", "/vm/web1/device", {"message": "Attached."})
    result = run(api, env, "vm", "network", "add", "web1", "vmbr7")
    assert result.exit_code == 0, result.output
    assert api.sent("PUT", "/vm/web1")[0].headers["If-Match"] == '"7"'
    assert "If-Match" not in api.sent("POST", "/vm/web1/device")[0].headers


def test_modify_from_file_and_editor_send_if_match(api: FakeApi, env: dict[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    serve_versioned_vm(api, vm_item("stop"), etag='W/"12"')
    path = tmp_path / "new.xml"
    path.write_text(XML.replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu>"))
    assert run(api, env, "vm", "modify", "web1", str(path), "-y").exit_code == 0
    monkeypatch.setattr("click.edit", lambda text, **_kw: text.replace("<vcpu>2</vcpu>", "<vcpu>5</vcpu>"))
    result = run(api, env, "vm", "modify", "web1", "--editor", "-y")
    assert result.exit_code == 0, result.output
    puts = api.sent("PUT", "/vm/web1")
    assert [p.headers["If-Match"] for p in puts] == ['W/"12"', 'W/"12"']
    assert "<vcpu>5</vcpu>" in form(puts[1])["xml"][0]


def test_modify_of_a_vm_changed_while_editing_fails(api: FakeApi, env: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    serve_versioned_vm(api, vm_item("stop"), put=httpx.Response(412, json={"message": CHANGED}))
    monkeypatch.setattr("click.edit", lambda text, **_kw: text.replace("<vcpu>2</vcpu>", "<vcpu>5</vcpu>"))
    result = run(api, env, "vm", "modify", "web1", "--editor", "-y")
    assert result.exit_code == 1 and result.stderr.strip() == CHANGED


def test_list_state_filter_takes_the_vocabulary(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/vm", [])
    assert run(api, env, "vm", "list", "-s", "migrate-live").exit_code == 0
    assert api.sent("GET", "/vm")[0].url.params["state"] == "migrate-live"
