"""The ownership mark: which cluster started a domain, and for which VM (issue #17, orphans).

Why: a node must tell the domains PVC started from any other domain on its host. A start can
finish after its VM was removed (or a node can miss the remove); without a mark such a QEMU
looks like "not a PVC VM" and runs on, on volumes that may be gone. Every domain a node starts
carries, in libvirt's `<metadata>`, one element in our own namespace naming the cluster's id and
the VM's UUID; libvirt keeps it in the live XML and carries it along a live migration. A domain
that bears this cluster's mark while its VM no longer exists is an orphan the node destroys;
unmarked domains (and domains of another cluster) are left alone.

The mark is written by the node at start (`prepare_for_host(owner=...)`), never stored in the
definition: whatever a definition brings in our namespace is dropped and replaced, so a VM
definition cannot claim to be another VM or another cluster's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from pvc.core.domainxml.checks import _uuid
from pvc.core.domainxml.model import DomainEditError, InvalidDomainXML
from pvc.core.domainxml.tree import _load_root

OWNER_NS = "urn:pvc:domain-owner:1"
OWNER_PREFIX = "pvcowner"
_OWNER_TAG = f"{{{OWNER_NS}}}owner"
_CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True)
class OwnerMark:
    """PVC's mark on a domain it started: the cluster's id and the VM's UUID."""

    cluster: str
    vm: str

    def __post_init__(self) -> None:
        if not isinstance(self.cluster, str) or not _CLUSTER_ID_RE.match(self.cluster):
            raise DomainEditError(f"cluster id '{self.cluster}' is not valid for an ownership mark")
        try:
            object.__setattr__(self, "vm", _uuid(self.vm, "ownership mark VM uuid"))
        except InvalidDomainXML as exc:
            raise DomainEditError(exc.message) from None

    def owns(self, cluster: str, vm: str) -> bool:
        """Whether this mark says: started by `cluster` for the VM `vm`."""
        return self.cluster == cluster and self.vm == vm.lower()


def owner_of(xml: str | bytes) -> OwnerMark | None:
    """The ownership mark in a (live) domain XML; None when it bears none or an unreadable one."""
    try:
        root = _load_root(xml)
    except InvalidDomainXML:
        return None
    return _read_mark(root)


def _read_mark(root: etree._Element) -> OwnerMark | None:
    metadata = root.find("metadata")
    if metadata is None:
        return None
    marks = metadata.findall(_OWNER_TAG)
    if len(marks) != 1:
        return None
    try:
        return OwnerMark(marks[0].get("cluster", ""), marks[0].get("vm", ""))
    except DomainEditError:
        return None


def _mark(root: etree._Element, owner: OwnerMark) -> None:
    """Put `owner` into the tree's `<metadata>` (created if missing), replacing anything the
    definition had in our namespace; other metadata stays as written."""
    metadata = root.find("metadata")
    if metadata is None:
        metadata = etree.Element("metadata")
        anchor = next((root.find(t) for t in ("description", "title", "uuid", "name")
                       if root.find(t) is not None), None)
        if anchor is not None:
            anchor.addnext(metadata)
        else:
            root.insert(0, metadata)
    for el in list(metadata):
        if isinstance(el.tag, str) and etree.QName(el).namespace == OWNER_NS:
            metadata.remove(el)
    etree.SubElement(metadata, _OWNER_TAG, nsmap={OWNER_PREFIX: OWNER_NS},
                     cluster=owner.cluster, vm=owner.vm)
