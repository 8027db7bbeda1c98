"""The web UI, served by pvcapid at `/` (DESIGN D17; docs/webui.md).

Same origin and same authentication as the API: an API token opens the API's server-side session.
Layout:

- `guard.py`    sessions, CSRF tokens, same-origin checks; `ui_router()` for every page
- `headers.py`  Content-Security-Policy and the other security headers; cookies; the API's
                cross-site rule
- `render.py`   the Jinja2 environment (autoescape always on), filters, `page()` and `fragment()`
- `live.py`     server-sent events: views re-rendered when ZooKeeper changes
- `flashes.py`  one-shot messages after a redirect; `uierrors.py` HTML errors on UI paths
- `nav.py`      the navigation; `pages/` one module per area
Templates and static files are in `pvc.web` (src/pvc/web/).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

from pvc.api.limits import LOGIN_MAX_BODY
from pvc.api.web import live, pages, uierrors
from pvc.api.web.headers import UIHeadersMiddleware
from pvc.api.web.render import STATIC_PREFIX
from pvc.web import STATIC


def install(app: FastAPI) -> None:
    """Mount the UI on the API app: after the API's routers and error handlers (create_app)."""
    app.state.live = live.Hub(app.state.zk)
    for router in pages.routers():
        app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="static")
    app.add_middleware(UIHeadersMiddleware, secure_cookies=app.state.settings.api.ssl.enabled)
    uierrors.install(app)
    # The login form is open to anyone: the same small body cap as /api/v1/login.
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.path_format == "/login":
            app.state.limits.add(route.path_regex, route.methods, LOGIN_MAX_BODY, "fixed for /login")
