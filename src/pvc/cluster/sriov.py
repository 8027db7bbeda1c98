"""SR-IOV on desired state: the PF and VF documents the nodes publish, VF settings, and which VM
uses which VF (upstream PVC 1.0.3's `/sriov` API and its define-time VF checks).

Each node publishes its PFs and VFs (`pvc.node.services.sriov`); the API writes a VF's desired
`config` and its claim (`used`, `used_by`, `mode`) into the same document by compare-and-set, so
two VMs can never both hold one VF: the second claim reads the first and is refused, naming the VF
and its user. A VM's SR-IOV NICs are `<interface type='direct'>` (macvtap passthrough of the VF's
netdev) and `<interface type='hostdev'>` (the VF's PCI function, named in `<sriov_device>`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from pvc.cluster.nodes import get_node, node_names
from pvc.core import domainxml, schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.units import parse_bool
from pvc.core.zk import ZK

LINK_STATES = ("auto", "enable", "disable")
SRIOV_MODES = ("macvtap", "hostdev")
CONFIG_DEFAULTS: dict[str, Any] = {"vlan_id": 0, "vlan_qos": 0, "tx_rate_min": 0, "tx_rate_max": 0,
                                   "link_state": "auto", "spoof_check": True, "trust": False,
                                   "query_rss": False}
_INT_LIMITS = {"vlan_id": 4095, "vlan_qos": 7, "tx_rate_min": 10**7, "tx_rate_max": 10**7}
_BOOLS = ("spoof_check", "trust", "query_rss")
ATTEMPTS = 20


# -- documents and the API's shapes ------------------------------------------------------------------

def _known_node(zk: ZK, node: str) -> None:
    try:
        get_node(zk, node)
    except NotFound:
        raise InvalidInput(f'Specified node "{node}" is invalid.') from None


def _docs(zk: ZK, parent: str) -> dict[str, dict[str, Any]]:
    names = zk.children(parent)
    found = zk.get_many([f"{parent}/{n}" for n in names]) if names else {}
    return {n: d for n in names if isinstance(d := found.get(f"{parent}/{n}"), dict)}


def vf_docs(zk: ZK, node: str) -> dict[str, dict[str, Any]]:
    """The node's VF documents by VF name."""
    return _docs(zk, schema.node_sriov_vfs(node))


def all_vf_docs(zk: ZK, nodes: Iterable[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every node's VF documents, {node: {vf: doc}}, in two pipelined rounds."""
    names = list(nodes) if nodes is not None else node_names(zk, fresh=True)   # it decides writes
    kids = zk.children_many([schema.node_sriov_vfs(n) for n in names]) if names else {}
    paths = {n: [schema.node_sriov_vf(n, vf) for vf in kids.get(schema.node_sriov_vfs(n), [])] for n in names}
    found = zk.get_many([p for ps in paths.values() for p in ps]) if any(paths.values()) else {}
    return {n: {p.rsplit("/", 1)[1]: d for p in paths[n] if isinstance(d := found.get(p), dict)}
            for n in names}


def _vf_sort_key(name: str) -> tuple[str, int, str]:
    head, _, tail = name.rpartition("v")
    return (head, int(tail), "") if tail.isdigit() else (name, -1, name)


def pf_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's `sriov_pf`: {phy, mtu (a string, as upstream stores it), vfs}."""
    return {"phy": doc.get("phy", ""), "mtu": str(doc.get("mtu", "")),
            "vfs": sorted(doc.get("vfs", []), key=_vf_sort_key)}


def vf_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's `sriov_vf`: config numbers as strings, flags as booleans, the PCI address and
    the usage (`domain` is the user's UUID; swagger calls it a boolean, upstream sends the UUID)."""
    config = {**CONFIG_DEFAULTS, **(doc.get("config") or {})}
    pci = doc.get("pci") or {}
    return {
        "phy": doc.get("phy", ""), "pf": doc.get("pf", ""), "mtu": int(doc.get("mtu") or 0),
        "mac": doc.get("mac", ""),
        "config": {"vlan_id": str(config["vlan_id"]), "vlan_qos": str(config["vlan_qos"]),
                   "tx_rate_min": str(config["tx_rate_min"]), "tx_rate_max": str(config["tx_rate_max"]),
                   "link_state": config["link_state"], "spoof_check": bool(config["spoof_check"]),
                   "trust": bool(config["trust"]), "query_rss": bool(config["query_rss"])},
        "pci": {k: pci.get(k, "") for k in ("domain", "bus", "slot", "function")},
        "usage": {"used": bool(doc.get("used")), "domain": doc.get("used_by", "")},
    }


def list_pfs(zk: ZK, node: str | None) -> list[dict[str, Any]]:
    if not node:
        raise InvalidInput("node: A valid node must be specified.")
    _known_node(zk, node)
    docs = _docs(zk, schema.node_sriov_pfs(node))
    return [pf_view(docs[n]) for n in sorted(docs)]


def list_vfs(zk: ZK, node: str | None, pf: str | None = None) -> list[dict[str, Any]]:
    if not node:
        raise InvalidInput("node: A valid node must be specified.")
    _known_node(zk, node)
    docs = vf_docs(zk, node)
    return [vf_view(docs[n]) for n in sorted(docs, key=_vf_sort_key) if not pf or docs[n].get("pf") == pf]


def get_vf(zk: ZK, node: str, vf: str) -> dict[str, Any]:
    _known_node(zk, node)
    doc = zk.get(schema.node_sriov_vf(node, vf), None) if _safe(vf) else None
    if not isinstance(doc, dict):
        raise NotFound(f'Could not find SR-IOV VF "{vf}" on node "{node}".')
    return vf_view(doc)


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


# -- VF settings -------------------------------------------------------------------------------------

def parse_config(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The VF settings given (None: unchanged), validated; each bad value named."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None or value == "":
            continue
        if key in _INT_LIMITS:
            try:
                number = int(str(value).strip())
            except ValueError:
                raise InvalidInput(f"{key}: '{value}' is not an integer") from None
            if not 0 <= number <= _INT_LIMITS[key]:
                raise InvalidInput(f"{key}: {number} is outside 0..{_INT_LIMITS[key]}")
            out[key] = number
        elif key == "link_state":
            if value not in LINK_STATES:
                raise InvalidInput(f"link_state: '{value}' is not one of {', '.join(LINK_STATES)}")
            out[key] = value
        elif key in _BOOLS:
            out[key] = value if isinstance(value, bool) else parse_bool(value)
        else:
            raise InvalidInput(f"{key}: not an SR-IOV VF setting")
    return out


def check_config(config: Mapping[str, Any]) -> None:
    """Rules across settings: a QoS priority needs a VLAN; the minimum rate not above the maximum."""
    if config["vlan_qos"] and not config["vlan_id"]:
        raise InvalidInput(f"vlan_qos: a QoS priority ({config['vlan_qos']}) needs a vlan_id")
    if config["tx_rate_max"] and config["tx_rate_min"] > config["tx_rate_max"]:
        raise InvalidInput(f"tx_rate_min: {config['tx_rate_min']} is above tx_rate_max "
                           f"{config['tx_rate_max']}")


def set_vf_config(zk: ZK, node: str, vf: str, changes: Mapping[str, Any]) -> str:
    """Write the VF's desired settings (its node applies them); only the settings given change."""
    update = parse_config(changes)
    if not update:
        raise InvalidInput("No changes to apply; give at least one of vlan_id, vlan_qos, tx_rate_min, "
                           "tx_rate_max, link_state, spoof_check, trust, query_rss.")
    _known_node(zk, node)
    path = schema.node_sriov_vf(node, vf)
    if not _safe(vf) or not zk.exists(path):
        raise NotFound(f'Could not find SR-IOV VF "{vf}" on node "{node}".')

    def change(doc: Any) -> Any:
        if not isinstance(doc, dict):
            raise NotFound(f'Could not find SR-IOV VF "{vf}" on node "{node}".')
        config = {**CONFIG_DEFAULTS, **(doc.get("config") or {}), **update}
        check_config(config)
        return {**doc, "config": config}

    try:
        zk.update(path, change)
    except NoNodeError:
        raise NotFound(f'Could not find SR-IOV VF "{vf}" on node "{node}".') from None
    return f'Successfully modified configuration of SR-IOV VF "{vf}" on node "{node}".'


# -- VM NICs on VFs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VfNic:
    """One NIC of a VM on an SR-IOV VF: the VF's name, the mode and the NIC's MAC."""

    vf: str
    mode: str            # macvtap | hostdev
    mac: str | None
    pci: str | None = None


def pci_text(pci: Mapping[str, Any]) -> str:
    return f"{pci.get('domain', '')}:{pci.get('bus', '')}:{pci.get('slot', '')}.{pci.get('function', '')}"


def vf_nics(domain: domainxml.Domain, vfs: Mapping[str, Mapping[str, Any]]) -> list[VfNic]:
    """The domain's NICs that use VFs of `vfs` (one node's VF documents). A hostdev NIC names its
    VF in `<sriov_device>` or by PCI address; a direct NIC by its source device."""
    by_pci = {pci_text(d.get("pci") or {}): name for name, d in vfs.items()}
    out = []
    for nic in domain.interfaces:
        if nic.type == "direct" and nic.source in vfs:
            out.append(VfNic(nic.source, "macvtap", nic.mac))
        elif nic.type == "hostdev":
            name = nic.sriov_device if nic.sriov_device in vfs else by_pci.get(_norm_pci(nic.source))
            if name is not None:
                out.append(VfNic(name, "hostdev", nic.mac, nic.source))
    return out


def _norm_pci(text: str | None) -> str:
    """`0x0000:0x3b:0x02.0x1` or `0000:3b:02.1` as sysfs spells it."""
    if not text:
        return ""
    try:
        head, function = text.rsplit(".", 1)
        domain, bus, slot = head.split(":")
        return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(slot, 16):02x}.{int(function, 16)}"
    except ValueError:
        return text


def managed_devices(zk: ZK, nodes: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Every VF PVC manages (all nodes, or those given): their netdev names (macvtap) and PCI
    addresses (hostdev), for `DomainPolicy.with_managed`."""
    names, pcis = [], []
    for docs in all_vf_docs(zk, nodes).values():
        for name, doc in docs.items():
            names.append(name)
            if doc.get("pci"):
                pcis.append(pci_text(doc["pci"]))
    return sorted(set(names)), sorted(set(pcis))


def managed_policy(zk: ZK, policy: domainxml.DomainPolicy) -> domainxml.DomainPolicy:
    """`policy` plus the VFs PVC manages: a VM may use a managed VF and nothing else (D14)."""
    names, pcis = managed_devices(zk)
    return policy.with_managed(direct_devices=names, hostdev_pci=pcis) if names or pcis else policy


def claimed_policy(zk: ZK, node: str, uuid: str, policy: domainxml.DomainPolicy) -> domainxml.DomainPolicy:
    """`policy` plus only the VFs of `node` that `uuid` holds (a live-attached NIC)."""
    held = {n: d for n, d in (vf_docs(zk, node) if node else {}).items() if d.get("used_by") == uuid}
    if not held:
        return policy
    return policy.with_managed(direct_devices=list(held),
                               hostdev_pci=[pci_text(d["pci"]) for d in held.values() if d.get("pci")])


def _user_name(zk: ZK, uuid: str) -> str:
    data = zk.get(schema.vm(uuid), None)
    return str(data.get("name", uuid)) if isinstance(data, dict) else uuid


def claim(zk: ZK, node: str, uuid: str, domain: domainxml.Domain) -> list[str]:
    """Record `uuid` as the user of each VF its NICs use on `node` (CAS per VF document); the VFs
    newly claimed. A VF used by another VM is refused, naming the VF and its user; what this call
    claimed before the refusal is released again."""
    vfs = vf_docs(zk, node)
    nics = vf_nics(domain, vfs)
    _check_present(zk, node, domain, nics)
    seen: dict[str, VfNic] = {}
    for nic in nics:
        if nic.vf in seen:
            raise InvalidInput(f'SR-IOV VF "{nic.vf}" is used by two interfaces of VM "{domain.name}" '
                               f"({seen[nic.vf].mac} and {nic.mac}).")
        seen[nic.vf] = nic
        if nic.mode == "hostdev" and nic.pci and _norm_pci(nic.pci) != pci_text(vfs[nic.vf].get("pci") or {}):
            raise InvalidInput(f'SR-IOV VF "{nic.vf}" on node "{node}" is PCI device '
                               f'{pci_text(vfs[nic.vf].get("pci") or {})}, not {nic.pci}.')
    claimed: list[str] = []
    try:
        for nic in nics:
            if _claim_one(zk, node, nic, uuid, domain.name):
                claimed.append(nic.vf)
    except Exception:
        release(zk, node, uuid, only=claimed)
        raise
    return claimed


def _check_present(zk: ZK, node: str, domain: domainxml.Domain, found: list[VfNic]) -> None:
    """A NIC on a VF PVC manages elsewhere but not on `node` would not start there: refused."""
    wanted = [n for n in domain.interfaces if n.type in ("direct", "hostdev")]
    if len(wanted) == len(found):
        return
    names, _pcis = managed_devices(zk)
    have = {nic.vf for nic in found}
    for nic in wanted:
        name = nic.source if nic.type == "direct" else nic.sriov_device
        if name and name in names and name not in have:
            raise InvalidInput(f'SR-IOV VF "{name}" does not exist on node "{node}" (interface {nic.mac} '
                               f'of VM "{domain.name}").')


def _claim_one(zk: ZK, node: str, nic: VfNic, uuid: str, vm_name: str) -> bool:
    path = schema.node_sriov_vf(node, nic.vf)
    for _ in range(ATTEMPTS):
        found = zk.get_doc(path)
        if found is None or not isinstance(found.data, dict):
            raise InvalidInput(f'SR-IOV VF "{nic.vf}" does not exist on node "{node}".')
        doc = found.data
        user = doc.get("used_by") or ""
        if doc.get("used") and user and user != uuid:
            raise Conflict(f'SR-IOV VF "{nic.vf}" on node "{node}" is already used by VM '
                           f'"{_user_name(zk, user)}" ({user}); VM "{vm_name}" cannot use it too.')
        new = {**doc, "used": True, "used_by": uuid, "mode": nic.mode,
               "mac": nic.mac or doc.get("mac", "")}
        if new == doc:
            return False
        if user != uuid:
            new["claimed_at"] = time.time()   # the node frees claims of VMs that never appeared
        try:
            zk.set_doc(path, new, version=found.version)
            return user != uuid
        except BadVersionError:
            continue
    raise Conflict(f'SR-IOV VF "{nic.vf}" on node "{node}": too many concurrent changes, try again')


def release(zk: ZK, node: str, uuid: str, keep: Iterable[str] = (),
            only: Iterable[str] | None = None) -> list[str]:
    """Free the VFs on `node` that `uuid` uses, except `keep` (or only those of `only`); their MAC
    goes back to the VF's own. The VFs freed."""
    keep, wanted = set(keep), set(only) if only is not None else None
    freed = []
    for name, doc in vf_docs(zk, node).items():
        if doc.get("used_by") != uuid or name in keep or (wanted is not None and name not in wanted):
            continue

        def free(current: Any, uuid: str = uuid) -> Any:
            if not isinstance(current, dict) or current.get("used_by") != uuid:
                return current
            return {**current, "used": False, "used_by": "", "mode": "",
                    "mac": current.get("phy_mac", current.get("mac", ""))}

        try:
            zk.update(schema.node_sriov_vf(node, name), free)
            freed.append(name)
        except NoNodeError:
            continue
    return freed


def release_everywhere(zk: ZK, uuid: str) -> list[str]:
    """Free every VF any node records as used by `uuid` (a VM removed)."""
    freed = []
    for node, docs in all_vf_docs(zk).items():
        if any(d.get("used_by") == uuid for d in docs.values()):
            freed += [f"{node}/{vf}" for vf in release(zk, node, uuid)]
    return freed


def has_hostdev(domain: domainxml.Domain) -> bool:
    """A PCI function passed through: QEMU cannot carry it over a live migration."""
    return any(nic.type == "hostdev" for nic in domain.interfaces)


# -- migration ---------------------------------------------------------------------------------------

def plan_move(domain: domainxml.Domain, source: Mapping[str, Mapping[str, Any]],
              target: Mapping[str, Mapping[str, Any]], target_node: str, uuid: str) -> dict[str, str]:
    """Pure: for each VF NIC of the domain on the source node, the target node's VF it moves to:
    the VF of the same name when free there, else the first free VF of the same PF. Refused,
    naming the VF and the PF, when the target has none."""
    moves: dict[str, str] = {}
    taken = set()
    for nic in vf_nics(domain, source):
        pf = source[nic.vf].get("pf", "")
        free = [n for n, d in sorted(target.items(), key=lambda i: _vf_sort_key(i[0]))
                if d.get("pf") == pf and n not in taken
                and (not d.get("used") or d.get("used_by") in ("", uuid))]
        if not free:
            raise Conflict(f'Node "{target_node}" has no free SR-IOV VF on PF "{pf}" for interface '
                           f'{nic.mac} (VF "{nic.vf}") of VM "{domain.name}".')
        chosen = nic.vf if nic.vf in free else free[0]
        moves[nic.vf] = chosen
        taken.add(chosen)
    return moves


def rewrite(domain: domainxml.Domain, moves: Mapping[str, str],
            target: Mapping[str, Mapping[str, Any]]) -> domainxml.Domain:
    """Pure: the domain with each moved VF NIC pointing at its target VF (the macvtap source
    device; the hostdev PCI address and `<sriov_device>`)."""
    nics = []
    for nic in domain.interfaces:
        if nic.type == "direct" and nic.source in moves:
            nic = dataclasses.replace(nic, source=moves[nic.source])
        elif nic.type == "hostdev" and nic.sriov_device in moves:
            vf = moves[nic.sriov_device]
            nic = dataclasses.replace(nic, sriov_device=vf, source=pci_text(target[vf].get("pci") or {}))
        nics.append(nic)
    return dataclasses.replace(domain, interfaces=tuple(nics))


def vf_names(zk: ZK, node: str, domain: domainxml.Domain) -> list[str]:
    """The VFs of `node` the domain's NICs use."""
    return [nic.vf for nic in vf_nics(domain, vf_docs(zk, node))]


def hostdev_vfs(zk: ZK, node: str, domain: domainxml.Domain) -> list[str]:
    """The VFs of `node` the domain passes through as PCI functions."""
    return [nic.vf for nic in vf_nics(domain, vf_docs(zk, node)) if nic.mode == "hostdev"]


def nodes_for(zk: ZK, domain: domainxml.Domain, nodes: list[Any]) -> list[Any]:
    """Placement of a new VM with SR-IOV NICs: the nodes that have all its VFs free (all nodes when
    it has none, or when none has them: the claim then names what is missing)."""
    if not any(nic.type in ("direct", "hostdev") for nic in domain.interfaces):
        return nodes
    docs = all_vf_docs(zk, [n.name for n in nodes])
    wanted = max((len(vf_nics(domain, d)) for d in docs.values()), default=0)
    if not wanted:
        return nodes
    fits = [n for n in nodes
            if len(found := vf_nics(domain, docs[n.name])) == wanted
            and all(docs[n.name][nic.vf].get("used_by") in ("", None, domain.uuid) for nic in found)]
    return fits or nodes


@dataclass
class VfMove:
    """The SR-IOV part of a node change: the target's VFs claimed, the XML to rewrite, the
    source's VFs to free once the VM document names the new node."""

    uuid: str = ""
    source: str = ""
    target: str = ""
    moves: dict[str, str] = dataclasses.field(default_factory=dict)
    target_docs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    claimed: list[str] = dataclasses.field(default_factory=list)

    def apply(self, record: Any, planned: Any) -> Any:
        """The record with its NICs on the target's VFs (inside the CAS transition)."""
        from pvc.cluster.vms import transitions as tr

        if not self.moves:
            return record
        if planned.node != self.target:
            raise Conflict(f'VM "{record.name}": the migration target changed while its SR-IOV VFs were '
                           f"being moved to node {self.target}; try again.")
        if all(k == v for k, v in self.moves.items()):
            return record
        domain = rewrite(domainxml.parse(record.xml), self.moves, self.target_docs)
        return tr.replace_definition(record, domain, domainxml.render(domain))

    def undo(self, zk: ZK) -> None:
        if self.claimed:
            release(zk, self.target, self.uuid, only=self.claimed)

    def done(self, zk: ZK) -> None:
        if self.moves:
            release(zk, self.source, self.uuid, only=list(self.moves))


def plan_node_change(zk: ZK, record: Any, action: str, nodes: list[Any], node: str | None, force: bool,
                     force_live: bool, default: str) -> VfMove:
    """Before a migrate/move/unmigrate: refuse what SR-IOV does not allow, claim the target's VFs.

    A running VM with a PCI passthrough (hostdev) interface cannot migrate live: refused unless
    its migration method is shutdown (upstream sets that when the VF is assigned), and always
    with force_live. A macvtap VF moves to the target's free VF on the same PF (the same name when
    free); a running VM whose VF would change name moves only shut down, as the live XML keeps it.
    """
    from pvc.cluster.vms import transitions as tr

    if not record.node:
        return VfMove()
    try:
        planned = tr.plan_node_change(record, action, nodes, node, force, force_live, default)
    except Exception:
        return VfMove()          # the change itself is refused: the caller reports why
    if planned.node == record.node:
        return VfMove()
    domain = domainxml.parse(record.xml)
    running = record.state == "start"
    shutdown_move = record.migration_method == "shutdown" and not force_live
    if running and has_hostdev(domain) and not shutdown_move:
        devices = ", ".join(n.sriov_device or str(n.source) for n in domain.interfaces if n.type == "hostdev")
        raise Conflict(f'VM "{record.name}" passes host PCI device(s) through ({devices}): it cannot be '
                       f"migrated live. Set its migration method to shutdown to move it shut down"
                       f"{' (and do not force a live migration)' if force_live else ''}.")
    source_docs = vf_docs(zk, record.node)
    nics = vf_nics(domain, source_docs)
    if not nics:
        return VfMove()
    target_docs = vf_docs(zk, planned.node)
    moves = plan_move(domain, source_docs, target_docs, planned.node, record.uuid)
    renamed = {k: v for k, v in moves.items() if k != v}
    if running and renamed and not shutdown_move:
        raise Conflict(f'VM "{record.name}" uses SR-IOV VF(s) {", ".join(renamed)} on node "{record.node}"; '
                       f'node "{planned.node}" has no free VF of the same name (free on the same PF: '
                       f'{", ".join(renamed.values())}), and a live migration keeps the device name. Set '
                       f"its migration method to shutdown to move it shut down.")
    move = VfMove(record.uuid, record.node, planned.node, moves, target_docs)
    try:
        for nic in nics:
            if _claim_one(zk, planned.node, dataclasses.replace(nic, vf=moves[nic.vf]), record.uuid,
                          record.name):
                move.claimed.append(moves[nic.vf])
    except Exception:
        move.undo(zk)
        raise
    return move
