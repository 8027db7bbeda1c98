"""Request inputs the PVC way: every parameter may come from the query string or a form field.

Upstream PVC (flask-restful `reqparse`, `location=["args", "form"]`) reads each argument from the
query string and from form fields, and real clients use both: the CLI sends scalar options in the
query string and large blobs (`cluster_data`, `xml`, `data`) as form fields. A route declares its
inputs once, as a subclass of `Inputs`, and receives them validated with `inputs(Model)`:

    class NodeListInputs(Inputs):
        limit: str | None = Field(None, description="...")

    @router.get("/node")
    def node_list(params: NodeListInputs = inputs(NodeListInputs)) -> ...: ...

Bad input becomes `ArgumentError` before the route runs, so nothing is changed: HTTP 400 with
`{"message": {"<argument>": "<what is wrong>"}}`, the shape of upstream's flask-restful parser
(whose CLI prints `message` as it comes), with our own text naming what was given and what is
accepted. `openapi_inputs()` describes the same model as query
parameters and as a form request body for the OpenAPI document (see app.py).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, get_args, get_origin

from fastapi import Depends, Request
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from pvc.api.errors import ArgumentError
from pvc.core.errors import InvalidInput
from pvc.core.units import parse_bool

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Backups and VM XML travel as form fields; starlette's 1 MiB default per multipart part is too small.
MAX_PART_SIZE = 64 * 1024 * 1024
MAX_FIELDS = 10000


class Inputs(BaseModel):
    """Base of every route's input model: unknown parameters are ignored, as upstream does."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=False)


def _to_bool(value: Any) -> bool:
    try:
        return parse_bool(value)
    except InvalidInput:
        raise ValueError(f"'{value}' is not a boolean (use true or false)") from None


Bool = Annotated[bool, BeforeValidator(_to_bool)]
"""A boolean parsed like `strtobool` (true/false, yes/no, on/off, 1/0, t/f, y/n; any case)."""


def wire_names(name: str, field: FieldInfo) -> list[str]:
    """The parameter names a field answers to on the wire; the first is its documented name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str)]
        if names:
            return names
    if isinstance(alias, str):
        return [alias]
    return [field.alias or name]


def is_list(field: FieldInfo) -> bool:
    """List fields take every repeated key (`?tag=a&tag=b`); scalars take the first value."""
    annotation = field.annotation
    if get_origin(annotation) in (list, tuple, set):
        return True
    return any(get_origin(arg) in (list, tuple, set) for arg in get_args(annotation))


async def collect(request: Request) -> list[tuple[str, Any]]:
    """All (key, value) pairs of the query string, then of a form body if there is one."""
    items: list[tuple[str, Any]] = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in FORM_TYPES:
        # A malformed body makes starlette raise HTTPException(400), answered as JSON by errors.py.
        form = await request.form(max_fields=MAX_FIELDS, max_part_size=MAX_PART_SIZE)
        items.extend(form.multi_items())
    return items


def gather(model: type[Inputs], items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Map wire pairs onto the model's documented names (query first, like reqparse)."""
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        names = wire_names(name, field)
        values = [value for key, value in items if key in names]
        if not values:
            continue
        data[names[0]] = values if is_list(field) else values[0]
    return data


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(model: type[Inputs], exc: ValidationError) -> dict[str, str]:
    """{<argument>: <what is wrong>} for each problem; the argument is its wire name."""
    problems: dict[str, str] = {}
    for error in exc.errors():
        loc = error.get("loc") or ("(input)",)
        field = str(loc[0])
        kind = error["type"]
        given = error.get("input")
        ctx = error.get("ctx") or {}
        if kind == "missing":
            what = "required (give it in the query string or as a form field)"
        elif kind == "literal_error":
            choices = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
            what = f"'{_show(given)}' is not one of {choices}"
        elif kind in ("int_parsing", "int_type", "int_from_float"):
            what = f"'{_show(given)}' is not an integer"
        elif kind in ("float_parsing", "float_type"):
            what = f"'{_show(given)}' is not a number"
        elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            bound = next(iter(ctx.values()), "")
            words = {"greater_than_equal": "at least", "greater_than": "greater than",
                     "less_than_equal": "at most", "less_than": "less than"}[kind]
            what = f"must be {words} {bound} (got '{_show(given)}')"
        elif kind == "string_type":
            what = "must be text, not a file"
        elif kind in ("string_too_short", "string_too_long", "string_pattern_mismatch"):
            what = f"'{_show(given)}' is not valid: {error['msg'].lower()}"
        elif kind == "value_error":
            what = error["msg"].removeprefix("Value error, ")
        else:
            what = f"{error['msg']} (got '{_show(given)}')"
        problems[field] = f"{problems[field]}; {what}" if field in problems else what
    return problems


def parse(model: type[Inputs], items: list[tuple[str, Any]]) -> Inputs:
    try:
        return model.model_validate(gather(model, items))
    except ValidationError as exc:
        raise ArgumentError(describe(model, exc)) from None


@functools.cache
def _dependency(model: type[Inputs]) -> Callable[[Request], AsyncIterator[Inputs]]:
    async def read_inputs(request: Request) -> AsyncIterator[Inputs]:
        try:
            yield parse(model, await collect(request))
        finally:
            # Uploaded files of a multipart body are spooled to temporary files; release them
            # once the route is done (FastAPI does this only for its own Form parameters).
            await request.close()

    read_inputs.__pvc_inputs__ = model  # type: ignore[attr-defined]  # found by the OpenAPI hook
    read_inputs.__name__ = f"inputs_{model.__name__}"
    return read_inputs


def inputs(model: type[Inputs]) -> Any:
    """FastAPI dependency: the route's inputs from query string or form, validated into model."""
    return Depends(_dependency(model))


def inputs_model(call: Any) -> type[Inputs] | None:
    """The Inputs model behind a dependency callable made by `inputs()`, if it is one."""
    return getattr(call, "__pvc_inputs__", None)


# -- OpenAPI -----------------------------------------------------------------------------------

def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """Query values are never JSON null: drop the null branch pydantic adds for `X | None`."""
    schema = {k: v for k, v in schema.items() if k != "title" and not (k == "default" and v is None)}
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        rest = [b for b in branches if b != {"type": "null"}]
        if len(rest) == 1:
            schema.pop("anyOf")
            schema = {**rest[0], **schema}
        else:
            schema["anyOf"] = rest
    return schema


def openapi_inputs(model: type[Inputs], method: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(query parameters, form requestBody or None) describing model for one HTTP method.

    On methods that carry a body, each input may come from either place, so neither place
    marks it required; which ones are required is said in each description and in the
    operation's `x-pvc-required-inputs`. On other methods the query string is the only place.
    """
    full = model.model_json_schema(mode="validation", ref_template="#/components/schemas/{model}")
    properties: dict[str, Any] = full.get("properties", {})
    body = method.upper() in BODY_METHODS
    parameters: list[dict[str, Any]] = []
    form_properties: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        names = wire_names(name, field)
        schema = _clean(properties.get(names[0], {}))
        description = schema.pop("description", field.description or "")
        required = field.is_required()
        if required and body:
            description = (description + " " if description else "") + \
                "Required: give it in the query string or as a form field."
        for index, wire in enumerate(names):
            param: dict[str, Any] = {"name": wire, "in": "query", "required": required and index == 0,
                                     "schema": schema}
            text = description if index == 0 else f"Deprecated alias of `{names[0]}`. {description}"
            if text:
                param["description"] = text.strip()
            if index:
                param["deprecated"] = True
            if is_list(field):
                param["style"], param["explode"] = "form", True
            parameters.append(param)
            if body:
                form_properties[wire] = {**schema, **({"description": text.strip()} if text else {})}
    request_body = None
    if body and form_properties:
        form_schema = {"type": "object", "properties": form_properties}
        request_body = {
            "required": False,
            "description": "The same inputs as the query parameters may be sent as form fields.",
            "content": {
                "application/x-www-form-urlencoded": {"schema": form_schema},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    return parameters, request_body


def required_inputs(model: type[Inputs]) -> list[str]:
    return [wire_names(n, f)[0] for n, f in model.model_fields.items() if f.is_required()]
