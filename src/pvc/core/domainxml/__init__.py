"""libvirt domain XML as typed objects and pure functions (no libvirt connection, no I/O).

Why: PVC stores each VM as libvirt XML text (upstream does too, and clients send and fetch it),
but the cluster has to understand that text — memory and vCPUs for placement, RBD volumes for
storage operations, bridges for networks — and has to change it (add a NIC, attach a volume,
adapt it to a host without KVM). Everything here is a pure function from text (or a `Domain`)
to text (or a `Domain`/dict), so it is tested with golden files and property tests, in the
spirit of Nova's typed libvirt config objects and Incus's "QEMU config as pure functions".

Two ways to produce XML, on purpose:

* the edit helpers (`set_vcpus`, `add_interface`, …) change the parsed *tree* of the given XML
  and keep every element and attribute they do not touch, as upstream's CLI edits XML text;
* `render(domain)` writes canonical XML from the typed model. The model keeps unmodelled
  top-level elements, unmodelled devices and unmodelled children/attributes of the devices it
  does model verbatim, so `parse(render(d)) == d`; only unknown attributes of the small modelled
  sub-elements (e.g. `<target tray=…>`'s children, `<mac type=…>`) are not carried.

Every input is treated as hostile: the parser never resolves entities, never touches the
network, refuses DTDs, bounds the document size and reports every problem as
`InvalidDomainXML` naming what is wrong.

The package, by responsibility (callers use only the names re-exported here):

* `model`: the dataclasses, limits and errors;
* `tree`: safe loading of text into a tree and canonical serialization back;
* `checks`: validators of single values (integers, units, UUIDs, names, MACs, PCI addresses);
* `parsing`: tree -> `Domain` (`parse`; `parse_definition` keeps the tree too, for `host`);
* `rendering`: `Domain` -> canonical text (`render`);
* `edits`: the edits clients and the API ask for (vCPUs, memory, NICs, disks, rename, device XML);
* `host`: what a node applies at start (Ceph access, a host without KVM, the console log),
  all in one pass over one parse (`prepare_for_host`);
* `ownership`: PVC's mark on the domains it starts (cluster id, VM UUID) and reading it back;
* `policy`: what a definition may open on a node (host files, devices, programs), D14;
* `views`: the API's summary of a domain, and the VNC address and console log of a running one.

Names with a leading underscore in these modules are private to the package: shared between its
modules, not for callers.
"""

from __future__ import annotations

from pvc.core.domainxml.edits import (
    add_interface,
    add_rbd_disk,
    device_xml,
    mac_address,
    remove_disk,
    remove_interface,
    rename,
    set_memory,
    set_vcpus,
)
from pvc.core.domainxml.host import CephAccess, fill_rbd_device, prepare_for_host
from pvc.core.domainxml.model import (
    DISK_BUSES,
    DISK_DEVICES,
    DISK_TYPES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MAX_XML_BYTES,
    NIC_TYPES,
    OS,
    QEMU_NS,
    Attrs,
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
    Raw,
    Topology,
)
from pvc.core.domainxml.ownership import OWNER_NS, OwnerMark, owner_of
from pvc.core.domainxml.parsing import Definition, parse, parse_definition
from pvc.core.domainxml.policy import (
    DEFAULT_POLICY,
    DomainPolicy,
    DomainPolicyViolation,
    check_device,
    check_domain,
    domain_violations,
)
from pvc.core.domainxml.rendering import render
from pvc.core.domainxml.views import LiveFacts, live_facts, summary

__all__ = [
    "DEFAULT_POLICY",
    "DISK_BUSES",
    "DISK_DEVICES",
    "DISK_TYPES",
    "MAX_MEMORY_MIB",
    "MAX_VCPUS",
    "MAX_XML_BYTES",
    "NIC_TYPES",
    "OS",
    "OWNER_NS",
    "QEMU_NS",
    "Attrs",
    "CephAccess",
    "Chardev",
    "Controller",
    "Definition",
    "Disk",
    "DiskAuth",
    "DiskDriver",
    "DiskSource",
    "Domain",
    "DomainEditError",
    "DomainPolicy",
    "DomainPolicyViolation",
    "Graphics",
    "InvalidDomainXML",
    "LiveFacts",
    "Nic",
    "OwnerMark",
    "Raw",
    "Topology",
    "add_interface",
    "add_rbd_disk",
    "check_device",
    "check_domain",
    "device_xml",
    "domain_violations",
    "fill_rbd_device",
    "live_facts",
    "mac_address",
    "owner_of",
    "parse",
    "parse_definition",
    "prepare_for_host",
    "remove_disk",
    "remove_interface",
    "rename",
    "render",
    "set_memory",
    "set_vcpus",
    "summary",
]
