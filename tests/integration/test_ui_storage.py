"""The Storage pages of the web UI, without a browser.

Two set-ups: pvcapid as a process over a private ZooKeeper seeded with Ceph's documents
(tests/ui/sample.py `storage`: the API's own storage functions over a FakeStorage, then a
statistics pass of the primary's StorageMonitor) — pages, live streams, refusals that come before
Ceph is reached, CSRF; and the app in-process with a FakeStorage as its Ceph adapter — the actions
that reach Ceph (pool add, volumes, snapshots, OSD in/out, the upload's two steps). No real Ceph.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import markupsafe
import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.api.web.pages import storage as storage_mod
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, Api
from tests.integration.uihelp import UIClient
from tests.ui import sample
from tests.ui.waits import vms_listed

EVIL = "https://evil.example"


def escaped(text: str) -> str:
    """As the templates' autoescape writes it."""
    return str(markupsafe.escape(text))


def vpath(pool: str, volume: str) -> str:
    return f"/storage/volumes/{urllib.parse.quote(pool, safe='')}/{urllib.parse.quote(volume, safe='')}"


@pytest.fixture
def seeded(api: Api, zk: ZK) -> dict[str, Any]:
    sample.nodes(zk)
    made = sample.storage(zk, api.http)
    vms_listed(zk, api.http)        # pages and refusals read VM "app1" from pvcapid's watch cache
    return made


@pytest.fixture
def ui(api: Api) -> Iterator[UIClient]:
    client = UIClient(api)
    yield client
    client.close()


class InProcess(UIClient):
    """A logged-in UI client of the app in-process (TestClient), whose Ceph is a FakeStorage."""

    def __init__(self, client: TestClient) -> None:
        self.base = "http://testserver"
        self.http = client
        self.csrf = ""
        self.login()


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def local(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage) -> Iterator[InProcess]:
    sample.nodes(zk)
    app = create_app(load_config(str(config_factory())), zk, storage=fake)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        api = TestClient(app, base_url="http://testserver/api/v1", headers={"X-Api-Key": API_TOKEN})
        sample.storage(zk, api, fake)
        yield InProcess(client)


def flash(answer: httpx.Response) -> str:
    """The text of an htmx answer's message (tags dropped, entities decoded)."""
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", answer.text)).strip()


# -- pages ------------------------------------------------------------------------------------------

def test_overview_shows_status_osds_and_pools(ui: UIClient, seeded: dict[str, Any]) -> None:
    page = ui.get("/storage")
    assert page.status_code == 200, page.text
    text = page.text
    assert 'data-health="HEALTH_WARN"' in text and "POOL_APP_NOT_ENABLED" in text
    assert "Monitors: <strong>3</strong>" in text and "OSDs: <strong>3</strong> · 3 up · 2 in" in text
    assert "420 op/s" in text                                   # client I/O from the status
    for osd in ("osd.0", "osd.1", "osd.2"):
        assert osd in text
    assert 'id="osd-in-2"' in text and 'id="osd-out-0"' in text  # osd.2 is out: offered "in"
    assert '<a href="/storage/pools/vms">vms</a>' in text
    assert '<a href="/storage/pools/backup">backup</a>' in text
    assert "cluster:" in text and "RAW STORAGE" in text         # `ceph status` and `ceph df`, as the API's
    # a Ceph health message with markup is text
    assert escaped(sample.XSS_CEPH_CHECK) in text and sample.XSS_SCRIPT not in text


def test_a_stale_report_says_so(ui: UIClient, seeded: dict[str, Any], zk: ZK) -> None:
    assert 'id="ceph-stale"' not in ui.get("/storage").text
    zk.update(schema.CEPH_STATUS, lambda doc: {**doc, "time": doc["time"] - 600})
    assert "<strong>Stale:</strong> no report for 6" in ui.get("/storage").text


def test_overview_before_any_report(ui: UIClient, zk: ZK) -> None:
    page = ui.get("/storage")
    assert page.status_code == 200
    assert "No Ceph status has been reported yet" in page.text
    assert "No pools yet" in page.text and "No OSDs yet" in page.text


def test_pool_page_lists_its_volumes_with_their_vms(ui: UIClient, seeded: dict[str, Any]) -> None:
    page = ui.get("/storage/pools/vms")
    assert page.status_code == 200, page.text
    assert "app1_sda" in page.text and "archive" not in page.text
    assert '<a href="/vms/app1">app1</a>' in page.text
    assert escaped(sample.XSS_VOLUME) in page.text and sample.XSS_VOLUME not in page.text
    assert ui.get("/storage/pools/nope").status_code == 404


def test_volume_list_search_and_pool_filter(ui: UIClient, seeded: dict[str, Any], zk: ZK) -> None:
    everything = ui.get("/storage/volumes").text
    for _pool, volume, _size in sample.STORAGE_VOLUMES:
        assert escaped(volume) in everything
    found = ui.get("/storage/volumes", params={"q": "APP"}).text
    assert "app1_sda" in found and "db1_vda" not in found and "1 volume matching" in found
    backup = ui.get("/storage/volumes", params={"pool": "backup"}).text
    assert "archive" in backup and "app1_sda" not in backup
    none = ui.get("/storage/volumes", params={"q": "<zzz>"}).text
    assert "No volume name contains “&lt;zzz&gt;”" in none
    assert ui.get("/storage/volumes", params={"pool": "nope"}).status_code == 400
    # a long list shows its first rows and says so
    for number in range(storage_mod.MAX_VOLUME_ROWS + 5):
        zk.put(schema.volume("backup", f"bulk{number:04d}"), {"name": f"bulk{number:04d}", "pool": "backup",
                                                              "stats": {"size": 1 << 30}})
    long = ui.get("/storage/volumes", params={"q": "bulk"}).text
    assert f"The first {storage_mod.MAX_VOLUME_ROWS} of {storage_mod.MAX_VOLUME_ROWS + 5} volumes" in long
    assert "bulk0499" in long and "bulk0500" not in long


def test_volume_page_with_snapshots_and_users(ui: UIClient, seeded: dict[str, Any]) -> None:
    page = ui.get(vpath("vms", "app1_sda"))
    assert page.status_code == 200, page.text
    assert "before-upgrade" in page.text and "nightly" in page.text
    assert '<a href="/vms/app1">app1</a>' in page.text and 'id="volume-size">20G<' in page.text
    odd = ui.get(vpath("vms", sample.XSS_VOLUME))
    assert odd.status_code == 200, odd.text
    assert escaped(sample.XSS_VOLUME) in odd.text and sample.XSS_VOLUME not in odd.text
    assert ui.get(vpath("vms", "nope")).status_code == 404


def test_live_streams(ui: UIClient, seeded: dict[str, Any], zk: ZK) -> None:
    with ui.stream("/events/storage") as events:
        parts = {"storage-status", "storage-osds", "storage-pools"}
        first = events.fragments_until(lambda seen: parts <= set(seen))
        assert "HEALTH_WARN" in first["storage-status"]
        zk.update(schema.CEPH_STATUS, lambda doc: {**doc, "health": {"status": "HEALTH_OK", "checks": {}}})
        later = events.fragments_until(lambda seen: "HEALTH_OK" in seen.get("storage-status", ""))
        assert "No health checks" in later["storage-status"]
    with ui.stream(f"/events{vpath('vms', 'app1_sda')}") as events:
        seen = events.fragments_until(lambda s: "volume-snapshots" in s)
        assert "nightly" in seen["volume-snapshots"]
    with ui.stream("/events/storage/pools/vms") as events:
        seen = events.fragments_until(lambda s: "volumes-table" in s)
        assert "app1_sda" in seen["volumes-table"]
    view = "cT1hcHA"                                              # q=app
    with ui.stream(f"/events/storage/volume-list/{view}") as events:
        seen = events.fragments_until(lambda s: "volumes-table" in s)
        assert "app1_sda" in seen["volumes-table"] and "db1_vda" not in seen["volumes-table"]
    assert ui.get("/events/storage/volume-list/%21%21").status_code == 400
    assert ui.get("/events/storage/pools/nope").status_code == 404


# -- refusals before Ceph (pvcapid as a process, no Ceph at all) -----------------------------------------

def test_refusals_show_the_api_message(ui: UIClient, seeded: dict[str, Any], zk: ZK) -> None:
    before = zk.children(schema.CEPH_POOLS)
    answer = ui.action("/storage/pools/add", {"pool": "new", "pgs": "30", "copies": "3", "mincopies": "2"},
                       htmx=True)
    assert answer.status_code == 400 and "pgs: 30 is not a power of two" in flash(answer)
    answer = ui.action("/storage/pools/add", {"pool": "new", "pgs": "32", "copies": "2", "mincopies": "3"},
                       htmx=True)
    assert answer.status_code == 400 and "replcfg" in flash(answer)
    answer = ui.action("/storage/pools/add", {"pool": "vms", "pgs": "32", "copies": "3", "mincopies": "2"},
                       htmx=True)
    assert answer.status_code == 400 and 'Pool "vms" already exists' in flash(answer)
    answer = ui.action("/storage/pools/add", {"pool": "x", "pgs": "many", "copies": "3", "mincopies": "2"},
                       htmx=True)
    assert answer.status_code == 400 and "pgs: 'many' is not a whole number" in flash(answer)
    assert zk.children(schema.CEPH_POOLS) == before
    # removals: the typed name first, then VMs using the volumes
    answer = ui.action("/storage/pools/vms/remove", {"confirm_name": "vm"}, htmx=True)
    assert answer.status_code == 400 and 'type its name to confirm (got "vm")' in flash(answer)
    answer = ui.action("/storage/pools/vms/remove", {"confirm_name": "vms"}, htmx=True)
    assert answer.status_code == 400 and 'vms/app1_sda by "app1"' in flash(answer)
    answer = ui.action(f"{vpath('vms', 'app1_sda')}/remove", {"confirm_name": "app1_sda"}, htmx=True)
    assert answer.status_code == 400 and 'used by VM "app1"' in flash(answer)
    answer = ui.action(f"{vpath('vms', 'app1_sda')}/rename", {"new_name": "other"}, htmx=True)
    assert answer.status_code == 400 and "Cannot rename" in flash(answer)
    answer = ui.action("/storage/volumes/add", {"pool": "vms", "volume": "big", "size": "lots"}, htmx=True)
    assert answer.status_code == 400 and "size" in flash(answer)
    answer = ui.action("/storage/volumes/add", {"pool": "nope", "volume": "v", "size": "1G"}, htmx=True)
    assert answer.status_code == 400 and 'No pool with name "nope"' in flash(answer)
    answer = ui.action("/storage/upload/volume", {"pool": "vms", "volume": "img", "size": "1G",
                                                  "image_format": "iso"}, htmx=True)
    assert answer.status_code == 400 and "image_format: 'iso' is not one of" in flash(answer)
    # without Ceph (pvcapid here has none) a write that passed its checks says so
    answer = ui.action("/storage/volumes/add", {"pool": "vms", "volume": "fresh", "size": "1G"}, htmx=True)
    assert answer.status_code == 503, answer.text
    assert not zk.exists(schema.volume("vms", "fresh"))


def test_a_plain_form_comes_back_with_the_message(ui: UIClient, seeded: dict[str, Any]) -> None:
    answer = ui.action("/storage/pools/vms/remove", {"confirm_name": "", "next": "/storage/pools/vms"})
    assert answer.status_code == 400 and "type its name to confirm" in answer.text   # the error page


def test_actions_need_this_sessions_token(ui: UIClient, seeded: dict[str, Any], zk: ZK) -> None:
    routes = ["/storage/flags", "/storage/pools/add", "/storage/pools/vms/remove", "/storage/osds/0/state",
              "/storage/volumes/add", f"{vpath('vms', 'db1_vda')}/remove",
              f"{vpath('vms', 'db1_vda')}/resize",
              f"{vpath('vms', 'db1_vda')}/rename", f"{vpath('vms', 'db1_vda')}/clone",
              f"{vpath('vms', 'app1_sda')}/snapshots/add",
              f"{vpath('vms', 'app1_sda')}/snapshots/nightly/rollback",
              f"{vpath('vms', 'app1_sda')}/snapshots/nightly/remove", "/storage/upload/volume"]
    for route in routes:
        assert ui.action(route, {"confirm_name": "vms"}, token="").status_code == 403, route
        assert ui.action(route, {"confirm_name": "vms"}, token="forged" * 7).status_code == 403, route
        answer = ui.action(route, {"confirm_name": "vms"}, headers={"Origin": EVIL})
        assert answer.status_code == 403 and "cross-site" in answer.text, route
    assert zk.exists(schema.pool("vms")) and zk.exists(schema.volume("vms", "db1_vda"))


def test_typed_names_are_text_in_answers(ui: UIClient, seeded: dict[str, Any]) -> None:
    name = f"a {sample.XSS_IMG}"
    answer = ui.action("/storage/volumes/add", {"pool": "vms", "volume": name, "size": "1G"}, htmx=True)
    assert answer.status_code == 400
    assert escaped(name) in answer.text and sample.XSS_IMG not in answer.text


# -- actions that reach Ceph (in-process, FakeStorage) ---------------------------------------------------

def test_pool_add_and_remove(local: InProcess, fake: FakeStorage, zk: ZK) -> None:
    fields = {"pool": "fast", "pgs": "32", "copies": "4", "mincopies": "2"}
    answer = local.action("/storage/pools/add", fields, htmx=True)
    assert answer.status_code == 400, answer.text
    assert "copies=4 needs 4 separate hosts" in flash(answer) and "fast" not in fake.list_pools()
    answer = local.action("/storage/pools/add", {"pool": "fast", "pgs": "32", "copies": "4", "mincopies": "2",
                                                 "force": "on"}, htmx=True)
    assert answer.status_code == 200 and 'Created RBD pool "fast" with 32 PGs' in flash(answer)
    answer = local.action("/storage/pools/fast/remove", {"confirm_name": "fast"}, htmx=True)
    assert answer.status_code == 200 and answer.headers["HX-Redirect"] == "/storage"
    assert "fast" not in fake.list_pools() and not zk.exists(schema.pool("fast"))
    assert escaped('Removed RBD pool "fast"') in local.get("/storage").text    # the message after the move


def test_volume_actions(local: InProcess, fake: FakeStorage, zk: ZK) -> None:
    answer = local.action("/storage/volumes/add", {"pool": "vms", "volume": "data", "size": "2G"}, htmx=True)
    assert answer.status_code == 200 and 'Created RBD volume "data" of size "2G"' in flash(answer)
    href = vpath("vms", "data")
    answer = local.action(f"{href}/resize", {"new_size": "1G"}, htmx=True)
    assert answer.status_code == 400 and "retry with force to shrink" in flash(answer)
    answer = local.action(f"{href}/resize", {"new_size": "3G"}, htmx=True)
    assert answer.status_code == 200 and 'Resized RBD volume "data" to size "3G"' in flash(answer)
    answer = local.action(f"{href}/clone", {"new_volume": "data-copy"}, htmx=True)
    assert answer.status_code == 200 and "Cloned" in flash(answer)
    assert "data-copy" in fake.list_volumes("vms")
    answer = local.action(f"{href}/snapshots/add", {"snapshot": "s1"}, htmx=True)
    assert answer.status_code == 200 and 'Created RBD snapshot "s1"' in flash(answer)
    assert "s1" in local.get(href).text
    answer = local.action(f"{href}/snapshots/s1/rollback", {}, htmx=True)
    assert answer.status_code == 200 and "Rolled back" in flash(answer)
    answer = local.action(f"{href}/snapshots/s1/remove", {}, htmx=True)
    assert answer.status_code == 200 and "Removed RBD snapshot" in flash(answer)
    answer = local.action(f"{href}/rename", {"new_name": "data2"}, htmx=True)
    assert answer.headers["HX-Redirect"] == vpath("vms", "data2")
    assert "data2" in fake.list_volumes("vms") and not zk.exists(schema.volume("vms", "data"))
    answer = local.action(f"{vpath('vms', 'data2')}/remove", {"confirm_name": "data2"})       # no script
    assert answer.status_code == 303 and answer.headers["location"] == "/storage/pools/vms"
    assert "data2" not in fake.list_volumes("vms")
    # a snapshot of a running VM's volume is not rolled back
    started = local.http.post("/api/v1/vm/app1/state", params={"state": "start"},
                              headers={"X-Api-Key": API_TOKEN})
    assert started.status_code == 200, started.text
    answer = local.action(f"{vpath('vms', 'app1_sda')}/snapshots/nightly/rollback", {}, htmx=True)
    assert answer.status_code == 400 and 'VM "app1" using it is not stopped' in flash(answer)


def test_osd_out_and_in(local: InProcess, fake: FakeStorage) -> None:
    answer = local.action("/storage/osds/1/state", {"state": "out"}, htmx=True)
    assert answer.status_code == 200 and "Set OSD 1 offline" in flash(answer) and not fake.osd_in(1)
    answer = local.action("/storage/osds/1/state", {"state": "in"}, htmx=True)
    assert answer.status_code == 200 and fake.osd_in(1)
    answer = local.action("/storage/osds/1/state", {"state": "sideways"}, htmx=True)
    assert answer.status_code == 400 and "state: 'sideways' is not one of in, out" in flash(answer)
    assert local.action("/storage/osds/99/state", {"state": "in"}, htmx=True).status_code == 404


def test_osd_flags(local: InProcess, fake: FakeStorage) -> None:
    answer = local.action("/storage/flags", {"option": "noout", "action": "set"}, htmx=True)
    assert answer.status_code == 200 and 'Set OSD property "noout"' in flash(answer)
    assert fake.flags() == {"noout"}
    answer = local.action("/storage/flags", {"option": "noout", "action": "unset"}, htmx=True)
    assert answer.status_code == 200 and not fake.flags()
    answer = local.action("/storage/flags", {"option": "<b>nofun", "action": "set"}, htmx=True)
    assert answer.status_code == 400 and "option: '<b>nofun' is not one of" in flash(answer)
    assert "&lt;b&gt;nofun" in answer.text


def test_upload_creates_the_volume_then_the_api_takes_the_file(local: InProcess, fake: FakeStorage,
                                                                zk: ZK) -> None:
    image = bytes(range(256)) * 4096                                # 1 MiB, a raw image
    step = local.action("/storage/upload/volume", {"pool": "vms", "volume": "img", "image_format": "raw",
                                                   "size": str(len(image))}, htmx=True)
    assert step.status_code == 200, step.text
    answer = step.json()
    assert answer["upload"] == "/api/v1/storage/ceph/volume/vms/img/upload?image_format=raw"
    assert answer["volume"] == vpath("vms", "img") and zk.exists(schema.volume("vms", "img"))
    # the browser sends the file to the API's route with the session cookie (same origin)
    sent = local.http.post(answer["upload"], files={"file": ("disk.raw", image)},
                           headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert sent.status_code == 200, sent.text
    assert fake.read_volume("vms", "img") == image
    # the API refuses a file of another size, in its own words
    local.action("/storage/upload/volume", {"pool": "vms", "volume": "img2", "image_format": "raw",
                                            "size": "2M"}, htmx=True)
    sent = local.http.post("/api/v1/storage/ceph/volume/vms/img2/upload?image_format=raw",
                           files={"file": ("disk.raw", image)})
    assert sent.status_code == 400 and "must be exactly the size of the volume" in sent.text
    # and a cross-site page cannot use the session for it
    sent = local.http.post(answer["upload"], files={"file": ("disk.raw", image)}, headers={"Origin": EVIL})
    assert sent.status_code == 403
    # a name taken: refused before any file is sent
    step = local.action("/storage/upload/volume", {"pool": "vms", "volume": "img", "image_format": "raw",
                                                   "size": "1M"}, htmx=True)
    assert step.status_code == 400 and 'Volume "img" already exists' in flash(step)
