"""End to end through the local stack (``make run``), with the official openai SDK as the client and the
images downloaded from the presigned URLs like any user would."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e


def download(url: str) -> tuple[Image.Image, httpx.Response]:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image, response


def test_health_and_the_api_document_need_no_key(stack):
    response = httpx.get(stack.api_url + "/health")
    assert (response.status_code, response.json()["status"]) == (200, "ok")
    document = httpx.get(stack.api_url + "/openapi.json").json()
    assert "/v1/images/generations" in document["paths"]
    assert "swagger-ui" in httpx.get(stack.api_url + "/docs").text


def test_unknown_route_is_a_404_in_the_openai_shape(stack):
    response = httpx.get(stack.api_url + "/images/variations", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_route"


def test_sdk_generates_a_jpeg_that_downloads_from_the_presigned_url(stack, openai_client):
    raw = openai_client.images.with_raw_response.generate(
        model="gpt-image-2",
        prompt="a red kite over the moorland",
        size="1536x1024",
        output_format="jpeg",
        quality="medium",
    )
    result = raw.parse()

    assert len(result.data) == 1
    image, response = download(result.data[0].url)
    assert (image.format, image.size) == ("JPEG", (1536, 1024))
    assert response.headers["content-type"] == "image/jpeg"
    assert result.usage.total_tokens > 0
    assert result.size == "1536x1024"
    assert stack.upstream_calls() == 1

    record = stack.request_record(raw.headers["x-amzn-requestid"])
    assert record["outcome"] == "success"
    assert record["api_key_id"].startswith("key_")
    assert record["upstream_request_id"].startswith("req_")
    assert record["usage"]["total_tokens"] == result.usage.total_tokens
    assert "red kite" not in stack.log_path.read_text()
    assert API_KEY not in stack.log_path.read_text()


def test_sdk_n_images_png_and_webp(openai_client):
    result = openai_client.images.generate(model="gpt-image-2", prompt="tiles", n=2, size="1024x1024")
    images = [download(item.url)[0] for item in result.data]
    assert [(i.format, i.size) for i in images] == [("PNG", (1024, 1024))] * 2
    assert result.data[0].url != result.data[1].url

    webp = openai_client.images.generate(
        model="gpt-image-2", prompt="a fox", size="1024x1536", output_format="webp", output_compression=40
    )
    image, response = download(webp.data[0].url)
    assert (image.format, image.size, response.headers["content-type"]) == ("WEBP", (1024, 1536), "image/webp")


def test_sdk_b64_json(openai_client):
    result = openai_client.images.generate(
        model="gpt-image-2", prompt="inline", size="1024x1024", response_format="b64_json"
    )
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_4k_generation(openai_client):
    result = openai_client.images.generate(model="gpt-image-2", prompt="a city at night", size="3840x2160")
    image, _ = download(result.data[0].url)
    assert image.size == (3840, 2160)


def test_bad_input_is_a_400_the_sdk_understands_and_the_upstream_never_sees(stack, openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(model="gpt-image-2", prompt="p", size="1000x1000")
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "size"
    assert "multiples of 16" in caught.value.body["message"]

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(model="gpt-image-2", prompt="p", background="transparent")
    assert "does not support transparent" in caught.value.body["message"]

    # previews come only as stream events (or on an async task): a plain request may not ask for them
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(model="gpt-image-2", prompt="p", partial_images=2)
    assert caught.value.body["param"] == "partial_images"
    assert stack.upstream_calls() == 0


def test_wrong_or_missing_key_is_a_401_in_the_openai_shape(stack):
    client = openai.OpenAI(base_url=stack.api_url, api_key="isk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model="gpt-image-2", prompt="p")
    assert caught.value.body["code"] == "invalid_api_key"

    response = httpx.post(stack.api_url + "/images/generations", json={"prompt": "p"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert stack.upstream_calls() == 0


def test_curl_style_form_body_is_a_415(stack):
    response = httpx.post(
        stack.api_url + "/images/generations",
        content=b"prompt=hello",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]["message"]


def test_policy_block_is_relayed_once(stack, openai_client):
    stack.queue_faults(
        {
            "status": 400,
            "error": {
                "message": "Rejected by the safety system.",
                "type": "invalid_request_error",
                "code": "moderation_blocked",
            },
        }
    )
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(model="gpt-image-2", prompt="forbidden", size="1024x1024")
    assert caught.value.body["code"] == "moderation_blocked"
    assert stack.upstream_calls() == 1


def test_5xx_is_retried_and_recovered(stack, openai_client):
    stack.queue_faults({"status": 503}, {"status": 502})
    raw = openai_client.images.with_raw_response.generate(model="gpt-image-2", prompt="retry me", size="1024x1024")
    image, _ = download(raw.parse().data[0].url)
    assert image.size == (1024, 1024)
    assert stack.upstream_calls() == 3
    record = stack.request_record(raw.headers["x-amzn-requestid"])
    assert (record["attempts"], record["attempt_errors"]) == (3, ["503", "502"])


def test_body_over_api_gateways_limit_is_a_413(stack):
    response = httpx.post(
        stack.api_url + "/images/generations",
        content=b"{" + b" " * (10 * 1024 * 1024 + 10) + b"}",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["message"]
