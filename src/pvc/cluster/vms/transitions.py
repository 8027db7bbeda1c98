"""Pure transitions of a VM document: the current record and an intent give the new record.

Every writer of `/vms/<uuid>` decides with one of these functions: the API (state, node, metadata,
tags, XML, rename), the provisioner, the node reconciler (settling transitional states, aborted
migrations, flush and unflush), HA recovery, and the HA simulator. The decision is applied with
compare-and-set (`pvc.cluster.vms.writes.apply`, or `apply_to_doc` inside a daemon's own CAS loop),
so after a lost race it is made again on the fresh document: it is always made on what is stored.

A transition returns the new record, `None` when its premise no longer holds (nothing to do: the
VM moved on meanwhile), or raises Conflict/InvalidInput/NotFound with the reason (a refusal).
Nothing here reads ZooKeeper or the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pvc.cluster import placement
from pvc.cluster.vms.rules import check_tag
from pvc.cluster.vms.view import derived
from pvc.core import domainxml
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import NodeRecord, Tag, VMRecord
from pvc.core.vocabulary import (
    VM_ACTIVE_STATES,
    VM_MIGRATE_STATES,
    VM_NODE_ACTIONS,
    VM_RECOVER_STATES,
    VM_RENAME_STATES,
    VM_SETTABLE_STATES,
    VM_STOPPED_STATES,
)

Transition = Callable[[VMRecord], VMRecord | None]


def _with(record: VMRecord, **fields: Any) -> VMRecord:
    return record.model_copy(update=fields)


def apply_to_doc(doc: dict[str, Any], transition: Transition) -> dict[str, Any] | None:
    """Run a transition on a raw stored document (a daemon's CAS loop); None: nothing to write.

    Fields this version does not know are kept, so an older daemon never drops what a newer
    one wrote during a rolling upgrade.
    """
    new = transition(VMRecord.model_validate(doc))
    if new is None:
        return None
    return {**doc, **new.doc()}


# -- the API's state changes ------------------------------------------------------------------------

@dataclass(frozen=True)
class StatePlan:
    """What a state request writes: `first` now; with `then`, once the VM is down, `then`."""

    first: str | None
    then: str | None = None
    message: str = ""
    wait_while: str | None = None   # with wait=true, the transitional state to wait out


def plan_state(name: str, current: str, target: str, force: bool = False) -> StatePlan:
    """PVC's rules for an API state change (§4.4); raises Conflict when not allowed now."""
    if target not in VM_SETTABLE_STATES:
        raise InvalidInput(f"state: '{target}' is not one of {', '.join(VM_SETTABLE_STATES)}")
    if current == "mirror" and target in ("start", "stop", "disable") and not force:
        raise Conflict(f'VM "{name}" is a snapshot mirror; use force to change its state.')
    if target == "start":
        return StatePlan("start", message=f'Starting VM "{name}".')
    if target in ("restart", "shutdown"):
        if current != "start":
            raise Conflict(f'VM "{name}" is not in "start" state!')
        if target == "restart":
            return StatePlan("restart", message=f'Restarting VM "{name}".', wait_while="restart")
        return StatePlan("shutdown", message=f'Shutting down VM "{name}".', wait_while="shutdown")
    if target == "stop":
        return StatePlan("stop", message=f'Forcibly stopping VM "{name}".')
    # disable
    if current in VM_ACTIVE_STATES:
        first = "stop" if force else "shutdown"
        return StatePlan(first, then="disable", message=f'Disabled VM "{name}".')
    if current == "disable":
        return StatePlan(None, message=f'VM "{name}" is already disabled.')
    return StatePlan("disable", message=f'Disabled VM "{name}".')


def wait_message(plan: StatePlan, name: str) -> str:
    return {"restart": f'Restarted VM "{name}".', "shutdown": f'Shut down VM "{name}".'}.get(
        plan.wait_while or "", plan.message)


def request_state(record: VMRecord, plan: StatePlan) -> VMRecord | None:
    """The first write of a planned state change (None: already there)."""
    return _with(record, state=plan.first) if plan.first else None


def finish_disable(record: VMRecord) -> VMRecord | None:
    """The second write of disabling a running VM, once it is down."""
    return None if record.state == "disable" else _with(record, state="disable")


def stop(record: VMRecord) -> VMRecord | None:
    """Make sure the VM's node takes it down (remove, disable --force)."""
    return None if record.state in VM_STOPPED_STATES else _with(record, state="stop")


def restart_if_running(record: VMRecord) -> VMRecord | None:
    """Apply a new definition: a running VM restarts, any other is left alone."""
    return _with(record, state="restart") if record.state == "start" else None


# -- migrate, move, unmigrate ------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeChange:
    """The new state/node/last_node of a migrate, move or unmigrate."""

    state: str
    node: str
    last_node: str
    message: str
    wait_while: str | None          # the transitional state `wait` waits out (None: nothing to wait)


def plan_node_change(record: VMRecord, action: str, nodes: Sequence[NodeRecord], target: str | None = None,
                     force: bool = False, force_live: bool = False,
                     default_selector: str = "mem") -> NodeChange:
    """PVC's migrate/move/unmigrate rules (§4.4), decided from the VM and the node list alone."""
    name = record.name
    if action not in VM_NODE_ACTIONS:
        raise InvalidInput(f"action: '{action}' is not one of {', '.join(VM_NODE_ACTIONS)}")
    if record.state in VM_MIGRATE_STATES:
        # A new target while one migration runs makes the nodes chase each other (the source
        # finishes to the old target, which then has to hand it on or restart it: a chaos run
        # saw a guest rebooted that way). The running one finishes first.
        raise Conflict(f'VM "{name}" is being migrated to node "{record.node}" now; try again once that '
                       f"migration has finished.")
    moving_live = record.state == "start"
    new_state = ("migrate-live" if force_live else "migrate") if moving_live else record.state
    wait_while = new_state if moving_live else None
    if action == "unmigrate":
        if not record.last_node:
            raise Conflict(f'VM "{name}" has not been previously migrated.')
        return NodeChange(new_state, record.last_node, "",
                          f'Unmigrating VM "{name}" back to node "{record.last_node}".', wait_while)
    if action == "migrate" and record.last_node and not force:
        raise Conflict(f'VM "{name}" has been previously migrated.')
    if target:
        known = {n.name: n for n in nodes}
        if target not in known:
            raise NotFound(f"Node not found: {target}")
        if record.node_limit and target not in record.node_limit:
            raise Conflict(f'Specified node "{target}" is not in the allowed list of nodes for VM "{name}".')
        if target == record.node:
            if action == "move" and record.last_node:
                return NodeChange(record.state, record.node, "",
                                  f'Making temporary migration permanent for VM "{name}".', None)
            raise Conflict(f'VM "{name}" is already running on node "{record.node}".')
        chosen = target
    else:
        found = placement.find_target(nodes, record.node_selector, default_selector, record.node,
                                      record.node_limit)
        if found is None:
            raise Conflict(f'Could not find a valid migration target for VM "{name}".')
        chosen = found.name
    if action == "move":
        return NodeChange(new_state, chosen, "", f'Permanently migrating VM "{name}" to node "{chosen}".',
                          wait_while)
    # A forced re-migration keeps the original origin, so unmigrate still goes home.
    origin = record.last_node if record.last_node else record.node
    return NodeChange(new_state, chosen, origin, f'Migrating VM "{name}" to node "{chosen}".', wait_while)


def node_change_done_message(action: str, name: str, node: str) -> str:
    return {"migrate": f'Migrated VM "{name}" to node "{node}".',
            "move": f'Permanently migrated VM "{name}" to node "{node}".',
            "unmigrate": f'Unmigrated VM "{name}" back to node "{node}".'}[action]


def request_node_change(record: VMRecord, change: NodeChange) -> VMRecord:
    return _with(record, state=change.state, node=change.node, last_node=change.last_node)


# -- metadata, tags, definition ----------------------------------------------------------------------

def set_fields(record: VMRecord, fields: dict[str, Any]) -> VMRecord:
    """Metadata fields already validated by the caller (pvc.cluster.vms.rules)."""
    return _with(record, **fields)


def plan_tags(tags: Sequence[Tag], action: str, tag: str, protected: bool = False) -> list[Tag]:
    """The tag list after add (replaces a same-named tag) or remove (user, unprotected only)."""
    check_tag(tag)
    if action == "add":
        return [t for t in tags if t.name != tag] + [Tag(name=tag, type="user", protected=protected)]
    if action != "remove":
        raise InvalidInput(f"action: '{action}' is not one of add, remove")
    found = next((t for t in tags if t.name == tag), None)
    if found is None:
        raise Conflict(f'The tag "{tag}" does not exist.')
    if found.type != "user":
        raise Conflict(f'The tag "{tag}" is not a user tag and cannot be removed.')
    if found.protected:
        raise Conflict(f'The tag "{tag}" is protected and cannot be removed.')
    return [t for t in tags if t.name != tag]


def change_tag(record: VMRecord, action: str, tag: str, protected: bool = False) -> VMRecord:
    return _with(record, tags=plan_tags(record.tags, action, tag, protected))


def replace_definition(record: VMRecord, domain: domainxml.Domain, xml: str) -> VMRecord:
    """A new domain XML, validated and parsed once by the caller (domain is its parse)."""
    return _with(record, name=domain.name, xml=xml, rbd_volumes=list(domain.rbd_volumes),
                 description=domain.description or "", **derived(domain, xml))


def check_renamable(record: VMRecord) -> None:
    if record.state not in VM_RENAME_STATES:
        raise Conflict(f'VM "{record.name}" is not in stopped state; VMs cannot be renamed while running.')


def rename(record: VMRecord, domain: domainxml.Domain, xml: str) -> VMRecord:
    """The renamed record: domain is the parse of the renamed XML."""
    check_renamable(record)
    return _with(record, name=domain.name, xml=xml, rbd_volumes=list(domain.rbd_volumes),
                 **derived(domain, xml))


# -- the node that runs the VM ----------------------------------------------------------------------

def settle(new_state: str, only_from: Iterable[str]) -> Transition:
    """A transitional state is done (restart -> start, shutdown -> stop, start -> fail, ...);
    nothing to do when the VM already left `only_from` (an administrator changed it meanwhile)."""
    allowed = frozenset(only_from)

    def transition(record: VMRecord) -> VMRecord | None:
        return _with(record, state=new_state) if record.state in allowed else None

    return transition


def abort_migration(here: str) -> Transition:
    """A migration away from `here` failed: the VM stays here, running; the origin is forgotten
    when it was this node."""
    def transition(record: VMRecord) -> VMRecord | None:
        if record.state not in VM_MIGRATE_STATES:
            return None
        last = "" if record.last_node == here else record.last_node
        return _with(record, state="start", node=here, last_node=last)

    return transition


def flush_shutdown(here: str) -> Transition:
    """Flush found no node for a running VM: shut it down and start it when `here` is ready."""
    def transition(record: VMRecord) -> VMRecord | None:
        if record.state != "start" or record.node != here:
            return None
        return _with(record, state="shutdown", node_autostart=True)

    return transition


def flush_away(here: str, target: str) -> Transition:
    """Flush moves the VM from `here` to `target`, remembering where to come back to."""
    def transition(record: VMRecord) -> VMRecord | None:
        if record.node != here:
            return None
        state = "migrate" if record.state == "start" else record.state
        return _with(record, state=state, node=target, last_node=record.last_node or here)

    return transition


def unflush_autostart(here: str) -> Transition:
    """`here` is ready again: start the VMs flush shut down."""
    def transition(record: VMRecord) -> VMRecord | None:
        if not record.node_autostart or record.node != here:
            return None
        state = "start" if record.state in ("stop", "shutdown") else record.state
        return _with(record, state=state, last_node="", node_autostart=False)

    return transition


def unflush_back(here: str) -> Transition:
    """`here` is ready again: bring back the VMs flush moved away."""
    def transition(record: VMRecord) -> VMRecord | None:
        if record.last_node != here:
            return None
        state = "migrate" if record.state == "start" else record.state
        return _with(record, state=state, node=here, last_node="")

    return transition


# -- HA recovery ---------------------------------------------------------------------------------------

def recover(dead: str, target: str | None) -> Transition:
    """A fenced node's VM restarts on `target`; with no target it stops and starts again when its
    node is ready (autostart). Nothing to do once it left the dead node or should not run."""
    def transition(record: VMRecord) -> VMRecord | None:
        if record.node != dead or record.state not in VM_RECOVER_STATES:
            return None
        if target is None:
            return _with(record, state="stop", node_autostart=True)
        return _with(record, state="start", node=target, last_node=dead)

    return transition


def needs_recovery(record: VMRecord, dead: str) -> bool:
    """Whether HA must act on this VM when `dead` is fenced."""
    return record.node == dead and record.state in VM_RECOVER_STATES
