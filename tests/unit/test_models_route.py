"""GET /v1/models and /v1/models/{model} (the health function) in OpenAI's shapes, with the Responses route's
text models when the operator restricted it, and the index at / and /v1 on the stage the caller used."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from imagecore.domain.catalog import list_models, parse_model_names
from tests.conftest import load_event


@pytest.fixture
def health(monkeypatch):
    from functions.health import app

    def serve(path: str, *, allowed: str = "", **resource: str) -> tuple[int, dict[str, Any]]:
        monkeypatch.setenv("RESPONSES_ALLOWED_MODELS", allowed)
        app._settings.cache_clear()
        event = copy.deepcopy(load_event("health"))
        event["path"], event["resource"] = path, resource.get("resource", path)
        event["requestContext"]["path"] = "/prod" + path
        event["pathParameters"] = resource.get("params")
        answer = app.lambda_handler(event, None)
        return answer["statusCode"], json.loads(answer["body"])

    yield serve
    app._settings.cache_clear()


def test_the_list_holds_the_image_models_only_when_the_responses_route_takes_any_model(health):
    status, body = health("/v1/models")
    assert status == 200
    assert body == {
        "object": "list",
        "data": [
            {"id": "gpt-image-2", "object": "model", "created": 1776729600, "owned_by": "openai"},
            {"id": "gpt-image-2-2026-04-21", "object": "model", "created": 1776729600, "owned_by": "openai"},
        ],
    }


def test_a_restricted_responses_route_lists_its_text_models_after_the_image_models(health):
    status, body = health("/v1/models", allowed=" gpt-5.4, gpt-5.4-mini,,gpt-5.4 ")
    assert status == 200
    assert [model["id"] for model in body["data"]] == [
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-5.4",
        "gpt-5.4-mini",
    ]

    found = health("/v1/models/gpt-5.4-mini", allowed="gpt-5.4,gpt-5.4-mini", resource="/v1/models/{model}")
    assert found == (200, {"id": "gpt-5.4-mini", "object": "model", "created": 0, "owned_by": "openai"})
    refused = health("/v1/models/gpt-4o", allowed="gpt-5.4", resource="/v1/models/{model}")
    assert refused[0] == 404 and refused[1]["error"]["code"] == "model_not_found"


def test_an_unknown_model_is_openais_404(health):
    status, body = health("/v1/models/dall-e-3", resource="/v1/models/{model}")
    assert status == 404
    assert body["error"]["code"] == "model_not_found" and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/", "/v1"])
def test_the_index_links_the_docs_and_the_playground_on_the_callers_stage(health, path):
    status, body = health(path)
    assert status == 200
    host = "https://abcdef1234.execute-api.us-east-1.amazonaws.com/prod"
    assert (body["docs"], body["playground"]) == (host + "/v1/docs", host + "/v1/playground")
    assert body["base_url"] == host + "/v1"


def test_model_names_are_read_once_each_in_order():
    assert parse_model_names(" a, b ,,a,") == ("a", "b")
    assert parse_model_names("") == () and parse_model_names(None) == ()
    # an image model named again is listed once
    assert [m.id for m in list_models(("gpt-image-2", "gpt-5.4")).data] == [
        "gpt-image-2",
        "gpt-image-2-2026-04-21",
        "gpt-5.4",
    ]


@pytest.mark.parametrize(
    ("path", "resource", "params"),
    [
        ("/v1/models/\n", "/v1/models/{model}", {"model": "\n"}),
        ("/v1/models/gpt-image-2\n", "/v1/models/{model}", {"model": "gpt-image-2\n"}),
        ("/v1/models\n", "/v1/models", None),
        ("/v1/models/gpt-\x00image-2", "/v1/models/{model}", {"model": "gpt-\x00image-2"}),
    ],
)
def test_a_path_with_a_control_character_names_no_route(health, path, resource, params):
    # Found by schemathesis: a route's pattern ends in $, which also matches before a final newline, so
    # GET /v1/models/%0A answered with the model list and /v1/models/gpt-image-2%0A with the model.
    status, body = health(path, resource=resource, params=params)
    assert status == 404
    assert body["error"]["code"] == "unknown_route"
    assert "\n" not in body["error"]["message"] and "\x00" not in body["error"]["message"]
