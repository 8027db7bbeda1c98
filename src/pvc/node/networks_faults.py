"""The network reconciler's cluster faults (DESIGN D16): raised while a step fails, resolved by
the node that raised them as soon as it no longer does.

A pass of pvc.node.networks ends with its outcome: the steps that failed in *this* pass, by key
(`dnsmasq-1001`, `dev-1001`, `nft`, ...), with their message. Which faults of this node must be
active after the pass is a pure function of that outcome (`wanted`): one fault
`NETWORK_<KEY>_<NODE>` per failed step. Every other active network fault of this node is over,
whatever the reason: the step worked this time, its network was removed, or this node no longer
runs that piece (gateways, dnsmasq, NTP and the DNS view move with the primary). `plan` compares
what is wanted with what ZooKeeper holds; `FaultBook.settle` is the one place that writes, and
reads this node's network faults from ZooKeeper at its first pass (and after a failed write), so
a restarted daemon resolves what its predecessor raised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pvc.cluster import faults as faults_mod
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

PREFIX = "NETWORK_"
HEALTH_DELTA = 10

# Keys of the primary's pieces, and of the steps the hand-over itself runs again (stopping the
# helpers, removing addresses): none of them outlives giving up the primary role.
_PRIMARY_KEYS = frozenset({"dns-view", "metadata", "floating", "meta-addr"})
_PRIMARY_PREFIXES = ("gw-", "dnsmasq-", "tftp-", "chrony-", "svc-", "gwdel-", "mac-")


def fault_name(key: str, node: str) -> str:
    """The fault id of step `key` failing on `node`: upstream's capitals (`NETWORK_DNSMASQ-1001_HV1`)."""
    if not key or "_" in key:
        raise ValueError(f"{key!r} is not a network step key (non-empty, without '_')")
    return faults_mod.fault_id(f"{PREFIX}{key}_{node}".upper())


def step_key(fid: str, node: str) -> str | None:
    """The step key in fault id `fid` if it is one of `node`'s network faults, else None.

    Case-insensitive, so the ids written before they were all capitals (`NETWORK_NFT_hv1`) are
    found too; a key never holds `_`, so node `a_hv1`'s faults are not node `hv1`'s."""
    upper, tail = fid.upper(), f"_{node}".upper()
    if not upper.startswith(PREFIX) or not upper.endswith(tail):
        return None
    key = fid[len(PREFIX):len(fid) - len(tail)]
    return key.lower() if key and "_" not in key else None


def wanted(node: str, failures: Mapping[str, str]) -> dict[str, str]:
    """The network faults `node` must have active after a pass whose failed steps are `failures`
    (key -> message): fault id -> message."""
    return {fault_name(key, node): f"Node {node}: {message}" for key, message in failures.items() if message}


def relinquished(key: str) -> bool:
    """Whether step `key` belongs to the primary's pieces (or to their hand-over), so that its
    failure ends when this node stops being primary."""
    return key in _PRIMARY_KEYS or key.startswith(_PRIMARY_PREFIXES)


def after_relinquish(problems: Mapping[str, str]) -> dict[str, str]:
    """The failures that still hold right after giving up the primary role, before the hand-over's
    own steps run: every node's (devices, rules), none of the primary's."""
    return {key: message for key, message in problems.items() if not relinquished(key)}


@dataclass(frozen=True)
class Plan:
    """What to write: faults to raise or refresh (id -> message) and faults to resolve."""
    raise_: dict[str, str]
    resolve: frozenset[str]


def plan(want: Mapping[str, str], active: Mapping[str, str]) -> Plan:
    """From the faults wanted and this node's active network faults (id -> message): raise the
    new and the changed ones, resolve every active one that is not wanted."""
    return Plan(raise_={fid: msg for fid, msg in want.items() if active.get(fid) != msg},
                resolve=frozenset(fid for fid in active if fid not in want))


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Failures that appeared or changed (key -> message) and the keys whose failure is over."""
    return ({k: m for k, m in after.items() if before.get(k) != m},
            sorted(k for k in before if k not in after))


class FaultBook:
    """This node's active network faults as last written; `settle` makes ZooKeeper match a pass."""

    def __init__(self, zk: ZK, node: str) -> None:
        self.zk, self.node = zk, node
        self._active: dict[str, str] | None = None      # None: read from ZooKeeper first

    def _read(self) -> dict[str, str]:
        return {f.id: f.message for f in faults_mod.load_faults(self.zk)
                if step_key(f.id, self.node) is not None}

    def settle(self, failures: Mapping[str, str]) -> None:
        """Raise a fault per failed step, resolve this node's others. A failed write is logged and
        the next pass reads ZooKeeper again (the reconciler must go on without it)."""
        try:
            active = self._active if self._active is not None else self._read()
            todo = plan(wanted(self.node, failures), active)
            for fid, message in sorted(todo.raise_.items()):
                # None in maintenance mode (no new fault then): tried again on the next pass
                if faults_mod.raise_fault(self.zk, fid, HEALTH_DELTA, message) is not None:
                    active[fid] = message
            for fid in sorted(todo.resolve):
                if faults_mod.resolve_fault(self.zk, fid):
                    log.info("fault %s resolved: its condition is over", fid)
                active.pop(fid, None)
            self._active = active
        except Exception as exc:
            self._active = None
            log.warning("could not record the network faults: %s", exc)
