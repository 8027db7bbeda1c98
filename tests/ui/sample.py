"""A small, realistic cluster written into ZooKeeper for UI tests, screenshots and bench/ui.py:
nodes as their daemons report them, faults, VMs defined through the API, tasks and node logs.

Some values carry XSS attempts (XSS_*): a page must show them as text, never run them.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

import httpx

from pvc.cluster import faults, tasks
from pvc.core import schema
from pvc.core.records import Memory, NodeRecord, VCpu
from pvc.core.taskkinds import CLUSTER_SELFTEST
from pvc.core.zk import ZK

# Each tries to run script if a page put it in as markup; `window.__pvc_xss` is the tell.
XSS_SCRIPT = "<script>window.__pvc_xss=1</script>"
XSS_IMG = "<img src=x onerror=window.__pvc_xss=2>"
XSS_DESCRIPTION = f"Web tier {XSS_SCRIPT}{XSS_IMG} & friends"
XSS_TAG = "<img src=x onerror=window.__pvc_xss=3>"          # tags may not contain '/'
XSS_FAULT = f"VM {XSS_IMG} failed to start {XSS_SCRIPT}"
XSS_HEALTH = f"disk check: {XSS_SCRIPT} sda is 91% full"
XSS_LOG = f"2026-01-01 00:00:00 INFO guest said {XSS_SCRIPT} \x1b[31mred\x1b[0m"

GIB = 1024


def node(name: str, mode: str = "coordinator", coordinator_state: str = "secondary",
         daemon_state: str = "run", domain_state: str = "ready", total_gib: int = 64, used_gib: float = 20,
         load: float = 1.2, cpus: int = 16, vms: int = 0, health: int | None = 100,
         details: list[dict[str, Any]] | None = None) -> NodeRecord:
    total = total_gib * GIB
    used = int(used_gib * GIB)
    return NodeRecord(
        name=name, mode=mode, daemon_state=daemon_state, coordinator_state=coordinator_state,
        domain_state=domain_state, pvc_version="1.0.3", cpu_count=cpus, kernel="6.1.0-28-amd64",
        os="linux", arch="x86_64", keepalive=time.time(), load=load,
        memory=Memory(total=total, used=used, free=total - used, allocated=used + 4 * GIB,
                      provisioned=used + 8 * GIB),
        vcpu=VCpu(total=cpus, allocated=vms * 2), domains_count=vms, health=health,
        health_plugins=[d["name"] for d in details or []] or ["load", "disk"],
        health_details=details or [
            {"name": "load", "last_run": time.time(), "health_delta": 0, "message": "load is normal"},
            {"name": "disk", "last_run": time.time(), "health_delta": 0, "message": "all disks below 80%"},
        ],
        interfaces={"ens1": {"state": "up", "link_speed": 10000, "rx_bps": 1200000, "tx_bps": 800000},
                    "ens2": {"state": "up", "link_speed": 10000, "rx_bps": 40000, "tx_bps": 52000}},
    )


def nodes(zk: ZK) -> list[NodeRecord]:
    """hv1 primary, hv2 and hv3 secondary coordinators, hv4 a hypervisor flushed for maintenance."""
    records = [
        node("hv1", coordinator_state="primary", used_gib=28, load=2.4, vms=4),
        node("hv2", used_gib=35, load=3.1, vms=5, health=90, details=[
            {"name": "disk", "last_run": time.time(), "health_delta": 10, "message": XSS_HEALTH}]),
        node("hv3", used_gib=18, load=0.8, vms=3),
        node("hv4", mode="hypervisor", coordinator_state="client", domain_state="flushed", used_gib=2,
             load=0.1, vms=0),
    ]
    zk.put(schema.PRIMARY_NODE, "hv1")
    for record in records:
        zk.put(schema.node(record.name), record.doc())
    zk.put(schema.node_log("hv1"), [f"2026-01-01 00:00:{i:02d} INFO keepalive {i}: 4 VMs, load 2.4"
                                     for i in range(40)] + [XSS_LOG])
    return records


def vm_xml(name: str, description: str, memory: int = 2048, vcpus: int = 2) -> str:
    from xml.sax.saxutils import escape

    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <description>{escape(description)}</description>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>"""


VMS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    # name, node, state to set, description, tags
    ("web1", "hv1", "start", XSS_DESCRIPTION, ("web", XSS_TAG)),
    ("web2", "hv1", "start", "Web tier, second replica", ("web",)),
    ("db1", "hv2", "start", "PostgreSQL primary", ("db", "prod")),
    ("db2", "hv2", "stop", "PostgreSQL replica (stopped for an upgrade)", ("db",)),
    ("mail", "hv3", "disable", "Mail relay, retired", ()),
    ("build", "hv3", "start", "CI runner", ("ci",)),
)


def define_vms(api: httpx.Client) -> None:
    """Define the sample VMs through the API (`api` has base /api/v1 and the token)."""
    for name, where, state, description, tags in VMS:
        answer = api.post("/vm", params={"node": where, "user_tags": list(tags)},
                          data={"xml": vm_xml(name, description)})
        assert answer.status_code == 200, answer.text
        if state != "stop":
            answer = api.post(f"/vm/{name}/state", params={"state": state})
            assert answer.status_code == 200, answer.text


def fault_list(zk: ZK) -> list[str]:
    raised = [
        faults.raise_fault(zk, "VM_FAILED_WEB3", 10, XSS_FAULT),
        faults.raise_fault(zk, "MEMORY_OVERPROVISIONED", 25, "Memory is overprovisioned: 140% of the "
                                                             "cluster's RAM is allocated"),
        faults.raise_fault(zk, "CEPH_HEALTH_WARN", 5, "Ceph reports HEALTH_WARN: 1 pool has too few "
                                                      "placement groups"),
    ]
    return [f.id for f in raised if f is not None]


def task_list(zk: ZK) -> list[str]:
    made = [tasks.submit(zk, CLUSTER_SELFTEST, target="primary") for _ in range(2)]
    zk.put(schema.task_log(made[0].id), ["selftest: queued", f"note {XSS_SCRIPT}"])
    return [t.id for t in made]


def cluster(zk: ZK, api: httpx.Client) -> dict[str, Any]:
    """Everything above; returns what was made."""
    records = nodes(zk)
    define_vms(api)
    return {"nodes": records, "faults": fault_list(zk), "tasks": task_list(zk)}


# -- networks (the Networks pages) ------------------------------------------------------------------

# Lease host names come from DHCP clients (the dnsmasq hook stores what the guest sent); a network
# description that bypassed the API's checks (an older writer) must be inert too.
XSS_HOSTNAME = "<img src=x onerror=window.__pvc_xss=4>"
XSS_NETWORK = f"legacy {XSS_SCRIPT}"
XSS_RULE = f'tcp dport 8080 accept comment "{XSS_IMG}"'
NETWORKS: tuple[dict[str, Any], ...] = (
    {"vni": 100, "description": "prod", "nettype": "managed", "domain": "prod.example",
     "name_servers": ["10.100.0.53"], "ip4_network": "10.100.0.0/24", "ip4_gateway": "10.100.0.1",
     "dhcp4": "true", "dhcp4_start": "10.100.0.100", "dhcp4_end": "10.100.0.199",
     "ip6_network": "fd00:100::/64"},
    {"vni": 200, "description": "storage-vlan", "nettype": "bridged", "mtu": "9000"},
    {"vni": 1001, "description": "lab", "nettype": "managed", "ip4_network": "10.201.0.0/24",
     "ip4_gateway": "10.201.0.1"},
)
RESERVATIONS = (("52:54:00:aa:00:10", "10.100.0.10", "db1"), ("52:54:00:aa:00:11", "10.100.0.11", "build"))
ACLS = (("allow-ssh", "in", "tcp dport 22 ct state new accept"),
        ("allow-web", "in", "tcp dport { 80, 443 } accept"),
        ("no-smtp", "out", "tcp dport 25 drop"))
LEASES = (("52:54:00:00:00:01", "10.100.0.120", "web1"), ("52:54:00:bb:00:02", "10.100.0.121", XSS_HOSTNAME))


def networks(zk: ZK, api: httpx.Client) -> dict[str, Any]:
    """Networks through the API (managed 100 with DHCP, reservations and ACLs, which every sample
    VM uses through vmbr100; bridged 200; managed 1001 without DHCP), dynamic leases as the dnsmasq
    hook writes them, and network 4000 written straight to ZooKeeper with markup in its
    description and in a rule (what the API would refuse; pages must still show it as text)."""
    for net in NETWORKS:
        answer = api.post("/network", params=net)
        assert answer.status_code == 200, answer.text
    for mac, address, hostname in RESERVATIONS:
        answer = api.post("/network/100/lease", params={"macaddress": mac, "ipaddress": address,
                                                        "hostname": hostname})
        assert answer.status_code == 200, answer.text
    for description, direction, rule in ACLS:
        answer = api.post("/network/100/acl", params={"description": description, "direction": direction,
                                                      "rule": rule})
        assert answer.status_code == 200, answer.text
    expiry = int(time.time()) + 3600
    for mac, address, hostname in LEASES:
        zk.put(schema.network_lease(100, mac), {"mac_address": mac, "ip4_address": address,
                                                "hostname": hostname, "clientid": "", "expiry": expiry,
                                                "timestamp": expiry - 3600})
    legacy = {"vni": 4000, "description": XSS_NETWORK, "type": "managed", "mtu": None,
              "domain": "legacy.local", "name_servers": [],
              "ip4": {"network": "10.240.0.0/24", "gateway": "10.240.0.1", "dhcp_flag": False,
                      "dhcp_start": None, "dhcp_end": None},
              "ip6": {"network": None, "gateway": None, "dhcp_flag": False}}
    zk.put(schema.network(4000), legacy)
    zk.put(schema.network_acls(4000), {"in": [{"description": "legacy-rule", "rule": XSS_RULE}], "out": []})
    zk.put(schema.network_reservations(4000), None)
    zk.put(schema.network_leases(4000), None)
    zk.put(schema.network_lease(4000, "52:54:00:cc:00:01"),
           {"mac_address": "52:54:00:cc:00:01", "ip4_address": "10.240.0.50", "hostname": XSS_HOSTNAME,
            "expiry": expiry})
    return {"networks": [n["vni"] for n in NETWORKS] + [4000]}


# -- storage (the Storage pages) --------------------------------------------------------------------

# Pool, volume and snapshot names may hold '<', '>' and '&' (not '/', quotes or blanks): shown as text.
XSS_VOLUME = "<b>scratch&amp;<i>"
XSS_CEPH_CHECK = f"pool 'vms' {XSS_SCRIPT} has {XSS_IMG} no application enabled"
STORAGE_VOLUMES: tuple[tuple[str, str, str], ...] = (
    ("vms", "app1_sda", "20G"), ("vms", "web1_vdb", "5G"), ("vms", "db1_vda", "40G"),
    ("vms", XSS_VOLUME, "1G"), ("backup", "archive", "100G"),
)
STORAGE_SNAPSHOTS = (("vms", "app1_sda", "before-upgrade"), ("vms", "app1_sda", "nightly"))


def storage(zk: ZK, api: httpx.Client | None = None, fake: Any = None) -> dict[str, Any]:
    """Ceph as the nodes and the API leave it in ZooKeeper, without Ceph: pools, volumes and
    snapshots made by the API's own functions (pvc.cluster.storage) over a FakeStorage, then one
    statistics pass of the primary's StorageMonitor (the Ceph status, health, OSDs, pool figures),
    with a health check whose message carries markup. With `api`, VM "app1" is defined using
    vms/app1_sda. Returns the FakeStorage (pvcapid itself has no Ceph: its storage writes answer
    503 after their checks)."""
    from pvc.adapters.ceph.fake import FakeStorage
    from pvc.cluster import storage as st
    from pvc.node.storage import SETTLE_PASSES, StorageMonitor

    ceph = fake if fake is not None else FakeStorage()
    st.add_pool(zk, ceph, "vms", 64, "copies=3,mincopies=2")
    st.add_pool(zk, ceph, "backup", 32, "copies=2,mincopies=1")
    for pool, volume, size in STORAGE_VOLUMES:
        st.add_volume(zk, ceph, pool, volume, size)
    for pool, volume, snapshot in STORAGE_SNAPSHOTS:
        st.add_snapshot(zk, ceph, pool, volume, snapshot)
    ceph.set_osd_in(2, False)
    monitor = StorageMonitor(zk, ceph, "hv1")
    for _ in range(SETTLE_PASSES):
        monitor.run_once()

    def warn(doc: Any) -> Any:
        health = {"status": "HEALTH_WARN", "mutes": [], "checks": {"POOL_APP_NOT_ENABLED": {
            "severity": "HEALTH_WARN", "muted": False, "summary": {"message": XSS_CEPH_CHECK, "count": 1}}}}
        status = {**doc["status"], "health": health,
                  "pgmap": {**doc["status"]["pgmap"], "read_bytes_sec": 12 << 20, "write_bytes_sec": 3 << 20,
                            "read_op_per_sec": 420, "write_op_per_sec": 96}}
        return {**doc, "health": health, "status": status}

    zk.update(schema.CEPH_STATUS, warn)
    if api is not None:
        xml = vm_xml("app1", "Application server on Ceph").replace(
            "<serial type='pty'/>", "<disk type='network' device='disk'><source protocol='rbd' "
                                    "name='vms/app1_sda'/><target dev='sda' bus='scsi'/></disk>\n"
                                    "    <serial type='pty'/>")
        answer = api.post("/vm", params={"node": "hv1"}, data={"xml": xml})
        assert answer.status_code == 200, answer.text
    return {"fake": ceph}


# -- the provisioner (the Provisioner pages) --------------------------------------------------------

# A script or userdata body is code and may hold anything; a network's description (shown in the
# network template page's VNI choices) written by an older writer may hold markup too.
XSS_SCRIPT_BODY = f"    # {XSS_SCRIPT} {XSS_IMG}\n"
XSS_PROV_NETWORK = f"old net {XSS_IMG}"
PROV_SCRIPT = ("from pvcapid.vmbuilder import VMBuilder\n\n\nclass VMBuilderScript(VMBuilder):\n"
               "    def setup(self):\n        pass\n\n    def create(self):\n" + XSS_SCRIPT_BODY +
               "        pass\n\n    def install(self):\n        pass\n\n"
               "    def cleanup(self):\n        pass\n")
PROV_USERDATA = f"#cloud-config\n# {XSS_SCRIPT}\npackages:\n  - htop\n"


def provisioner(zk: ZK) -> dict[str, Any]:
    """Provisioner documents made by the API's own functions (pvc.cluster.provisioner): system
    templates "small", "web" and "huge" (more memory than any sample node has: a create from its
    profile is refused before queueing), network template "std" (upstream, cluster), storage
    template "std" (sda ext4 at /, sdb xfs at /var in pool "vms", made over a FakeStorage if
    missing), userdata "basic", script "debootstrap" and profiles "web" and "huge". Network 4001 is
    written straight to ZooKeeper with markup in its description."""
    from pvc.adapters.ceph.fake import FakeStorage
    from pvc.cluster import provisioner as prov
    from pvc.cluster import storage as st

    if not zk.exists(schema.pool("vms")):
        st.add_pool(zk, FakeStorage(), "vms", 64, "copies=3,mincopies=2")
    prov.add_system_template(zk, "small", 1, 1024, True, False)
    prov.add_system_template(zk, "web", 2, 2048, True, True, node_limit="hv1,hv2", node_selector="mem",
                             migration_method="live")
    prov.add_system_template(zk, "huge", 64, 4 * 1024 * 1024, True, False)
    prov.add_network_template(zk, "std", "{prefix}:ff:ff:{vmid}{netid}")
    for vni in ("upstream", "cluster"):
        prov.add_template_network(zk, "std", vni)
    prov.add_storage_template(zk, "std")
    prov.add_template_disk(zk, "std", "sda", "vms", disk_size=10, filesystem="ext4", mountpoint="/")
    prov.add_template_disk(zk, "std", "sdb", "vms", disk_size=4, filesystem="xfs", mountpoint="/var")
    prov.USERDATA.add(zk, "basic", PROV_USERDATA)
    prov.SCRIPTS.add(zk, "debootstrap", PROV_SCRIPT)
    prov.add_profile(zk, "web", "provisioner", "web", network_template="std", storage_template="std",
                     userdata="basic", script="debootstrap", arguments=["deb_release=bookworm"])
    prov.add_profile(zk, "huge", "provisioner", "huge", network_template="std", storage_template="std",
                     script="debootstrap")
    zk.put(schema.network(4001), {
        "vni": 4001, "description": XSS_PROV_NETWORK, "type": "bridged", "mtu": None, "domain": "",
        "name_servers": [], "ip4": {"network": None, "gateway": None, "dhcp_flag": False},
        "ip6": {"network": None, "gateway": None, "dhcp_flag": False}})
    return {"system_templates": ["small", "web", "huge"], "profiles": ["web", "huge"]}
