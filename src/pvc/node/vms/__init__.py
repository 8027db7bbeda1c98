"""The node's VM reconciler (DESIGN D2, D7), by responsibility:

* `decision`: who acts on a VM, as pure functions (`observe`, `decide`);
* `store`: the reconciler's view of ZooKeeper (`VMStore`, `ZKStore`) and the typed status and
  peer-node documents it reads;
* `context`: what the parts share (settings, this node, hypervisor, store, start veto);
* `actions`: start (guarded, rbd locks), power off and destroy of one domain;
* `migration`: the sender side of a migration;
* `flush`: flush and unflush of this node;
* `report`: a keepalive's statuses, stats, consoles and figures;
* `reconciler`: `VMReconciler`, the watches, per-VM jobs and passes that tie them together.
"""

from pvc.node.vms.context import ReconcilerSettings
from pvc.node.vms.decision import Action, Observation, decide, observe
from pvc.node.vms.reconciler import VMReconciler
from pvc.node.vms.store import NodeVMStatus, PeerNode, VMStore, ZKStore, status_of

__all__ = [
    "Action",
    "NodeVMStatus",
    "Observation",
    "PeerNode",
    "ReconcilerSettings",
    "VMReconciler",
    "VMStore",
    "ZKStore",
    "decide",
    "observe",
    "status_of",
]
