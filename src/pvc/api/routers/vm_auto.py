"""POST /vm/autobackup and POST /vm/automirror: queue the cluster-wide run on the primary (202 and a
task, as upstream). This router is included before the VM router, so these static paths are never
taken for `POST /vm/{vm}` (a VM definition).

A cluster without the `autobackup:` or `automirror:` section in pvc.conf answers 404 naming the
section, and queues nothing. `email_recipients` takes repeated keys (what upstream's CLI sends) and
comma-separated values.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_settings, get_zk, responses, task_accepted
from pvc.api.errors import ArgumentError
from pvc.api.models import TaskAccepted
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.core import autobackup as ab
from pvc.core.config import Settings
from pvc.core.errors import NotFound
from pvc.core.taskkinds import CLUSTER_AUTOBACKUP, CLUSTER_AUTOMIRROR
from pvc.core.zk import ZK

router = APIRouter(prefix="/vm", tags=["vm"], dependencies=[Depends(require_auth)])

RECIPIENTS_HELP = ("Send an email report to these addresses (repeat the key, or separate them with "
                   "commas); the report goes through the primary's /usr/sbin/sendmail")


class AutobackupInputs(Inputs):
    force_full: Bool = Field(False, description="Make a full backup of every VM, whatever full_interval says")
    email_recipients: list[str] = Field(default_factory=list, description=RECIPIENTS_HELP)
    cleanup: Bool = Field(False, description="Also remove orphan autobackup (ab...) snapshots: those no "
                                             "retained backup accounts for")


class AutomirrorInputs(Inputs):
    email_recipients: list[str] = Field(default_factory=list, description=RECIPIENTS_HELP)
    email_errors_only: Bool = Field(False, description="Send the report only when a VM or destination failed")


def _recipients(values: list[str]) -> list[str]:
    try:
        return ab.split_recipients(values)
    except ValueError as exc:
        raise ArgumentError({"email_recipients": str(exc)}) from None


@router.post("/autobackup", summary="Run the VM autobackup of the tagged VMs now (a task on the primary)",
             responses=responses(TaskAccepted, 202, 404))
def vm_autobackup(params: AutobackupInputs = inputs(AutobackupInputs), zk: ZK = Depends(get_zk),
                  settings: Settings = Depends(get_settings)) -> JSONResponse:
    recipients = _recipients(params.email_recipients)
    if settings.autobackup is None:
        raise NotFound("Autobackup is not configured on this cluster: add an 'autobackup' section to "
                       "pvc.conf on the coordinators; nothing was done.")
    args = {"force_full": params.force_full, "email_recipients": recipients, "cleanup": params.cleanup}
    task = tasks_mod.submit(zk, CLUSTER_AUTOBACKUP, args)
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.post("/automirror", summary="Run the VM automirror of the tagged VMs now (a task on the primary)",
             responses=responses(TaskAccepted, 202, 404))
def vm_automirror(params: AutomirrorInputs = inputs(AutomirrorInputs), zk: ZK = Depends(get_zk),
                  settings: Settings = Depends(get_settings)) -> JSONResponse:
    recipients = _recipients(params.email_recipients)
    if settings.automirror is None:
        raise NotFound("Automirror is not configured on this cluster: add an 'automirror' section to "
                       "pvc.conf on the coordinators; nothing was done.")
    task = tasks_mod.submit(zk, CLUSTER_AUTOMIRROR, {"email_recipients": recipients,
                                                     "email_errors_only": params.email_errors_only})
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))
