"""The pvcapid application: PVC API v1 (DESIGN D4) over FastAPI.

`create_app(settings, zk)` wires routers, authentication, server-side sessions, body-size
limits and error handlers, and serves an OpenAPI 3 document at /api/v1/openapi.json that is built
from the routes themselves: inputs (query string and form body) come from each route's `Inputs`
model, the 400/401/503 answers from the dependencies that can produce them and the 413 answers
from the body caps, so the document cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from pvc.adapters.ceph import Storage
from pvc.api import errors, web
from pvc.api.auth import API_KEY_HEADER, SESSION_COOKIE, Authenticator, redact_access_log, require_auth
from pvc.api.common import DESCRIPTIONS, PREFIX, STORAGE_503, get_storage, get_zk
from pvc.api.limits import LOGIN_MAX_BODY, BodyLimitMiddleware, BodyLimits, human
from pvc.api.params import MAX_PART_SIZE, inputs_model, openapi_inputs, required_inputs
from pvc.api.routers import cluster, faults, nodes, provisioner_jobs, provisioner_ova, root, tasks, vms
from pvc.api.routers import metrics as metrics_routes
from pvc.api.routers import networks as network_routes
from pvc.api.routers import provisioner as provisioner_routes
from pvc.api.routers import sriov as sriov_routes
from pvc.api.routers import storage as storage_routes
from pvc.api.routers import vm_auto as vm_auto_routes
from pvc.api.routers import vm_backups as vm_backup_routes
from pvc.api.routers import vm_send as vm_send_routes
from pvc.api.routers import vm_snapshots as vm_snapshot_routes
from pvc.core.config import Settings
from pvc.core.zk import ZK

API_VERSION = "1.0"
SESSION_PATHS = (f"{PREFIX}/login", f"{PREFIX}/logout")
# Routes whose bodies are disk images or OVAs (streamed to disk): capped by api.max_upload_size.
UPLOAD_PATHS = (f"{PREFIX}/storage/ceph/volume/{{pool}}/{{volume}}/upload", f"{PREFIX}/provisioner/ova",
                f"{PREFIX}/provisioner/ova/{{ova}}",
                # snapshot receive: whole volumes and batches of extents, and a VM item with its snapshots
                f"{PREFIX}/vm/{{vm}}/snapshot/receive/block", f"{PREFIX}/vm/{{vm}}/snapshot/receive/config")
# A whole-cluster backup travels in one form field of at most MAX_PART_SIZE.
RESTORE_PATH = f"{PREFIX}/restore"
MESSAGE_REF = {"$ref": "#/components/schemas/Message"}


def create_app(settings: Settings, zk: ZK, storage: Storage | None = None) -> FastAPI:
    """The API application; `storage` replaces the Ceph adapter made from settings (tests)."""
    app = FastAPI(
        title="PVC API",
        version=API_VERSION,
        description="PVC cluster manager HTTP API v1, wire-compatible with PVC 1.0.x. Every input can "
                    "be given in the query string or as a form field (urlencoded or multipart).",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.zk = zk
    app.state.storage = storage
    app.state.auth = Authenticator(settings.api, zk)
    redact_access_log()      # a token a client puts in a URL anyway is not logged
    app.state.limits = BodyLimits(settings.api.max_body_size)
    app.add_middleware(BodyLimitMiddleware, limits=app.state.limits)
    errors.install(app)
    app.include_router(root.router, prefix=PREFIX)
    # Flask answered the prefix without its slash too (by redirect); answer it directly.
    app.add_api_route(PREFIX, root.api_root, methods=["GET"], include_in_schema=False)
    app.include_router(cluster.public, prefix=PREFIX)
    app.include_router(cluster.router, prefix=PREFIX)
    app.include_router(nodes.router, prefix=PREFIX)
    # before vms: POST /vm/autobackup and /vm/automirror are never taken for POST /vm/{vm}
    app.include_router(vm_auto_routes.router, prefix=PREFIX)
    app.include_router(vms.router, prefix=PREFIX)
    app.include_router(vm_snapshot_routes.router, prefix=PREFIX)
    app.include_router(vm_send_routes.router, prefix=PREFIX)
    app.include_router(vm_backup_routes.router, prefix=PREFIX)
    app.include_router(storage_routes.router, prefix=PREFIX)
    app.include_router(network_routes.router, prefix=PREFIX)
    app.include_router(sriov_routes.router, prefix=PREFIX)
    app.include_router(provisioner_routes.router, prefix=PREFIX)
    app.include_router(provisioner_jobs.router, prefix=PREFIX)
    app.include_router(provisioner_ova.router, prefix=PREFIX)
    app.include_router(faults.router, prefix=PREFIX)
    app.include_router(tasks.router, prefix=PREFIX)
    metrics_routes.install(app, PREFIX)
    _body_caps(app, settings)
    web.install(app)         # the web UI at / (DESIGN D17): its pages, static files, CSP, HTML errors
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _body_caps(app: FastAPI, settings: Settings) -> None:
    """The routes whose body cap is not api.max_body_size (matched by their own path regex)."""
    limits: BodyLimits = app.state.limits
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        if route.path_format in UPLOAD_PATHS:
            limits.add(route.path_regex, route.methods, settings.api.max_upload_size, "api.max_upload_size")
        elif route.path_format == f"{PREFIX}/login":
            limits.add(route.path_regex, route.methods, LOGIN_MAX_BODY, "fixed for /login")
        elif route.path_format == RESTORE_PATH:
            cap = max(settings.api.max_body_size, MAX_PART_SIZE + 1024 * 1024)
            limits.add(route.path_regex, route.methods, cap, "fixed for /restore")


def _too_large(app: FastAPI, route: Any, method: str) -> dict[str, Any]:
    limits: BodyLimits = app.state.limits
    cap, source = next(((r.cap, r.source) for r in limits.rules
                        if r.path is route.path_regex and method in r.methods),
                       (limits.default, limits.default_source))
    return {"description": f"The request body is larger than {human(cap)} ({source}); nothing was changed",
            "content": {"application/json": {"schema": MESSAGE_REF}}}


# -- OpenAPI -------------------------------------------------------------------------------------

def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _error(code: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[code], "content": {"application/json": {"schema": MESSAGE_REF}}}


def _files_in_body_only(params: list[dict[str, Any]], body: dict[str, Any] | None
                        ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A file input (format binary) can only be a multipart part: not a query parameter, and a
    route taking one takes multipart bodies only."""
    binary = {p["name"] for p in params if p.get("schema", {}).get("format") == "binary"}
    if not binary:
        return params, body
    if body is not None:
        content = body.get("content", {})
        body = {**body, "content": {k: v for k, v in content.items() if k == "multipart/form-data"}}
    return [p for p in params if p["name"] not in binary], body


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    auth_enabled = app.state.auth.enabled
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if "Message" not in schemas:
        schemas["Message"] = {"type": "object", "properties": {"message": {"type": "string"}},
                              "required": ["message"]}
    if auth_enabled:
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            "Session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                        "description": "Session id (random, server-side) set by POST /api/v1/login"},
        }
    # FastAPI keeps included routers nested; iter_route_contexts yields each effective route with
    # its prefix and router-level dependencies applied (what get_openapi itself walks).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        calls = list(_calls(route.dependant))
        model = next((m for m in map(inputs_model, calls) if m is not None), None)
        for method in route.methods:
            operation = doc["paths"][route.path_format][method.lower()]
            answers: dict[str, Any] = operation.setdefault("responses", {})
            answers.pop("422", None)
            if model is not None:
                params, body = openapi_inputs(model, method)
                params, body = _files_in_body_only(params, body)
                named = {p["name"] for p in params}
                operation["parameters"] = [
                    p for p in operation.get("parameters", []) if p["name"] not in named
                ] + params
                if body:
                    operation["requestBody"] = body
                required = required_inputs(model)
                if required:
                    operation["x-pvc-required-inputs"] = required
                answers.setdefault("400", _error(400))
            if "requestBody" in operation:
                answers.setdefault("413", _too_large(app, route, method))
            if route.path_format in SESSION_PATHS and not auth_enabled:
                operation["responses"] = {"302": {"description": DESCRIPTIONS[302]}}
                continue
            if auth_enabled and require_auth in calls:
                operation["security"] = [{"ApiKey": []}, {"Session": []}]
                answers.setdefault("401", _error(401))
            if get_storage in calls:
                answers.setdefault("503", {**_error(503), "description": STORAGE_503})
            if get_zk in calls:
                answers.setdefault("503", _error(503))
            for answer in answers.values():
                answer.get("content", {}).pop("text/plain", None)
    app.openapi_schema = doc
    return doc
