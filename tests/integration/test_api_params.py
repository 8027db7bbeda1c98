"""The query-or-form input mechanism (pvc.api.params), in process on a small app of its own."""

from __future__ import annotations

import warnings
from typing import Literal

import pytest
from fastapi import FastAPI
from pydantic import AliasChoices, Field

from pvc.api import errors
from pvc.api.params import Bool, Inputs, inputs, openapi_inputs
from tests.integration.apihelp import message_text

with warnings.catch_warnings():  # starlette nags about httpx; the test client works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


class Example(Inputs):
    name: str = Field(description="required text")
    mode: Literal["fast", "slow"] = Field("fast", validation_alias=AliasChoices("mode", "action"))
    force: Bool = False
    count: int = Field(1, ge=0)
    tag: list[str] = Field(default_factory=list)
    confirm: str | None = Field(None, alias="yes-i-really-mean-it")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.post("/echo")
    @app.get("/echo")
    def echo(params: Example = inputs(Example)) -> dict:
        return params.model_dump(by_alias=True)

    return TestClient(app)


def test_query_string(client: TestClient) -> None:
    body = client.get("/echo", params={"name": "a", "mode": "slow", "force": "yes", "count": "3"}).json()
    assert body == {"name": "a", "mode": "slow", "force": True, "count": 3, "tag": [],
                    "yes-i-really-mean-it": None}


def test_urlencoded_form(client: TestClient) -> None:
    body = client.post("/echo", data={"name": "b", "force": "True", "yes-i-really-mean-it": "yes"}).json()
    assert body["name"] == "b" and body["force"] is True and body["yes-i-really-mean-it"] == "yes"


def test_multipart_form(client: TestClient) -> None:
    body = client.post("/echo", files={"name": (None, "c"), "count": (None, "7")}).json()
    assert body["name"] == "c" and body["count"] == 7


def test_query_and_form_mix_query_wins(client: TestClient) -> None:
    body = client.post("/echo", params={"name": "from-query"},
                       data={"name": "from-form", "count": "2"}).json()
    assert body["name"] == "from-query"  # reqparse order: args before form
    assert body["count"] == 2


def test_repeated_keys_fill_lists_and_first_wins_for_scalars(client: TestClient) -> None:
    body = client.get("/echo?name=x&name=y&tag=a&tag=b").json()
    assert body["name"] == "x"
    assert body["tag"] == ["a", "b"]
    body = client.post("/echo?name=x&tag=a", data={"tag": ["b", "c"]}).json()
    assert body["tag"] == ["a", "b", "c"]


def test_alias(client: TestClient) -> None:
    assert client.get("/echo", params={"name": "a", "action": "slow"}).json()["mode"] == "slow"


@pytest.mark.parametrize("text", ["true", "True", "TRUE", "yes", "y", "on", "1", "t"])
def test_true_spellings(client: TestClient, text: str) -> None:
    assert client.get("/echo", params={"name": "a", "force": text}).json()["force"] is True


@pytest.mark.parametrize("text", ["false", "False", "no", "n", "off", "0", "f"])
def test_false_spellings(client: TestClient, text: str) -> None:
    assert client.get("/echo", params={"name": "a", "force": text}).json()["force"] is False


@pytest.mark.parametrize(("query", "message"), [
    ("", "name: required (give it in the query string or as a form field)"),
    ("name=a&force=maybe", "force: 'maybe' is not a boolean (use true or false)"),
    ("name=a&force=", "force: '' is not a boolean (use true or false)"),
    ("name=a&mode=medium", "mode: 'medium' is not one of fast, slow"),
    ("name=a&action=medium", "mode: 'medium' is not one of fast, slow"),
    ("name=a&count=many", "count: 'many' is not an integer"),
    ("name=a&count=-1", "count: must be at least 0 (got '-1')"),
    ("count=x",
     "name: required (give it in the query string or as a form field); count: 'x' is not an integer"),
])
def test_bad_input_is_400_naming_the_field(client: TestClient, query: str, message: str) -> None:
    response = client.get("/echo?" + query)
    assert response.status_code == 400
    body = response.json()["message"]
    assert isinstance(body, dict)          # {"<argument>": "<what is wrong>"}, as flask-restful
    assert message_text(body) == message


def test_file_where_text_is_expected_is_400(client: TestClient) -> None:
    response = client.post("/echo", files={"name": ("a.txt", b"data")})
    assert response.status_code == 400
    assert response.json() == {"message": {"name": "must be text, not a file"}}


def test_other_bodies_are_ignored(client: TestClient) -> None:
    response = client.post("/echo?name=q", json={"name": "json"})
    assert response.json()["name"] == "q"


def test_openapi_description() -> None:
    params, body = openapi_inputs(Example, "GET")
    assert body is None
    by_name = {p["name"]: p for p in params}
    assert set(by_name) == {"name", "mode", "action", "force", "count", "tag", "yes-i-really-mean-it"}
    assert by_name["name"]["required"] is True
    assert by_name["action"]["deprecated"] is True and by_name["action"]["required"] is False
    assert by_name["force"]["schema"] == {"default": False, "type": "boolean"}
    assert by_name["count"]["schema"]["minimum"] == 0
    assert by_name["tag"]["schema"]["type"] == "array" and by_name["tag"]["explode"] is True
    assert by_name["yes-i-really-mean-it"]["schema"] == {"type": "string"}  # no JSON null in a query
    params, body = openapi_inputs(Example, "POST")
    assert body is not None
    form = body["content"]["application/x-www-form-urlencoded"]["schema"]
    assert set(form["properties"]) == set(by_name)
    assert "required" not in form  # required inputs may come from the query string instead
    assert "Required" in form["properties"]["name"]["description"]
