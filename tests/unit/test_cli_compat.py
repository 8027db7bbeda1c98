"""Our CLI against upstream PVC 1.0.3's (pvc-compat-gaps.md §2.3 and Appendix A): the defaults,
options and arguments upstream's users type, checked against a scripted API (what is sent where).
Also the lab benches' naming and clean-up logic (bench/_lab_docs.py), which needs no lab.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from lxml import etree

from tests.unit.test_cli_flows import FakeApi, pvc
from tests.unit.test_cli_vm import XML, form, serve_vm, vm_item

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pvc.json").write_text(json.dumps({"c1": {
        "description": "test cluster", "host": "pvc.example", "port": 7370, "scheme": "http",
        "api_key": "KEY"}}))
    return {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}


def run(api: FakeApi, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return pvc(api, env, "-q", *args, input=input)


# -- 1. node commands default to this host -----------------------------------------------------------

NODE = {"name": "hv7", "daemon_state": "run", "coordinator_state": "secondary", "domain_state": "ready"}


@pytest.fixture
def this_host(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("socket.gethostname", lambda: "hv7.example.org")
    return "hv7"


@pytest.mark.parametrize(("action", "endpoint", "state"), [
    ("primary", "coordinator-state", "primary"), ("secondary", "coordinator-state", "secondary"),
    ("flush", "domain-state", "flush"), ("ready", "domain-state", "ready")])
def test_node_state_commands_default_to_this_host(api: FakeApi, env: dict[str, str], this_host: str,
                                                  action: str, endpoint: str, state: str) -> None:
    api.on("POST", f"/node/{this_host}/{endpoint}", {"message": "done"})
    result = run(api, env, "node", action)
    assert result.exit_code == 0, result.output
    (sent,) = api.sent("POST", f"/node/{this_host}/{endpoint}")
    assert sent.url.params["state"] == state
    api.on("POST", f"/node/hv2/{endpoint}", {"message": "done"})
    assert run(api, env, "node", action, "hv2").exit_code == 0  # an explicit NODE still wins
    assert api.sent("POST", f"/node/hv2/{endpoint}")


def test_node_info_and_log_default_to_this_host(api: FakeApi, env: dict[str, str], this_host: str) -> None:
    api.on("GET", f"/node/{this_host}", [NODE])
    api.on("GET", f"/node/{this_host}/log", {"name": this_host, "data": "line one\nline two"})
    info = run(api, env, "node", "info", "-f", "json")
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["name"] == "hv7"
    log = run(api, env, "node", "log", "-l", "2")
    assert log.exit_code == 0, log.output
    assert "line two" in log.stdout
    assert api.sent("GET", f"/node/{this_host}/log")


# -- 2. provisioner create waits by default --------------------------------------------------------

def serve_create(api: FakeApi) -> None:
    api.on("POST", "/provisioner/create", httpx.Response(202, json={
        "task_id": "af1d0682", "task_name": "provisioner.create", "run_on": "hv1 (primary)"}))
    api.on("GET", "/tasks/af1d0682", {"state": "SUCCESS", "current": 11, "total": 11,
                                      "status": 'VM "web2" has been provisioned and started'})


def test_provisioner_create_waits_by_default(api: FakeApi, env: dict[str, str]) -> None:
    serve_create(api)
    result = run(api, env, "provisioner", "create", "web2", "std")
    assert result.exit_code == 0, result.output
    assert api.sent("GET", "/tasks/af1d0682")
    assert result.stdout.endswith('SUCCESS: VM "web2" has been provisioned and started\n')


def test_provisioner_create_no_wait_and_short_flags(api: FakeApi, env: dict[str, str]) -> None:
    serve_create(api)
    result = run(api, env, "provisioner", "create", "web2", "std", "--no-wait", "-S")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Task ID: af1d0682 assigned to node hv1 (primary)\n"  # as upstream
    assert not api.sent("GET", "/tasks/af1d0682")
    params = api.sent("POST", "/provisioner/create")[0].url.params
    assert params["define_vm"] == "true" and params["start_vm"] == "false"
    assert run(api, env, "provisioner", "create", "web3", "std", "--no-wait", "-D", "-s").exit_code == 0
    params = api.sent("POST", "/provisioner/create")[1].url.params
    assert params["define_vm"] == "false" and params["start_vm"] == "false"  # -D implies no start


# -- 3. vm define sends upstream's defaults -----------------------------------------------------------

def test_vm_define_without_method_sends_none(api: FakeApi, env: dict[str, str], tmp_path: Path) -> None:
    api.on("POST", "/vm", {"message": "Added new VM"})
    path = tmp_path / "web1.xml"
    path.write_text(XML)
    assert run(api, env, "vm", "define", str(path)).exit_code == 0
    params = api.sent("POST", "/vm")[0].url.params
    assert params["migration_method"] == "none" and params["selector"] == "none"
    assert run(api, env, "vm", "define", str(path), "-m", "live", "-s", "mem").exit_code == 0
    params = api.sent("POST", "/vm")[1].url.params
    assert params["migration_method"] == "live" and params["selector"] == "mem"


# -- 4. options upstream has -------------------------------------------------------------------------

def test_vm_modify_confirm_diff_and_confirm_restart(api: FakeApi, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    path = tmp_path / "new.xml"
    path.write_text(XML.replace("<vcpu>2</vcpu>", "<vcpu>3</vcpu>"))
    serve_vm(api, vm_item("start"))
    # -d answers the diff question; -r on a running VM still asks before restarting it
    result = run(api, env, "vm", "modify", "web1", str(path), "-d", "-r", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Write modifications" not in result.stderr and "Restart virtual machine" in result.stderr
    assert api.sent("PUT", "/vm/web1")[-1].url.params["restart"] == "true"
    # -d -c: nothing asked at all
    result = run(api, env, "vm", "modify", "web1", str(path), "-d", "-c", "-r")
    assert result.exit_code == 0, result.output
    assert "Write modifications" not in result.stderr and "Restart" not in result.stderr
    assert api.sent("PUT", "/vm/web1")[-1].url.params["restart"] == "true"
    # without -d the diff is confirmed first: a "no" writes nothing
    before = len(api.sent("PUT", "/vm/web1"))
    result = run(api, env, "vm", "modify", "web1", str(path), "-c", "-R", input="n\n")
    assert result.exit_code == 1 and "Write modifications to cluster" in result.stderr
    assert len(api.sent("PUT", "/vm/web1")) == before


def test_vm_stop_force(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/vm/web1/state", {"message": "stopped"})
    assert run(api, env, "vm", "stop", "web1", "--force", "-y").exit_code == 0
    assert run(api, env, "vm", "stop", "web1", "-y").exit_code == 0
    first, second = api.sent("POST", "/vm/web1/state")
    assert first.url.params["state"] == "stop" and first.url.params["force"] == "true"
    assert "force" not in second.url.params


def test_vm_volume_add_file_type(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    result = run(api, env, "vm", "volume", "add", "web1", "/srv/images/data.img", "-t", "file",
                 "-b", "virtio")
    assert result.exit_code == 0, result.output
    root = etree.fromstring(form(api.sent("PUT", "/vm/web1")[0])["xml"][0].encode())
    (disk,) = root.findall("devices/disk[@type='file']")
    assert disk.find("source").get("file") == "/srv/images/data.img"
    assert disk.find("target").get("dev") == "vda" and disk.find("target").get("bus") == "virtio"
    assert disk.find("driver").get("type") == "raw"
    assert len(root.findall("devices/disk")) == 2  # the RBD disk is kept
    assert not api.sent("GET", "/storage/ceph/volume/srv/images")  # no RBD lookup for a file
    # the next free scsi target follows the existing sda
    assert run(api, env, "vm", "volume", "add", "web1", "/srv/b.img", "--type", "file").exit_code == 0
    root = etree.fromstring(form(api.sent("PUT", "/vm/web1")[1])["xml"][0].encode())
    assert root.find("devices/disk[@type='file']/target").get("dev") == "sdb"


def test_vm_volume_add_file_refusals_send_nothing(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    relative = run(api, env, "vm", "volume", "add", "web1", "data.img", "-t", "file")
    assert relative.exit_code == 1 and "not an absolute path" in relative.stderr
    taken = run(api, env, "vm", "volume", "add", "web1", "/srv/x.img", "-t", "file", "-d", "sda")
    assert taken.exit_code == 1 and "sda is already used" in taken.stderr
    ceph = run(api, env, "vm", "volume", "add", "web1", "/srv/x.img", "-t", "file", "--secret-uuid", "x")
    assert ceph.exit_code == 1 and "RBD volumes" in ceph.stderr
    assert not api.sent("PUT", "/vm/web1")


VF = {"phy": "ens1f0v3", "pf": "ens1f0", "usage": {"used": False, "domain": None},
      "pci": {"domain": "0000", "bus": "3b", "slot": "02", "function": "3"}}


def test_vm_network_add_sriov_macvtap_and_hostdev(api: FakeApi, env: dict[str, str]) -> None:
    serve_vm(api, vm_item("stop"))
    api.on("GET", "/sriov/vf/hv1/ens1f0v3", [VF])
    result = run(api, env, "vm", "network", "add", "web1", "ens1f0v3", "--sriov", "-a", "52:54:00:aa:bb:cc")
    assert result.exit_code == 0, result.output
    root = etree.fromstring(form(api.sent("PUT", "/vm/web1")[0])["xml"][0].encode())
    (nic,) = root.findall("devices/interface[@type='direct']")
    assert nic.find("source").attrib == {"dev": "ens1f0v3", "mode": "passthrough"}
    assert nic.find("mac").get("address") == "52:54:00:aa:bb:cc" and nic.find("model").get("type") == "virtio"
    assert len(root.findall("devices/interface")) == 2  # the bridged NIC is kept
    result = run(api, env, "vm", "network", "add", "web1", "ens1f0v3", "-s", "-d", "hostdev")
    assert result.exit_code == 0, result.output
    root = etree.fromstring(form(api.sent("PUT", "/vm/web1")[1])["xml"][0].encode())
    (nic,) = root.findall("devices/interface[@type='hostdev']")
    assert nic.get("managed") == "yes" and nic.findtext("sriov_device") == "ens1f0v3"
    assert nic.find("source/address").attrib == {"type": "pci", "domain": "0x0000", "bus": "0x3b",
                                                 "slot": "0x02", "function": "0x3"}
    assert nic.find("mac").get("address").startswith("52:54:00:")
    assert not api.sent("GET", "/network/ens1f0v3")  # a VF is not a PVC network


def test_vm_network_sriov_refusals_and_remove(api: FakeApi, env: dict[str, str]) -> None:
    with_vf = XML.replace("</devices>", "<interface type='direct'><mac address='52:54:00:aa:bb:cc'/>"
                                        "<source dev='ens1f0v3' mode='passthrough'/><model type='virtio'/>"
                                        "</interface></devices>")
    serve_vm(api, vm_item("stop", xml=with_vf))
    api.on("GET", "/sriov/vf/hv1/ens1f0v3", [VF])
    twice = run(api, env, "vm", "network", "add", "web1", "ens1f0v3", "--sriov")
    assert twice.exit_code == 1 and 'SR-IOV device "ens1f0v3" is already configured' in twice.stderr
    missing = run(api, env, "vm", "network", "add", "web1", "ens9f9v9", "--sriov")
    assert missing.exit_code == 1 and 'SR-IOV VF "ens9f9v9" does not exist on VM node "hv1"' in missing.stderr
    assert not api.sent("PUT", "/vm/web1")
    result = run(api, env, "vm", "network", "remove", "web1", "ens1f0v3", "--sriov")
    assert result.exit_code == 0, result.output
    root = etree.fromstring(form(api.sent("PUT", "/vm/web1")[0])["xml"][0].encode())
    assert root.findall("devices/interface[@type='direct']") == []
    assert len(root.findall("devices/interface[@type='bridge']")) == 1
    gone = run(api, env, "vm", "network", "remove", "web1", "ens1f0v9", "-s")
    assert gone.exit_code == 1 and 'no SR-IOV interface on SR-IOV device "ens1f0v9"' in gone.stderr


@pytest.mark.parametrize("spelling", ["--max-downtime", "--migration-max-downtime"])
def test_template_system_max_downtime(api: FakeApi, env: dict[str, str], spelling: str) -> None:
    api.on("POST", "/provisioner/template/system", {"message": "added"})
    api.on("PUT", "/provisioner/template/system/small", {"message": "modified"})
    assert run(api, env, "provisioner", "template", "system", "add", "small", "-u", "1", "-m", "512",
               spelling, "500").exit_code == 0
    added = api.sent("POST", "/provisioner/template/system")[0]
    assert added.url.params["migration_max_downtime"] == "500"
    assert run(api, env, "provisioner", "template", "system", "modify", "small", spelling,
               "700").exit_code == 0
    modified = api.sent("PUT", "/provisioner/template/system/small")[0]
    assert modified.url.params["migration_max_downtime"] == "700"


def test_template_system_add_sends_upstream_defaults(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/provisioner/template/system", {"message": "added"})
    api.on("PUT", "/provisioner/template/system/small", {"message": "modified"})
    added = run(api, env, "provisioner", "template", "system", "add", "small", "-u", "1", "-m", "512")
    assert added.exit_code == 0, added.output
    params = api.sent("POST", "/provisioner/template/system")[0].url.params
    assert params["node_selector"] == "none" and params["migration_max_downtime"] == "300"
    assert run(api, env, "provisioner", "template", "system", "modify", "small", "-u", "2").exit_code == 0
    params = api.sent("PUT", "/provisioner/template/system/small")[0].url.params
    assert "node_selector" not in params and "migration_max_downtime" not in params  # only what is given


@pytest.mark.parametrize(("kind", "extension"), [("userdata", ".yaml"), ("script", ".py")])
def test_document_modify_in_editor(api: FakeApi, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                   kind: str, extension: str) -> None:
    api.on("GET", f"/provisioner/{kind}/doc1", [{"name": "doc1", "id": 1, kind: "line one\nline two\n"}])
    api.on("PUT", f"/provisioner/{kind}/doc1", {"message": "modified"})
    used: dict[str, Any] = {}

    def edit(text: str, **kwargs: Any) -> str:
        used.update(kwargs, text=text)
        return text.replace("two", "2")

    monkeypatch.setattr("click.edit", edit)
    result = pvc(api, env, "provisioner", kind, "modify", "doc1", "-e", input="y\n")
    assert result.exit_code == 0, result.output
    assert used["text"] == "line one\nline two" and used["extension"] == extension
    assert "-line two" in result.stderr and "+line 2" in result.stderr
    assert form(api.sent("PUT", f"/provisioner/{kind}/doc1")[0])["data"] == ["line one\nline 2"]
    # declined, unchanged or neither FILE nor -e: nothing is written
    assert run(api, env, "provisioner", kind, "modify", "doc1", "-e", input="n\n").exit_code == 1
    monkeypatch.setattr("click.edit", lambda text, **_kw: text)
    assert run(api, env, "provisioner", kind, "modify", "doc1", "-e").exit_code == 0
    neither = run(api, env, "provisioner", kind, "modify", "doc1")
    assert neither.exit_code == 1 and '"--editor"' in neither.stderr
    assert len(api.sent("PUT", f"/provisioner/{kind}/doc1")) == 1


@pytest.mark.parametrize("kind", ["userdata", "script"])
def test_document_list_long(api: FakeApi, env: dict[str, str], kind: str) -> None:
    text = "\n".join(f"line {n}" for n in range(1, 8))
    api.on("GET", f"/provisioner/{kind}", [{"name": "doc1", "id": 1, kind: text}])
    short = run(api, env, "provisioner", kind, "list")
    assert "line 4" in short.stdout and "line 5" not in short.stdout and "[...]" in short.stdout
    long = run(api, env, "provisioner", kind, "list", "-l")
    assert long.exit_code == 0 and "line 7" in long.stdout and "[...]" not in long.stdout
    assert run(api, env, "provisioner", kind, "list", "--long").stdout == long.stdout


def test_profile_modify_delete_script_args(api: FakeApi, env: dict[str, str]) -> None:
    api.on("PUT", "/provisioner/profile/p1", {"message": "modified"})
    assert run(api, env, "provisioner", "profile", "modify", "p1", "-d").exit_code == 0
    assert run(api, env, "provisioner", "profile", "modify", "p1", "-d", "-a", "k=v").exit_code == 0
    assert run(api, env, "provisioner", "profile", "modify", "p1", "-x", "other").exit_code == 0
    cleared, replaced, untouched = api.sent("PUT", "/provisioner/profile/p1")
    assert cleared.url.params.get_list("arg") == [""]  # the API's "remove them all"
    assert replaced.url.params.get_list("arg") == ["k=v"]
    assert "arg" not in untouched.url.params


def test_fault_list_limit(api: FakeApi, env: dict[str, str]) -> None:
    fault = {"id": "DEAD_NODE_hv2", "status": "new", "health_delta": 50, "message": "Node hv2 is dead",
             "first_reported": "t1", "last_reported": "t2", "acknowledged_at": ""}
    api.on("GET", "/faults/DEAD_NODE_hv2", [fault])
    result = run(api, env, "cluster", "fault", "list", "DEAD_NODE_hv2", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [fault]
    api.on("GET", "/faults/nope", httpx.Response(404, json={"message": "No fault with ID nope"}))
    missing = run(api, env, "cluster", "fault", "list", "nope")
    assert missing.exit_code == 1 and "No fault with ID nope" in missing.stderr


def test_connection_list_json_prometheus(api: FakeApi, env: dict[str, str]) -> None:
    result = run(api, env, "connection", "list", "-f", "json-prometheus")
    assert result.exit_code == 0, result.output
    targets = json.loads(result.stdout)
    assert {"targets": ["pvc.example:7370"], "labels": {
        "job": "pvc", "pvc_cluster_name": "c1: test cluster", "pvc_cluster_id": "c1"}} in targets
    assert all(set(t) == {"targets", "labels"} for t in targets)
    assert "KEY" not in result.stdout  # no secrets in a file meant for a monitoring server


def test_cluster_task_raw(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/tasks", {"active": {"hv1": [{"id": "t1", "name": "vm.flush_locks"}]},
                             "reserved": {"hv2": [{"id": "t2", "name": "osd.add"}]}, "scheduled": {}})
    api.on("GET", "/tasks/t1", {"state": "RUNNING", "current": 1, "total": 3, "status": "working"})
    assert run(api, env, "cluster", "task", "-f", "raw").stdout.split() == ["t1", "t2"]
    assert run(api, env, "cluster", "task", "t1", "-f", "raw").stdout == "RUNNING\n"


# -- bench naming and clean-up (bench/_lab_docs.py) ---------------------------------------------------

@pytest.fixture
def lab_docs() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import _lab_docs  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    return _lab_docs


DEMO_NETWORK = {"vni": 100, "description": "demo", "ip4_network": "10.210.100.0/24", "ip6_network": None}


def test_bench_names_are_fresh_and_keep_the_vm_number_last(lab_docs: Any) -> None:
    tags = {lab_docs.bench_tag("bp") for _ in range(50)}
    assert len(tags) == 50
    tag = tags.pop()
    assert tag.startswith("bp") and tag.endswith("x") and len(tag) == 9
    assert lab_docs.vm_names(tag, 3) == [f"{tag}0", f"{tag}1", f"{tag}2"]
    docs = lab_docs.ProvisionDocs(tag)
    names = {docs.system, docs.userdata, docs.script, docs.profile}
    # nothing the README lab's demo (or the system tests) already made
    assert not names & {"demo", "clone", "tiny", "provnet", "provud", "labclone", "lab"}
    assert all(name.startswith(tag) for name in names)


def test_bench_network_avoids_used_vnis_and_subnets(lab_docs: Any) -> None:
    import ipaddress

    vni, subnet = lab_docs.pick_network([DEMO_NETWORK])
    assert vni == 3100 and str(subnet) == "10.212.0.0/24"
    taken = [DEMO_NETWORK, {"vni": 3100, "ip4_network": "10.212.0.0/23"},
             {"vni": 3101, "ip4_network": "10.212.2.128/25"}, {"vni": "bad", "ip4_network": "not a net"}]
    vni, subnet = lab_docs.pick_network(taken)
    assert vni == 3102 and str(subnet) == "10.212.3.0/24"
    with pytest.raises(SystemExit, match="no free bench VNI"):
        lab_docs.pick_network([{"vni": 7}], vnis=[7], pool=ipaddress.ip_network("10.9.0.0/24"))


def test_bench_cleanup_undoes_newest_first_and_survives_failures(lab_docs: Any) -> None:
    done: list[str] = []
    reports: list[str] = []

    def fail() -> None:
        raise RuntimeError("refused")

    with pytest.raises(ValueError, match="the bench's own error"), \
            lab_docs.Cleanup(reports.append) as cleanup:
        cleanup.add("network", lambda: done.append("network"))
        cleanup.add("profile", fail)
        cleanup.add("vm", lambda: done.append("vm"))
        raise ValueError("the bench's own error")
    assert done == ["vm", "network"]  # the failed step did not stop the older one
    assert cleanup.failed == ["profile"] and "profile failed: RuntimeError: refused" in reports[0]
    assert cleanup.steps == []


class _Plan:
    extra = {"guest_files": {"kernel": "/var/lib/pvc-lab/k", "initrd": "/var/lib/pvc-lab/i"}}


def test_bench_provisioning_documents_are_made_and_undone(lab_docs: Any, api: FakeApi) -> None:
    """set_up against a scripted API: everything is made under the tag, and each undo is
    registered as soon as its thing exists, so a refusal half-way leaves nothing behind."""
    made: set[str] = set()

    def create(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        name = request.url.params.get("name") or request.url.params.get("vni")
        if path == "/provisioner/script":  # as the demo's lab answers a second 'clone'
            return httpx.Response(400, json={"message": f"The script '{name}' already exists."})
        made.add(f"{path}/{name}")
        return httpx.Response(200, json={"message": "added"})

    def remove(request: httpx.Request) -> httpx.Response:
        made.discard(request.url.path.removeprefix("/api/v1"))
        return httpx.Response(200, json={"message": "removed"})

    def exists(request: httpx.Request) -> httpx.Response:
        found = request.url.path.removeprefix("/api/v1") in made
        return httpx.Response(200 if found else 404, json=[{}] if found else {"message": "not found"})

    api.on("GET", "/network", [DEMO_NETWORK])
    for path in ("/network", "/provisioner/template/system", "/provisioner/template/network",
                 "/provisioner/template/storage", "/provisioner/userdata", "/provisioner/script",
                 "/provisioner/profile"):
        api.on("POST", path, create)
    docs = lab_docs.ProvisionDocs("bpabcdefx")
    docs.vni = 3100
    for path in docs.paths():
        api.on("GET", path, exists)
        api.on("DELETE", path, remove)
    for path in ("/provisioner/template/network/bpabcdefxt/net",
                 "/provisioner/template/storage/bpabcdefxt/disk"):
        api.on("POST", path, {"message": "added"})
    client = httpx.Client(transport=httpx.MockTransport(api), base_url="http://lab/api/v1")
    with pytest.raises(AssertionError, match="already exists"), lab_docs.Cleanup() as cleanup:
        docs.set_up(_Plan(), client, cleanup)
    assert made == set()  # network, templates and userdata made before the refusal are gone
    deleted = [r.url.path.removeprefix("/api/v1") for r in api.requests if r.method == "DELETE"]
    assert deleted == ["/provisioner/userdata/bpabcdefxud", "/provisioner/template/storage/bpabcdefxt",
                       "/provisioner/template/network/bpabcdefxt", "/provisioner/template/system/bpabcdefxt",
                       "/network/3100"]
    network = api.sent("POST", "/network")[0].url.params
    assert network["vni"] == "3100" and network["ip4_network"] == "10.212.0.0/24"
    assert network["description"] == "bpabcdefxnet"
    script = api.sent("POST", "/provisioner/script")[0]
    assert "data" not in script.url.params and b"data=" in script.content  # a form field, not the URL
