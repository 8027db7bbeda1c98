"""The domain XML policy (pvc.core.domainxml.policy): each host resource refused by name, PVC's own
XML (the lab's guest, the provisioner's helpers, upstream's libvirt_schema, the OVA script's) allowed,
and every named exception opens exactly what it names."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import pytest

from pvc.core import domainxml
from pvc.core.config import DomainPolicySettings, Settings
from pvc.core.domainxml import DomainPolicy, DomainPolicyViolation, check_device, check_domain
from pvc.core.errors import InvalidInput
from pvc.lab import guest

UUID = "0b8e1a6c-3a61-4f0e-9a1f-0c7b5b1e2a11"
RBD = ("<disk type='network' device='disk'><source protocol='rbd' name='vms/t_sda'>"
       "<host name='10.0.0.1' port='6789'/></source><target dev='sda' bus='scsi'/></disk>")


def domain(devices: str = "", os_extra: str = "", top: str = "", ns: str = "") -> str:
    return f"""<domain type='kvm'{ns}>
  <name>t</name><uuid>{UUID}</uuid><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os_extra}</os>{top}
  <devices>
    <emulator>/usr/bin/kvm</emulator>
    {RBD}
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    {devices}
  </devices>
</domain>"""


def refused(xml: str, *words: str, policy: DomainPolicy = domainxml.DEFAULT_POLICY) -> str:
    with pytest.raises(DomainPolicyViolation) as caught:
        check_domain(xml, policy)
    message = caught.value.message
    assert message.startswith("domain XML refused: "), message
    every = "\n".join(domainxml.domain_violations(xml, policy))
    assert every.startswith(message)
    for word in words:
        assert word in every, (word, every)
    assert isinstance(caught.value, InvalidInput) and caught.value.status == 400
    return message


def test_a_normal_vm_passes() -> None:
    check_domain(domain())
    assert domainxml.domain_violations(domain()) == []


@pytest.mark.parametrize(("devices", "words"), [
    ("<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdb'/></disk>",
     ["<disk type='file' target vdb>", "/etc/shadow", "host_disks"]),
    ("<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vdb'/></disk>",
     ["<disk type='block'", "/dev/sda"]),
    ("<disk type='dir' device='disk'><source dir='/etc'/><target dev='vdb'/></disk>",
     ["<disk type='dir'", "/etc"]),
    ("<disk type='volume' device='disk'><source pool='default' volume='x'/><target dev='vdb'/></disk>",
     ["<disk type='volume'", "default/x", "libvirt_volume_pools"]),
    ("<disk device='disk'><source file='/root/.ssh/id_rsa'/><target dev='vdb'/></disk>",
     ["<disk type='file'", "/root/.ssh/id_rsa"]),
    ("<disk type='file' device='cdrom'><source file='/srv/iso/../../etc/shadow'/><target dev='hdc'/></disk>",
     ["/srv/iso/../../etc/shadow"]),
])
def test_host_disks_are_refused(devices: str, words: list[str]) -> None:
    refused(domain(devices), *words)


@pytest.mark.parametrize("protocol", ["http", "https", "ftp", "ftps", "tftp", "nbd", "iscsi", "gluster",
                                      "sheepdog", "ssh", "vxhs", "nfs"])
def test_network_disks_other_than_rbd_are_refused(protocol: str) -> None:
    xml = domain(f"<disk type='network' device='disk'><source protocol='{protocol}' name='x/y'>"
                 f"<host name='10.0.0.9'/></source><target dev='vdb'/></disk>")
    refused(xml, f"protocol {protocol}", "network_disk_protocols")


def test_rbd_disks_cannot_name_host_files_or_sockets() -> None:
    refused(domain("<disk type='network' device='disk'><source protocol='rbd' name='a/b'>"
                   "<config file='/etc/pvc/pvc.conf'/></source><target dev='vdb'/></disk>"), "<config",
            "/etc/pvc/pvc.conf")
    refused(domain("<disk type='network' device='disk'><source protocol='rbd' name='a/b'>"
                   "<host transport='unix' socket='/run/x.sock'/></source><target dev='vdb'/></disk>"),
            "/run/x.sock")
    refused(domain("<disk type='network' device='disk'><source protocol='rbd' name='a/b'/>"
                   "<backingStore type='file'><format type='raw'/><source file='/etc/shadow'/></backingStore>"
                   "<target dev='vdb'/></disk>"), "<backingStore")
    refused(domain("<disk type='network' device='disk'><source protocol='rbd' name='a/b'>"
                   "<dataStore type='file'><source file='/etc/shadow'/></dataStore></source>"
                   "<target dev='vdb'/></disk>"), "<dataStore>")


@pytest.mark.parametrize(("os_extra", "words"), [
    ("<kernel>/boot/vmlinuz</kernel>", ["<os><kernel> /boot/vmlinuz", "kernel_directories"]),
    ("<initrd>/etc/shadow</initrd>", ["<os><initrd> /etc/shadow"]),
    ("<dtb>/etc/shadow</dtb>", ["<os><dtb>"]),
    ("<kernel>/var/lib/pvc/kernels/../../../../etc/shadow</kernel>", ["<os><kernel>"]),
    ("<loader readonly='yes' type='pflash'>/etc/shadow</loader>", ["<os><loader> /etc/shadow",
                                                                   "firmware_directories"]),
    ("<nvram>/etc/passwd</nvram>", ["<os><nvram> /etc/passwd", "nvram_directories"]),
    ("<nvram template='/etc/shadow'>/var/lib/libvirt/qemu/nvram/t.fd</nvram>", ["template='/etc/shadow'"]),
    ("<acpi><table type='slic'>/etc/shadow</table></acpi>", ["<os><acpi><table> /etc/shadow"]),
])
def test_os_files_outside_allowed_directories_are_refused(os_extra: str, words: list[str]) -> None:
    refused(domain(os_extra=os_extra), *words)


def test_os_files_inside_allowed_directories_pass() -> None:
    check_domain(domain(os_extra="<kernel>/var/lib/pvc/kernels/vmlinuz</kernel>"
                                 "<initrd>/var/lib/pvc/kernels/initrd.gz</initrd><cmdline>quiet</cmdline>"
                                 "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
                                 "<nvram>/var/lib/libvirt/qemu/nvram/t_VARS.fd</nvram>"))


def test_emulator_must_be_a_configured_one() -> None:
    message = refused(domain().replace("/usr/bin/kvm", "/bin/sh"), "<emulator> /bin/sh",
                      "hypervisor.domain_policy.emulators")
    assert "/usr/bin/qemu-system-x86_64" in message
    refused(domain().replace("/usr/bin/kvm", "/usr/bin/../../bin/sh"), "<emulator>")
    check_domain(domain().replace("<emulator>/usr/bin/kvm</emulator>", ""))    # libvirt's default


def test_any_qemu_namespace_element_is_refused() -> None:
    ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
    refused(domain(ns=ns, top="<qemu:commandline><qemu:arg value='-fw_cfg'/></qemu:commandline>"),
            "<qemu:commandline>", "qemu_commandline")
    refused(domain(ns=ns, top="<qemu:capabilities><qemu:del capability='sandbox'/></qemu:capabilities>"),
            "<qemu:capabilities>")
    refused(domain(ns=ns, top="<qemu:override><qemu:device alias='x'/></qemu:override>"), "<qemu:override>")
    allowed = DomainPolicy(qemu_commandline=True)
    check_domain(domain(ns=ns, top="<qemu:commandline><qemu:arg value='-S'/></qemu:commandline>"), allowed)


@pytest.mark.parametrize(("devices", "words"), [
    ("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x03' "
     "slot='0x00' function='0x1'/></source></hostdev>", ["<hostdev type='pci'> 0000:03:00.1", "hostdev_pci"]),
    ("<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/></source></hostdev>",
     ["<hostdev mode='subsystem' type='usb'>"]),
    ("<hostdev mode='capabilities' type='storage'><source><block>/dev/sda</block></source></hostdev>",
     ["<hostdev mode='capabilities' type='storage'>"]),
    ("<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>",
     ["<filesystem type='mount'> with source /", "filesystem_sources"]),
    ("<serial type='file'><source path='/etc/cron.d/x'/><target port='1'/></serial>",
     ["<serial type='file'> with source /etc/cron.d/x", "chardev_paths"]),
    ("<serial type='dev'><source path='/dev/ttyS0'/></serial>", ["<serial type='dev'>", "/dev/ttyS0"]),
    ("<console type='pipe'><source path='/tmp/p'/></console>", ["<console type='pipe'>"]),
    ("<parallel type='file'><source path='/etc/x'/></parallel>", ["<parallel type='file'>"]),
    ("<channel type='unix'><source mode='connect' path='/var/run/libvirt/libvirt-sock'/>"
     "<target type='virtio' name='x'/></channel>", ["<channel type='unix'>", "libvirt-sock"]),
    ("<serial type='pty'><log file='/etc/profile.d/x.sh' append='on'/><target port='1'/></serial>",
     ["<serial><log file='/etc/profile.d/x.sh'>", "log_directories"]),
    ("<serial type='stdio'/>", ["character device type 'stdio'"]),
    ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>",
     ["<interface type='direct'> on device eth0", "direct_devices"]),
    ("<interface type='hostdev'><source><address type='pci' domain='0' bus='3' slot='0' function='2'/>"
     "</source></interface>", ["<interface type='hostdev'> with PCI device 0000:03:00.2"]),
    ("<interface type='user'/>", ["<interface type='user'>", "user_networking"]),
    ("<interface type='ethernet'><target dev='tap0'/></interface>", ["<interface type='ethernet'>"]),
    ("<interface type='vhostuser'><source type='unix' path='/tmp/s' mode='client'/></interface>",
     ["<interface type='vhostuser'>"]),
    ("<interface type='server'><source address='0.0.0.0' port='5558'/></interface>",
     ["<interface type='server'>"]),
    ("<interface type='client'><source address='10.0.0.1' port='5558'/></interface>",
     ["<interface type='client'>"]),
    ("<interface type='mcast'><source address='230.0.0.1' port='5558'/></interface>",
     ["<interface type='mcast'>"]),
    ("<interface type='udp'><source address='10.0.0.1' port='1'/></interface>", ["<interface type='udp'>"]),
    ("<interface type='bridge'><source bridge='vmbr1'/><script path='/tmp/evil.sh'/></interface>",
     ["<script path='/tmp/evil.sh'>"]),
    ("<interface type='bridge'><source bridge='vmbr1'/><backend tap='/dev/net/tun' vhost='/dev/sda'/>"
     "</interface>", ["<backend vhost='/dev/sda'>"]),
    ("<smartcard mode='passthrough' type='tcp'><source mode='connect' host='1.2.3.4' service='1'/>"
     "</smartcard>", ["<smartcard mode='passthrough'>"]),
    ("<smartcard mode='host'/>", ["<smartcard mode='host'>"]),
    ("<redirdev bus='usb' type='tcp'><source mode='connect' host='1.2.3.4' service='4000'/></redirdev>",
     ["<redirdev type='tcp'>"]),
    ("<shmem name='my_shmem0'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>",
     ["<shmem name='my_shmem0'>"]),
    ("<input type='passthrough' bus='virtio'><source evdev='/dev/input/event1'/></input>",
     ["<input type='passthrough'> with source /dev/input/event1"]),
    ("<input type='evdev'><source dev='/dev/input/event1'/></input>", ["<input type='evdev'>"]),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>",
     ["<tpm><backend type='passthrough'>"]),
    ("<audio id='1' type='file' path='/etc/x.wav'/>", ["<audio type='file'>"]),
    ("<rng model='virtio'><backend model='random'>/dev/sda</backend></rng>",
     ["<rng><backend model='random'> /dev/sda"]),
    ("<rng model='virtio'><backend model='egd' type='unix'><source mode='connect' path='/run/x'/></backend>"
     "</rng>", ["<rng><backend model='egd' type='unix'>", "/run/x"]),
    ("<memory model='nvdimm'><source><path>/etc/shadow</path></source><target><size unit='KiB'>524288"
     "</size></target></memory>", ["<memory model='nvdimm'> with source /etc/shadow"]),
    ("<graphics type='vnc' socket='/etc/x.sock'/>", ["socket='/etc/x.sock'"]),
    ("<graphics type='spice'><listen type='socket' socket='/tmp/x'/></graphics>",
     ["<listen socket='/tmp/x'>"]),
    ("<graphics type='egl-headless'><gl rendernode='/dev/dri/renderD128'/></graphics>", ["rendernode"]),
    ("<lease><lockspace>x</lockspace><key>y</key><target path='/etc/x'/></lease>", ["<lease>"]),
    ("<filesystem type='mount'><driver type='virtiofs'/><binary path='/bin/sh'/><source dir='/srv'/>"
     "<target dir='t'/></filesystem>", ["<binary path='/bin/sh'>"]),
])
def test_host_resources_are_refused_by_name(devices: str, words: list[str]) -> None:
    refused(domain(devices), *words)
    # the same element on its own, as hot-attach device XML
    with pytest.raises(DomainPolicyViolation, match=r"^domain XML refused: <"):
        check_device(devices)


def test_seclabel_cannot_turn_confinement_off() -> None:
    refused(domain(top="<seclabel type='none'/>"), "<seclabel type='none'")
    refused(domain(top="<seclabel type='static' model='apparmor'><label>unconfined</label></seclabel>"),
            "<seclabel type='static'")
    check_domain(domain(top="<seclabel type='dynamic' model='apparmor'/>"))


def test_things_a_normal_vm_uses_pass() -> None:
    check_domain(domain(
        "<channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/>"
        "</channel>"
        "<serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><target port='1'/></serial>"
        "<serial type='pty'><log file='/var/log/libvirt/t.log' append='on'/><target port='2'/></serial>"
        "<rng model='virtio'><rate period='1000' bytes='2048'/><backend model='random'>/dev/urandom"
        "</backend></rng>"
        "<input type='tablet' bus='usb'/><input type='keyboard' bus='ps2'/>"
        "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"
        "<video><model type='virtio'/></video><sound model='ich9'/><audio id='1' type='none'/>"
        "<watchdog model='i6300esb' action='reset'/><memballoon model='virtio'/>"
        "<interface type='network'><source network='default'/></interface>"
        "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>"
        "<controller type='scsi' index='0' model='virtio-scsi'/>"))


def test_named_exceptions_open_exactly_what_they_name() -> None:
    iso = "<disk type='file' device='cdrom'><source file='/srv/iso/debian.iso'/><target dev='hdc'/></disk>"
    policy = DomainPolicy(host_disks=("/srv/iso/",), network_disk_protocols=("iscsi",),
                          hostdev_pci=("0000:3b:02.1",), filesystem_sources=("/srv/share",),
                          direct_devices=("ens1f0v3",), chardev_paths=("/var/lib/pvc/chr",),
                          user_networking=True)
    check_domain(domain(iso), policy)
    refused(domain(iso.replace("/srv/iso/debian.iso", "/srv/isolation/x")), "/srv/isolation/x", policy=policy)
    refused(domain(iso.replace("/srv/iso/debian.iso", "/srv/iso/../../etc/shadow")), policy=policy)
    check_domain(domain("<disk type='network' device='disk'><source protocol='iscsi' name='iqn.x/1'>"
                        "<host name='10.0.0.9'/></source><target dev='vdb'/></disk>"), policy)
    refused(domain("<disk type='network' device='disk'><source protocol='nbd' name='x'/>"
                   "<target dev='vdb'/></disk>"), "nbd", policy=policy)
    check_domain(domain("<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000'"
                        " bus='0x3b' slot='0x02' function='0x1'/></source></hostdev>"), policy)
    refused(domain("<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0x3b' slot='2' "
                   "function='2'/></source></hostdev>"), "0000:3b:02.2", policy=policy)
    check_domain(domain("<interface type='direct'><source dev='ens1f0v3' mode='passthrough'/></interface>"),
                 policy)
    check_domain(domain("<filesystem type='mount'><source dir='/srv/share/a'/><target dir='a'/>"
                        "</filesystem>"), policy)
    check_domain(domain("<serial type='file'><source path='/var/lib/pvc/chr/t.out'/></serial>"), policy)
    check_domain(domain("<interface type='user'/>"), policy)
    managed = domainxml.DEFAULT_POLICY.with_managed(direct_devices=["ens1f0v9"], hostdev_pci=["3b:02.5"])
    check_domain(domain("<interface type='direct'><source dev='ens1f0v9'/></interface>"
                        "<interface type='hostdev'><source><address type='pci' domain='0' bus='0x3b' "
                        "slot='2' function='5'/></source></interface>"), managed)


def test_policy_from_settings() -> None:
    settings = Settings.model_validate({
        "cluster": {"name": "c", "coordinator_nodes": ["hv1"]},
        "zookeeper": {"hosts": ["127.0.0.1:2181"], "acl": False},
        "hypervisor": {"domain_policy": {"kernel_directories": ["/var/cache/pvc-lab/guest"],
                                         "allow": {"host_disks": ["/srv/iso"], "hostdev_pci": ["3b:02.1"]}}},
        "path": {"console_log_directory": "/var/log/pvc-consoles"},
    })
    policy = DomainPolicy.from_settings(settings)
    assert policy.kernel_directories == ("/var/cache/pvc-lab/guest",)
    assert policy.host_disks == ("/srv/iso",) and policy.hostdev_pci == ("0000:3b:02.1",)
    assert "/var/log/pvc-consoles" in policy.log_directories and "/var/log/libvirt" in policy.log_directories
    assert DomainPolicy.from_settings(DomainPolicySettings()).emulators[0] == "/usr/bin/qemu-system-x86_64"


def test_pvcs_own_xml_passes() -> None:
    """The lab's guest (with its kernel directory allowed), upstream's libvirt_schema as provisioner
    scripts assemble it, and PVC's provisioner helper output."""
    lab_dir = Path("/var/cache/pvc-lab/guest/k1")
    image = guest.GuestImage(kernel=lab_dir / "vmlinuz", initrd=lab_dir / "initrd.gz", disk_raw=lab_dir / "d")
    lab = guest.domain_xml("g1", image, uuid=UUID, devices=RBD, cmdline_extra="vmroot=/dev/sda")
    policy = DomainPolicy(kernel_directories=("/var/cache/pvc-lab/guest",))
    check_domain(lab, policy)
    refused(lab, "<os><kernel> /var/cache/pvc-lab/guest/k1/vmlinuz")     # not without the setting

    from pvcapid import libvirt_schema as schema

    fields = {"vm_name": "p1", "vm_uuid": str(uuidlib.uuid4()), "vm_description": "d", "vm_memory": 512,
              "vm_vcpus": 2, "vm_architecture": "x86_64", "vm_vncport": -1, "vm_vnc_autoport": "yes",
              "vm_vnc_bind": "127.0.0.1", "ceph_storage_secret": UUID, "disk_pool": "vms", "disk_id": "sda",
              "coordinator_name": "hv1", "coordinator_ceph_mon_port": 6789}
    parts = [schema.libvirt_header, schema.devices_default, schema.devices_serial, schema.devices_vnc,
             schema.devices_scsi_controller, schema.devices_disk_header, schema.devices_disk_coordinator,
             schema.devices_disk_footer, schema.libvirt_footer]
    upstream = "".join(part.format(**fields) for part in parts)
    domainxml.parse(upstream)
    check_domain(upstream)


def test_provisioner_helper_xml_passes() -> None:
    from types import SimpleNamespace

    from pvc.worker.provisioner import helpers

    builder = SimpleNamespace(vm_name="p2", vm_uuid=str(uuidlib.uuid4()), vm_id=3, vm_profile="prof",
                              vm_data={
        "system_details": {"vram_mb": 512, "vcpu_count": 2, "vnc": True, "vnc_bind": "0.0.0.0"},
        "volumes": [{"disk_id": "sda", "pool": "vms"}, {"disk_id": "vdb", "pool": "vms"}],
        "networks": [{"eth_bridge": "vmbr100"}], "mac_template": None})
    check_domain(helpers.domain_xml(builder))
    direct = helpers.domain_xml(builder, kernel="/var/cache/pvc-lab/guest/k/vmlinuz",
                                initrd="/var/cache/pvc-lab/guest/k/initrd.gz")
    check_domain(direct, DomainPolicy(kernel_directories=("/var/cache/pvc-lab/guest",)))
    refused(direct, "<os><kernel>")


def test_doctype_and_entities_are_refused() -> None:
    evil = "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>"
    with pytest.raises(InvalidInput, match="DOCTYPE"):
        check_domain(evil + domain())
    with pytest.raises(InvalidInput, match="DOCTYPE"):
        check_device(evil + "<disk type='network'><source protocol='rbd' name='a/b'/><target dev='vdb'/>"
                            "</disk>")
    with pytest.raises(InvalidInput, match="DOCTYPE"):
        domainxml.set_vcpus(evil + domain(), 2)
