"""Provisioner data validation (pure): system template fields, MAC templates, VNIs, disks, userdata,
scripts, profile fields and arguments, the API views and the CLI list formatters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.cli.commands.provisioner import formats as cli
from pvc.cli.output import render
from pvc.cluster import provisioner as prov
from pvc.core.errors import Conflict, InvalidInput

SYSTEM = {"vcpus": "2", "vram": "2048", "serial": "true", "vnc": "false"}
ALL_FS = lambda program: f"/usr/sbin/{program}"  # noqa: E731  (every mkfs is installed)
SCRIPT = "from pvcapid.vmbuilder import VMBuilder\n\n\nclass VMBuilderScript(VMBuilder):\n    pass\n"


def refusal(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        fn(*args, **kwargs)
    return info.value.message


# -- system templates ------------------------------------------------------------------------------

def test_system_template_defaults() -> None:
    assert prov.system_template_values(SYSTEM) == {
        "vcpu_count": 2, "vram_mb": 2048, "serial": True, "vnc": False, "vnc_bind": None,
        "node_limit": None, "node_selector": None, "node_autostart": False, "migration_method": None,
        "migration_max_downtime": 300}


def test_system_template_fields() -> None:
    values = prov.system_template_values({**SYSTEM, "vnc_bind": "0.0.0.0", "node_limit": "hv1, hv2,hv1",
                                          "node_selector": "none", "node_autostart": "yes",
                                          "migration_method": "LIVE", "migration_max_downtime": "500"})
    assert values["node_limit"] == ["hv1", "hv2"] and values["node_selector"] is None
    assert values["migration_method"] == "live" and values["migration_max_downtime"] == 500
    assert values["node_autostart"] is True and values["vnc_bind"] == "0.0.0.0"


@pytest.mark.parametrize(("field", "value", "words"), [
    ("vcpus", None, "vcpus: required"),
    ("vcpus", "0", "vcpus: 0 is out of range"),
    ("vcpus", "1.5", "vcpus: '1.5' is not a whole number"),
    ("vcpus", True, "vcpus: 'True' is not a whole number"),
    ("vram", "16", "vram: 16 is out of range"),
    ("serial", "sometimes", "serial: 'sometimes' is not a boolean"),
    ("vnc", None, "vnc: required"),
    ("vnc_bind", "localhost", "vnc_bind: 'localhost' is not an IP address"),
    ("node_limit", "hv 1", "node_limit: 'hv 1' is not a valid name"),
    ("node_selector", "fastest", "node_selector: 'fastest' is not one of mem"),
    ("migration_method", "copy", "migration_method: 'copy' is not one of live, shutdown, none"),
    ("migration_max_downtime", "0", "migration_max_downtime: 0 is out of range"),
])
def test_system_template_refusals_name_the_field(field: str, value: Any, words: str) -> None:
    assert words in refusal(prov.system_template_values, {**SYSTEM, field: value})


@given(st.integers(min_value=-10**6, max_value=10**7))
def test_vcpus_range(number: int) -> None:
    if prov.VCPU_MIN <= number <= prov.VCPU_MAX:
        assert prov.system_template_values({**SYSTEM, "vcpus": number})["vcpu_count"] == number
    else:
        assert refusal(prov.system_template_values, {**SYSTEM, "vcpus": number}).startswith("vcpus:")


def test_system_template_round_trip() -> None:
    values = prov.system_template_values({**SYSTEM, "node_limit": "hv1", "migration_method": "shutdown"})
    doc = {"id": 1, "name": "t", **values, "ova": None}
    assert prov.system_template_values(prov.system_template_inputs(doc)) == values
    assert prov.system_template_view(doc)["node_limit"] == "hv1"


# -- networks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["{prefix}:ff:ff:{vmid}{netid}", "{prefix}:00:{vmid}{netid}:01",
                                      "52:54:00:00:{vmid}0:{netid}1"])
def test_mac_templates(template: str) -> None:
    assert prov.check_mac_template(template) == template


@pytest.mark.parametrize("template", ["{prefix}:ff:{vmid}{netid}", "{prefix}:{host}:ff:00", "{0}:00",
                                      "ff:ff:ff:ff:ff:{netid}0", "{prefix", "{prefix.x}:ff:ff:00",
                                      "{prefix:>100000000}", "{prefix!r}:ff:ff:00", "{prefix[0]}:ff:ff:00"])
def test_bad_mac_templates(template: str) -> None:
    assert refusal(prov.check_mac_template, template).startswith("mac_template:")


def test_template_vnis() -> None:
    assert prov.parse_template_vni("0100") == "100"
    assert prov.parse_template_vni(" upstream ") == "upstream"
    assert refusal(prov.parse_template_vni, "lan").startswith("vni: 'lan' is not a VNI")
    assert refusal(prov.parse_template_vni, "").startswith("vni: a VNI is required")


# -- disks -----------------------------------------------------------------------------------------

def disk(**values: Any) -> dict[str, Any]:
    return prov.disk_doc({"disk_id": "sda", "pool": "vms", **values}, ALL_FS)


def test_disk_documents() -> None:
    made = disk(disk_size="8", filesystem="ext4", filesystem_arg=["-L=root", " "], mountpoint="/var//log/")
    assert made == {
        "disk_id": "sda", "pool": "vms", "source_volume": None, "disk_size_gb": 8, "filesystem": "ext4",
        "filesystem_args": ["-L=root"], "mountpoint": "/var/log"}
    assert disk(source_volume="template_sda")["disk_size_gb"] is None
    assert disk(disk_size=4, filesystem="swap")["filesystem"] == "swap"


@pytest.mark.parametrize(("values", "words"), [
    ({"disk_id": "sd1"}, "disk_id: 'sd1' is not a disk id"),
    ({"disk_id": "hda"}, "disk_id: 'hda' is not a disk id"),
    ({"pool": ""}, "pool: a name is required"),
    ({}, "disk_size: a size in GB is required"),
    ({"disk_size": "-1"}, "disk_size: '-1' is not a whole number"),
    ({"disk_size": "0"}, "disk_size: 0 is out of range"),
    ({"disk_size": 4, "mountpoint": "/"}, "mountpoint: a filesystem is required"),
    ({"disk_size": 4, "filesystem": "zfs"}, "filesystem: 'zfs' is not one of"),
    ({"disk_size": 4, "filesystem": "ext4", "mountpoint": "var"}, "mountpoint: 'var' is not an absolute"),
    ({"disk_size": 4, "filesystem": "ext4", "mountpoint": "/a b"}, "mountpoint: '/a b' is not an absolute"),
    ({"disk_size": 4, "filesystem": "ext4", "mountpoint": "/a/../b"}, "mountpoint:"),
    ({"disk_size": 4, "filesystem": "swap", "mountpoint": "/swap"}, "mountpoint: a swap disk is not mounted"),
    ({"disk_size": 4, "filesystem": "ext4", "filesystem_arg": "-L root"}, "filesystem_arg: '-L root'"),
    ({"source_volume": "base", "disk_size": 4}, "disk_size: a disk cloned from source_volume 'base'"),
    ({"source_volume": "base", "filesystem": "ext4"}, "filesystem: a disk cloned from source_volume"),
    ({"source_volume": "base", "mountpoint": "/"}, "mountpoint: a disk cloned from source_volume"),
    ({"source_volume": "bad/name"}, "source_volume: 'bad/name' is not a valid name"),
])
def test_disk_refusals_name_the_field(values: dict[str, Any], words: str) -> None:
    assert words in refusal(prov.disk_doc, {"disk_id": "sda", "pool": "vms", **values}, ALL_FS)


def test_missing_mkfs() -> None:
    message = refusal(prov.disk_doc, {"disk_id": "sda", "pool": "vms", "disk_size": 4, "filesystem": "btrfs"},
                      lambda _program: None)
    assert message == ("filesystem: mkfs.btrfs is not installed on this node, so btrfs filesystems cannot be "
                       "created")


def test_disk_ids_and_mountpoints_are_unique() -> None:
    first = disk(disk_size=4, filesystem="ext4", mountpoint="/")
    with pytest.raises(Conflict, match="disk_id: the disk 'sda'"):
        prov.check_disks(first, [first], "t")
    other = {**first, "disk_id": "sdb"}
    with pytest.raises(Conflict, match="mountpoint: / is already the mountpoint of disk 'sda'"):
        prov.check_disks(other, [first], "t")
    prov.check_disks({**other, "mountpoint": None}, [first], "t")


@given(st.text(alphabet="sdvhxyz", min_size=1, max_size=4))
def test_disk_id_pattern(text: str) -> None:
    if re.fullmatch(r"(sd|vd)[a-z]", text):
        assert prov.check_disk_id(text) == text
    else:
        assert refusal(prov.check_disk_id, text).startswith("disk_id:")


# -- userdata --------------------------------------------------------------------------------------

MULTIPART = ('Content-Type: multipart/mixed; boundary="X"\nMIME-Version: 1.0\n\n--X\nContent-Type: '
             'text/cloud-config\n\n#cloud-config\na: 1\n--X\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n'
             'true\n--X--\n')


SINGLE = ('Content-Type: text/cloud-config; charset="us-ascii"\nMIME-Version: 1.0\n\n'
          '#cloud-config\nhostname: x\n')


@pytest.mark.parametrize("text", ["", "  \n", "#cloud-config\n", "#cloud-config\nusers: []\n",
                                  "#!/bin/sh\nexit 0\n", "#include\nhttp://example.com/x\n",
                                  "#cloud-config-archive\n- type: text/x\n", MULTIPART, SINGLE])
def test_good_userdata(text: str) -> None:
    assert prov.check_userdata(text) == text


@pytest.mark.parametrize(("text", "words"), [
    ("#cloud-config\n: : :\n", "data: the #cloud-config document is not valid YAML at line"),
    ("#cloud-config\n- a\n", "must be a YAML mapping (key: value), not a list"),
    ("#cloud-config\nplain\n", "not a str"),
    ("#cloud-config\nday: 2001-02-30\n", "is not valid YAML: day is out of range for month"),
    ("#cloud-config-archive\n- day: 2001-02-30\n", "must be a YAML list"),
    ("#cloud-config-archive\na: 1\n", "must be a YAML list"),
    ("users: []\n", "data: not a cloud-init userdata document"),
    (MULTIPART.replace("a: 1", "- 1"), "part 1 (text/cloud-config) must be a YAML mapping"),
    ('Content-Type: multipart/mixed; boundary="X"\n\nno parts\n', "data:"),
    ("#!/bin/sh\n\x00", "NUL"),
    (None, "data: required"),
])
def test_bad_userdata(text: Any, words: str) -> None:
    assert words in refusal(prov.check_userdata, text)


def test_userdata_size_limit() -> None:
    assert "too large" in refusal(prov.check_userdata, "#!/bin/sh\n" + "#" * prov.TEXT_MAX)


# -- scripts ---------------------------------------------------------------------------------------

def test_scripts() -> None:
    assert prov.check_script(SCRIPT) == SCRIPT
    dotted = "import pvcapid.vmbuilder as vb\n\nclass VMBuilderScript(vb.VMBuilder):\n    pass\n"
    assert prov.check_script(dotted) == dotted
    assert refusal(prov.check_script, SCRIPT + "\ndef broken(:\n    pass\n") == \
        "data: syntax error at line 7: invalid syntax"
    assert "does not define class VMBuilderScript" in refusal(prov.check_script, "x = 1\n")
    nested = "def f():\n    class VMBuilderScript(VMBuilder):\n        pass\n"
    assert "does not define class VMBuilderScript" in refusal(prov.check_script, nested)
    assert "must extend VMBuilder" in refusal(prov.check_script, "class VMBuilderScript(object):\n    pass\n")
    assert "empty" in refusal(prov.check_script, "   \n")


@given(st.text(max_size=200))
def test_userdata_check_never_crashes(text: str) -> None:
    for document in (text, "#cloud-config\n" + text, MULTIPART.replace("a: 1", text)):
        try:
            prov.check_userdata(document)
        except InvalidInput as exc:
            assert exc.message.startswith("data:")


@given(st.text(max_size=200))
def test_script_check_never_crashes(text: str) -> None:
    try:
        prov.check_script(text)
    except InvalidInput as exc:
        assert exc.message.startswith("data:")


# -- profiles --------------------------------------------------------------------------------------

PROFILE = {"profile_type": "provisioner", "system_template": "s", "network_template": "n",
           "storage_template": "d", "script": "x"}


def test_profile_values() -> None:
    values = prov.profile_values({**PROFILE, "userdata": "", "arguments": ["a=1", "b = x=y", ""]})
    assert values == {"profile_type": "provisioner", "system_template": "s", "network_template": "n",
                      "storage_template": "d", "userdata": None, "script": "x", "ova": None,
                      "arguments": ["a=1", "b= x=y"]}
    ova = prov.profile_values({"profile_type": "ova", "system_template": "s", "script": "ova", "ova": "deb"})
    assert ova["network_template"] is None and ova["ova"] == "deb"
    assert prov.arguments_dict(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}


@pytest.mark.parametrize(("changes", "words"), [
    ({"profile_type": "vm"}, "profile_type: 'vm' is not one of provisioner, ova"),
    ({"system_template": None}, "system_template: required"),
    ({"script": ""}, "script: required"),
    ({"network_template": None}, "network_template: a provisioner profile needs a network template"),
    ({"storage_template": " "}, "storage_template: a provisioner profile needs a storage template"),
    ({"profile_type": "ova"}, "ova: an ova profile needs the name of its OVA"),
    ({"userdata": "a b"}, "userdata: 'a b' is not a valid name"),
    ({"arguments": ["=1"]}, "arg: '=1' is not a key=value argument"),
    ({"arguments": "novalue"}, "arg: 'novalue' is not a key=value argument"),
    ({"arguments": ["a=1", "a=2"]}, "arg: the argument 'a' is given twice"),
])
def test_profile_refusals_name_the_field(changes: dict[str, Any], words: str) -> None:
    assert words in refusal(prov.profile_values, {**PROFILE, **changes})


def test_profile_view_shows_na() -> None:
    doc = {"id": 3, "name": "p", "profile_type": "provisioner", "system_template": "s",
           "network_template": None, "storage_template": "gone", "userdata": "empty", "script": "x",
           "ova": None, "arguments": ["a=1"]}
    existing = {"system_template": {"s"}, "storage_template": set(), "userdata": {"empty"}, "script": {"x"}}
    assert prov.profile_view(doc, existing) == {
        "id": 3, "name": "p", "type": "provisioner", "system_template": "s", "network_template": "N/A",
        "storage_template": "N/A", "userdata": "empty", "script": "x", "ova": "N/A", "arguments": ["a=1"]}


def test_template_views() -> None:
    net = prov.network_template_view({"id": 5, "name": "n", "mac_template": None, "ova": None,
                                      "networks": [{"id": 7, "vni": "100"}, {"id": 8, "vni": "upstream"}]})
    assert net["networks"] == [{"id": 7, "network_template": 5, "vni": "100"},
                               {"id": 8, "network_template": 5, "vni": "upstream"}]
    storage = prov.storage_template_view({"id": 6, "name": "d", "ova": None, "disks": [
        {"id": 2, "disk_id": "sdb", "pool": "vms", "source_volume": None, "disk_size_gb": 4,
         "filesystem": "ext4", "filesystem_args": ["-L=var", "-m=1"], "mountpoint": "/var"},
        {"id": 1, "disk_id": "sda", "pool": "vms", "source_volume": "base", "disk_size_gb": None,
         "filesystem": None, "filesystem_args": [], "mountpoint": None}]})
    assert [d["disk_id"] for d in storage["disks"]] == ["sda", "sdb"]
    assert storage["disks"][1]["filesystem_args"] == "-L=var -m=1"
    assert storage["disks"][1]["storage_template"] == 6


# -- CLI formatters (the product documents' examples) -----------------------------------------------

def test_system_list_matches_the_documents() -> None:
    templates = [
        {"name": "ext-lg", "id": 80, "vcpu_count": 4, "vram_mb": 8192, "serial": False, "vnc": False,
         "vnc_bind": None, "node_limit": None, "node_selector": None, "node_autostart": False,
         "migration_method": None},
        {"name": "ext-sm-lim", "id": 83, "vcpu_count": 1, "vram_mb": 1024, "serial": True, "vnc": False,
         "vnc_bind": None, "node_limit": "pvchv1,pvchv2", "node_selector": "mem", "node_autostart": True,
         "migration_method": "live"}]
    lines = render(cli.format_system_list(templates)).splitlines()
    assert lines[:2] == ["System templates:", ""]
    assert lines[2] == ("Name        ID  vCPUs  vRAM [MB]  Consoles: Serial  VNC    VNC bind  "
                        "Metadata: Limit          Selector  Autostart  Migration")
    assert lines[3] == ("ext-lg      80  4      8192                 False   False  None                "
                        "None           None      False      None")
    assert lines[4].split() == ["ext-sm-lim", "83", "1", "1024", "True", "False", "None", "pvchv1,pvchv2",
                                "mem", "True", "live"]


def test_storage_and_profile_lists_match_the_documents() -> None:
    storage = [{"name": "large-cloned", "id": 22, "disks": [
        {"disk_id": "sda", "pool": "vms", "source_volume": "template_sda", "disk_size_gb": None,
         "filesystem": None, "filesystem_args": "", "mountpoint": None},
        {"disk_id": "sdb", "pool": "vms", "source_volume": None, "disk_size_gb": 40, "filesystem": None,
         "filesystem_args": "", "mountpoint": None}]}]
    lines = render(cli.format_storage_list(storage)).splitlines()
    assert lines[2] == ("Name          ID  Disk ID  Pool  Source Volume  Size [GB]  Filesystem  Arguments  "
                        "Mountpoint")
    assert lines[3] == "large-cloned  22"
    assert lines[4] == ("                  sda      vms   template_sda   None       None        None       "
                        "None")
    profiles = [{"name": "std-large", "id": 41, "system_template": "ext-lg-ser",
                 "network_template": "ext-101", "storage_template": "standard-ext4", "userdata": "basic-ssh",
                 "script": "debootstrap",
                 "arguments": ["deb_release=buster"]}]
    lines = render(cli.format_profile_list(profiles)).splitlines()
    assert lines[0] == ("Name       ID  Templates: System      Network  Storage        Data: Userdata   "
                        "Script       Script Arguments")
    assert lines[1] == ("std-large  41             ext-lg-ser  ext-101  standard-ext4        basic-ssh  "
                        "debootstrap  deb_release=buster")


def test_userdata_list_truncates_documents() -> None:
    docs = [{"name": "empty", "id": 10, "userdata": ""},
            {"name": "basic-ssh", "id": 11, "userdata": "a\nb\nc\nd\ne\n"}]
    lines = render(cli.format_userdata_list(docs)).splitlines()
    assert lines[0].split() == ["Name", "ID", "Document"]
    assert [line.split() for line in lines[1:]] == [["basic-ssh", "11", "a"], ["b"], ["c"], ["d"], ["[...]"],
                                                    ["empty", "10"]]
    assert len(render(cli.format_userdata_list(docs, None)).splitlines()) == 7
    assert cli.format_userdata_list([]) == "No userdata documents found."
