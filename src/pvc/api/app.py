"""The pvcapid application: PVC API v1 (DESIGN D4) over FastAPI.

`create_app(settings, zk)` wires routers, authentication, sessions and error handlers, and
serves an OpenAPI 3 document at /api/v1/openapi.json that is built from the routes themselves:
inputs (query string and form body) come from each route's `Inputs` model, and the 400/401/503
answers from the dependencies that can produce them, so the document cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.middleware.sessions import SessionMiddleware

from pvc.adapters.ceph import Storage
from pvc.api import errors
from pvc.api.auth import API_KEY_HEADER, SESSION_COOKIE, Authenticator, require_auth
from pvc.api.common import DESCRIPTIONS, PREFIX, STORAGE_503, get_storage, get_zk
from pvc.api.params import inputs_model, openapi_inputs, required_inputs
from pvc.api.routers import cluster, faults, nodes, provisioner_jobs, provisioner_ova, root, tasks, vms
from pvc.api.routers import networks as network_routes
from pvc.api.routers import provisioner as provisioner_routes
from pvc.api.routers import storage as storage_routes
from pvc.core.config import Settings
from pvc.core.zk import ZK

API_VERSION = "1.0"
SESSION_PATHS = (f"{PREFIX}/login", f"{PREFIX}/logout")
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
    app.state.auth = Authenticator(settings.api)
    if app.state.auth.enabled:
        app.add_middleware(
            SessionMiddleware,
            secret_key=app.state.auth.secret_key,
            session_cookie=SESSION_COOKIE,
            same_site="lax",
            https_only=settings.api.ssl.enabled,
        )
    errors.install(app)
    app.include_router(root.router, prefix=PREFIX)
    # Flask answered the prefix without its slash too (by redirect); answer it directly.
    app.add_api_route(PREFIX, root.api_root, methods=["GET"], include_in_schema=False)
    app.include_router(cluster.public, prefix=PREFIX)
    app.include_router(cluster.router, prefix=PREFIX)
    app.include_router(nodes.router, prefix=PREFIX)
    app.include_router(vms.router, prefix=PREFIX)
    app.include_router(storage_routes.router, prefix=PREFIX)
    app.include_router(network_routes.router, prefix=PREFIX)
    app.include_router(provisioner_routes.router, prefix=PREFIX)
    app.include_router(provisioner_jobs.router, prefix=PREFIX)
    app.include_router(provisioner_ova.router, prefix=PREFIX)
    app.include_router(faults.router, prefix=PREFIX)
    app.include_router(tasks.router, prefix=PREFIX)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
                        "description": "Signed session cookie set by POST /api/v1/login"},
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
