"""Provisioner: create a VM from a profile and follow its job live (cancel it); OVA images (list,
detail, remove, upload).

Creating is `POST /provisioner/create`'s own code (pvc.api.routers.provisioner_jobs.check_create,
then `tasks.submit` of a provisioner.create task on the primary): the same checks, including the
refusal of a profile whose system template no node could run, before anything is queued. A job's
page shows the task's state, stage (progress current/total), status and log over SSE, as the tasks
pages do, and Cancel is `DELETE /provisioner/status/<id>`'s `tasks.cancel`.

OVAs upload through the API's own route (`POST /api/v1/provisioner/ova/<name>`, which streams the
archive to a spooled file under `api.max_upload_size`): static/js/provisioner-upload.js sends it
with XHR (upload progress events drive the bar) after `POST /provisioner/ovas/check` has run the
upload's own checks (`ova.check_ova_request`: name, pool, the OVA script), so a refusal comes
before any byte is sent. Removal is `prov.remove_ova` with the API's storage adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from pvc.api.common import get_storage
from pvc.api.routers import provisioner_jobs as api_jobs
from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, next_path, zk_of
from pvc.api.web.pages.provisioner import (
    BASE,
    attempt,
    form_page,
    form_values,
    job_row,
    lines,
    q,
    redirect_with,
    refusal,
)
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import ova as ova_mod
from pvc.cluster import provisioner as prov
from pvc.cluster import tasks as tasks_mod
from pvc.core import schema
from pvc.core.errors import PVCError
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE
from pvc.core.zk import ZK

router = ui_router()

CREATE_FORM = ("name", "profile", "arg", "define_vm", "start_vm")
JOB_FRAGMENTS = {"job-info": "provisioner/_job_info.html", "job-log": "provisioner/_job_log.html",
                 "job-cancel": "provisioner/_job_cancel.html"}
OVA_FORM = ("name", "pool", "file")


# -- create a VM from a profile ------------------------------------------------------------------

def create_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    profiles = prov.list_profiles(zk)
    return {"profiles": profiles, "values": values or {"define_vm": True, "start_vm": True},
            "stages": PROVISION_STAGES}


def _create(zk: ZK, values: Mapping[str, Any]) -> str:
    """Queue the job as `POST /provisioner/create` does; its task id."""
    params = api_jobs.CreateInputs(name=values["name"], profile=values["profile"],
                                   define_vm=values["define_vm"], start_vm=values["start_vm"],
                                   arg=lines(values["arg"]))
    args = api_jobs.check_create(zk, params)
    task = tasks_mod.submit(zk, PROVISIONER_CREATE, args, target=tasks_mod.PRIMARY, total=PROVISION_STAGES)
    return task.id


@router.get(f"{BASE}/create")
def create_form(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    context = create_context(zk)
    chosen = request.query_params.get("profile", "")
    if chosen:
        context["values"] = {**context["values"], "profile": chosen}
    return form_page(request, user, "provisioner/create.html", context)


@router.post(f"{BASE}/create")
async def create(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, ("name", "profile", "arg"), ("define_vm", "start_vm"))
    zk = zk_of(request)
    try:
        task_id = await run_in_threadpool(_create, zk, values)
    except PVCError as exc:
        context = await run_in_threadpool(create_context, zk, values)
        return form_page(request, user, "provisioner/create.html", context, exc, CREATE_FORM, "create")
    text = (f'Queued provisioner job {task_id}: VM "{values["name"]}" from profile "{values["profile"]}" '
            f"(it runs on the primary's worker).")
    return redirect_with(request, user, text, f"{BASE}/jobs/{q(task_id)}")


# -- one job -----------------------------------------------------------------------------------------

def job_data(zk: ZK, task_id: str) -> dict[str, Any]:
    task = api_jobs._job(zk, task_id)                   # 404 unless it is a provisioner job
    args = task.args or {}
    return {"job": job_row(task, nodes_mod.primary_node(zk)), "task": task,
            "log_lines": tasks_mod.task_log(zk, task_id),
            "define_vm": bool(args.get("define_vm", True)), "start_vm": bool(args.get("start_vm", True)),
            "script_args": list(args.get("script_run_args") or []), "result": task.result}


@router.get(BASE + "/jobs/{task_id}")
def job_detail(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    context = {**job_data(zk_of(request), task_id), "base": BASE, "q": q}
    return render.page(request, "provisioner/job.html", context, user=user, active="provisioner",
                       live=f"/events/provisioner/jobs/{q(task_id)}")


@router.get("/events/provisioner/jobs/{task_id}")
async def job_events(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(api_jobs._job, zk, task_id)             # 404 for what is not a job
    view = live.View(lambda: job_data(zk, task_id), JOB_FRAGMENTS,
                     watch=(schema.task(task_id), schema.task_log(task_id)))
    return live.stream(request, user, view)


@router.post(BASE + "/jobs/{task_id}/cancel")
async def job_cancel(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(api_jobs._job, zk, task_id)
    text = await run_in_threadpool(tasks_mod.cancel, zk, task_id)
    return action_done(request, user, text, await next_path(request, f"{BASE}/jobs/{q(task_id)}"))


# -- OVA images ----------------------------------------------------------------------------------------

def ovas_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    ovas = prov.list_ovas(zk)
    script = next((s for s in ova_mod.OVA_SCRIPTS if zk.exists(schema.script(s))), None)
    return {"ovas": ovas, "pools": sorted(zk.children(schema.CEPH_POOLS)), "ova_script": script,
            "values": values or {}}


@router.get(f"{BASE}/ovas")
def ova_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/ovas.html", ovas_context(zk_of(request)))


@router.post(f"{BASE}/ovas/check")
async def ova_check(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """The upload's own checks before any byte is sent (the upload script asks; JSON answer)."""
    values = await form_values(request, ("name", "pool"))
    try:
        name, pool, _script = await run_in_threadpool(ova_mod.check_ova_request, zk_of(request),
                                                      values["name"], values["pool"])
    except PVCError as exc:
        if exc.status >= 500:
            raise
        field = exc.message.split(":", 1)[0] if ":" in exc.message else ""
        return JSONResponse({"ok": False, "message": exc.message,
                             "field": field if field in OVA_FORM else ""}, status_code=exc.status)
    return JSONResponse({"ok": True, "url": f"/api/v1/provisioner/ova/{q(name)}?pool={q(pool)}",
                         "next": f"{BASE}/ovas/{q(name)}"})


@router.get(BASE + "/ovas/{name}")
def ova_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    item = prov.ova_item(zk, name)
    context = {"ova": item, "profiles": prov.profiles_using(zk, "ova", item["name"]),
               "system_templates": [t["name"] for t in prov.list_system_templates(zk)
                                    if t.get("ova") == name]}
    return form_page(request, user, "provisioner/ova.html", context)


@router.post(BASE + "/ovas/{name}/remove")
async def ova_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    """`DELETE /provisioner/ova/<ova>`: its volumes, then its document, profile and system template."""
    zk = zk_of(request)
    try:
        await run_in_threadpool(prov.get_ova, zk, name)
    except PVCError as exc:
        return refusal(request, user, exc, f"{BASE}/ovas")
    storage = await get_storage(request)
    text, exc = await attempt(prov.remove_ova, zk, name, storage)
    if exc is not None:
        return refusal(request, user, exc, f"{BASE}/ovas/{q(name)}")
    return redirect_with(request, user, text or "", f"{BASE}/ovas")
