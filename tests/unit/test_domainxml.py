"""libvirt domain XML: golden files, validation errors, hostile input and edit round-trips.

Goldens live in tests/unit/golden/domainxml/. `PVC_UPDATE_GOLDEN=1 pytest tests/unit/test_domainxml.py`
rewrites the expected files; read the diff before committing it — the goldens are the spec.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from pvc.core import domainxml as dx
from pvc.core.domainxml import (
    Chardev,
    Controller,
    Disk,
    DiskAuth,
    DiskDriver,
    DiskSource,
    Domain,
    DomainEditError,
    Graphics,
    InvalidDomainXML,
    Nic,
    Topology,
)
from pvc.core.domainxml.checks import _MAC_RE
from pvc.core.errors import InvalidInput

GOLDEN = Path(__file__).parent / "golden" / "domainxml"
UPDATE = os.environ.get("PVC_UPDATE_GOLDEN") == "1"
SECRET = "96721723-8650-4a72-b8f6-a93cd1a20f0c"
MONITORS = ["hv1.pvcstorage.tld:6789", "hv2.pvcstorage.tld:6789", "hv3.pvcstorage.tld:6789"]
INPUTS = ("minimal.in.xml", "provisioner.in.xml", "tcg.in.xml", "live.in.xml",  # live: libvirt 9.0 TCG
          "rbdbare.in.xml")  # rbd disks as the API stores them: no monitors, no auth
CEPH_MONS = [("10.200.0.1", 6789), ("10.200.0.2", 6789), ("10.200.0.3", 6789)]



@dataclass(frozen=True)
class Access:
    """Ceph access as the node passes it (pvc.node.storage.DiskAccess has this shape)."""

    hosts: Any
    username: str | None
    secret_uuid: str | None


CEPH = Access(CEPH_MONS, "admin", SECRET)


def _in(name: str) -> str:
    return (GOLDEN / name).read_text()


def _prepare(xml: str, kvm: bool, **kwargs: Any) -> str:
    return dx.prepare_for_host(dx.parse_definition(xml), kvm, **kwargs)


def _summary_json(xml: str) -> str:
    return json.dumps(dx.summary(dx.parse(xml)), indent=2) + "\n"


# expected file -> (input file, transformation)
CASES: dict[str, tuple[str, Callable[[str], str]]] = {
    "minimal.render.xml": ("minimal.in.xml", lambda x: dx.render(dx.parse(x))),
    "minimal.summary.json": ("minimal.in.xml", _summary_json),
    "minimal.set_vcpus_topology.xml": ("minimal.in.xml", lambda x: dx.set_vcpus(x, 4, (2, 2, 1))),
    "minimal.serial_log.xml": (
        "minimal.in.xml",
        lambda x: _prepare(x, True, console_log="/var/log/libvirt/minimal.log"),
    ),
    "minimal.add_interface.xml": ("minimal.in.xml", lambda x: dx.add_interface(x, "vmbr100")),
    "minimal.add_rbd_disk.xml": (
        "minimal.in.xml",
        lambda x: dx.add_rbd_disk(x, "vms", "minimal_vda", MONITORS, SECRET),
    ),
    "provisioner.render.xml": ("provisioner.in.xml", lambda x: dx.render(dx.parse(x))),
    "provisioner.summary.json": ("provisioner.in.xml", _summary_json),
    "provisioner.set_vcpus.xml": ("provisioner.in.xml", lambda x: dx.set_vcpus(x, 4)),
    "provisioner.set_memory.xml": ("provisioner.in.xml", lambda x: dx.set_memory(x, 4096)),
    "provisioner.add_interface.xml": (
        "provisioner.in.xml",
        lambda x: dx.add_interface(x, "vmbr200", mac="52:54:00:3a:7b:c3", model="e1000"),
    ),
    "provisioner.remove_interface.xml": (
        "provisioner.in.xml",
        lambda x: dx.remove_interface(x, mac="52:54:00:3a:7b:c2"),
    ),
    "provisioner.add_rbd_disk.xml": (
        "provisioner.in.xml",
        lambda x: dx.add_rbd_disk(x, "vms", "web1_sdc", MONITORS, SECRET, bus="scsi"),
    ),
    "provisioner.remove_disk.xml": ("provisioner.in.xml", lambda x: dx.remove_disk(x, "vms/web1_sdb")),
    "provisioner.rename.xml": ("provisioner.in.xml", lambda x: dx.rename(x, "web2")),
    "provisioner.adapt_tcg.xml": ("provisioner.in.xml", lambda x: _prepare(x, False)),
    "provisioner.device_nic.xml": ("provisioner.in.xml", lambda x: dx.device_xml(x, mac="52:54:00:3a:7b:c2")),
    "provisioner.device_disk.xml": ("provisioner.in.xml", lambda x: dx.device_xml(x, target="sda")),
    "tcg.render.xml": ("tcg.in.xml", lambda x: dx.render(dx.parse(x))),
    "tcg.summary.json": ("tcg.in.xml", _summary_json),
    "tcg.adapt_tcg.xml": ("tcg.in.xml", lambda x: _prepare(x, False)),
    "tcg.adapt_kvm.xml": (
        "tcg.in.xml",
        lambda x: _prepare(x, True, emulator="/usr/bin/kvm"),
    ),
    "live.summary.json": ("live.in.xml", _summary_json),
    "tcg.device_disk_tcg.xml": (
        "tcg.in.xml",
        lambda x: dx.device_xml(_prepare(x, False), source="vms/db1_vda"),
    ),
    "rbdbare.fill_rbd.xml": ("rbdbare.in.xml", lambda x: _prepare(x, True, ceph=CEPH)),
    "provisioner.fill_rbd.xml": ("provisioner.in.xml", lambda x: _prepare(x, True, ceph=CEPH)),
}


def _start(kvm: bool, log: str) -> Callable[[str], str]:
    """Every host edit of a start: what a node gives libvirt for a stored definition."""
    return lambda x: _prepare(x, kvm, ceph=CEPH, console_log=log)


for _input in INPUTS:
    _stem = _input.removesuffix(".in.xml")
    for _kvm, _host in ((True, "kvm"), (False, "tcg")):
        CASES[f"{_stem}.prepare_{_host}.xml"] = (_input, _start(_kvm, f"/var/log/libvirt/{_stem}.log"))


@pytest.mark.parametrize("expected", sorted(CASES))
def test_golden(expected: str) -> None:
    source, transform = CASES[expected]
    actual = transform(_in(source))
    path = GOLDEN / expected
    if UPDATE:
        path.write_text(actual)
        return
    assert path.exists(), f"no golden {expected}: run with PVC_UPDATE_GOLDEN=1 and review the file"
    assert actual == path.read_text(), f"{expected} differs; if intended, regenerate and review"


def test_every_golden_file_is_used() -> None:
    used = set(CASES) | set(INPUTS)
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(used)


# --------------------------------------------------------------------------------------------
# What the goldens mean, stated as facts (so a wrong regeneration cannot slip through)
# --------------------------------------------------------------------------------------------


def test_provisioner_domain_facts() -> None:
    d = dx.parse(_in("provisioner.in.xml"))
    assert (d.name, d.type, d.memory_mib, d.vcpus, str(d.topology)) == ("web1", "kvm", 2048, 2, "1/2/1")
    assert d.rbd_volumes == ["vms/web1_sda", "vms/web1_sdb"]
    sda = d.disks[0]
    assert sda.source is not None and sda.auth is not None and sda.driver is not None
    assert (sda.source.pool, sda.source.volume) == ("vms", "web1_sda")
    assert sda.source.hosts[0] == ("hv1.pvcstorage.tld", "6789")
    assert (sda.auth.username, sda.auth.secret_uuid) == ("libvirt", SECRET)
    assert (sda.driver.cache, sda.driver.discard) == ("none", "unmap")
    assert [n.source for n in d.interfaces] == ["vmbr1001", "vmbr101"]
    assert d.os.boot == ("cdrom", "hd")
    assert d.warnings == ("disk sdz: file /dev/shm/vhostmd0 is node-local, not shared storage",)
    s = dx.summary(d)
    assert [n["vni"] for n in s["networks"]] == ["1001", "101"]
    assert s["disks"][0] == {"type": "rbd", "name": "vms/web1_sda", "dev": "sda", "bus": "scsi"}


def test_edit_facts() -> None:
    x = _in("provisioner.in.xml")
    assert dx.parse(dx.set_vcpus(x, 4)).topology == Topology(1, 4, 1)
    assert dx.parse(dx.set_vcpus(_in("minimal.in.xml"), 4, (2, 2, 1))).topology == Topology(2, 2, 1)
    assert dx.parse(dx.set_vcpus(_in("minimal.in.xml"), 3)).topology is None
    assert dx.parse(dx.set_memory(x, 4096)).memory_mib == 4096
    current = dx.parse(dx.set_memory(_in("tcg.in.xml"), 1000)).other[0]
    assert current == '<currentMemory unit="MiB">1000</currentMemory>'
    added = dx.parse(dx.add_interface(x, "vmbr200"))
    assert added.interfaces[-1].source == "vmbr200" and added.interfaces[-1].model == "virtio"
    assert added.interfaces[-1].mac == dx.mac_address(f"{added.uuid}/vmbr200/0")
    assert dx.parse(dx.remove_interface(x, bridge="vmbr101")).macs == ["52:54:00:3a:7b:c1"]
    disk = dx.parse(dx.add_rbd_disk(x, "vms", "web1_sdc", MONITORS, SECRET, bus="scsi"))
    assert disk.disks[-1].target == "sdc" and disk.rbd_volumes[-1] == "vms/web1_sdc"
    assert sum(c.type == "scsi" for c in disk.controllers) == 1  # no second scsi controller
    minimal = dx.parse(dx.add_rbd_disk(_in("minimal.in.xml"), "vms", "v", ["10.0.0.1"], None, bus="scsi"))
    assert [c.model for c in minimal.controllers] == ["virtio-scsi"]
    assert minimal.disks[0].auth is None
    assert minimal.disks[0].source is not None and minimal.disks[0].source.hosts == (("10.0.0.1", None),)
    assert dx.parse(dx.remove_disk(x, "sda")).rbd_volumes == ["vms/web1_sdb"]
    renamed = dx.parse(dx.rename(x, "web2"))
    assert renamed.name == "web2" and renamed.rbd_volumes == ["vms/web2_sda", "vms/web2_sdb"]
    assert renamed.serials[0].log_file == "/var/log/libvirt/web2.log"
    assert renamed.description == "Testing VM web1 (profile std-small)"  # text elsewhere untouched


def test_adapt_for_tcg() -> None:
    x = _in("tcg.in.xml")
    out = _prepare(x, False)
    d = dx.parse(out)
    assert d.type == "qemu"
    by_target = {disk.target: disk for disk in d.disks}
    assert by_target["vda"].driver == DiskDriver(name="qemu", event_idx="off")
    assert by_target["vdb"].driver is not None and by_target["vdb"].driver.event_idx == "off"  # bus from vd*
    assert by_target["sda"].driver is not None and by_target["sda"].driver.event_idx is None  # scsi
    assert d.cpu_mode is None and d.topology == Topology(1, 2, 2) and d.cpu_other == ()
    assert "<!-- an administrator's comment is kept by edits -->" in out
    assert _prepare(out, False) == out  # idempotent
    assert dx.parse(_prepare(x, True)).type == "kvm"
    host_model = dx.parse(_prepare(_in("provisioner.in.xml"), False))
    assert host_model.cpu_mode == "host-model"  # libvirt supports host-model under TCG


def test_summary_of_special_nics() -> None:
    s = dx.summary(dx.parse(_in("tcg.in.xml")))
    assert [(n["vni"], n["source"]) for n in s["networks"]] == [
        ("cluster", "brcluster"),
        ("macvtap:ens1f0v3", "ens1f0v3"),
        ("hostdev:ens1f1v5", "ens1f1v5"),
    ]
    assert s["vnc"] == {"listen": "0.0.0.0", "port": "None"}
    assert s["console"] == "file" and s["vcpu_topology"] == "1/2/2" and s["memory"] == 4096


def test_fill_rbd_gives_bare_rbd_disks_monitors_and_auth() -> None:
    filled = dx.parse(_in("rbdbare.fill_rbd.xml"))
    vda, vdb, vdc, cdrom = filled.disks
    assert vda.source is not None and vda.auth is not None
    assert vda.source.hosts == (("10.200.0.1", "6789"), ("10.200.0.2", "6789"), ("10.200.0.3", "6789"))
    assert (vda.auth.username, vda.auth.secret_type, vda.auth.secret_uuid) == ("admin", "ceph", SECRET)
    # a disk with its own monitors keeps them; one with its own auth (in <source>) keeps that
    assert vdb.source is not None and vdb.source.hosts == (("10.0.0.9", "6789"),) and vdb.auth is not None
    assert vdc.auth is not None and (vdc.auth.username, vdc.auth.secret_usage) == (
        "libvirt", "client.libvirt secret")
    assert vdc.source is not None and len(vdc.source.hosts) == 3
    assert cdrom.auth is None and cdrom.source is not None and cdrom.source.hosts == ()


def test_fill_rbd_is_idempotent_and_leaves_complete_definitions_alone() -> None:
    once = _prepare(_in("rbdbare.in.xml"), True, ceph=CEPH)
    other = Access([("192.0.2.1", 3300)], "other", "0b5c6c4e-1111-4222-8333-944444444444")
    assert _prepare(once, True, ceph=other) == once
    assert dx.parse(_in("provisioner.fill_rbd.xml")) == dx.parse(_in("provisioner.in.xml"))


def test_fill_rbd_without_credentials_adds_only_monitors() -> None:
    filled = dx.parse(_prepare(_in("rbdbare.in.xml"), True, ceph=Access(["mon1:6789"], None, None)))
    assert filled.disks[0].auth is None and filled.disks[0].source is not None
    assert filled.disks[0].source.hosts == (("mon1", "6789"),)


@pytest.mark.parametrize(("hosts", "user", "secret", "message"), [
    (["bad host"], "admin", SECRET, "Ceph monitor"),
    ([("10.0.0.1", 70000)], "admin", SECRET, "invalid port"),
    (CEPH_MONS, "ad min", SECRET, "Ceph user"),
    (CEPH_MONS, "admin", "not-a-uuid", "secret uuid"),
])
def test_fill_rbd_refuses_bad_arguments(hosts: Any, user: str, secret: str, message: str) -> None:
    with pytest.raises(DomainEditError, match=message):
        _prepare(_in("rbdbare.in.xml"), True, ceph=Access(hosts, user, secret))


def test_prepare_for_host_leaves_its_definition_alone() -> None:
    """Edits work on a copy: one parse serves any number of preparations, each checked first."""
    definition = dx.parse_definition(_in("rbdbare.in.xml"))
    log = "/var/log/libvirt/rbdbare.log"
    first = dx.prepare_for_host(definition, False, ceph=CEPH, console_log=log)
    assert first == _in("rbdbare.prepare_tcg.xml")
    assert dx.prepare_for_host(definition, True, ceph=CEPH, console_log=log) == _in("rbdbare.prepare_kvm.xml")
    with pytest.raises(DomainEditError, match="absolute path"):
        dx.prepare_for_host(definition, False, ceph=CEPH, console_log="relative.log")
    assert dx.prepare_for_host(definition, False, ceph=CEPH, console_log=log) == first
    assert definition.domain == dx.parse(_in("rbdbare.in.xml"))


def test_prepare_for_host_strips_blanks_between_edits() -> None:
    """Each edit sees the tree as loaded, as when each one parsed text: blank text left in an
    element that just got children (here under a disk with text beside its elements, which is
    never re-indented) goes before the next edit."""
    vda = ("<disk type='network' device='disk'>\n      <driver name='qemu' type='raw' cache='none' "
           "discard='unmap'/>\n      <source protocol='rbd' name='vms/db2_vda'/>")
    assert vda in _in("rbdbare.in.xml")
    mixed = _in("rbdbare.in.xml").replace(vda, vda.replace("'disk'>", "'disk'>note").replace(
        "'vms/db2_vda'/>", "'vms/db2_vda'>  </source>"))
    out = _prepare(mixed, True, ceph=CEPH, console_log="/var/log/libvirt/db2.log")
    assert '<source protocol="rbd" name="vms/db2_vda"><host name="10.200.0.1" port="6789"/>' in out

# --------------------------------------------------------------------------------------------
# Validation errors
# --------------------------------------------------------------------------------------------

UUID = "0b0c9d1e-6f2a-4c3b-8d4e-5f6a7b8c9d0e"


def _doc(body: str, dtype: str = "kvm") -> str:
    return f"<domain type='{dtype}'>{body}</domain>"


OK_HEAD = f"<name>x</name><uuid>{UUID}</uuid><memory>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
DEV = "<devices>{}</devices>"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("this is not xml", "not XML"),
        ("<domain type='kvm'><name>x</name>", "not XML"),
        ("<vm/>", "root element is <vm>"),
        (_doc(OK_HEAD + "<devices/>", "xen"), "domain type 'xen' is not supported"),
        ("<domain>" + OK_HEAD + "<devices/></domain>", "no type attribute"),
        (_doc(OK_HEAD.replace("<name>x</name>", "") + "<devices/>"), "no <name>"),
        (_doc(OK_HEAD.replace("<name>x</name>", "<name></name>") + "<devices/>"), "name is empty"),
        (_doc(OK_HEAD.replace("<name>x</name>", "<name>a/b</name>") + "<devices/>"), "contains '/'"),
        (_doc(OK_HEAD.replace("<name>x</name>", "<name>x</name><name>y</name>") + "<devices/>"),
         "more than one <name>"),
        (_doc(OK_HEAD.replace(f"<uuid>{UUID}</uuid>", "") + "<devices/>"), "no <uuid>"),
        (_doc(OK_HEAD.replace(UUID, "not-a-uuid") + "<devices/>"), "'not-a-uuid' is not a valid UUID"),
        (_doc(OK_HEAD.replace(UUID, "0" * 32) + "<devices/>"), "all digits are the same"),
        (_doc(OK_HEAD.replace("<memory>131072</memory>", "") + "<devices/>"), "no <memory>"),
        (_doc(OK_HEAD.replace("131072", "0") + "<devices/>"), "memory must be greater than zero"),
        (_doc(OK_HEAD.replace("131072", "lots") + "<devices/>"), "memory 'lots' is not an integer"),
        (_doc(OK_HEAD.replace("<memory>", "<memory unit='furlongs'>") + "<devices/>"), "unknown unit"),
        (_doc(OK_HEAD.replace("<vcpu>1</vcpu>", "") + "<devices/>"), "no <vcpu>"),
        (_doc(OK_HEAD.replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>") + "<devices/>"), "vcpu must be at least 1"),
        (_doc(OK_HEAD.replace("<vcpu>1</vcpu>", "<vcpu>\u0661</vcpu>") + "<devices/>"), "not an integer"),
        (_doc(OK_HEAD.replace("<vcpu>1</vcpu>", "<vcpu>99999</vcpu>") + "<devices/>"), "at most 4096"),
        (_doc(OK_HEAD + "<cpu><topology sockets='1' cores='2' threads='1'/></cpu><devices/>"),
         "does not match <vcpu> 1"),
        (_doc(OK_HEAD + "<cpu><topology sockets='1' cores='1'/></cpu><devices/>"), "no threads attribute"),
        (_doc(OK_HEAD.replace("<os><type>hvm</type></os>", "") + "<devices/>"), "no <os>"),
        (_doc(OK_HEAD.replace("hvm", "exe") + "<devices/>"), "os type 'exe' is not supported"),
        (_doc(OK_HEAD), "no <devices>"),
        (_doc(OK_HEAD + DEV.format("<disk type='volume'><target dev='vda'/></disk>")),
         "disk vda: type 'volume' is not supported"),
        (_doc(OK_HEAD + DEV.format("<disk type='file'/>")), "disk #0 has no <target dev"),
        (_doc(OK_HEAD + DEV.format("<disk type='file'><target dev='vda1'/></disk>")), "not a disk name"),
        (_doc(OK_HEAD + DEV.format("<disk type='file'><target dev='vda'/></disk>" * 2)),
         "target vda is used by more than one disk"),
        (_doc(OK_HEAD + DEV.format("<disk type='network'><source protocol='rbd' name='vol'/>"
                                   "<target dev='vda'/></disk>")),
         "rbd source name 'vol' is not pool/volume"),
        (_doc(OK_HEAD + DEV.format("<disk type='network'><target dev='vda'/></disk>")),
         "needs <source protocol"),
        (_doc(OK_HEAD + DEV.format("<interface type='ethernet'/>")), "type 'ethernet' is not supported"),
        (_doc(OK_HEAD + DEV.format("<interface type='bridge'/>")), "needs <source bridge"),
        (_doc(OK_HEAD + DEV.format("<interface type='bridge'><mac address='53:54:00:00:00:01'/>"
                                   "<source bridge='br0'/></interface>")), "multicast"),
        (_doc(OK_HEAD + DEV.format("<interface type='bridge'><mac address='52:54:00:00:00'/>"
                                   "<source bridge='br0'/></interface>")), "not a MAC address"),
        (_doc(OK_HEAD + DEV.format("<interface type='bridge'><mac address='52:54:00:00:00:01'/>"
                                   "<source bridge='br0'/></interface>" * 2)),
         "used by more than one interface"),
        (_doc(OK_HEAD + DEV.format("<interface type='hostdev'><source/></interface>")),
         "needs <source><address"),
        (_doc(OK_HEAD + DEV.format("<graphics type='vnc' port='vnc'/>")), "port 'vnc' is not an integer"),
        (_doc(OK_HEAD + DEV.format("<emulator>a</emulator><emulator>b</emulator>")),
         "more than one <emulator>"),
    ],
)
def test_invalid_domain_xml(xml: str, message: str) -> None:
    with pytest.raises(InvalidDomainXML, match=message):
        dx.parse(xml)


def test_invalid_domain_xml_is_a_400() -> None:
    assert issubclass(InvalidDomainXML, InvalidInput) and InvalidDomainXML.status == 400
    assert issubclass(DomainEditError, InvalidInput)


@pytest.mark.parametrize(
    ("amount", "unit", "mib"),
    [
        ("131072", None, 128),  # libvirt's default unit is KiB
        ("131072", "KiB", 128),
        ("131072", "k", 128),
        ("128", "MiB", 128),
        ("128", "M", 128),
        ("2", "GiB", 2048),
        ("2", "g", 2048),
        ("1", "TiB", 1024 * 1024),
        ("1000", "MB", 954),  # 10^9 bytes, rounded up to whole MiB as QEMU does
        ("134217728", "b", 128),
        ("134217728", "bytes", 128),
        ("1500", "KiB", 2),
        ("1", "KB", 1),
    ],
)
def test_memory_units(amount: str, unit: str | None, mib: int) -> None:
    unit_attr = f" unit='{unit}'" if unit else ""
    memory = f"<memory{unit_attr}>{amount}</memory>"
    xml = _doc(OK_HEAD.replace("<memory>131072</memory>", memory) + "<devices/>")
    assert dx.parse(xml).memory_mib == mib


def test_uuid_forms_are_normalised() -> None:
    upper = _doc(OK_HEAD.replace(UUID, UUID.upper().replace("-", "")) + "<devices/>")
    assert dx.parse(upper).uuid == UUID


def test_xxe_and_entity_expansion_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET")
    xxe = (f"<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY x SYSTEM 'file://{secret}'>]>"
           + _doc(OK_HEAD.replace("<name>x</name>", "<name>&x;</name>") + "<devices/>"))
    with pytest.raises(InvalidDomainXML, match="DOCTYPE") as info:
        dx.parse(xxe)
    assert "TOP-SECRET" not in str(info.value)
    laughs = ("<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
              "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'>]>" + _doc("<name>&c;</name>"))
    with pytest.raises(InvalidDomainXML, match="DOCTYPE"):
        dx.parse(laughs)
    with pytest.raises(InvalidDomainXML, match="larger than"):
        dx.parse("<domain>" + " " * (dx.MAX_XML_BYTES + 1) + "</domain>")


def test_warnings_flag_node_local_parts() -> None:
    xml = _doc(OK_HEAD.replace("<os><type>hvm</type></os>", "<os><type>hvm</type><kernel>/k</kernel></os>")
               + DEV.format("<disk type='block'><source dev='/dev/sdb'/><target dev='vdb'/></disk>"
                            "<interface type='network'><source network='default'/></interface>"
                            "<interface type='user'/><hostdev mode='subsystem' type='pci'/>"))
    warnings = dx.parse(xml).warnings
    assert any("/k" in w for w in warnings)
    assert any("block device /dev/sdb" in w for w in warnings)
    assert any("libvirt network 'default'" in w for w in warnings)
    assert any("user-mode" in w for w in warnings)
    assert any("<hostdev>" in w for w in warnings)


# --------------------------------------------------------------------------------------------
# Edit errors and smaller helpers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda x: dx.set_vcpus(x, 0), "between 1 and"),
        (lambda x: dx.set_vcpus(x, 4, (1, 2, 1)), "gives 2 vCPUs, not 4"),
        (lambda x: dx.set_vcpus(x, True), "must be an integer"),
        (lambda x: dx.set_memory(x, 0), "between 1 and"),
        (lambda x: dx.add_interface(x, "a-bridge-name-too-long"), "not an interface name"),
        (lambda x: dx.add_interface(x, "vmbr1", mac="52:54:00:3a:7b:c1"), "already used"),
        (lambda x: dx.add_interface(x, "vmbr1", mac="nonsense"), "not a MAC address"),
        (lambda x: dx.add_interface(x, "vmbr1", model="<x>"), "model"),
        (lambda x: dx.remove_interface(x), "give the MAC address or the bridge"),
        (lambda x: dx.remove_interface(x, mac="52:54:00:00:00:99"), "no interface with MAC"),
        (lambda x: dx.remove_interface(dx.add_interface(x, "vmbr101"), bridge="vmbr101"), "2 interfaces"),
        (lambda x: dx.add_rbd_disk(x, "vms", "web1_sda", MONITORS, SECRET), "already attached"),
        (lambda x: dx.add_rbd_disk(x, "vms", "new", MONITORS, SECRET, target="sda"), "already used"),
        (lambda x: dx.add_rbd_disk(x, "vms", "a/b", MONITORS, SECRET), "not a valid RBD name"),
        (lambda x: dx.add_rbd_disk(x, "vms", "new", ["h:99999"], SECRET), "invalid port"),
        (lambda x: dx.add_rbd_disk(x, "vms", "new", MONITORS, "nope"), "not a valid UUID"),
        (lambda x: dx.add_rbd_disk(x, "vms", "new", MONITORS, SECRET, bus="floppy"), "bus 'floppy'"),
        (lambda x: dx.remove_disk(x, "vms/missing"), "has no disk vms/missing"),
        (lambda x: dx.rename(x, "bad/name"), "contains '/'"),
        (lambda x: _prepare(x, True, console_log="relative.log"), "absolute path"),
        (lambda x: dx.device_xml(x, mac="52:54:00:00:00:99"), "has no interface"),
        (lambda x: dx.device_xml(x), "exactly one"),
        (lambda x: _prepare(x, False, emulator="kvm"), "absolute path"),
    ],
)
def test_edit_errors(edit: Callable[[str], str], message: str) -> None:
    with pytest.raises(DomainEditError, match=message):
        edit(_in("provisioner.in.xml"))


UNKNOWN = _in("minimal.in.xml").replace(
    "<domain type='kvm'>", "<domain type='kvm' xmlns:pvc='urn:pvc'>"
).replace(
    "<devices>",
    "<pvc:meta pvc:owner='ops'>keep me</pvc:meta><devices><watchdog model='i6300esb' action='reset'/>"
    "<disk type='network' device='disk' snapshot='no'><driver name='qemu' iothread='1'/>"
    "<source protocol='rbd' name='vms/minimal_vda' index='3'><host name='mon1'/></source>"
    "<target dev='vda' bus='virtio' rotation_rate='1'/><iotune><total_iops_sec>500</total_iops_sec></iotune>"
    "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></disk>"
    "<interface type='bridge' trustGuestRxFilters='yes'><mac address='52:54:00:12:34:56'/>"
    "<source bridge='vmbr100'/><link state='up'/><boot order='1'/></interface>",
)
KEPT = ["keep me", 'pvc:owner="ops"', "<watchdog", 'snapshot="no"', 'iothread="1"', 'index="3"',
        'rotation_rate="1"', "<total_iops_sec>500</total_iops_sec>", 'slot="0x07"',
        'trustGuestRxFilters="yes"', '<link state="up"/>', '<boot order="1"/>']


@pytest.mark.parametrize(
    "edit",
    [
        lambda x: dx.set_vcpus(x, 2),
        lambda x: dx.set_memory(x, 1024),
        lambda x: dx.add_interface(x, "vmbr200"),
        lambda x: dx.add_rbd_disk(x, "vms", "other", ["mon1"], SECRET),
        lambda x: dx.rename(x, "renamed"),
        lambda x: _prepare(x, False),
        lambda x: _prepare(x, True, console_log="/var/log/libvirt/minimal.log"),
        lambda x: _prepare(x, False, ceph=CEPH, console_log="/var/log/libvirt/minimal.log"),
    ],
)
def test_edits_keep_unknown_elements_and_attributes(edit: Callable[[str], str]) -> None:
    out = edit(UNKNOWN)
    assert [k for k in KEPT if k not in out] == []


def test_render_keeps_what_it_does_not_model() -> None:
    out = dx.render(dx.parse(UNKNOWN))
    assert [k for k in KEPT if k not in out] == []


@pytest.mark.parametrize("name", INPUTS)
def test_render_is_canonical(name: str) -> None:
    d = dx.parse(_in(name))
    assert dx.parse(dx.render(d)) == d
    assert dx.render(dx.parse(dx.render(d))) == dx.render(d)


def test_edits_refuse_invalid_input_xml() -> None:
    with pytest.raises(InvalidDomainXML):
        dx.set_memory("<domain/>", 128)


def test_numa_domains_are_not_resized_blindly() -> None:
    numa = _in("minimal.in.xml").replace(
        "<vcpu>1</vcpu>", "<vcpu>1</vcpu><cpu><numa><cell id='0' cpus='0' memory='524288'/></numa></cpu>")
    with pytest.raises(DomainEditError, match="NUMA"):
        dx.set_memory(numa, 1024)
    with pytest.raises(DomainEditError, match="NUMA"):
        dx.set_vcpus(numa, 2)


def test_serial_log_on_existing_serial() -> None:
    x = _prepare(_in("provisioner.in.xml"), True, console_log="/srv/logs/web1.log")
    d = dx.parse(x)
    assert len(d.serials) == 1 and d.serials[0].log_file == "/srv/logs/web1.log"
    assert len(d.consoles) == 1
    same_file = _in("tcg.in.xml")
    once = _prepare(same_file, True, console_log="/var/log/libvirt/db1.log")
    assert _prepare(once, True, console_log="/var/log/libvirt/db1.log") == once
    assert dx.parse(once).serials[0].log_file is None


def test_mac_address() -> None:
    mac = dx.mac_address("seed")
    assert mac == dx.mac_address("seed") and mac != dx.mac_address("other seed")
    octets = mac.split(":")
    assert octets[:3] == ["52", "54", "00"]
    assert all(0x10 <= int(o, 16) <= 0xEE for o in octets[3:])


@settings(deadline=None)
@given(st.text())
def test_mac_address_is_always_valid(seed: str) -> None:
    mac = dx.mac_address(seed)
    assert _MAC_RE.match(mac) and all(0x10 <= int(o, 16) <= 0xEE for o in mac.split(":")[3:])


LIVE = """<domain type='qemu' id='3'><name>x</name><devices>{}</devices></domain>"""


@pytest.mark.parametrize(
    ("graphics", "address"),
    [
        ("<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>"
         "<listen type='address' address='127.0.0.1'/></graphics>", "127.0.0.1:5901"),
        ("<graphics type='vnc' port='5902'><listen type='address' address='10.0.0.5'/></graphics>",
         "10.0.0.5:5902"),
        ("<graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>", ""),
        ("<graphics type='vnc'><listen type='socket' socket='/run/vnc.sock'/></graphics>", ""),
        ("<graphics type='spice' port='5903' listen='127.0.0.1'/>", ""),
        ("", ""),
    ],
)
def test_vnc_address(graphics: str, address: str) -> None:
    assert dx.live_facts(LIVE.format(graphics)).vnc == address


def test_live_facts_of_real_live_xml() -> None:
    assert dx.live_facts(_in("live.in.xml")) == ("127.0.0.1:5900", "/tmp/dxq/minimal-serial.log")


@pytest.mark.parametrize(
    ("serials", "path"),
    [
        ("<serial type='pty'><log file='/l/a.log' append='on'/><target port='0'/></serial>", "/l/a.log"),
        ("<serial type='file'><source path='/l/b.log'/><target port='0'/></serial>", "/l/b.log"),
        ("<serial type='pty'><source path='/dev/pts/3'/><log file='/l/c.log'/></serial>", "/l/c.log"),
        ("<serial type='pty'><log file='/l/1.log'/><target port='1'/></serial>"
         "<serial type='file'><source path='/l/0.log'/><target port='0'/></serial>", "/l/0.log"),
        ("<serial type='pty'><log file='/l/1.log'/><target port='1'/></serial>", None),
        ("<serial type='pty'><source path='/dev/pts/3'/><target port='0'/></serial>", None),
        ("", None),
    ],
)
def test_live_console_log(serials: str, path: str | None) -> None:
    assert dx.live_facts(LIVE.format(serials)).console_log == path


def test_live_facts_reject_garbage() -> None:
    with pytest.raises(InvalidDomainXML, match="live XML is not XML"):
        dx.live_facts("garbage")


def test_render_refuses_an_invalid_domain() -> None:
    with pytest.raises(InvalidDomainXML, match="vcpu must be at least 1"):
        dx.render(Domain(name="x", uuid=UUID, memory_mib=1, vcpus=0))
    with pytest.raises(InvalidDomainXML, match="element '<broken' is not XML"):
        dx.render(Domain(name="x", uuid=UUID, memory_mib=1, vcpus=1, other=("<broken",)))


# --------------------------------------------------------------------------------------------
# Hostile input never crashes: a Domain or InvalidDomainXML, nothing else
# --------------------------------------------------------------------------------------------


def _parse_or_reject(data: str | bytes) -> Domain | None:
    try:
        return dx.parse(data)
    except InvalidDomainXML as exc:
        assert exc.message
        return None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary()))
def test_parse_random_input(data: str | bytes) -> None:
    _parse_or_reject(data)


XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r "), max_size=40)
TAGS = ["name", "uuid", "memory", "vcpu", "cpu", "topology", "os", "type", "boot", "kernel", "features",
        "devices", "disk", "source", "host", "target", "driver", "auth", "secret", "interface", "mac",
        "model", "mtu", "address", "serial", "console", "log", "graphics", "listen", "controller",
        "emulator", "description", "currentMemory", "sriov_device", "hostdev"]
ATTRS = ["type", "unit", "dev", "bus", "name", "protocol", "port", "file", "path", "bridge", "network",
         "address", "mode", "sockets", "cores", "threads", "dies", "current", "index", "model", "listen",
         "size", "domain", "slot", "function", "event_idx", "uuid", "username", "append"]
VALUES = st.one_of(XML_TEXT, st.sampled_from(["0", "1", "-1", "4096", "virtio", "rbd", "network", "file",
                                              "bridge", "hostdev", "direct", "vda", "vms/x", "0x1f", "GiB",
                                              "52:54:00:aa:bb:cc", "01:00:00:00:00:00",
                                              "99999999999999999999"]))


def _mutate(root: etree._Element, rnd: random.Random, ops: int, values: list[str]) -> None:
    for _ in range(ops):
        elements = list(root.iter(etree.Element))
        el = rnd.choice(elements)
        op = rnd.randrange(6)
        value = rnd.choice(values)
        if op == 0 and el is not root:
            parent = el.getparent()
            assert parent is not None
            parent.remove(el)
        elif op == 1:
            el.set(rnd.choice(ATTRS), value)
        elif op == 2:
            el.text = value
        elif op == 3 and el is not root:
            el.addnext(copy.deepcopy(el))
        elif op == 4:
            child = etree.SubElement(el, rnd.choice(TAGS))
            child.set(rnd.choice(ATTRS), value)
        elif op == 5 and el.attrib:
            del el.attrib[rnd.choice(list(el.attrib))]


def _check_parsed(d: Domain) -> None:
    """Anything that parses must summarise, render, re-parse identically and take the TCG edit."""
    json.dumps(dx.summary(d))
    assert dx.parse(dx.render(d)) == d


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INPUTS), st.integers(0, 2**32), st.integers(1, 6),
       st.lists(VALUES, min_size=1, max_size=6))
def test_mutated_domains_never_crash(source: str, seed: int, ops: int, values: list[str]) -> None:
    root = etree.fromstring(_in(source).encode())
    _mutate(root, random.Random(seed), ops, values)
    xml = etree.tostring(root, encoding="unicode")
    d = _parse_or_reject(xml)
    if d is None:
        return
    _check_parsed(d)
    for edit in (lambda x: _prepare(x, False), lambda x: dx.set_vcpus(x, 2),
                 lambda x: dx.set_memory(x, 256), lambda x: dx.add_interface(x, "vmbr9"),
                 lambda x: _prepare(x, True, console_log="/var/log/libvirt/x.log"),
                 lambda x: _prepare(x, False, ceph=CEPH, console_log="/var/log/libvirt/x.log"),
                 lambda x: dx.rename(x, "renamed")):
        try:
            out = edit(xml)
        except InvalidInput:
            continue
        _check_parsed(dx.parse(out))


# --------------------------------------------------------------------------------------------
# Round trips: parse(render(d)) == d for generated domains; edits undo cleanly
# --------------------------------------------------------------------------------------------

SAFE = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n "), max_size=30)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
NAME = st.text(st.characters(whitelist_categories=("L", "N")) | st.sampled_from("-_."),
               min_size=1, max_size=20)
PATH = TOKEN.map(lambda t: f"/var/lib/pvc/{t}")
OCTET = st.integers(0, 255)
MACS = st.lists(st.tuples(OCTET, OCTET, OCTET), unique=True, max_size=4)


@st.composite
def disks(draw: st.DrawFn) -> tuple[Disk, ...]:
    targets = draw(st.lists(st.sampled_from([f"{p}{c}" for p in ("vd", "sd", "hd") for c in "abcdef"]),
                            unique=True, max_size=4))
    result = []
    for target in targets:
        kind = draw(st.sampled_from(DISK_KINDS))
        source: DiskSource | None
        if kind == "network":
            source = DiskSource(protocol="rbd", name=f"{draw(TOKEN)}/{draw(TOKEN)}",
                                hosts=tuple(draw(st.lists(st.tuples(TOKEN, st.none() | st.just("6789")),
                                                          max_size=3))))
        elif kind == "file":
            source = draw(st.none() | PATH.map(lambda p: DiskSource(file=p)))
        else:
            source = DiskSource(dev=draw(PATH))
        driver = draw(st.none() | st.builds(
            DiskDriver, name=st.just("qemu"), type=st.none() | st.just("raw"),
            cache=st.none() | st.sampled_from(["none", "writeback"]), event_idx=st.none() | st.just("off"),
            discard=st.none() | st.just("unmap"), other_attrs=st.sampled_from([(), (("io", "threads"),)])))
        auth = draw(st.none() | st.builds(DiskAuth, username=st.just("libvirt"), secret_type=st.just("ceph"),
                                          secret_uuid=st.uuids().map(str)))
        result.append(Disk(type=kind, target=target, device=draw(st.sampled_from(["disk", "cdrom"])),
                           bus=draw(st.none() | st.sampled_from(["virtio", "scsi", "sata"])), source=source,
                           driver=driver, auth=auth,
                           other=draw(st.sampled_from([(), ("<readonly/>",), ("<serial>abc</serial>",)]))))
    return tuple(result)


DISK_KINDS = ["network", "file", "block"]


@st.composite
def nics(draw: st.DrawFn) -> tuple[Nic, ...]:
    result = []
    for a, b, c in draw(MACS):
        kind = draw(st.sampled_from(["bridge", "network", "direct", "hostdev", "user"]))
        source = {
            "bridge": draw(st.sampled_from(["vmbr100", "brcluster", "br0"])),
            "network": draw(TOKEN),
            "direct": draw(TOKEN),
            "hostdev": f"{draw(st.integers(0, 0xFFFF)):04x}:{draw(st.integers(0, 255)):02x}:"
                       f"{draw(st.integers(0, 31)):02x}.{draw(st.integers(0, 7)):x}",
            "user": None,
        }[kind]
        result.append(Nic(type=kind, mac=f"52:54:00:{a:02x}:{b:02x}:{c:02x}", source=source,
                          source_mode="passthrough" if kind == "direct" else None,
                          model=draw(st.none() | st.sampled_from(["virtio", "e1000"])),
                          mtu=draw(st.none() | st.integers(68, 65535)),
                          sriov_device=draw(TOKEN) if kind == "hostdev" else None,
                          other_attrs=(("managed", "yes"),) if kind == "hostdev" else (),
                          other=draw(st.sampled_from([(), ('<link state="up"/>',)]))))
    return tuple(result)


CHARDEVS = st.lists(st.builds(
    Chardev, type=st.none() | st.sampled_from(["pty", "file"]), source_path=st.none() | PATH,
    log_file=st.none() | PATH, log_append=st.none() | st.just("on"),
    target_type=st.none() | st.just("serial"), target_port=st.none() | st.integers(0, 3)),
    max_size=2).map(tuple)


@st.composite
def domains(draw: st.DrawFn) -> Domain:
    topology = draw(st.none() | st.builds(Topology, st.integers(1, 4), st.integers(1, 4), st.integers(1, 2),
                                          st.integers(1, 2)))
    vcpus = topology.vcpus if topology else draw(st.integers(1, 64))
    features = draw(st.lists(st.sampled_from(["acpi", "apic", "pae", "hap"]), unique=True))
    feature_other: tuple[str, ...] = ()
    if draw(st.booleans()):
        features.append("vmport")
        feature_other = ('<vmport state="off"/>',)
    return Domain(
        name=draw(NAME.filter(lambda n: n == n.strip())),
        uuid=draw(st.uuids().map(str)),
        memory_mib=draw(st.integers(1, 10**6)),
        vcpus=vcpus,
        type=draw(st.sampled_from(["kvm", "qemu"])),
        description=draw(st.none() | SAFE),
        topology=topology,
        cpu_mode=draw(st.none() | st.sampled_from(["host-model", "host-passthrough"])),
        arch=draw(st.none() | st.just("x86_64")),
        machine=draw(st.none() | st.sampled_from(["pc", "q35"])),
        os=draw(st.builds(dx.OS, kernel=st.none() | PATH, initrd=st.none() | PATH, cmdline=st.none() | SAFE,
                          boot=st.lists(st.sampled_from(["hd", "cdrom", "network"])).map(tuple),
                          other=st.sampled_from([(), ('<bootmenu enable="yes"/>',)]))),
        emulator=draw(st.none() | st.just("/usr/bin/kvm")),
        features=tuple(features),
        feature_other=feature_other,
        disks=draw(disks()),
        interfaces=draw(nics()),
        serials=draw(CHARDEVS),
        consoles=draw(CHARDEVS),
        graphics=draw(st.lists(st.builds(Graphics, type=st.sampled_from(["vnc", "spice"]),
                                         listen=st.none() | st.just("127.0.0.1"),
                                         port=st.none() | st.integers(-1, 65535),
                                         autoport=st.none() | st.sampled_from(["yes", "no"])),
                               max_size=2).map(tuple)),
        controllers=draw(st.lists(st.builds(Controller, type=st.sampled_from(["usb", "scsi", "pci"]),
                                            index=st.none() | st.integers(0, 3),
                                            model=st.none() | st.sampled_from(["virtio-scsi", "none"])),
                                  max_size=3).map(tuple)),
        vcpu_attrs=draw(st.sampled_from([(), (("placement", "static"),)])),
        devices_other=draw(st.sampled_from([(), ('<memballoon model="none"/>',),
                                            ('<rng model="virtio"><backend model="random">/dev/urandom'
                                             "</backend></rng>",)])),
        other=draw(st.sampled_from([(), ('<clock offset="utc"/>', "<on_crash>destroy</on_crash>")])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domains())
def test_parse_render_round_trip(d: Domain) -> None:
    xml = dx.render(d)
    assert dx.parse(xml) == d
    assert dx.render(dx.parse(xml)) == xml  # canonical: rendering is a fixed point
    json.dumps(dx.summary(d))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INPUTS), st.sampled_from(["vmbr100", "vmbr1001", "brstorage"]),
       st.none() | MACS.filter(bool), st.sampled_from(["virtio", "e1000"]))
def test_add_then_remove_interface_is_identity(source: str, bridge: str, macs: list | None,
                                               model: str) -> None:
    xml = _in(source)
    mac = None if macs is None else "52:54:01:{:02x}:{:02x}:{:02x}".format(*macs[0])
    added = dx.add_interface(xml, bridge, mac=mac, model=model)
    new_mac = dx.parse(added).interfaces[-1].mac
    assert new_mac is not None and new_mac not in dx.parse(xml).macs
    assert dx.parse(dx.remove_interface(added, mac=new_mac)) == dx.parse(xml)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INPUTS), TOKEN, TOKEN, st.sampled_from(["virtio", "sata", "usb"]),
       st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2:6789", "[fd00::1]:3300", ("mon3", 6789)]), max_size=3))
def test_add_then_remove_rbd_disk_is_identity(source: str, pool: str, volume: str, bus: str,
                                              monitors: list) -> None:
    xml = _in(source)
    added = dx.add_rbd_disk(xml, pool, volume, monitors, SECRET, bus=bus)
    assert dx.parse(added).rbd_volumes[-1] == f"{pool}/{volume}"
    assert dx.parse(dx.remove_disk(added, f"{pool}/{volume}")) == dx.parse(xml)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INPUTS), st.integers(1, 64), st.integers(1, 10**6))
def test_set_vcpus_and_memory(source: str, vcpus: int, memory: int) -> None:
    d = dx.parse(dx.set_memory(dx.set_vcpus(_in(source), vcpus), memory))
    assert (d.vcpus, d.memory_mib) == (vcpus, memory)
    assert d.topology is None or d.topology.vcpus == vcpus
    before = dx.parse(_in(source))
    assert (d.disks, d.interfaces, d.devices_other) == (before.disks, before.interfaces, before.devices_other)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(INPUTS), st.integers(0, 10**6))
def test_rename_there_and_back(source: str, n: int) -> None:
    xml = _in(source)
    old = dx.parse(xml).name
    there = dx.rename(xml, f"renamed-{n}")
    assert dx.parse(there).name == f"renamed-{n}"
    assert dx.parse(dx.rename(there, old)) == dx.parse(xml)


# --------------------------------------------------------------------------------------------
# libvirt itself accepts every golden domain and device (test:///default driver, no daemon)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def libvirt_conn() -> Iterator[Any]:
    libvirt = pytest.importorskip("libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


def _golden_xml_files() -> list[str]:
    return sorted(p.name for p in GOLDEN.glob("*.xml"))


@pytest.mark.parametrize("name", _golden_xml_files())
def test_libvirt_accepts_golden(libvirt_conn: Any, name: str) -> None:
    xml = _in(name)
    root = etree.fromstring(xml.encode())
    if root.tag != "domain":  # a device for hot attach: libvirt must accept it inside a domain
        host = etree.fromstring(_in("minimal.in.xml").encode())
        devices = host.find("devices")
        assert devices is not None
        devices.append(root)
        xml = etree.tostring(host, encoding="unicode")
    dom = libvirt_conn.defineXML(xml)
    try:
        ours = dx.parse(xml)
        theirs = dx.parse(dom.XMLDesc(0))  # libvirt's own rendering parses to the same facts
        assert (theirs.name, theirs.uuid, theirs.memory_mib, theirs.vcpus) == (
            ours.name, ours.uuid, ours.memory_mib, ours.vcpus)
        assert sorted(d.target for d in theirs.disks) == sorted(d.target for d in ours.disks)  # libvirt sorts
        assert sorted(theirs.rbd_volumes) == sorted(ours.rbd_volumes) and theirs.macs == ours.macs
        assert theirs.topology in (ours.topology, None) or str(theirs.topology) == str(ours.topology)
    finally:
        dom.undefine()


@pytest.mark.parametrize(("amount", "unit"), [("131072", None), ("1000", "MB"), ("1500", "KiB"), ("3", "GiB"),
                                               ("134217729", "b"), ("1", "TB")])
def test_memory_units_agree_with_libvirt(libvirt_conn: Any, amount: str, unit: str | None) -> None:
    unit_attr = f" unit='{unit}'" if unit else ""
    xml = _in("minimal.in.xml").replace("<memory>524288</memory>", f"<memory{unit_attr}>{amount}</memory>")
    dom = libvirt_conn.defineXML(xml)
    try:
        assert dx.parse(xml).memory_mib == math.ceil(dom.maxMemory() / 1024)
    finally:
        dom.undefine()


def test_fill_rbd_device_for_a_live_attach() -> None:
    disk = ("<disk type='network' device='disk'><source protocol='rbd' name='vms/x'/>"
            "<target dev='vdb' bus='virtio'/></disk>")
    secret = "503b006e-b32b-5a36-8960-bd80eed05ed9"
    filled = dx.fill_rbd_device(disk, [("10.0.0.1", 6789)], "admin", secret)
    assert '<host name="10.0.0.1" port="6789"/>' in filled
    assert f'<auth username="admin"><secret type="ceph" uuid="{secret}"/></auth>' in filled
    assert dx.fill_rbd_device(filled, [("10.0.0.9", 6789)], "admin", secret) == filled  # idempotent
    nic = '<interface type="bridge"><source bridge="vmbr1"/></interface>'
    assert dx.fill_rbd_device(nic, [("10.0.0.1", 6789)], "admin", secret) == nic
