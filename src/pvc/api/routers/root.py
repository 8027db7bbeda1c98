"""The API root and session login/logout: open without authentication by design."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import Field

from pvc.api.auth import Authenticator, Unauthorized
from pvc.api.common import PREFIX, responses
from pvc.api.errors import message
from pvc.api.models import Message
from pvc.api.params import Inputs, inputs
from pvc.core.errors import InvalidInput

router = APIRouter(tags=["root"])


class LoginInputs(Inputs):
    token: str | None = Field(None, description="An API token from api.token[] in the configuration. "
                                                "Required when authentication is enabled.")


@router.get("/", summary="Return the PVC API version string", responses=responses())
async def api_root() -> JSONResponse:
    return message("PVC API version 1.0")


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


@router.post("/login", summary="Log in with an API token; sets a signed session cookie",
             responses=responses(Message, 200, 401))
async def login(request: Request, params: LoginInputs = inputs(LoginInputs)) -> Response:
    auth = _auth(request)
    if not auth.enabled:
        return RedirectResponse(f"{PREFIX}/", status_code=302)
    if params.token is None:
        raise InvalidInput("token: required (give it in the query string or as a form field)")
    if not auth.token_valid(params.token):
        raise Unauthorized("Authentication failed: the token is not valid.")
    auth.open_session(request, params.token)
    return message("Authentication successful")


@router.post("/logout", summary="End the session made by /login", responses=responses())
async def logout(request: Request) -> Response:
    auth = _auth(request)
    if not auth.enabled:
        return RedirectResponse(f"{PREFIX}/", status_code=302)
    auth.close_session(request)
    return message("Deauthentication successful")
