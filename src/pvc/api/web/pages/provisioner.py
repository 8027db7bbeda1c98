"""Provisioner: the overview, userdata documents, scripts and profiles (templates are in
provisioner_templates, creating VMs, jobs and OVAs in provisioner_jobs).

Every read and write is a function behind the API's provisioner routes
(pvc.api.routers.provisioner: `prov.USERDATA` / `prov.SCRIPTS` (TextDocuments), `prov.list_profiles`,
`add_profile`, `modify_profile`, `remove_profile`, ...), so the UI validates and refuses exactly as
the API does. Forms are plain posts: a refusal renders the same page again with what was typed and
the API's message beside the field it names (its "<field>: ..." prefix); a success redirects with
the message. Removals use the `action()` button (htmx in place, a plain form without scripts).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pvc.api.web import flashes, live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import zk_of
from pvc.api.web.uierrors import is_htmx
from pvc.cluster import provisioner as prov
from pvc.cluster import tasks as tasks_mod
from pvc.core import vocabulary
from pvc.core.errors import PVCError
from pvc.core.taskkinds import PROVISIONER_CREATE
from pvc.core.vocabulary import TASK_FINISHED
from pvc.core.zk import ZK

router = ui_router()

BASE = "/provisioner"
JOBS_SHOWN = 20
OVERVIEW_FRAGMENTS = {"prov-jobs": "provisioner/_jobs.html"}
PROFILE_FORM = ("name", "profile_type", "system_template", "network_template", "storage_template",
                "userdata", "script", "ova", "arg")


# -- what every provisioner page shares ------------------------------------------------------------

def q(name: str) -> str:
    """A name as one path segment."""
    return urllib.parse.quote(str(name), safe="")


def error_field(message: str, fields: Sequence[str]) -> str | None:
    """The form field a refusal names ("vcpus: ..." -> vcpus; "profile (system template x): ..." ->
    profile), to show it beside that field; None: shown above the form."""
    prefix = message.split(":", 1)[0].strip()
    if " " in prefix:
        prefix = prefix.split(" ", 1)[0]
    return prefix if prefix in fields else None


async def form_values(request: Request, names: Sequence[str], checks: Sequence[str] = ()) -> dict[str, Any]:
    """The posted text fields (stripped; missing ones "") and checkboxes (True when ticked)."""
    form = await request.form()
    values: dict[str, Any] = {}
    for name in names:
        value = form.get(name)
        values[name] = value.strip() if isinstance(value, str) else ""
    for name in checks:
        values[name] = bool(form.get(name))
    return values


async def raw_text(request: Request, name: str) -> str:
    """A textarea as typed (a script's indentation matters), line ends as the API receives them."""
    form = await request.form()
    value = form.get(name)
    return value.replace("\r\n", "\n") if isinstance(value, str) else ""


def lines(text: str) -> list[str]:
    return [line.strip() for line in str(text).splitlines() if line.strip()]


def redirect_with(request: Request, user: UIUser, text: str, target: str, kind: str = "ok") -> Response:
    """Go to `target` with a message there (htmx: HX-Redirect; a plain form: 303)."""
    flashes.put(request, user, kind, text)
    if is_htmx(request):
        return HTMLResponse("", headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def refusal(request: Request, user: UIUser, exc: PVCError, back: str) -> Response:
    """A refused removal: its message in the page's message area (htmx), or back on the page."""
    if exc.status >= 500:
        raise exc
    if is_htmx(request):
        return HTMLResponse(render.fragment("_flash.html", {"flash": flashes.Flash("bad", exc.message)}),
                            status_code=exc.status)
    flashes.put(request, user, "bad", exc.message)
    return RedirectResponse(back, status_code=303)


def form_page(request: Request, user: UIUser, template: str, context: Mapping[str, Any],
              exc: PVCError | None = None, fields: Sequence[str] = (), form: str = "") -> Response:
    """A page with its forms; after a refusal, `form` names the form that was refused and its
    message goes beside the field it names (status as the API's)."""
    error = None if exc is None else exc.message
    status = 200 if exc is None else exc.status
    if exc is not None and exc.status >= 500:
        raise exc
    full = {"error": error, "error_field": error_field(error, fields) if error else None, "form": form,
            "base": BASE, "q": q, **context}
    return render.page(request, template, full, status=status, user=user, active="provisioner")


async def attempt(call: Callable[..., str], *args: Any, **kwargs: Any) -> tuple[str | None, PVCError | None]:
    """Run a cluster write in a worker thread: (its message, None) or (None, the refusal)."""
    try:
        return await run_in_threadpool(call, *args, **kwargs), None
    except PVCError as exc:
        if exc.status >= 500:
            raise
        return None, exc


# -- the overview ----------------------------------------------------------------------------------

def job_row(task: Any, primary: str | None = None) -> dict[str, Any]:
    args = task.args or {}
    return {"id": task.id, "state": task.state, "status": task.status, "current": task.current,
            "total": task.total, "vm_name": args.get("vm_name", ""), "vm_profile": args.get("vm_profile", ""),
            "created": task.created, "finished_state": task.state in TASK_FINISHED,
            "run_on": tasks_mod.run_on(task, primary)}


def jobs_data(zk: ZK) -> dict[str, Any]:
    """The newest provisioning jobs (the tasks `GET /provisioner/status?all=true` lists)."""
    jobs = [t for t, _v in tasks_mod.load_tasks(zk) if t.kind == PROVISIONER_CREATE]
    jobs.reverse()
    return {"jobs": [job_row(t) for t in jobs[:JOBS_SHOWN]], "jobs_total": len(jobs),
            "jobs_active": sum(1 for t in jobs if t.state not in TASK_FINISHED)}


def overview_data(zk: ZK) -> dict[str, Any]:
    counts = {
        "system": len(prov.list_system_templates(zk)), "network": len(prov.list_network_templates(zk)),
        "storage": len(prov.list_storage_templates(zk)), "userdata": len(prov.USERDATA.list_all(zk)),
        "scripts": len(prov.SCRIPTS.list_all(zk)), "profiles": len(prov.list_profiles(zk)),
        "ovas": len(prov.list_ovas(zk)),
    }
    return {"counts": counts, **jobs_data(zk)}


@router.get(BASE)
def overview(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "provisioner/overview.html", {**overview_data(zk_of(request)), "base": BASE},
                       user=user, active="provisioner", live="/events/provisioner")


@router.get("/events/provisioner")
async def overview_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    return live.stream(request, user, live.View(lambda: jobs_data(zk), OVERVIEW_FRAGMENTS))


# -- userdata and scripts --------------------------------------------------------------------------

DOC_KINDS: dict[str, dict[str, Any]] = {
    "userdata": {"docs": prov.USERDATA, "title": "Userdata", "one": "userdata document",
                 "help": "A cloud-init document: #cloud-config (a YAML mapping), a script (#!), another "
                         "cloud-init format, or a MIME multipart document. Served to the VM by the "
                         "metadata service."},
    "scripts": {"docs": prov.SCRIPTS, "title": "Scripts", "one": "script",
                "help": "Python run by the provisioner job: it must define class VMBuilderScript(VMBuilder). "
                        "It is only parsed when stored, never run here."},
}
DOC_FIELDS = ("name", "data")


def doc_list_context(zk: ZK, kind: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec = DOC_KINDS[kind]
    docs: prov.TextDocuments = spec["docs"]
    items = docs.list_all(zk)
    users = {d["name"]: prov.profiles_using(zk, docs.kind, d["name"]) for d in items}
    return {"kind": kind, "spec": spec, "items": items, "text_key": docs.kind, "users": users,
            "builtin": docs.builtin, "values": values or {}}


def doc_detail_context(zk: ZK, kind: str, name: str,
                       values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec = DOC_KINDS[kind]
    docs: prov.TextDocuments = spec["docs"]
    item = docs.item(zk, name)
    return {"kind": kind, "spec": spec, "item": item, "text": item[docs.kind], "builtin": docs.builtin,
            "users": prov.profiles_using(zk, docs.kind, item["name"]), "values": values or {}}


def _doc_routes(kind: str) -> None:
    spec = DOC_KINDS[kind]
    docs: prov.TextDocuments = spec["docs"]
    path = f"{BASE}/{kind}"

    @router.get(path, name=f"ui_{kind}_list")
    def doc_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
        return form_page(request, user, "provisioner/documents.html", doc_list_context(zk_of(request), kind))

    @router.post(path, name=f"ui_{kind}_add")
    async def doc_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
        values = await form_values(request, ("name",))
        values["data"] = await raw_text(request, "data")
        zk = zk_of(request)
        text, exc = await attempt(docs.add, zk, values["name"], values["data"])
        if exc is not None:
            context = await run_in_threadpool(doc_list_context, zk, kind, values)
            return form_page(request, user, "provisioner/documents.html", context, exc, DOC_FIELDS, "add")
        return redirect_with(request, user, text or "", f"{path}/{q(values['name'])}")

    @router.get(path + "/{name}", name=f"ui_{kind}_detail")
    def doc_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
        context = doc_detail_context(zk_of(request), kind, name)
        return form_page(request, user, "provisioner/document.html", context)

    @router.post(path + "/{name}", name=f"ui_{kind}_modify")
    async def doc_modify(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
        values = {"data": await raw_text(request, "data")}
        zk = zk_of(request)
        text, exc = await attempt(docs.modify, zk, name, values["data"])
        if exc is not None:
            context = await run_in_threadpool(doc_detail_context, zk, kind, name, values)
            return form_page(request, user, "provisioner/document.html", context, exc, DOC_FIELDS, "modify")
        return redirect_with(request, user, text or "", f"{path}/{q(name)}")

    @router.post(path + "/{name}/remove", name=f"ui_{kind}_remove")
    async def doc_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
        text, exc = await attempt(docs.remove, zk_of(request), name)
        if exc is not None:
            return refusal(request, user, exc, f"{path}/{q(name)}")
        return redirect_with(request, user, text or "", path)


for _kind in DOC_KINDS:
    _doc_routes(_kind)


# -- profiles --------------------------------------------------------------------------------------

def profile_choices(zk: ZK) -> dict[str, Any]:
    """The names a profile may use, for its form's selects."""
    return {"choices": {
        "system_template": [t["name"] for t in prov.list_system_templates(zk)],
        "network_template": [t["name"] for t in prov.list_network_templates(zk)],
        "storage_template": [t["name"] for t in prov.list_storage_templates(zk)],
        "userdata": [d["name"] for d in prov.USERDATA.list_all(zk)],
        "script": [d["name"] for d in prov.SCRIPTS.list_all(zk)],
        "ova": [o["name"] for o in prov.list_ovas(zk)],
    }, "profile_types": vocabulary.PROFILE_TYPES}


def profiles_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"profiles": prov.list_profiles(zk), "values": values or {"profile_type": "provisioner"},
            **profile_choices(zk)}


def profile_context(zk: ZK, name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    item = prov.profile_item(zk, name)
    if values is None:
        values = {ref: "" if item[ref] == prov.NA else item[ref] for ref in prov.PROFILE_REFS}
        values.update(profile_type=item["type"], arg="\n".join(item["arguments"]))
    return {"profile": item, "values": values, "na": prov.NA, **profile_choices(zk)}


def _profile_add(zk: ZK, values: Mapping[str, Any]) -> str:
    return prov.add_profile(zk, values["name"], values["profile_type"], values["system_template"],
                            network_template=values["network_template"],
                            storage_template=values["storage_template"], userdata=values["userdata"],
                            script=values["script"], ova=values["ova"], arguments=lines(values["arg"]))


def _profile_modify(zk: ZK, name: str, values: Mapping[str, Any]) -> str:
    """Every field as the form shows it: an empty select clears its reference (as "" does in
    `PUT /provisioner/profile/<p>`), no arguments clears them ([""])."""
    changes = {field: values[field] for field in ("profile_type", *prov.PROFILE_REFS)}
    return prov.modify_profile(zk, name, **changes, arguments=lines(values["arg"]) or [""])


@router.get(f"{BASE}/profiles")
def profile_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/profiles.html", profiles_context(zk_of(request)))


@router.post(f"{BASE}/profiles")
async def profile_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, PROFILE_FORM)
    zk = zk_of(request)
    text, exc = await attempt(_profile_add, zk, values)
    if exc is not None:
        context = await run_in_threadpool(profiles_context, zk, values)
        return form_page(request, user, "provisioner/profiles.html", context, exc, PROFILE_FORM, "add")
    return redirect_with(request, user, text or "", f"{BASE}/profiles/{q(values['name'])}")


@router.get(BASE + "/profiles/{name}")
def profile_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/profile.html", profile_context(zk_of(request), name))


@router.post(BASE + "/profiles/{name}")
async def profile_modify(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, PROFILE_FORM)
    zk = zk_of(request)
    text, exc = await attempt(_profile_modify, zk, name, values)
    if exc is not None:
        context = await run_in_threadpool(profile_context, zk, name, values)
        return form_page(request, user, "provisioner/profile.html", context, exc, PROFILE_FORM,
                         "modify")
    return redirect_with(request, user, text or "", f"{BASE}/profiles/{q(name)}")


@router.post(BASE + "/profiles/{name}/remove")
async def profile_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    text, exc = await attempt(prov.remove_profile, zk_of(request), name)
    if exc is not None:
        return refusal(request, user, exc, f"{BASE}/profiles/{q(name)}")
    return redirect_with(request, user, text or "", f"{BASE}/profiles")
