"""What the cloud-init metadata service answers (pvc-facts §5.4): the VM behind an address.

A request's source address leads to a DHCP lease (or reservation) of a managed network, the
lease's MAC to the VM with a NIC of that MAC, and the VM's profile to the userdata document the
guest receives. Pure lookups on ZooKeeper; the HTTP side is pvc.node.metadata.
"""

from __future__ import annotations

from typing import Any

from pvc.cluster import vms as vms_mod
from pvc.core import schema
from pvc.core.records import VMRecord
from pvc.core.zk import ZK


def macs_for_address(zk: ZK, ip: str) -> set[str]:
    """MACs that hold `ip` in any managed network, by dynamic lease or reservation."""
    found: set[str] = set()
    for tree, path_of in ((schema.NET_LEASES, schema.network_lease),
                          (schema.NET_RESERVATIONS, schema.network_reservation)):
        vnis = zk.children(tree)
        listing = zk.children_many([f"{tree}/{vni}" for vni in vnis]) if vnis else {}
        paths = [path_of(vni, mac) for vni in vnis for mac in listing.get(f"{tree}/{vni}", [])]
        for doc in (zk.get_many(paths) if paths else {}).values():
            if isinstance(doc, dict) and doc.get("ip4_address") == ip and doc.get("mac_address"):
                found.add(str(doc["mac_address"]).lower())
    return found


def vm_for_address(zk: ZK, ip: str) -> VMRecord | None:
    macs = macs_for_address(zk, ip)
    if not macs:
        return None
    for entry in vms_mod.load_entries(zk):
        nics = vms_mod.record_summary(entry.record).get("networks") or []
        if any(str(nic.get("mac", "")).lower() in macs for nic in nics if isinstance(nic, dict)):
            return entry.record
    return None


def userdata_for(zk: ZK, record: VMRecord) -> str | None:
    """The userdata text of the VM's profile, or None (no profile, or it names none)."""
    if not record.profile:
        return None
    profile: Any = zk.get(schema.profile(record.profile), None)
    name = profile.get("userdata") if isinstance(profile, dict) else None
    if not name:
        return None
    doc: Any = zk.get(schema.userdata(str(name)), None)
    if isinstance(doc, dict):
        text = doc.get("userdata")
        return str(text) if text is not None else None
    return None
