"""The packaged OpenAPI document is the one the code describes, and it shows the rules the code enforces."""

from __future__ import annotations

import json

from imagecore.edge.openapi import PUBLIC_PATHS, build_document, packaged_document, render


def test_packaged_document_is_up_to_date():
    assert packaged_document() == render(build_document()), "run: make openapi"


def test_document_shows_every_route_and_the_validation_rules():
    document = json.loads(packaged_document())
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/responses",
        "/v1/uploads",
        "/v1/images/generations/async",
        "/v1/images/edits/async",
        "/v1/images/tasks/{task_id}",
        "/v1/usage",
        "/v1/client_tokens",
        "/v1/webhooks/secret",
        "/v1/webhooks/secret/rotate",
        "/v1/health",
        "/v1/openapi.json",
        "/v1/docs",
        "/v1/playground",
        "/v1",
        "/v1/models",
        "/v1/models/{model}",
    }
    generation = document["paths"]["/v1/images/generations"]["post"]
    # Validation errors are OpenAI-style 400s, never Powertools' 422; a 422 is only a reused Idempotency-Key.
    refused_key = generation["responses"]["422"]
    assert "Idempotency-Key" in refused_key["description"]
    assert refused_key["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert {"400", "429", "502", "504"} <= set(generation["responses"])
    (days,) = document["paths"]["/v1/usage"]["get"]["parameters"]
    assert (days["name"], days["in"], days["schema"]["maximum"], days["schema"]["default"]) == ("days", "query", 90, 7)
    request = document["components"]["schemas"]["GenerationRequest"]
    assert request["required"] == ["prompt"]
    assert request["additionalProperties"] is False
    assert request["properties"]["n"]["maximum"] == 10
    assert request["properties"]["prompt"]["maxLength"] == 32_000
    assert "multiples of 16" in request["properties"]["size"]["description"]
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/v1/health"]["get"]["security"] == []


def test_client_tokens_are_documented_with_their_bounds():
    document = json.loads(packaged_document())
    operation = document["paths"]["/v1/client_tokens"]["post"]
    assert {"400", "403"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    request = schemas["ClientTokenRequest"]
    assert request["additionalProperties"] is False
    assert (request["properties"]["expires_in"]["minimum"], request["properties"]["expires_in"]["maximum"]) == (
        60,
        3600,
    )
    assert request["properties"]["expires_in"]["default"] == 900
    assert set(schemas["ClientTokenResponse"]["properties"]) == {
        "token",
        "expires_at",
        "scope",
        "max_images",
        "max_concurrent",
    }
    # a token always has an image limit: 20 when not asked, 1000 at most
    assert request["properties"]["max_images"]["anyOf"][0]["maximum"] == 1000
    assert "20 when not given" in request["properties"]["max_images"]["description"]
    assert "429" in document["paths"]["/v1/images/generations"]["post"]["responses"]


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


def test_every_operation_declares_every_answer_it_can_give():
    """API Gateway's own answers on every route (and the authorizer's on protected ones), every POST's body and
    Idempotency-Key answers: a client reading the document meets no undeclared status."""
    document = json.loads(packaged_document())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            assert {"429", "504"} <= declared, (method, path)
            if path not in PUBLIC_PATHS:
                assert {"401", "403"} <= declared, (method, path)
                assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]
            if method == "post":
                assert {"400", "409", "413", "415", "422", "503"} <= declared, path
                (key,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
                assert (key["in"], key["schema"]["maxLength"]) == ("header", 255)
    for path in ("/v1/images/generations/async", "/v1/images/edits/async"):
        accepted = document["paths"][path]["post"]["responses"]["202"]
        assert set(accepted["headers"]) == {"Location", "Retry-After"}
    assert "text/html" in document["paths"]["/v1/docs"]["get"]["responses"]["200"]["content"]
    task_id = document["paths"]["/v1/images/tasks/{task_id}"]["get"]["parameters"][0]["schema"]
    assert task_id["pattern"] == "^(?:task_[0-9a-f]{32})$"


def test_every_request_field_has_an_upper_bound():
    """Every string of every request body is bounded (length, enum or pattern), every integer has a maximum,
    every array a maxItems: nothing a client sends can outgrow the stores it reaches."""
    document = json.loads(packaged_document())
    schemas = document["components"]["schemas"]
    bodies = ["GenerationRequest", "EditUploadRequest", "EditForm", "UploadRequest", "UploadRef"]

    def bounded(schema: dict, where: str) -> None:
        if "$ref" in schema:
            return  # checked where it is defined
        for variant in schema.get("anyOf", []):
            bounded(variant, where)
        kind = schema.get("type")
        if kind == "string" and schema.get("format") != "binary":
            assert "maxLength" in schema or "enum" in schema or "const" in schema, where
        elif kind == "integer":
            assert "maximum" in schema, where
        elif kind == "array":
            assert "maxItems" in schema, where
            bounded(schema["items"], where + "[]")

    for name in bodies:
        for field, schema in schemas[name]["properties"].items():
            bounded(schema, f"{name}.{field}")
    assert schemas["GenerationRequest"]["properties"]["user"]["anyOf"][0]["maxLength"] == 256
    upload_ref = schemas["UploadRef"]["properties"]
    assert upload_ref["upload_id"]["anyOf"][0]["pattern"] == "^(?:upl_[A-Za-z0-9]{20,64})$"
    assert upload_ref["image_url"]["anyOf"][0]["pattern"].startswith("^(?:data:image/(?:png|jpeg|webp);base64,")
    # exactly one of the two is given (a string), as the model checks
    assert [branch["required"] for branch in schemas["UploadRef"]["oneOf"]] == [["upload_id"], ["image_url"]]


def test_every_json_body_has_an_example_the_models_take():
    """Swagger UI's "Try it out" sends the example as it is (tests/e2e sends each one through the local stack)."""
    from imagecore.domain.models import EditUploadRequest, GenerationRequest
    from imagecore.domain.responses import ResponsesRequest
    from imagecore.domain.route_models import ClientTokenRequest, UploadRequest

    document = json.loads(packaged_document())
    models = {
        "GenerationRequest": GenerationRequest,
        "EditUploadRequest": EditUploadRequest,
        "UploadRequest": UploadRequest,
        "ClientTokenRequest": ClientTokenRequest,
        "ResponsesRequest": ResponsesRequest,
    }
    seen = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            assert "example" in body, f"{method} {path}"
            name = body["schema"]["$ref"].rsplit("/", 1)[-1]
            models[name].model_validate(body["example"])
            seen.add(name)
            example = body["example"]
            if "size" in example:
                assert (example["size"], example["n"]) == ("1024x1024", 1)
                assert "output_compression" not in example and "partial_images" not in example
    assert seen == set(models)


def test_the_responses_example_body_is_a_valid_request() -> None:
    from imagecore.domain.responses import ResponsesRequest
    from imagecore.edge.openapi import build_document

    document = build_document()
    schema = document["components"]["schemas"]["ResponsesRequest"]
    (example,) = schema["examples"]
    request = ResponsesRequest.model_validate(example)
    assert request.checked_tool().type == "image_generation"
