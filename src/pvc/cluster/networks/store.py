"""Reading the network documents and writing them in version-checked transactions (shared by
networks, ACLs and DHCP): a writer whose version check fails plans again on the new state."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pvc.cluster.common import limit_matcher
from pvc.core import schema
from pvc.core.errors import Conflict, NotFound
from pvc.core.zk import ZK, TxOp

ATTEMPTS = 25


def network_docs(zk: ZK) -> dict[str, dict[str, Any]]:
    names = zk.children(schema.NETWORKS)
    docs = zk.get_many([schema.network(n) for n in names])
    return {n: d for n in names if isinstance(d := docs.get(schema.network(n)), dict)}


def find_network(docs: Mapping[str, dict[str, Any]], net: str) -> tuple[str, dict[str, Any]] | None:
    """By VNI, else by description (pvc-facts §13.14: /network/<x> takes either)."""
    text = str(net).strip()
    if text in docs:
        return text, docs[text]
    if re.fullmatch(r"[0-9]{1,9}", text) and str(int(text)) in docs:
        return str(int(text)), docs[str(int(text))]
    for key, doc in docs.items():
        if doc.get("description") == text:
            return key, doc
    return None


def get_network(zk: ZK, net: str | int) -> dict[str, Any]:
    """The stored document of the network with VNI or description `net`; NotFound otherwise."""
    text = str(net).strip()
    if re.fullmatch(r"[0-9]{1,9}", text):
        doc = zk.get(schema.network(int(text)), None)
        if isinstance(doc, dict):
            return doc
    found = find_network(network_docs(zk), text) if text else None
    if found is None:
        raise NotFound(f'Network "{net}" not found: no network has that VNI or description.')
    return found[1]


def managed_vni(doc: Mapping[str, Any], what: str) -> int:
    if doc.get("type") != "managed":
        raise Conflict(f"Network {doc.get('vni')} is a bridged network: PVC manages no {what} on it (only on "
                       f"managed networks).")
    return int(doc["vni"])


def name_filter(limit: str | None) -> Callable[[str], bool]:
    """Whether a text matches `limit` (fuzzy regex, as upstream's lists take it; None: all)."""
    matcher = limit_matcher(limit)
    return (lambda _text: True) if matcher is None else matcher.fullmatch


def reservations_of(zk: ZK, vni: int) -> dict[str, dict[str, Any]]:
    macs = zk.children(schema.network_reservations(vni))
    docs = zk.get_many([schema.network_reservation(vni, m) for m in macs])
    return {m: d for m in macs if isinstance(d := docs.get(schema.network_reservation(vni, m)), dict)}


def version_of(zk: ZK, path: str) -> int | None:
    found = zk.get_raw(path)
    return None if found is None else found[1].version


def transact(zk: ZK, plan: Callable[[], tuple[list[TxOp], str]]) -> str:
    """Run plan() (read, validate, return the ops and the answer) and commit its ops in one
    transaction; when a version check fails, another writer won: plan again on the new state."""
    for _attempt in range(ATTEMPTS):
        ops, answer = plan()
        if not ops or zk.commit_ops(ops):
            return answer
    raise Conflict("Too many concurrent changes to the networks; try again.")
