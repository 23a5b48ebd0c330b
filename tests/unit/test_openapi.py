"""The packaged OpenAPI document is the one the code describes, and it shows the rules the code enforces."""

from __future__ import annotations

import json

from imagecore.openapi import build_document, packaged_document, render


def test_packaged_document_is_up_to_date():
    assert packaged_document() == render(build_document()), "run: make openapi"


def test_document_shows_every_route_and_the_validation_rules():
    document = json.loads(packaged_document())
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/uploads",
        "/v1/images/generations/async",
        "/v1/images/edits/async",
        "/v1/images/tasks/{task_id}",
        "/v1/health",
        "/v1/openapi.json",
        "/v1/docs",
        "/v1/playground",
    }
    generation = document["paths"]["/v1/images/generations"]["post"]
    assert "422" not in generation["responses"]
    assert {"400", "502", "504"} <= set(generation["responses"])
    request = document["components"]["schemas"]["GenerationRequest"]
    assert request["required"] == ["prompt"]
    assert request["additionalProperties"] is False
    assert request["properties"]["n"]["maximum"] == 10
    assert request["properties"]["prompt"]["maxLength"] == 32_000
    assert "multiples of 16" in request["properties"]["size"]["description"]
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/v1/health"]["get"]["security"] == []


def test_edits_document_both_of_their_request_bodies():
    document = json.loads(packaged_document())
    body = document["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    schemas = document["components"]["schemas"]
    form = schemas[body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert form["properties"]["image[]"]["maxItems"] == 16
    assert form["properties"]["mask"]["format"] == "binary"
    assert "prompt" in form["required"]
    uploads = schemas[body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert uploads["properties"]["images"]["maxItems"] == 16
    assert uploads["additionalProperties"] is False
