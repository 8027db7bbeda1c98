"""Network ACLs: the in and out chains of nftables rules of a managed network, in
/netacls/<vni> (list index = order). Each rule is checked by nft itself before it is stored,
and each change is one compare-and-set of the document."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pvc.adapters.network import NetworkError, Nftables
from pvc.cluster.common import check_name, optional_text
from pvc.cluster.networks.store import get_network, managed_vni, name_filter
from pvc.cluster.networks.validation import DIRECTIONS, check_direction, check_order
from pvc.core import netconfig, schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK

Checker = Callable[[str], None] | Nftables
"""What validates ACL rule text with the real nft: `Nftables.check` or any callable like it."""


def _acl_doc(data: Any) -> dict[str, list[dict[str, Any]]]:
    doc = data if isinstance(data, dict) else {}
    return {d: [r for r in doc.get(d) or [] if isinstance(r, dict)] for d in DIRECTIONS}


def acl_views(acls: Mapping[str, Sequence[Mapping[str, Any]]], direction: str | None = None
              ) -> list[dict[str, Any]]:
    """ACL items {direction, order, description, rule}: `in` then `out`, each in chain order."""
    return [{"direction": d, "order": i, "description": str(r.get("description", "")),
             "rule": str(r.get("rule", ""))}
            for d in DIRECTIONS if direction in (None, d) for i, r in enumerate(acls.get(d) or [])]


def list_acls(zk: ZK, net: str, limit: str | None = None, direction: str | None = None
              ) -> list[dict[str, Any]]:
    """The network's ACLs whose description matches limit, of one direction if given."""
    if direction is not None:
        direction = check_direction(direction)
    doc = get_network(zk, net)
    keep = name_filter(limit)
    acls = _acl_doc(zk.get(schema.network_acls(doc["vni"]), None))
    return [item for item in acl_views(acls, direction) if keep(item["description"])]


def get_acl(zk: ZK, net: str, description: str) -> dict[str, Any]:
    doc = get_network(zk, net)
    for item in acl_views(_acl_doc(zk.get(schema.network_acls(doc["vni"]), None))):
        if item["description"] == description:
            return item
    raise NotFound(f'ACL "{description}" not found in network {doc["vni"]}.')


def unquote_rule(rule: str) -> str:
    """The rule without one pair of quotes around all of it: PVC's own acceptance script passes
    `--rule "'ip daddr 10.0.0.0/8 counter'"`, and a whole rule in quotes is never valid nft."""
    text = rule.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and text[0] not in text[1:-1]:
        return text[1:-1]
    return text


def check_rule(net: Mapping[str, Any], direction: str, rule: Any, checker: Checker) -> str:
    """The rule text, stripped, if it is one nft rule that nft itself accepts in the network's chain
    (`nft --check` of a throwaway table, so nothing is applied); else InvalidInput with nft's words."""
    try:
        text = netconfig.validate_rule_text(unquote_rule(str(rule or "")))
        ruleset = netconfig.acl_check_ruleset(netconfig.NetSpec.from_doc(net), direction, [text])
    except ValueError as exc:
        raise InvalidInput(f"rule: {exc}") from None
    check = checker.check if isinstance(checker, Nftables) else checker
    try:
        check(ruleset)
    except NetworkError as exc:
        detail = str(exc).strip().removeprefix("nft check:").strip()
        raise InvalidInput(f"rule: nft refuses the rule '{text}': {detail}") from None
    return text


def add_acl(zk: ZK, net: str, description: Any, rule: Any, checker: Checker, direction: Any = "in",
            order: Any = None) -> str:
    """Add a rule to the network's in or out chain at `order` (default: the end; past the end is
    the end, as upstream); later rules move down. Descriptions are unique in both directions."""
    direction = check_direction(optional_text(direction) or "in")
    description = check_name(optional_text(description) or "", "description")
    position = check_order(order)
    doc = get_network(zk, net)
    vni = managed_vni(doc, "firewall rules")
    text = check_rule(doc, direction, rule, checker)

    def change(current: Any) -> dict[str, Any]:
        acls = _acl_doc(current)
        for other in DIRECTIONS:
            if any(r.get("description") == description for r in acls[other]):
                raise Conflict(f'description: network {vni} already has a rule "{description}" ({other}); '
                               f"descriptions name rules in both directions.")
        chain = acls[direction]
        chain.insert(len(chain) if position is None else min(position, len(chain)),
                     {"description": description, "rule": text})
        return acls

    _acl_update(zk, vni, change)
    return f'Firewall rule "{description}" added successfully!'


def remove_acl(zk: ZK, net: str, description: str) -> str:
    """Remove a rule by description; the rules after it move up."""
    doc = get_network(zk, net)
    vni = int(doc["vni"])

    def change(current: Any) -> dict[str, Any]:
        acls = _acl_doc(current)
        for direction in DIRECTIONS:
            kept = [r for r in acls[direction] if r.get("description") != description]
            if len(kept) != len(acls[direction]):
                acls[direction] = kept
                return acls
        raise NotFound(f'No firewall rule exists matching description "{description}" in network {vni}.')

    _acl_update(zk, vni, change)
    return f'Firewall rule "{description}" removed successfully!'


def _acl_update(zk: ZK, vni: int, change: Callable[[Any], dict[str, Any]]) -> None:
    """One compare-and-set of /netacls/<vni>; created if missing while the network exists."""
    if not zk.exists(schema.network(vni)):
        raise NotFound(f"Network {vni} not found.")
    zk.update(schema.network_acls(vni), change, create=True)
