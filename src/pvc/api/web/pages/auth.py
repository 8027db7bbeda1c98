"""Login and logout: an API token opens the API's own server-side session (pvc.api.sessions).

The session cookie is the one `POST /api/v1/login` sets (same name and flags), so the UI and
the API share one authentication. Failed logins count against the API's per-address limit.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from pvc.api.auth import SESSION_COOKIE, Authenticator, TooManyAttempts
from pvc.api.web import render
from pvc.api.web.guard import (
    UIUser,
    csrf_token,
    local_path,
    pre_session_subject,
    public_router,
    ui_router,
    ui_user,
)

router = public_router()
private = ui_router()

TOKEN_HELP = ("An API token of this cluster: an entry of api.token in pvc.conf, or the token in "
              "api.token_file (/etc/pvc/api-token by default) on a coordinator.")


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


def _login_page(request: Request, next_target: str, error: str | None = None, status: int = 200,
                headers: dict[str, str] | None = None) -> Response:
    notice = "You are logged out." if request.query_params.get("out") == "1" else None
    return render.page(request, "login.html", {
        "login_csrf": csrf_token(pre_session_subject(request)), "next": next_target, "error": error,
        "notice": notice, "token_help": TOKEN_HELP,
    }, status=status, headers=headers)


@router.get("/login")
async def login_form(request: Request) -> Response:
    auth = _auth(request)
    target = local_path(request.query_params.get("next"))
    session_id = request.cookies.get(SESSION_COOKIE)
    if not auth.enabled or (session_id and await run_in_threadpool(auth.session_valid, session_id)):
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target)


@router.post("/login")
async def login(request: Request) -> Response:
    auth = _auth(request)
    form = await request.form()
    raw_next = form.get("next")
    target = local_path(raw_next if isinstance(raw_next, str) else None)
    if not auth.enabled:
        return RedirectResponse(target, status_code=303)
    client = request.client.host if request.client else "unknown"
    try:
        auth.limiter.check(client)
    except TooManyAttempts as exc:
        return _login_page(request, target, exc.message, 429, {"Retry-After": str(exc.retry_after)})
    token = form.get("token")
    if not isinstance(token, str) or not token.strip():
        return _login_page(request, target, "Enter an API token.", 400)
    if not auth.token_valid(token.strip()):
        auth.limiter.failed(client)
        return _login_page(request, target, "That token is not valid for this cluster.", 401)
    session_id = await run_in_threadpool(auth.open_session, token.strip())
    await run_in_threadpool(auth.close_session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=auth.session_lifetime, path="/",
                        httponly=True, samesite="strict", secure=auth.secure_cookie)
    return response


@private.post("/logout")
async def logout(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    auth = _auth(request)
    await run_in_threadpool(auth.close_session, user.session_id)
    response = RedirectResponse("/login?out=1" if auth.enabled else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=auth.secure_cookie)
    return response
