"""Rules for a VM's inputs, checked before anything is written (pure, no ZooKeeper).

Names, UUIDs, node limits, migration settings, tags, the domain XML (parsed once here; callers
pass the typed Domain on) and whether it fits a node.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from typing import Any

from lxml import etree

from pvc.cluster import placement
from pvc.cluster.common import NAME_RE, csv_items
from pvc.core import domainxml
from pvc.core.errors import Conflict, InvalidInput
from pvc.core.records import NodeRecord, Tag
from pvc.core.vocabulary import MIGRATION_METHODS

VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+:@-]{0,254}$")
TAG_RE = re.compile(r"^[^\x00-\x1f\x7f/]{1,128}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
DEVICE_TAGS = ("disk", "interface", "hostdev", "controller", "filesystem", "input", "sound", "video",
               "watchdog", "rng", "redirdev", "smartcard", "serial", "channel", "console", "memballoon",
               "tpm", "shmem", "memory", "vsock", "graphics")


# -- validation of inputs (pure) ----------------------------------------------------------------

def check_vm_name(name: str, field: str = "name") -> str:
    """VM names become ZooKeeper path components and CLI arguments: keep them plain."""
    if not VM_NAME_RE.match(name or ""):
        raise InvalidInput(
            f"{field}: '{name}' is not a valid VM name (start with a letter or digit; then letters, "
            f"digits and . _ + : @ -; at most 255 characters)"
        )
    return name


def canonical_uuid(value: str) -> str | None:
    """The lower-case dashed form of value if it is a UUID, else None."""
    if not UUID_RE.match(value or ""):
        return None
    return str(uuidlib.UUID(hex=value.replace("-", "")))


def parse_limit(limit: str | Sequence[str] | None, field: str = "limit") -> list[str]:
    """A node limit as a list, from a list (repeated keys) or one comma-separated string (§13.5)."""
    nodes = csv_items(limit)
    for node in nodes:
        if not NAME_RE.match(node):
            raise InvalidInput(f"{field}: '{node}' is not a valid node name")
    return list(dict.fromkeys(nodes))


def check_method(method: str | None, field: str = "migration_method") -> str:
    value = (method or "").strip().lower()
    if value not in MIGRATION_METHODS:
        raise InvalidInput(f"{field}: '{method}' is not one of {', '.join(MIGRATION_METHODS)}")
    return value


def check_downtime(value: Any, field: str = "migration_max_downtime") -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field}: '{value}' is not an integer") from None
    if number <= 0:
        raise InvalidInput(f"{field}: must be a positive number of milliseconds (got {value})")
    return number


def check_tag(tag: str, field: str = "tag") -> str:
    if not TAG_RE.match(tag or ""):
        raise InvalidInput(f"{field}: '{tag}' is not a valid tag (1-128 characters, no '/' or control "
                           f"characters)")
    return tag


def make_tags(user_tags: Iterable[str] = (), protected_tags: Iterable[str] = ()) -> list[Tag]:
    tags: dict[str, Tag] = {}
    for name in user_tags:
        tags[check_tag(name, "user_tags")] = Tag(name=name, type="user", protected=False)
    for name in protected_tags:
        tags[check_tag(name, "protected_tags")] = Tag(name=name, type="user", protected=True)
    return list(tags.values())


def parse_xml(xml: str | bytes | None, field: str = "xml",
              policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY) -> domainxml.Domain:
    """Parse a VM's XML and hold it to the domain XML policy (D14): refused before any write."""
    if xml is None or (isinstance(xml, str | bytes) and not xml.strip()):
        raise InvalidInput(f"{field}: required (the libvirt XML of the VM)")
    try:
        definition = domainxml.parse_definition(xml)
        domainxml.check_domain(definition, policy)
        return definition.domain
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc.message}") from None


def check_device_xml(xml: str | None,
                     policy: domainxml.DomainPolicy | None = domainxml.DEFAULT_POLICY) -> str:
    """Well-formed XML of one libvirt device (no DOCTYPE or entities) that the domain XML policy
    allows; the node's libvirt validates the rest."""
    if not xml or not xml.strip():
        raise InvalidInput("xml: required (the libvirt XML of the device)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(xml.strip().encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"xml: not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidInput("xml: DOCTYPE and entity declarations are not allowed in device XML")
    if root.tag not in DEVICE_TAGS:
        raise InvalidInput(f"xml: <{root.tag}> is not a libvirt device element")
    try:
        if policy is not None:
            domainxml.check_device(root, policy)
    except InvalidInput as exc:
        raise InvalidInput(f"xml: {exc.message}") from None
    return xml


# -- capacity and placement (pure) ----------------------------------------------------------------

def demand_of(domain: domainxml.Domain) -> placement.Demand:
    return placement.Demand(memory_mib=domain.memory_mib, vcpus=domain.vcpus)


def check_fits(node: NodeRecord, domain: domainxml.Domain, field: str = "xml") -> None:
    why = placement.fits(node, demand_of(domain))
    if why:
        raise InvalidInput(f"{field}: VM {domain.name}: {why}")


def check_fits_cluster(nodes: Sequence[NodeRecord], domain: domainxml.Domain, field: str = "xml") -> None:
    """Refuse a VM that no node of the cluster could ever run: memory not below every node's total,
    or more vCPUs than every node has. The refusal names the largest nodes and their figures (the
    limit). Nodes that report no figures yet are not judged (nothing is refused before any node
    has registered)."""
    check_demand_fits_cluster(nodes, demand_of(domain), domain.name, field)


def check_demand_fits_cluster(nodes: Sequence[NodeRecord], demand: placement.Demand, vm_name: str,
                              field: str = "xml") -> None:
    """check_fits_cluster for a VM known only by its figures (a provisioner profile's template)."""
    known = [n for n in nodes if n.memory.total or n.cpu_count]
    if not known or any(placement.fits(n, demand) is None for n in known):
        return
    largest = {max(known, key=lambda n: n.memory.total).name, max(known, key=lambda n: n.cpu_count).name}
    reasons = [why for n in known if n.name in largest and (why := placement.fits(n, demand))]
    raise InvalidInput(f"{field}: no node of this cluster could ever run VM {vm_name}: "
                       f"{'; '.join(dict.fromkeys(reasons))} (the largest node); give it less, or pass "
                       f"force if a bigger node is still to be added.")


def check_limit_nodes(limit: Sequence[str], nodes: Iterable[str], field: str = "limit") -> None:
    """Refuse a node limit naming nodes the cluster does not have (a VM limited to them could
    never run there)."""
    known = sorted(nodes)
    unknown = [n for n in limit if n not in known]
    if not unknown:
        return
    what = f"'{unknown[0]}' is not a node" if len(unknown) == 1 else \
        f"{', '.join(repr(n) for n in unknown)} are not nodes"
    have = ", ".join(known) or "none registered yet"
    raise InvalidInput(f"{field}: {what} of this cluster (its nodes: {have}); pass force if the node is "
                       f"still to be added.")


def choose_node(nodes: Sequence[NodeRecord], domain: domainxml.Domain, selector: str | None,
                default_selector: str, limit: Sequence[str]) -> NodeRecord:
    """The node a new VM goes to when none is given; an error says why none qualifies."""
    demand = demand_of(domain)
    target = placement.find_target(nodes, selector, default_selector, None, limit, demand)
    if target is not None:
        return target
    eligible = placement.candidates(nodes, None, limit)
    if not eligible:
        where = f" within its node limit ({','.join(limit)})" if limit else ""
        raise Conflict(f"No node can take VM {domain.name}: no node{where} is in run state and ready.")
    reasons = "; ".join(placement.fits(n, demand) or "" for n in eligible)
    raise InvalidInput(f"VM {domain.name} does not fit on any eligible node: {reasons}")

