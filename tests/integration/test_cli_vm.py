"""The real `pvc vm …` CLI (a subprocess) against a real pvcapid and ZooKeeper.

No node daemon runs here, so VMs stay stopped: these tests cover definition, metadata, tags,
client-side XML edits, rename, placement records (migrate/move/unmigrate) and removal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pvc.cluster import state
from pvc.core import domainxml, schema
from pvc.core.records import Memory, VCpu
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.test_cli_api import Pvc, register

UUID = "6d1f3a9e-2b4c-4e8f-a1d3-5c7b9e0f2a4d"
XML = f"""<domain type="kvm">
  <name>web1</name>
  <uuid>{UUID}</uuid>
  <memory unit="MiB">512</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type="bridge">
      <mac address="52:54:00:21:43:65"/>
      <source bridge="vmbr100"/>
      <model type="virtio"/>
    </interface>
  </devices>
</domain>
"""


@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client = tmp_path / "client"
    client.mkdir()
    config = client / "pvc.conf"
    config.write_text(api.daemon.config.read_text())  # the API's own file: the implicit "local" connection
    return Pvc(client, config)


@pytest.fixture
def cluster(zk: ZK) -> ZK:
    """Three ready hypervisors big enough for the test VM and its edits."""
    state.ensure_cluster(zk, "test")
    big = {"cpu_count": 16, "memory": Memory(total=65536, used=2048, free=63488, allocated=0, provisioned=0),
           "vcpu": VCpu(total=16, allocated=0)}
    register(zk, "hv1", coordinator_state="primary", **big)
    register(zk, "hv2", **big)
    register(zk, "hv3", **big)
    zk.put(schema.PRIMARY_NODE, "hv1")
    return zk


@pytest.fixture
def xml_file(tmp_path: Path) -> Path:
    path = tmp_path / "web1.xml"
    path.write_text(XML)
    return path


def one(pvc: Pvc, name: str) -> dict[str, Any]:
    items = pvc.json("vm", "info", name)
    return items[0] if isinstance(items, list) else items


def test_define_view_edit_move_undefine(pvc: Pvc, cluster: ZK, xml_file: Path) -> None:
    out = pvc.ok("-q", "vm", "define", str(xml_file), "--node", "hv1", "-g", "web", "-G", "keep",
                 "--migration-max-downtime", "500")
    assert "web1" in out and UUID in out

    listed = pvc.json("vm", "list")
    assert [v["name"] for v in listed] == ["web1"]
    assert listed[0]["state"] == "stop" and listed[0]["node"] == "hv1"
    table = pvc.ok("-q", "vm", "list")
    assert table.splitlines()[0].split()[:3] == ["Name", "State", "Tags"]
    assert table.splitlines()[1].split()[:3] == ["web1", "stop", "keep,web"]
    assert pvc.ok("-q", "vm", "list", "-r").split() == ["web1"]
    assert pvc.ok("-q", "vm", "list", "-s", "start").strip() == "No VMs found."

    info = pvc.ok("-q", "vm", "info", "web1")
    assert "UUID:" in info and UUID in info and "512M" in info
    assert "Interfaces" in pvc.ok("-q", "vm", "info", "web1", "-f", "long")
    item = one(pvc, "web1")
    assert item["migration_max_downtime"] == 500
    dumped = pvc.ok("-q", "vm", "dump", "web1")
    assert domainxml.parse(dumped).uuid == UUID

    # metadata and tags
    pvc.ok("-q", "vm", "meta", "web1", "-l", "hv1,hv2", "-s", "vms", "--node-autostart")
    item = one(pvc, "web1")
    assert item["node_limit"] == ["hv1", "hv2"] and item["node_selector"] == "vms" and item["node_autostart"]
    pvc.ok("-q", "vm", "tag", "add", "web1", "extra")
    tags = pvc.json("vm", "tag", "get", "web1")["tags"]
    assert sorted(t["name"] for t in tags) == ["extra", "keep", "web"]
    pvc.ok("-q", "vm", "tag", "remove", "web1", "extra")
    result = pvc("-q", "vm", "tag", "remove", "web1", "keep")  # protected
    assert result.returncode == 1 and result.stderr.strip() and len(result.stderr.strip().splitlines()) == 1
    assert sorted(t["name"] for t in pvc.json("vm", "tag", "get", "web1")["tags"]) == ["keep", "web"]

    # client-side XML edits land in the stored XML
    pvc.ok("-q", "vm", "vcpu", "set", "web1", "4", "-t", "2,2,1")
    pvc.ok("-q", "vm", "memory", "set", "web1", "2G")
    pvc.ok("-q", "network", "add", "200", "--description", "n200", "--type", "bridged")
    pvc.ok("-q", "vm", "network", "add", "web1", "200", "-a", "52:54:00:aa:bb:cc")
    missing = pvc("-q", "vm", "network", "add", "web1", "4000")          # no such network
    assert missing.returncode == 1 and "4000" in missing.stderr
    item = one(pvc, "web1")
    assert item["vcpu"] == 4 and item["vcpu_topology"] == "2/2/1" and item["memory"] == 2048
    stored = domainxml.parse(item["xml"])
    assert stored.vcpus == 4 and stored.memory_mib == 2048
    assert [n.source for n in stored.interfaces] == ["vmbr100", "vmbr200"]
    assert pvc.json("vm", "vcpu", "get", "web1") == {"name": "web1", "vcpus": 4, "sockets": 2, "cores": 2,
                                                     "threads": 1}
    assert pvc.ok("-q", "vm", "network", "get", "web1", "-f", "raw").strip() == "100,200"
    pvc.ok("-q", "vm", "network", "remove", "web1", "200")
    assert [n["vni"] for n in one(pvc, "web1")["networks"]] == ["100"]

    # rename (the VM is stopped)
    pvc.ok("-q", "vm", "rename", "web1", "web2", "-y")
    assert [v["name"] for v in pvc.json("vm", "list")] == ["web2"]
    assert domainxml.parse(one(pvc, "web2")["xml"]).name == "web2"

    # placement records: migrate remembers the origin, unmigrate returns, move is permanent
    pvc.ok("-q", "vm", "migrate", "web2", "hv2")
    item = one(pvc, "web2")
    assert (item["node"], item["last_node"]) == ("hv2", "hv1")
    result = pvc("-q", "vm", "migrate", "web2", "hv1")
    assert result.returncode == 1 and "previously migrated" in result.stderr
    pvc.ok("-q", "vm", "unmigrate", "web2")
    item = one(pvc, "web2")
    assert (item["node"], item["last_node"]) == ("hv1", "")
    pvc.ok("-q", "vm", "move", "web2", "hv2")
    item = one(pvc, "web2")
    assert (item["node"], item["last_node"]) == ("hv2", "")
    result = pvc("-q", "vm", "move", "web2", "hv3")  # outside its node limit
    assert result.returncode == 1 and "hv3" in result.stderr

    # undefine needs confirmation
    result = pvc("-q", "vm", "undefine", "web2", input="n\n")
    assert result.returncode == 1 and [v["name"] for v in pvc.json("vm", "list")] == ["web2"]
    pvc.ok("-q", "vm", "undefine", "web2", "-y")
    assert pvc.json("vm", "list") == []
    result = pvc("-q", "vm", "info", "web2")
    assert result.returncode == 1 and result.stderr.strip() and result.stdout == ""


def test_bad_input_is_one_error_line(pvc: Pvc, cluster: ZK, tmp_path: Path, xml_file: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><name>broken</name>")
    result = pvc("-q", "vm", "define", str(bad))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: XML is malformed or invalid:")
    assert len(result.stderr.strip().splitlines()) == 1

    # well-formed but refused by the API (too big for any node): the API's message, once
    huge = tmp_path / "huge.xml"
    huge.write_text(XML.replace('<memory unit="MiB">512</memory>', '<memory unit="MiB">131072</memory>'))
    result = pvc("-q", "vm", "define", str(huge))
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "web1" in result.stderr
    assert pvc.json("vm", "list") == []

    assert pvc("-q", "vm", "define", "-", input=XML).returncode == 0  # from stdin
    result = pvc("-q", "vm", "define", str(xml_file))  # duplicate
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    result = pvc("-q", "vm", "vcpu", "set", "web1", "64", "-R")  # beyond the host
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert one(pvc, "web1")["vcpu"] == 1
    result = pvc("-q", "vm", "migrate", "web1", "nosuchnode")
    assert result.returncode == 1 and "nosuchnode" in result.stderr
    assert json.loads(pvc.ok("-q", "vm", "memory", "get", "web1", "-f", "json"))["memory"] == 512


# An $EDITOR for `vm modify --editor` that changes the VM behind the editing client's back (as a
# second administrator would) and then saves an edit of the text it was given.
RACING_EDITOR = """
import re, subprocess, sys
from pathlib import Path
subprocess.run([sys.executable, "-m", "pvc.cli", "-q", "vm", "memory", "set", "web1", "1G"], check=True,
               capture_output=True)
path = Path(sys.argv[1])
path.write_text(re.sub(r"(<vcpu[^>]*>)1(</vcpu>)", r"\\g<1>2\\g<2>", path.read_text()))
"""


def test_modify_of_a_vm_changed_while_editing(pvc: Pvc, api: Api, cluster: ZK, xml_file: Path,
                                              tmp_path: Path) -> None:
    """With an API that sends ETags the late edit is refused (412) and the other change is kept;
    an API without them takes the last write, as before."""
    pvc.ok("-q", "vm", "define", str(xml_file), "--node", "hv1")
    editor = tmp_path / "editor.py"
    editor.write_text(RACING_EDITOR)
    pvc.env["EDITOR"] = pvc.env["VISUAL"] = f"{sys.executable} {editor}"
    versioned = "ETag" in api.get("/vm/web1").headers
    result = pvc("-q", "vm", "modify", "web1", "--editor", "-y")
    item = one(pvc, "web1")
    if versioned:
        assert result.returncode != 0 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert (item["memory"], item["vcpu"]) == (1024, 1)  # the other change stands, ours was refused
        pvc.ok("-q", "vm", "modify", "web1", "--editor", "-y")  # read again, edit again: it lands
        assert one(pvc, "web1")["vcpu"] == 2
    else:
        assert result.returncode == 0, result.stderr
        assert (item["memory"], item["vcpu"]) == (512, 2)  # last write wins
