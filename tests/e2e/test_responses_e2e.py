"""POST /v1/responses end to end through the local stack with the official openai SDK: ``client.responses.create``
streamed and not, a conversation continued with ``previous_response_id``, two callers. Every image is
downloaded from its presigned URL (moto S3) and opened; upstream calls are counted at the simulator."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

TOOL: dict[str, Any] = {"type": "image_generation", "size": "1024x1536", "output_format": "png", "quality": "low"}


def downloaded(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def image_calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "image_generation_call"]


def url_of(item: Any) -> str:
    extra = item.model_extra or {}
    return str(extra["url"])


@pytest.fixture
def second_client(stack: RunningStack) -> Any:
    return openai.OpenAI(base_url=stack.api_url, api_key="isk-e2e-second-key", max_retries=0, timeout=120)


def test_sdk_creates_a_response_whose_image_is_stored_and_linked(stack, openai_client):
    response = openai_client.responses.create(model="gpt-5", input="draw a cat in a teacup", tools=[TOOL])

    assert response.id.startswith("resp_") and response.status == "completed"
    (call,) = image_calls(response)
    stored = downloaded(url_of(call))
    assert stored == base64.b64decode(call.result)
    assert (opened(stored).format, opened(stored).size) == ("PNG", (1024, 1536))
    assert response.output_text.startswith("Here is the image")
    assert response.usage is not None and response.usage.total_tokens > 0
    assert stack.upstream_calls() == 1


def test_sdk_streams_events_with_stored_previews(stack, openai_client):
    events = list(
        openai_client.responses.create(
            model="gpt-5", input="a lighthouse", tools=[{**TOOL, "partial_images": 2}], stream=True
        )
    )

    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    partials = [e for e in events if e.type == "response.image_generation_call.partial_image"]
    assert [p.partial_image_index for p in partials] == [0, 1]
    for partial in partials:
        assert downloaded((partial.model_extra or {})["url"]) == base64.b64decode(partial.partial_image_b64)
    done = [e for e in events if e.type == "response.output_item.done" and e.item.type == "image_generation_call"]
    assert opened(downloaded(url_of(done[0].item))).size == (1024, 1536)
    final = events[-1].response
    assert final.id == events[0].response.id
    assert url_of(image_calls(final)[0]) and image_calls(final)[0].result
    assert stack.upstream_calls() == 1


def test_a_conversation_continues_and_belongs_to_its_caller(stack, openai_client, second_client):
    first = openai_client.responses.create(model="gpt-5", input="draw a red car", tools=[TOOL])
    second = openai_client.responses.create(
        model="gpt-5", input="now make it blue", previous_response_id=first.id, tools=[TOOL]
    )
    (call,) = image_calls(second)
    assert opened(downloaded(url_of(call))).size == (1024, 1536)
    assert downloaded(url_of(call)) != downloaded(url_of(image_calls(first)[0]))
    sent = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["last_request"]["json"]
    assert "previous_response_id" not in sent
    assert [item["role"] for item in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][-1]["content"][0]["type"] == "input_image"
    assert stack.upstream_calls() == 2

    with pytest.raises(openai.NotFoundError) as refused:
        second_client.responses.create(model="gpt-5", input="mine", previous_response_id=second.id, tools=[TOOL])
    assert refused.value.code == "previous_response_not_found"
    assert stack.upstream_calls() == 2


def test_a_streamed_follow_up_links_only(stack, openai_client):
    first = openai_client.responses.create(model="gpt-5", input="a boat", tools=[TOOL])
    events = list(
        openai_client.responses.create(
            model="gpt-5",
            input="at night",
            previous_response_id=first.id,
            tools=[TOOL],
            stream=True,
            extra_headers={"X-Image-Result": "url"},
        )
    )
    (call,) = image_calls(events[-1].response)
    assert call.result is None
    assert opened(downloaded(url_of(call))).size == (1024, 1536)


def test_refusals_are_http_errors_before_the_upstream(stack, openai_client):
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(
            model="gpt-5", input="x", tools=[{"type": "image_generation", "background": "transparent"}], stream=True
        )
    assert refused.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError):
        openai_client.responses.create(model="gpt-image-2", input="x", tools=[TOOL])
    assert stack.upstream_calls() == 0


def test_a_failure_after_the_first_event_is_an_error_event(stack, openai_client):
    stack.queue_faults({"mode": "sse_error", "after_partials": 1})
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for event in openai_client.responses.create(
            model="gpt-5", input="a storm", tools=[{**TOOL, "partial_images": 2}], stream=True
        ):
            seen.append(event.type)
    assert "response.image_generation_call.partial_image" in seen
    assert stack.upstream_calls() == 1


def test_a_client_leaving_mid_stream_still_gets_its_images_stored(stack):
    import json
    import socket
    from urllib.parse import urlparse

    import boto3

    from tests.e2e.conftest import API_KEY

    s3 = boto3.client(
        "s3", endpoint_url=stack.aws_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    (bucket,) = [b["Name"] for b in s3.list_buckets()["Buckets"]]

    def stored() -> set[str]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/responses/").get("Contents", [])
        return {item["Key"] for item in listed}

    # The client leaves at the first events and the function goes on for seconds, as a Lambda function does after
    # its client has gone (the local stack once stopped the environment 5 s after the client left).
    stack.slow_simulator(6500)
    before = stored()
    url = urlparse(stack.api_url)
    body = json.dumps(
        {"model": "gpt-5", "input": "a slow comet", "stream": True, "tools": [{**TOOL, "partial_images": 2}]}
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as client:
        client.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = client.recv(65536)  # the first events, then the client is gone
        assert b" 200 " in head.split(b"\r\n", 1)[0]
        request_id = next(
            line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"x-amzn-")
        )
    record = stack.request_record(request_id, timeout=20)
    assert record["client_disconnected"] is True and record["outcome"] == "success"
    new = stored() - before
    assert len([key for key in new if "-partial-" in key]) == 2
    assert len([key for key in new if "-partial-" not in key]) == 1
    assert stack.upstream_calls() == 1


def test_the_docs_quickstart_runs_as_written(stack, capsys):
    import re

    from tests.e2e.conftest import API_KEY, ROOT

    text = (ROOT / "docs" / "responses.md").read_text()
    (snippet, *_) = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    snippet = snippet.replace("http://127.0.0.1:3000/v1", stack.api_url)
    snippet = re.sub(r'api_key="isk-[^"]*"', f"api_key={API_KEY!r}", snippet)
    exec(compile(snippet, "docs/responses.md", "exec"), {})  # noqa: S102 - the documentation's own example
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("preview http") for line in printed)
    assert printed[-1].startswith("done resp_")
    assert opened(downloaded(printed[0])).size == (1024, 1536)
    assert stack.upstream_calls() == 3
