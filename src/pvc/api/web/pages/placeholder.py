"""Pages in the navigation that are not built yet: a plain "not yet" page instead of a broken link."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pvc.api.web import nav, render
from pvc.api.web.guard import UIUser, ui_router, ui_user


def _page(item: nav.NavItem):  # type: ignore[no-untyped-def]
    def not_yet(request: Request, user: UIUser = Depends(ui_user)) -> Response:
        return render.page(request, "notyet.html", {"item": item}, user=user, active=item.key)

    return not_yet


def router() -> APIRouter:
    out = ui_router()
    for item in nav.NAV:
        if not item.built:
            out.add_api_route(item.path, _page(item), methods=["GET"], name=f"notyet_{item.key}")
    return out
