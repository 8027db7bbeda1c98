"""Two labs side by side, and a link between them (`pvc-lab link A B`).

Each lab has its own namespaces (`<name>-*`), ports (derived from the name), ZooKeeper, Ceph and
state directory, so `pvc-lab up --name b` runs beside the default lab; its CLI connection is
`lab-b` (the default lab's `lab` is untouched).

Both labs use the same underlay addresses inside their own namespaces, so they are not routed
together. Instead `link A B` publishes B's API on A's underlay: an address on A's switch bridge
(inside A's switch namespace) where a relay listens and forwards each connection into B's
coordinator namespaces (relay.py). A's nodes then reach B's API at https://<address>:7370/api/v1.
Every lab's API certificate also names all the link addresses (labtls.api_names), so a sender on
A verifies B's certificate against B's CA (destination_api_ca), with verification on. Nothing is
added to the root namespace; `pvc-lab down` of A removes the link with A's namespaces and pid
files, and `unlink` removes it at once.
"""

from __future__ import annotations

from pvc.lab import proc, relay
from pvc.lab.netns import BRIDGE
from pvc.lab.plan import API_PORT, SUBNET, LabPlan

LINK_FIRST = 240            # link addresses: SUBNET.240 ... SUBNET.249 on the switch bridge
LINK_LAST = 249


def link_addresses() -> list[str]:
    """Every address a link can take (the same in every lab: they share the underlay subnet)."""
    return [f"{SUBNET}.{i}" for i in range(LINK_FIRST, LINK_LAST + 1)]


def _links(plan: LabPlan) -> dict[str, str]:
    links = plan.extra.get("links")
    return dict(links) if isinstance(links, dict) else {}


def link_address(plan: LabPlan, peer: str) -> str | None:
    """Where `plan`'s nodes reach `peer`'s API (None: not linked)."""
    return _links(plan).get(peer)


def link(plan: LabPlan, peer: LabPlan) -> str:
    """Publish `peer`'s API on `plan`'s underlay; the API base URL `plan`'s nodes use."""
    if peer.name == plan.name:
        raise proc.LabError("a lab cannot be linked to itself")
    links = _links(plan)
    address = links.get(peer.name)
    if address is None:
        used = set(links.values())
        free = [address for address in link_addresses() if address not in used]
        if not free:
            raise proc.LabError(f"lab {plan.name} has {len(used)} links already (at most "
                                f"{LINK_LAST - LINK_FIRST + 1})")
        address = free[0]
    proc.run(["ip", "-n", plan.switch_netns, "addr", "replace", f"{address}/24", "dev", BRIDGE])
    relay.start_relay(plan, f"link-{peer.name}", API_PORT, API_PORT, peer.coordinators,
                      listen=(plan.switch_netns, address))
    links[peer.name] = address
    plan.extra["links"] = links
    plan.save()
    return f"https://{address}:{API_PORT}/api/v1"


def unlink(plan: LabPlan, peer_name: str) -> bool:
    """Remove the link to `peer_name` (its relay and address); False if there was none."""
    links = _links(plan)
    address = links.pop(peer_name, None)
    relay.stop_relay(plan, f"link-{peer_name}")
    if address is None:
        return False
    proc.run(["ip", "-n", plan.switch_netns, "addr", "del", f"{address}/24", "dev", BRIDGE], check=False)
    plan.extra["links"] = links
    plan.save()
    return True
