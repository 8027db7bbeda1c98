"""The Provisioner pages over HTTP against a real pvcapid and ZooKeeper, without a browser: every
list and detail page with the sample data, adding, changing and removing through the forms, the
API's refusals in place, CSRF, markup in a script body and a network description inert, and
creating a VM from a profile: the job is queued (no worker runs here, so it stays waiting), its
page follows it live and Cancel cancels it. OVAs: the upload's checks, and (in-process over a
FakeStorage) an upload through the API's route with the session as the page's script sends it,
listed and removed from the UI."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.api.web.pages import provisioner as provisioner_pages
from pvc.api.web.pages import provisioner_jobs
from pvc.cluster import provisioner as prov
from pvc.cluster import tasks as tasks_mod
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.taskkinds import PROVISIONER_CREATE
from pvc.core.zk import ZK
from pvc.web import TEMPLATES
from pvc.worker.provisioner import vmdata
from tests.conftest import API_TOKEN, Api
from tests.integration.uihelp import UIClient, login_token, page_token
from tests.ovahelp import make_test_ova
from tests.ui import sample

EVIL = "https://evil.example"


@pytest.fixture
def ui(api: Api, zk: ZK) -> Iterator[UIClient]:
    sample.nodes(zk)
    sample.provisioner(zk)
    client = UIClient(api)
    yield client
    client.close()


def jobs(zk: ZK) -> list[Any]:
    return [t for t, _v in tasks_mod.load_tasks(zk) if t.kind == PROVISIONER_CREATE]


# -- pages -------------------------------------------------------------------------------------------

def test_lists_and_details_render_the_sample(ui: UIClient) -> None:
    pages = {
        "/provisioner": ["System templates", "Provisioner jobs", 'href="/provisioner/create"'],
        "/provisioner/system": ["small", "huge", "2.0 GiB", "hv1,hv2", "web"],
        "/provisioner/system/web": ["Change it", 'value="2048"', "live", 'aria-current="page"'],
        "/provisioner/network": ["std", "upstream, cluster", "{prefix}:ff:ff:{vmid}{netid}"],
        "/provisioner/network/std": ["upstream", "cluster", "Add network", 'id="vni-choices"'],
        "/provisioner/storage": ["std", "sda (vms, 10 GB ext4 at /)"],
        "/provisioner/storage/std": ["sdb", "xfs", "/var", "Add a disk"],
        "/provisioner/userdata": ["basic", "empty", "(built in)"],
        "/provisioner/userdata/basic": ["#cloud-config", "packages:"],
        "/provisioner/userdata/empty": ["built in and cannot be changed"],
        "/provisioner/scripts": ["debootstrap", "from pvcapid.vmbuilder import VMBuilder"],
        "/provisioner/scripts/debootstrap": ["class VMBuilderScript(VMBuilder)", "Save"],
        "/provisioner/profiles": ["web", "huge", "debootstrap", "Create a VM"],
        "/provisioner/profiles/web": ["deb_release=bookworm", 'href="/provisioner/system/web"'],
        "/provisioner/ovas": ["No OVA has been uploaded", "Upload an OVA", "provisioner-upload.js"],
        "/provisioner/create": ["VM name", '<option value="web">web</option>', "Define the VM"],
    }
    for path, expected in pages.items():
        answer = ui.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        for text in expected:
            assert text in answer.text, (path, text)
        assert "<script>window" not in answer.text, path
    create = ui.get("/provisioner/create?profile=web").text
    assert '<option value="web" selected>' in create
    for missing in ("/provisioner/system/nope", "/provisioner/profiles/nope", "/provisioner/scripts/nope",
                    "/provisioner/ovas/nope", "/provisioner/jobs/nope"):
        answer = ui.get(missing)
        assert answer.status_code == 404, missing
        assert "does not exist" in answer.text or "not found" in answer.text, missing


def test_navigation_marks_the_provisioner_built(ui: UIClient) -> None:
    page = ui.get("/").text
    assert '<a href="/provisioner">Provisioner</a>' in page
    assert "not yet" not in ui.get("/provisioner").text.lower()


# -- add, change, remove --------------------------------------------------------------------------------

def test_a_system_template_added_changed_and_removed_through_the_forms(ui: UIClient, zk: ZK) -> None:
    added = ui.action("/provisioner/system", {"name": "tiny", "vcpus": "1", "vram": "512", "serial": "on",
                                              "node_selector": "none", "migration_max_downtime": ""})
    assert added.status_code == 303 and added.headers["location"] == "/provisioner/system/tiny"
    page = ui.get("/provisioner/system/tiny").text
    assert "Added new system template &#34;tiny&#34;." in page
    doc = prov.system_template_item(zk, "tiny")
    assert doc["vram_mb"] == 512 and doc["serial"] and not doc["vnc"]
    changed = ui.action("/provisioner/system/tiny", {"vcpus": "2", "vram": "768", "vnc": "on",
                                                     "node_limit": "hv1", "node_selector": "vcpus",
                                                     "migration_method": "shutdown"})
    assert changed.status_code == 303
    doc = prov.system_template_item(zk, "tiny")
    assert (doc["vcpu_count"], doc["vram_mb"], doc["serial"], doc["vnc"], doc["node_limit"]) == \
        (2, 768, False, True, "hv1")
    assert doc["node_selector"] == "vcpus" and doc["migration_method"] == "shutdown"
    removed = ui.action("/provisioner/system/tiny/remove", {"next": "/provisioner/system"}, htmx=True)
    assert removed.status_code == 200 and removed.headers["HX-Redirect"] == "/provisioner/system"
    assert not zk.exists(schema.system_template("tiny"))
    assert "Removed system template &#34;tiny&#34;." in ui.get("/provisioner/system").text


def test_a_script_added_changed_and_removed_through_the_forms(ui: UIClient, zk: ZK) -> None:
    body = sample.PROV_SCRIPT.replace("pass\n\n    def install", "return 1\n\n    def install")
    added = ui.action("/provisioner/scripts", {"name": "mine", "data": body.replace("\n", "\r\n")})
    assert added.status_code == 303 and added.headers["location"] == "/provisioner/scripts/mine"
    assert prov.SCRIPTS.item(zk, "mine")["script"] == body            # line ends as the API stores them
    changed = ui.action("/provisioner/scripts/mine", {"data": body + "\n# v2\n"})
    assert changed.status_code == 303
    assert prov.SCRIPTS.item(zk, "mine")["script"].endswith("# v2\n")
    assert "Updated provisioning script &#34;mine&#34;." in ui.get("/provisioner/scripts/mine").text
    removed = ui.action("/provisioner/scripts/mine/remove", {"next": "/provisioner/scripts"})
    assert removed.status_code == 303 and removed.headers["location"] == "/provisioner/scripts"
    assert not zk.exists(schema.script("mine"))


def test_templates_networks_disks_and_profiles_through_the_forms(ui: UIClient, zk: ZK) -> None:
    assert ui.action("/provisioner/network", {"name": "two", "mac_template": ""}).status_code == 303
    assert ui.action("/provisioner/network/two/net", {"vni": "4001"}).status_code == 303
    assert ui.action("/provisioner/network/two/net", {"vni": "storage"}).status_code == 303
    assert [n["vni"] for n in prov.network_template_item(zk, "two")["networks"]] == ["4001", "storage"]
    assert ui.action("/provisioner/network/two/net/remove", {"vni": "4001"}).status_code == 303
    assert [n["vni"] for n in prov.network_template_item(zk, "two")["networks"]] == ["storage"]
    assert ui.action("/provisioner/storage", {"name": "one"}).status_code == 303
    disk = {"disk_id": "vda", "pool": "vms", "disk_size": "8", "filesystem": "ext4",
            "filesystem_arg": "-L=root -m=1", "mountpoint": "/"}
    assert ui.action("/provisioner/storage/one/disk", disk).status_code == 303
    stored = prov.get_template_disk(zk, "one", "vda")
    assert stored["filesystem_args"] == "-L=root -m=1" and stored["disk_size_gb"] == 8
    profile = {"name": "mine", "profile_type": "provisioner", "system_template": "small",
               "network_template": "two", "storage_template": "one", "userdata": "", "script": "debootstrap",
               "ova": "", "arg": "a=1\r\nb=two words\r\n"}
    assert ui.action("/provisioner/profiles", profile).status_code == 303
    item = prov.profile_item(zk, "mine")
    assert item["arguments"] == ["a=1", "b=two words"] and item["userdata"] == prov.NA
    changed = ui.action("/provisioner/profiles/mine", {**profile, "userdata": "basic", "arg": ""})
    assert changed.status_code == 303
    item = prov.profile_item(zk, "mine")
    assert item["userdata"] == "basic" and item["arguments"] == []
    assert ui.action("/provisioner/storage/one/disk/remove", {"disk_id": "vda"}).status_code == 303
    assert prov.storage_template_item(zk, "one")["disks"] == []


def test_refusals_come_back_in_place(ui: UIClient, zk: ZK) -> None:
    typed = {"name": "bad", "vcpus": "0", "vram": "512", "vnc_bind": "not-an-ip", "serial": "on"}
    answer = ui.action("/provisioner/system", typed)
    assert answer.status_code == 400
    page = answer.text
    assert "<strong>Refused:</strong> vcpus: 0 is out of range" in page
    assert 'id="add-vcpus-error"' in page and 'aria-invalid="true"' in page
    assert 'value="not-an-ip"' in page and 'value="bad"' in page            # what was typed is kept
    assert not zk.exists(schema.system_template("bad"))
    # a name taken: the API's message, beside the name
    taken = ui.action("/provisioner/scripts", {"name": "debootstrap", "data": sample.PROV_SCRIPT})
    assert taken.status_code == 400 and 'id="add-name-error"' in taken.text and "already exists" in taken.text
    broken = ui.action("/provisioner/scripts/debootstrap", {"data": "def nope(:\n"})
    assert broken.status_code == 400 and "data: syntax error at line 1" in broken.text
    assert "def nope(:" in broken.text
    assert prov.SCRIPTS.item(zk, "debootstrap")["script"] == sample.PROV_SCRIPT
    disk = ui.action("/provisioner/storage/std/disk", {"disk_id": "sdc", "pool": "nopool", "disk_size": "1"})
    assert disk.status_code == 400 and "pool: the storage pool &#39;nopool&#39; does not exist" in disk.text
    net = ui.action("/provisioner/network/std/net", {"vni": "upstream"})
    assert net.status_code == 400 and "already exists" in net.text and 'id="net-vni-error"' in net.text
    # a removal refused (a profile uses it): in the message area (htmx), or back on the page
    used = ui.action("/provisioner/system/web/remove", {}, htmx=True)
    assert used.status_code == 400 and "web" in used.text and "flash-bad" in used.text
    assert zk.exists(schema.system_template("web"))
    plain = ui.action("/provisioner/system/web/remove", {})
    assert plain.status_code == 303 and plain.headers["location"] == "/provisioner/system/web"
    assert "Error:" in ui.get("/provisioner/system/web").text
    builtin = ui.action("/provisioner/userdata/empty/remove", {}, htmx=True)
    assert builtin.status_code == 400 and "built in" in builtin.text


def test_every_action_needs_this_sessions_token(ui: UIClient, zk: ZK) -> None:
    before = {path: raw for path, (raw, _e) in zk.walk(schema.PROVISIONER).items()}
    posts = {
        "/provisioner/system": {"name": "x", "vcpus": "1", "vram": "512"},
        "/provisioner/system/small": {"vcpus": "3", "vram": "512"},
        "/provisioner/system/small/remove": {},
        "/provisioner/network/std/remove": {}, "/provisioner/network/std/net": {"vni": "storage"},
        "/provisioner/storage/std/disk/remove": {"disk_id": "sda"},
        "/provisioner/scripts": {"name": "x", "data": sample.PROV_SCRIPT},
        "/provisioner/userdata/basic/remove": {}, "/provisioner/profiles/web/remove": {},
        "/provisioner/create": {"name": "vm9", "profile": "web"}, "/provisioner/ovas/check": {"name": "x"},
        "/provisioner/ovas/x/remove": {},
    }
    for path, data in posts.items():
        missing = ui.action(path, data, token="")
        assert missing.status_code == 403 and "CSRF token is missing" in missing.text, path
        wrong = ui.action(path, data, token="x" * 43)
        assert wrong.status_code == 403 and "not this session" in wrong.text, path
        forged = ui.action(path, data, headers={"Origin": EVIL})
        assert forged.status_code == 403 and "evil.example" in forged.text, path
    assert {path: raw for path, (raw, _e) in zk.walk(schema.PROVISIONER).items()} == before
    assert jobs(zk) == []


def test_markup_in_a_script_body_and_a_description_is_text(ui: UIClient) -> None:
    for path in ("/provisioner/scripts/debootstrap", "/provisioner/userdata/basic",
                 "/provisioner/network/std", "/provisioner/scripts", "/provisioner/userdata"):
        page = ui.get(path).text
        assert sample.XSS_SCRIPT not in page and sample.XSS_IMG not in page, path
    script = ui.get("/provisioner/scripts/debootstrap").text
    assert html.escape(sample.XSS_SCRIPT, quote=False) in script        # in the textarea, as text
    network = ui.get("/provisioner/network/std").text
    assert html.escape(sample.XSS_PROV_NETWORK) in network
    refused = ui.action("/provisioner/scripts", {"name": "x", "data": f"{sample.XSS_SCRIPT}\n"})
    assert refused.status_code == 400 and sample.XSS_SCRIPT not in refused.text


# -- create a VM from a profile ---------------------------------------------------------------------------

def test_create_from_a_profile_queues_a_job_the_page_follows_and_cancel(ui: UIClient, zk: ZK) -> None:
    answer = ui.action("/provisioner/create", {"name": "newvm", "profile": "web", "arg": "deb_release=trixie",
                                               "define_vm": "on"})
    assert answer.status_code == 303
    queued = jobs(zk)
    assert len(queued) == 1
    job = queued[0]
    assert answer.headers["location"] == f"/provisioner/jobs/{job.id}"
    assert job.state == "PENDING" and job.target == "primary"
    assert job.args["vm_name"] == "newvm" and job.args["define_vm"] and not job.args["start_vm"]
    assert job.args["script_run_args"] == ["deb_release=trixie"]
    page = ui.get(f"/provisioner/jobs/{job.id}")
    assert page.status_code == 200 and "Queued provisioner job" in page.text
    assert f'data-live="/events/provisioner/jobs/{job.id}"' in page.text and 'id="cancel-job"' in page.text
    assert 'data-state="PENDING"' in page.text and f"0/{job.total}" in page.text
    assert job.id in ui.get("/provisioner").text
    with ui.stream(f"/events/provisioner/jobs/{job.id}") as events:
        first = events.fragments_until(lambda seen: "job-info" in seen)
        assert 'data-state="PENDING"' in first["job-info"] and "cancel-job" in first["job-cancel"]
        cancelled = ui.action(f"/provisioner/jobs/{job.id}/cancel", {"next": f"/provisioner/jobs/{job.id}"},
                              htmx=True)
        assert cancelled.status_code == 200 and f"Task {job.id} cancelled." in cancelled.text
        after = events.fragments_until(lambda seen: 'data-state="CANCELLED"' in seen.get("job-info", ""))
        assert "cancel-job" not in after.get("job-cancel", "")
    assert tasks_mod.get_task(zk, job.id).state == "CANCELLED"
    again = ui.action(f"/provisioner/jobs/{job.id}/cancel", {}, htmx=True)
    assert again.status_code == 400 and "already finished" in again.text
    other = tasks_mod.submit(zk, "cluster.selftest")
    assert ui.get(f"/provisioner/jobs/{other.id}").status_code == 404


def test_a_running_jobs_stages_follow_live(ui: UIClient, zk: ZK) -> None:
    """A worker's progress (simulated here as pvc.worker does it: claim, update, log, finish) reaches
    the job's page over its stream; a running job's Cancel asks its worker to stop."""
    assert ui.action("/provisioner/create", {"name": "runvm", "profile": "web", "define_vm": "on",
                                             "start_vm": "on"}).status_code == 303
    job = jobs(zk)[0]
    record, version = next((t, v) for t, v in tasks_mod.load_tasks(zk) if t.id == job.id)
    assert tasks_mod.claim(zk, record, version, "hv1") is not None
    with ui.stream(f"/events/provisioner/jobs/{job.id}") as events:
        events.fragments_until(lambda seen: 'data-state="RUNNING"' in seen.get("job-info", ""))
        tasks_mod.update(zk, job.id, "hv1", current=3, status="Creating disks")
        tasks_mod.append_log(zk, job.id, f"disk sda: made {sample.XSS_SCRIPT}")
        seen = events.fragments_until(lambda seen: "3/11" in seen.get("job-info", "")
                                      and "disk sda" in seen.get("job-log", ""))
        assert "Creating disks" in seen["job-info"] and "hv1" in seen["job-info"]
        assert sample.XSS_SCRIPT not in seen["job-log"] and "&lt;script&gt;" in seen["job-log"]
        asked = ui.action(f"/provisioner/jobs/{job.id}/cancel", {}, htmx=True)
        assert asked.status_code == 200 and job.id in asked.text
        assert tasks_mod.get_task(zk, job.id).cancel_requested
        tasks_mod.finish(zk, job.id, "hv1", "SUCCESS", "VM runvm provisioned")
        done = events.fragments_until(lambda seen: 'data-state="SUCCESS"' in seen.get("job-info", ""))
        assert "11/11" in done["job-info"] and 'href="/vms/runvm"' in done["job-info"]
        assert "cancel-job" not in done.get("job-cancel", "")


def test_every_live_fragment_exists() -> None:
    for fragments in (provisioner_pages.OVERVIEW_FRAGMENTS, provisioner_jobs.JOB_FRAGMENTS):
        for element, template in fragments.items():
            assert (TEMPLATES / template).exists() and template.rsplit("/", 1)[-1].startswith("_"), element


def test_a_create_refused_before_queueing_shows_the_apis_message(ui: UIClient, zk: ZK) -> None:
    huge = ui.action("/provisioner/create", {"name": "bigvm", "profile": "huge", "define_vm": "on",
                                             "start_vm": "on"})
    assert huge.status_code == 400
    assert "no node of this cluster could ever run VM bigvm" in huge.text
    assert 'id="create-profile-error"' in huge.text and 'value="bigvm"' in huge.text
    bad_name = ui.action("/provisioner/create", {"name": "no spaces", "profile": "web"})
    assert bad_name.status_code == 400 and 'id="create-name-error"' in bad_name.text
    no_profile = ui.action("/provisioner/create", {"name": "vm2", "profile": "nope"})
    assert no_profile.status_code == 400
    assert "profile: profile &#34;nope&#34; does not exist" in no_profile.text
    bad_arg = ui.action("/provisioner/create", {"name": "vm2", "profile": "web", "arg": "novalue"})
    assert bad_arg.status_code == 400 and 'id="create-arg-error"' in bad_arg.text
    # define-only off: the fit check does not apply (as the API)
    assert ui.action("/provisioner/create", {"name": "bigvm", "profile": "huge"}).status_code == 303
    assert [j.args["vm_name"] for j in jobs(zk)] == ["bigvm"]


# -- OVAs -------------------------------------------------------------------------------------------------

def test_the_ova_uploads_checks_answer_before_any_byte(ui: UIClient, zk: ZK) -> None:
    no_pool = ui.action("/provisioner/ovas/check", {"name": "img", "pool": "nopool"}, htmx=True)
    assert no_pool.status_code == 400 and no_pool.json()["field"] == "pool"
    no_script = ui.action("/provisioner/ovas/check", {"name": "img", "pool": "vms"}, htmx=True)
    assert no_script.status_code == 400
    assert "OVA provisioner script is not stored" in no_script.json()["message"]
    prov.SCRIPTS.add(zk, "ova", sample.PROV_SCRIPT)
    good = ui.action("/provisioner/ovas/check", {"name": "img", "pool": "vms"}, htmx=True)
    assert good.status_code == 200
    assert good.json() == {"ok": True, "url": "/api/v1/provisioner/ova/img?pool=vms",
                           "next": "/provisioner/ovas/img"}
    taken = ui.action("/provisioner/ovas/check", {"name": "web", "pool": "vms"}, htmx=True)
    assert taken.status_code == 400 and taken.json()["field"] == "name"


@pytest.fixture
def inprocess(config_factory: Callable[..., Path], zk: ZK) -> Iterator[tuple[TestClient, FakeStorage]]:
    fake = FakeStorage()
    sample.nodes(zk)
    app = create_app(load_config(str(config_factory())), zk, storage=fake)
    with TestClient(app, base_url="http://testserver") as client:
        client.post("/login", data={"token": API_TOKEN, "csrf_token": login_token(client)})  # type: ignore[arg-type]
        yield client, fake


def test_an_ova_uploaded_as_the_page_does_is_listed_and_removed(inprocess: tuple[TestClient, FakeStorage],
                                                                 zk: ZK, tmp_path: Path) -> None:
    client, fake = inprocess
    from pvc.cluster import storage as st

    st.add_pool(zk, fake, "vms", 32, "copies=3,mincopies=2")
    zk.put(schema.CEPH_STATUS, {"time": 4e9})
    zk.update(schema.pool("vms"), lambda doc: {**doc, "stats": {"free_bytes": 100 << 30, "stored_bytes": 0}})
    prov.ensure_empty_userdata(zk)
    prov.SCRIPTS.add(zk, "ova", (Path(vmdata.__file__).parent / "examples" / "4-ova.py").read_text())
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x01" * (1 << 20))
    ova = make_test_ova(tmp_path / "guest.ova", disk, "guest")
    csrf = page_token(client, "/provisioner/ovas")     # type: ignore[arg-type]
    check = client.post("/provisioner/ovas/check", data={"name": "guest", "pool": "vms"},
                        headers={"X-CSRF-Token": csrf})
    assert check.status_code == 200
    with ova.open("rb") as handle:                      # what provisioner-upload.js sends
        answer = client.post(check.json()["url"] + f"&ova_size={ova.stat().st_size}",
                             files={"file": ("guest.ova", handle)}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.text
    listed = client.get("/provisioner/ovas").text
    assert 'href="/provisioner/ovas/guest"' in listed and "ova_guest_sda" in listed
    detail = client.get("/provisioner/ovas/guest").text
    assert 'href="/provisioner/profiles/guest"' in detail and "ova_guest_sda" in detail
    removed = client.post("/provisioner/ovas/guest/remove", data={"csrf_token": csrf}, follow_redirects=False)
    assert removed.status_code == 303 and removed.headers["location"] == "/provisioner/ovas"
    assert not zk.exists(schema.ova("guest")) and not zk.exists(schema.profile("guest"))
    assert not zk.exists(schema.volume("vms", "ova_guest_sda"))
