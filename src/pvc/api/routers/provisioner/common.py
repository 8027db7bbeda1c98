"""What the provisioner routers share: the list input, the 404 of an empty list, help text."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.common import ok
from pvc.api.params import Inputs
from pvc.core.errors import NotFound

NOT_FOUND = (404,)
LIMIT_HELP = "A regex on the name; fuzzy unless anchored with ^ or $"
CLEAR = "; an empty value removes it"


class LimitInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP)


def listing(items: list[dict[str, Any]], what: str) -> JSONResponse:
    """A list answer; an empty one is upstream's 404 "No <what> found."."""
    if not items:
        raise NotFound(f"No {what} found.")
    return ok(items)
