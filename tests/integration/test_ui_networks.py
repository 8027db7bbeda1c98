"""The Networks pages over HTTP against a real pvcapid and ZooKeeper, without a browser: the list
and a network's page with seeded data, add and edit with the API's refusals beside their field,
remove after typing the VNI (refused while VMs use it), DHCP reservations and ACLs (the real
`nft --check` in pvcapid), the live streams, the CSRF and same-origin refusals of every action,
and what users and DHCP clients wrote shown as text."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.uihelp import UIClient
from tests.ui import sample
from tests.ui.waits import sampled

EVIL = "https://evil.example"
ROW = re.compile(r'<tr id="network-row-(\d+)" data-vni="\d+">')


@pytest.fixture
def ui(api: Api) -> Any:
    client = UIClient(api)
    yield client
    client.close()


@pytest.fixture
def seeded(api: Api, zk: ZK) -> dict[str, Any]:
    made = sampled(zk, api.http)      # pages count VMs from pvcapid's watch cache: once it shows them
    made.update(sample.networks(zk, api.http))
    return made


def said(answer: httpx.Response) -> str:
    """What an answer says, as a person reads it (entities decoded)."""
    return html.unescape(answer.text)


def network_trees(zk: ZK) -> dict[str, bytes]:
    """Every znode of the network trees (to prove that a refusal changed nothing)."""
    out: dict[str, bytes] = {}
    for tree in schema.NETWORK_TREES:
        out.update({path: raw for path, (raw, _eph) in zk.walk(tree).items()})
    return out


def acl_names(zk: ZK, vni: int, direction: str) -> list[str]:
    return [r["description"] for r in zk.get(schema.network_acls(vni))[direction]]


# -- pages -----------------------------------------------------------------------------------------

def test_list_and_detail_pages(ui: UIClient, seeded: dict[str, Any]) -> None:
    page = ui.get("/networks")
    assert page.status_code == 200 and 'aria-current="page">Networks' in page.text
    assert ROW.findall(page.text) == ["100", "200", "1001", "4000"]
    row = page.text.split('id="network-row-100"', 1)[1].split("</tr>", 1)[0]
    assert "prod" in row and "managed" in row and "prod.example" in row and "10.100.0.0/24" in row
    assert "fd00:100::/64" in row and ">on<br>" in row and "10.100.0.100 \N{EN DASH} 10.100.0.199" in row
    assert f'data-label="VMs">{len(sample.VMS)}<' in row and "no problems" in row
    bridged = page.text.split('id="network-row-200"', 1)[1].split("</tr>", 1)[0]
    assert "bridged" in bridged and 'data-label="DHCPv4">off<' in bridged and 'data-label="VMs">0<' in bridged

    detail = ui.get("/networks/100")
    assert detail.status_code == 200 and "Network 100" in detail.text
    text = said(detail)
    for mac, address, hostname in sample.RESERVATIONS:
        assert f'data-mac="{mac}"' in text and address in text and hostname in text
    for mac, address, _host in sample.LEASES:
        assert mac in text and address in text
    in_table = detail.text.split('id="acl-table-in"', 1)[1].split("</table>", 1)[0]
    assert in_table.index("allow-ssh") < in_table.index("allow-web")
    assert "no-smtp" in detail.text.split('id="acl-table-out"', 1)[1]
    vms = detail.text.split('id="network-vm-table"', 1)[1].split("</table>", 1)[0]
    assert sorted(re.findall(r'data-vm="([^"]+)"', vms)) == sorted(v[0] for v in sample.VMS)
    assert "10.100.0.120" in vms                      # web1's lease address beside its interface
    assert ui.get("/networks/prod").text.count("Network 100") >= 1          # by description too

    bridged_page = ui.get("/networks/200")
    assert bridged_page.status_code == 200 and "VLAN 200" in bridged_page.text
    assert 'id="add-reservation"' not in bridged_page.text and 'id="add-acl"' not in bridged_page.text
    missing = ui.get("/networks/9999")
    assert missing.status_code == 404 and "Network not found." in missing.text


def test_a_network_shows_the_problems_its_nodes_report(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    from pvc.cluster import faults

    faults.raise_fault(zk, "NETWORK_DNSMASQ-1001_HV1", 10, "Node hv1: network 1001 dnsmasq: exited <b>1</b>")
    row = ui.get("/networks").text.split('id="network-row-1001"', 1)[1].split("</tr>", 1)[0]
    assert "1 problem" in row and "state-bad" in row
    page = ui.get("/networks/1001").text
    assert "NETWORK_DNSMASQ-1001_HV1" in page and "exited &lt;b&gt;1&lt;/b&gt;" in page
    assert "no problems" in ui.get("/networks/100").text


# -- add, edit, remove ------------------------------------------------------------------------------

ADD = {"vni": "300", "description": "dmz", "nettype": "managed", "mtu": "", "domain": "", "name_servers": "",
       "ip4_network": "10.30.0.0/24", "ip4_gateway": "10.30.0.1", "dhcp4": "on", "dhcp4_start": "10.30.0.1",
       "dhcp4_end": "10.30.0.50", "ip6_network": "", "ip6_gateway": "", "tftp_root": "", "dhcp_boot": ""}


def test_add_shows_refusals_beside_their_field(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    before = network_trees(zk)
    refused = ui.action("/networks/add", ADD)                       # the range holds the gateway
    assert refused.status_code == 400
    text = said(refused)
    assert 'id="dhcp4_start-error"' in text
    assert "the range 10.30.0.1 - 10.30.0.50 contains the gateway 10.30.0.1; DHCP would hand it out" in text
    assert 'value="dmz"' in text and 'value="10.30.0.0/24"' in text            # what was typed is kept
    field = text.split('id="net-dhcp4_end"', 1)[1].split(">", 1)[0]
    assert 'aria-invalid="true"' in field
    taken = ui.action("/networks/add", {**ADD, "vni": "100", "dhcp4_start": "10.30.0.10"})
    assert taken.status_code == 400 and 'id="vni-error"' in taken.text
    assert "vni: a network with VNI 100 already exists" in said(taken)
    overlap = ui.action("/networks/add", {**ADD, "ip4_network": "10.100.0.0/25", "ip4_gateway": "10.100.0.1",
                                          "dhcp4": "", "dhcp4_start": "", "dhcp4_end": ""})
    assert overlap.status_code == 400 and "overlaps 10.100.0.0/24 of network 100" in said(overlap)
    bridged = ui.action("/networks/add", {**ADD, "nettype": "bridged"})
    assert bridged.status_code == 400 and "bridged networks carry no IP" in said(bridged)
    assert network_trees(zk) == before

    added = ui.action("/networks/add", {**ADD, "dhcp4_start": "10.30.0.10"})
    assert added.status_code == 303 and added.headers["location"] == "/networks/300"
    doc = zk.get(schema.network(300))
    assert doc["ip4"]["dhcp_start"] == "10.30.0.10" and doc["domain"] == "dmz.local"
    assert 'Network "dmz" added successfully!' in said(ui.get("/networks/300"))


def test_edit_a_network(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    form = ui.get("/networks/1001/edit")
    assert form.status_code == 200 and 'value="10.201.0.0/24"' in form.text and 'name="vni"' not in form.text
    values = {"description": "lab2", "mtu": "", "domain": "", "name_servers": "",
              "ip4_network": "10.201.0.0/24", "ip4_gateway": "10.201.0.1", "dhcp4": "on",
              "dhcp4_start": "", "dhcp4_end": "", "ip6_network": "", "ip6_gateway": "",
              "tftp_root": "", "dhcp_boot": ""}
    before = zk.get(schema.network(1001))
    refused = ui.action("/networks/1001/edit", values)
    assert refused.status_code == 400 and 'id="dhcp4_start-error"' in refused.text
    assert "DHCPv4 needs the start and end addresses" in said(refused) and 'value="lab2"' in refused.text
    assert zk.get(schema.network(1001)) == before
    done = ui.action("/networks/1001/edit", {**values, "dhcp4_start": "10.201.0.100",
                                             "dhcp4_end": "10.201.0.110"})
    assert done.status_code == 303 and done.headers["location"] == "/networks/1001"
    doc = zk.get(schema.network(1001))
    assert doc["description"] == "lab2" and doc["ip4"]["dhcp_flag"]
    assert doc["ip4"]["dhcp_end"] == "10.201.0.110"
    assert doc["domain"] == "lab2.local"                  # empty: the default for the new description
    # a change that would strand a reservation is refused with the API's words
    moved = ui.action("/networks/100/edit", {**values, "description": "prod", "ip4_network": "10.99.0.0/24",
                                             "ip4_gateway": "10.99.0.1", "dhcp4": ""})
    assert moved.status_code == 400
    assert "would be outside 10.99.0.0/24; remove or change it first" in said(moved)
    # a bridged network's form holds what it can change
    bridged = ui.get("/networks/200/edit").text
    assert 'name="ip4_network"' not in bridged and 'value="9000"' in bridged
    assert ui.action("/networks/200/edit", {"description": "storage-vlan", "mtu": "1500"}).status_code == 303
    assert zk.get(schema.network(200))["mtu"] == 1500


def test_remove_needs_the_vni_and_no_vms(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    wrong = ui.action("/networks/1001/remove", {"confirm_vni": "100"}, htmx=True)
    assert wrong.status_code == 400
    assert "type its VNI to confirm" in said(wrong) and 'got "100"' in said(wrong)
    used = ui.action("/networks/100/remove", {"confirm_vni": "100"}, htmx=True)
    assert used.status_code == 400 and "flash-bad" in used.text
    assert "Cannot remove network 100: VMs" in said(used) and '"web1"' in said(used)
    plain = ui.action("/networks/100/remove", {"confirm_vni": "100", "next": "/networks/100"})
    assert plain.status_code == 303 and plain.headers["location"] == "/networks/100"
    assert "Error:</strong> Cannot remove network 100" in said(ui.get("/networks/100"))
    assert zk.exists(schema.network(100)) and zk.exists(schema.network(1001))
    done = ui.action("/networks/1001/remove", {"confirm_vni": "1001"})
    assert done.status_code == 303 and done.headers["location"] == "/networks"
    assert not zk.exists(schema.network(1001)) and not zk.exists(schema.network_acls(1001))
    assert 'Network "lab" removed successfully!' in said(ui.get("/networks"))
    htmx = ui.action("/networks/200/remove", {"confirm_vni": "200"}, htmx=True)
    assert htmx.headers.get("hx-redirect") == "/networks" and not zk.exists(schema.network(200))


# -- reservations and ACLs -------------------------------------------------------------------------

def test_reservations(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    path = "/networks/100/reservations/add"
    before = network_trees(zk)
    for fields, words in (
            ({"macaddress": "52:54:00:zz:00:01", "ipaddress": "10.100.0.20"}, "is not a MAC address"),
            ({"macaddress": "52:54:00:aa:00:20", "ipaddress": "10.9.9.9"}, "ipaddress: 10.9.9.9"),
            ({"macaddress": "52:54:00:aa:00:20", "ipaddress": "10.100.0.1"}, "is the gateway of network 100"),
            ({"macaddress": "52:54:00:aa:00:20", "ipaddress": "10.100.0.10"}, "already reserved for"),
            ({"macaddress": "52:54:00:aa:00:20", "ipaddress": "10.100.0.20", "hostname": "bad_name!"},
             "is not a host name"),
            ({"macaddress": "52:54:00:aa:00:20", "ipaddress": "", "hostname": "x"},
             "ipaddress: an IPv4 address")):
        answer = ui.action(path, {**fields, "next": "/networks/100"}, htmx=True)
        assert answer.status_code == 400 and "flash-bad" in answer.text, (fields, answer.text)
        assert words in said(answer), (fields, said(answer))
    plain = ui.action(path, {"macaddress": "52:54:00:aa:00:20", "ipaddress": "10.100.0.1",
                             "next": "/networks/100"})           # without scripts: back, with the reason
    assert plain.status_code == 303 and plain.headers["location"] == "/networks/100"
    shown = said(ui.get("/networks/100"))
    assert "Error:" in shown and "ipaddress: 10.100.0.1 is the gateway of network 100" in shown
    assert network_trees(zk) == before
    bridged = ui.action("/networks/200/reservations/add", {"macaddress": "52:54:00:aa:00:20",
                                                           "ipaddress": "10.100.0.20"}, htmx=True)
    assert bridged.status_code == 400 and "is a bridged network" in said(bridged)

    added = ui.action(path, {"macaddress": "52:54:00:AA:00:20", "ipaddress": "10.100.0.20",
                             "hostname": "cache"}, htmx=True)
    assert added.status_code == 200
    assert 'DHCP reservation "52:54:00:aa:00:20" added successfully!' in said(added)
    assert zk.get(schema.network_reservation(100, "52:54:00:aa:00:20"))["hostname"] == "cache"
    assert 'data-mac="52:54:00:aa:00:20"' in ui.get("/networks/100").text

    lease_mac = sample.LEASES[0][0]                      # a dynamic lease: not this button's business
    refused = ui.action("/networks/100/reservations/remove", {"mac": lease_mac}, htmx=True)
    assert refused.status_code == 404 and "No DHCP reservation exists" in said(refused)
    assert zk.exists(schema.network_lease(100, lease_mac))
    removed = ui.action("/networks/100/reservations/remove",
                        {"mac": "52:54:00:aa:00:20", "next": "/networks/100"})
    assert removed.status_code == 303 and removed.headers["location"] == "/networks/100"
    assert not zk.exists(schema.network_reservation(100, "52:54:00:aa:00:20"))


def test_acls(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    path = "/networks/100/acls/add"
    before = network_trees(zk)
    for fields, words in (
            ({"description": "bad", "direction": "in", "rule": "tcp dport banana accept"},
             "nft refuses the rule"),
            ({"description": "allow-ssh", "direction": "out", "rule": "tcp dport 23 drop"},
             'already has a rule "allow-ssh" (in)'),
            ({"description": "bad name", "direction": "in", "rule": "accept"}, "description"),
            ({"description": "x", "direction": "sideways", "rule": "accept"},
             "direction: 'sideways' is not one of"),
            ({"description": "x", "direction": "in", "order": "-1", "rule": "accept"}, "order")):
        answer = ui.action(path, fields, htmx=True)
        assert answer.status_code == 400 and "flash-bad" in answer.text, (fields, answer.text)
        assert words in said(answer), (fields, said(answer))
    assert network_trees(zk) == before
    added = ui.action(path, {"description": "allow-dns", "direction": "in", "order": "0",
                             "rule": "udp dport 53 accept"}, htmx=True)
    assert added.status_code == 200 and 'Firewall rule "allow-dns" added successfully!' in said(added)
    assert acl_names(zk, 100, "in") == ["allow-dns", "allow-ssh", "allow-web"]
    table = ui.get("/networks/100").text.split('id="acl-table-in"', 1)[1].split("</table>", 1)[0]
    assert table.index("allow-dns") < table.index("allow-ssh")
    removed = ui.action("/networks/100/acls/remove", {"description": "allow-ssh"}, htmx=True)
    assert removed.status_code == 200 and 'Firewall rule "allow-ssh" removed successfully!' in said(removed)
    assert acl_names(zk, 100, "in") == ["allow-dns", "allow-web"]
    gone = ui.action("/networks/100/acls/remove", {"description": "allow-ssh"}, htmx=True)
    assert gone.status_code == 404 and "No firewall rule exists matching" in said(gone)


# -- security ----------------------------------------------------------------------------------------

ACTIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/networks/add", {**ADD, "vni": "301", "dhcp4_start": "10.30.0.10"}),
    ("/networks/1001/edit", {"description": "forged"}),
    ("/networks/1001/remove", {"confirm_vni": "1001"}),
    ("/networks/100/reservations/add", {"macaddress": "52:54:00:aa:00:99", "ipaddress": "10.100.0.99"}),
    ("/networks/100/reservations/remove", {"mac": "52:54:00:aa:00:10"}),
    ("/networks/100/acls/add", {"description": "forged", "direction": "in", "rule": "accept"}),
    ("/networks/100/acls/remove", {"description": "allow-ssh"}),
)


def test_every_network_action_refuses_forgeries(ui: UIClient, api: Api, zk: ZK,
                                                seeded: dict[str, Any]) -> None:
    """Without the session's token, with another session's, or from another site: 403 and nothing
    changed; without a session at all: 401."""
    before = network_trees(zk)
    other = UIClient(api)
    try:
        for path, data in ACTIONS:
            for token, headers, words in (("", {}, "CSRF token is missing"),
                                          (other.csrf, {}, "not this session"),
                                          (None, {"Origin": EVIL}, "cross-site request"),
                                          (None, {"Sec-Fetch-Site": "cross-site"}, "cross-site request")):
                for htmx in (False, True):
                    answer = ui.action(path, data, htmx=htmx, token=token, headers=headers)
                    assert answer.status_code == 403, (path, headers, htmx, answer.text)
                    assert words in answer.text, (path, words)
        with httpx.Client(base_url=ui.base) as stranger:
            for path, data in ACTIONS:
                assert stranger.post(path, data=data).status_code == 401, path
    finally:
        other.close()
    assert network_trees(zk) == before


def test_what_users_and_clients_wrote_is_escaped(ui: UIClient, zk: ZK, seeded: dict[str, Any]) -> None:
    pages = {path: ui.get(path).text for path in ("/networks", "/networks/4000", "/networks/100",
                                                  "/networks/4000/edit")}
    for path, text in pages.items():
        assert "<script>window.__pvc_xss" not in text and "<img src=x" not in text, path
    escaped_description = "legacy &lt;script&gt;window.__pvc_xss=1&lt;/script&gt;"
    escaped_hostname = "&lt;img src=x onerror=window.__pvc_xss=4&gt;"
    assert escaped_description in pages["/networks"] and escaped_description in pages["/networks/4000"]
    assert escaped_hostname in pages["/networks/100"] and escaped_hostname in pages["/networks/4000"]
    assert "comment &#34;&lt;img src=x onerror=window.__pvc_xss=2&gt;&#34;" in pages["/networks/4000"]
    for stream, part in (("/events/networks", "networks-table"), ("/events/networks/4000", "network-leases")):
        with ui.stream(stream) as events:
            seen = events.fragments_until(lambda f, part=part: part in f)
        joined = "".join(seen.values())
        assert "<script>window.__pvc_xss" not in joined and "<img src=x" not in joined
        assert escaped_description in joined or escaped_hostname in joined


def test_no_inline_script_or_style(ui: UIClient, seeded: dict[str, Any]) -> None:
    from tests.ui.test_vms_routes import event_handlers

    for path in ("/networks", "/networks/100", "/networks/200", "/networks/add", "/networks/100/edit"):
        page = ui.get(path).text
        assert "<style" not in page and " style=" not in page, path
        for tag in page.split("<script")[1:]:
            assert tag.split(">", 1)[0].strip().startswith("src="), path
        assert event_handlers(page) == [], path


# -- live ------------------------------------------------------------------------------------------

def test_list_follows_the_networks_live(ui: UIClient, api: Api, zk: ZK, seeded: dict[str, Any]) -> None:
    with ui.stream("/events/networks") as events:
        events.fragments_until(lambda f: "networks-table" in f)
        answer = api.http.post("/network", params={"vni": 4001, "description": "late", "nettype": "bridged"})
        assert answer.status_code == 200, answer.text
        events.fragments_until(lambda f: 'id="network-row-4001"' in f.get("networks-table", ""))
        assert api.http.delete("/vm/mail").status_code == 200             # one VM fewer on network 100
        fewer = f'data-label="VMs">{len(sample.VMS) - 1}<'
        events.fragments_until(
            lambda f: fewer in f.get("networks-table", "").split('id="network-row-200"')[0])


def test_detail_follows_leases_reservations_and_rules(ui: UIClient, api: Api, zk: ZK,
                                                     seeded: dict[str, Any]) -> None:
    with ui.stream("/events/networks/100") as events:
        events.fragments_until(lambda f: "network-leases" in f)
        mac = "52:54:00:dd:00:01"
        zk.put(schema.network_lease(100, mac), {"mac_address": mac, "ip4_address": "10.100.0.150",
                                                "hostname": "newcomer", "expiry": 2_000_000_000})
        events.fragments_until(lambda f: "newcomer" in f.get("network-leases", ""))
        api.http.post("/network/100/lease", params={"macaddress": "52:54:00:aa:00:30",
                                                    "ipaddress": "10.100.0.30"})
        events.fragments_until(lambda f: "52:54:00:aa:00:30" in f.get("network-reservations", ""))
        api.http.delete("/network/100/acl/no-smtp")
        events.fragments_until(lambda f: "no-smtp" not in f.get("network-acls", "no-smtp"))
    unknown = ui.get("/events/networks/9999")
    assert unknown.status_code == 404


def test_every_live_fragment_exists() -> None:
    from pvc.api.web.pages import networks
    from pvc.web import TEMPLATES

    for fragments, page in ((networks.LIST_FRAGMENTS, "list.html"),
                            (networks.DETAIL_FRAGMENTS, "detail.html")):
        for element, template in fragments.items():
            assert (TEMPLATES / template).exists(), template
            assert template.rsplit("/", 1)[-1].startswith("_"), template
            assert f'id="{element}"' in (TEMPLATES / "networks" / page).read_text(), element


def test_every_control_has_a_label(ui: UIClient, seeded: dict[str, Any]) -> None:
    """Each visible input, select and textarea is named by a <label for> (buttons by their text)."""
    from html.parser import HTMLParser

    class Controls(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []
            self.unnamed: list[str] = []
            self.labelled: set[str] = set()

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "label" and found.get("for"):
                self.labelled.add(str(found["for"]))
            if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
                if found.get("id"):
                    self.ids.append(str(found["id"]))
                else:
                    self.unnamed.append(f"{tag} {found.get('name')}")

    for path in ("/networks", "/networks/100", "/networks/200", "/networks/add", "/networks/100/edit"):
        controls = Controls()
        controls.feed(ui.get(path).text)
        assert controls.unnamed == [], path
        assert [i for i in controls.ids if i not in controls.labelled] == [], path
