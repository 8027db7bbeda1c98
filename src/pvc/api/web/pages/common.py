"""What every UI page module shares: the ZooKeeper session, form inputs, action answers."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pvc.api.web import flashes, render
from pvc.api.web.guard import UIUser, local_path
from pvc.api.web.uierrors import is_htmx
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK


def zk_of(request: Request) -> ZK:
    return request.app.state.zk


async def form_field(request: Request, name: str, choices: tuple[str, ...] | None = None,
                     default: str | None = None) -> str:
    """One text field of the posted form (the guard parsed it already), checked against `choices`."""
    form = await request.form()
    value = form.get(name, default)
    if not isinstance(value, str) or value == "":
        raise InvalidInput(f"{name}: required")
    if choices is not None and value not in choices:
        raise InvalidInput(f"{name}: '{value}' is not one of {', '.join(choices)}")
    return value


async def next_path(request: Request, default: str) -> str:
    """Where a form sent without JavaScript returns to (its `next` field, a local path only)."""
    form = await request.form()
    value = form.get("next")
    return local_path(value if isinstance(value, str) else None, default)


def action_done(request: Request, user: UIUser, text: str, back: str, kind: str = "ok") -> Response:
    """The answer to an action: for htmx the message for the page's message area; for a plain
    form a redirect back (303) with the message shown once there."""
    if is_htmx(request):
        return HTMLResponse(render.fragment("_flash.html", {"flash": flashes.Flash(kind, text)}))
    flashes.put(request, user, kind, text)
    return RedirectResponse(back, status_code=303)
