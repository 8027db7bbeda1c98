"""Who acts on a VM, as a pure function of what one node observes (pvc-facts §4.2).

`observe()` turns the VM's record, its status and this node's hypervisor into an `Observation`;
`decide()` maps it to one `Action`. The reconciler and the HA simulator (tests/sim) both run
these two, so the simulator checks the very rules a node daemon follows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from pvc.core.records import VMRecord
from pvc.core.vocabulary import VM_ACTIVE_STATES, VM_MIGRATE_STATES, VM_STATES
from pvc.node.vms.store import NodeVMStatus

# States in which the VM must not run anywhere ("disable/provision/fail/mirror -> nothing runs";
# delete is transient during removal, import/restore are legacy): every state but the active
# ones, the migrate family and stop, so a state new to the vocabulary never runs by default.
NEVER_RUN = frozenset(VM_STATES) - {*VM_ACTIVE_STATES, *VM_MIGRATE_STATES, "stop"}


class Action(enum.Enum):
    NONE = "none"                     # nothing to do
    WAIT = "wait"                     # someone else acts first (a sender, another node)
    ENSURE = "ensure"                 # running as wanted: only keep its status right
    START = "start"                   # start here (guarded)
    RESTART = "restart"               # shut down here, then record start (which starts it)
    SHUTDOWN = "shutdown"             # ACPI, poll, destroy after the timeout, record stop
    STOP = "stop"                     # destroy (the state already says stop)
    TERMINATE = "terminate"           # destroy, no state change (runs where it must not)
    SHUTDOWN_AWAY = "shutdown_away"   # graceful shutdown of a VM we do not own, no state change
    MIGRATE = "migrate"               # sender side of a migration to `node`
    WRITE_START = "write_start"       # restart/migrate* with nothing to do here: record start
    WRITE_STOP = "write_stop"         # shutdown of a VM that runs nowhere: record stop


# Actions after which only the VM's status may need correcting.
IDLE = (Action.NONE, Action.WAIT, Action.ENSURE)


@dataclass(frozen=True)
class Observation:
    """Everything decide() needs about one VM, as seen from one node."""

    state: str
    node: str
    running_here: bool
    running_elsewhere: bool = False   # another live node reports it running
    incoming: bool = False            # a live sender is migrating it to this node right now


def decide(me: str, obs: Observation) -> Action:
    """PVC's who-acts table (pvc-facts §4.2) as a pure function."""
    state, owner = obs.state, obs.node == me
    if obs.incoming and owner:
        return Action.WAIT            # the domain here may be the paused migration target
    if obs.running_here:
        if state in NEVER_RUN:
            return Action.TERMINATE
        if not owner:
            if state in VM_MIGRATE_STATES:
                return Action.MIGRATE
            if state == "shutdown":
                return Action.SHUTDOWN_AWAY
            return Action.TERMINATE
        return {
            "start": Action.ENSURE,
            "restart": Action.RESTART,
            "shutdown": Action.SHUTDOWN,
            "stop": Action.STOP,
        }.get(state, Action.WRITE_START if state in VM_MIGRATE_STATES else Action.NONE)
    if not owner:
        return Action.NONE
    if state == "start":
        return Action.WAIT if obs.running_elsewhere else Action.START
    if state == "restart":
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_START
    if state == "shutdown":
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_STOP
    if state in VM_MIGRATE_STATES:
        # Nothing to receive when it runs nowhere else (a dead sender, a stopped VM): start here.
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_START
    return Action.NONE


def observe(me: str, record: VMRecord, status: NodeVMStatus, running_here: bool,
            alive: Callable[[str], bool]) -> Observation:
    """Build the Observation from the record, the status document and this hypervisor.

    A claim that the VM runs on another node counts even when that node's session is gone: the
    node may still run it (a dead pvcnoded leaves its QEMUs running). Only that node itself (it
    corrects its own claims) or the fencing chain, once the node is fenced (`pvc.node.fencing`),
    clears it."""
    elsewhere = status.running and status.node not in ("", me)
    sender = status.migrating_from
    incoming = status.migrating_to == me and sender not in ("", me) and alive(sender)
    return Observation(record.state, record.node, running_here, elsewhere, incoming)
