"""What a newcomer meets first, through the local stack (``make run``): the models the SDK lists, the index at the
bare URL, and every example body of the OpenAPI document sent exactly as Swagger UI's "Try it out" sends it."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {API_KEY}"}


# --- GET /v1/models -----------------------------------------------------------------------------------------
def test_the_sdk_lists_and_retrieves_the_image_models(openai_client):
    listed = openai_client.models.list()

    ids = [model.id for model in listed]
    assert ids[:2] == ["gpt-image-2", "gpt-image-2-2026-04-21"]
    assert ids == ["gpt-image-2", "gpt-image-2-2026-04-21"]  # the Responses route takes any model: none listed
    assert all(model.object == "model" and model.owned_by and model.created > 0 for model in listed)

    model = openai_client.models.retrieve("gpt-image-2-2026-04-21")
    assert (model.id, model.object, model.created) == ("gpt-image-2-2026-04-21", "model", 1776729600)


def test_an_unknown_model_is_openais_404(openai_client):
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.models.retrieve("dall-e-2")

    error = missing.value.body
    assert (error["code"], error["type"], error["param"]) == ("model_not_found", "invalid_request_error", "model")
    assert "dall-e-2" in error["message"]


def test_the_model_list_needs_a_key_like_openais(stack):
    wrong = openai.OpenAI(base_url=stack.api_url, api_key="isk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(stack.api_url + "/models").status_code == 401


def test_a_client_token_of_any_scope_lists_the_models(stack):
    minted = httpx.post(stack.api_url + "/client_tokens", json={"scope": ["uploads"]}, headers=AUTH)
    assert minted.status_code == 200, minted.text
    client = openai.OpenAI(base_url=stack.api_url, api_key=minted.json()["token"], max_retries=0)

    assert "gpt-image-2" in [model.id for model in client.models.list()]
    assert client.models.retrieve("gpt-image-2").id == "gpt-image-2"


# --- the index --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/v1"])
def test_the_bare_url_points_at_the_docs_and_the_playground(stack, path):
    root = stack.api_url.removesuffix("/v1")

    response = httpx.get(root + path)

    assert response.status_code == 200
    index = response.json()
    assert index["docs"] == stack.api_url + "/docs" and index["playground"] == stack.api_url + "/playground"
    assert index["base_url"] == stack.api_url
    assert "/v1/docs" in index["message"] and "/v1/playground" in index["message"]
    # each link leads somewhere real
    assert "swagger-ui" in httpx.get(index["docs"]).text
    assert httpx.get(index["playground"]).status_code == 200
    assert httpx.get(index["openapi"]).json()["openapi"].startswith("3.1")


# --- every documented example, as it is -------------------------------------------------------------------
def documented_examples(stack: Any) -> list[tuple[str, str, dict[str, Any]]]:
    document = httpx.get(stack.api_url + "/openapi.json").json()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            json_body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if json_body is not None:
                assert "example" in json_body, f"{method.upper()} {path} has no example body"
                found.append((method, path, json_body["example"]))
    return found


def test_every_documented_example_body_is_accepted_as_it_is(stack):
    examples = documented_examples(stack)
    routes = {(method, path) for method, path, _ in examples}
    assert {("post", "/v1/images/generations"), ("post", "/v1/uploads"), ("post", "/v1/client_tokens")} <= routes
    assert ("post", "/v1/images/edits") in routes  # its JSON body: the input inline, as a data URL

    answers = {}
    for method, path, body in examples:
        response = httpx.request(method, stack.api_url.removesuffix("/v1") + path, json=body, headers=AUTH, timeout=120)
        answers[path] = response.status_code
        assert response.status_code in (200, 202), (path, response.text)
    assert answers["/v1/images/generations"] == 200 and answers["/v1/images/generations/async"] == 202
    assert answers["/v1/images/edits"] == 200 and answers["/v1/images/edits/async"] == 202


def test_an_edit_takes_its_input_inline_as_a_data_url_and_forwards_it_intact(stack):
    png = io.BytesIO()
    Image.new("RGB", (512, 512), (10, 200, 90)).save(png, format="PNG")
    data = png.getvalue()
    url = "data:image/png;base64," + base64.b64encode(data).decode()

    response = httpx.post(
        stack.api_url + "/images/edits",
        json={"images": [{"image_url": url}], "prompt": "add a kite", "size": "1024x1024", "quality": "low"},
        headers=AUTH,
        timeout=120,
    )

    assert response.status_code == 200, response.text
    # This stack may still be running the tasks an earlier test queued, so the edit is looked for among the recent
    # requests rather than taken as the last one: its one file part carries exactly the bytes of the data URL.
    recent = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["recent_requests"]
    edits = [r for r in recent if r["path"].endswith("/images/edits")]
    [received] = [r for r in edits if r.get("form", {}).get("prompt") == "add a kite"]
    [part] = received["files"]
    assert part["name"] == "image[]" and part["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ({"image_url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}, "invalid_image_format"),
        ({"image_url": "data:image/png;base64,AAA"}, "invalid_image_format"),  # base64 cut short
        ({"image_url": "https://example.com/cat.png"}, "invalid_value"),  # only data URLs: nothing is fetched
        ({}, "invalid_value"),
    ],
)
def test_a_bad_inline_image_is_a_400_before_the_upstream(stack, image, code):
    response = httpx.post(
        stack.api_url + "/images/edits", json={"images": [image], "prompt": "p"}, headers=AUTH, timeout=60
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"].startswith("images[0]")
    assert stack.upstream_calls() == 0


def test_the_generation_example_is_small_and_cheap(stack):
    (body,) = [body for _, path, body in documented_examples(stack) if path == "/v1/images/generations"]
    assert (body["size"], body["n"], body["quality"]) == ("1024x1024", 1, "low")
    assert "output_compression" not in body and "partial_images" not in body and not body.get("stream")

    response = httpx.post(stack.api_url + "/images/generations", json=body, headers=AUTH, timeout=120)
    image = Image.open(io.BytesIO(httpx.get(response.json()["data"][0]["url"]).content))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert stack.upstream_calls() == 1
