"""The streamed image routes end to end through the local stack: the gateway relays them as chunked HTTP under
API Gateway's streaming rules (read from template.yaml), the function's ASGI edge runs behind it as behind the
Lambda Web Adapter, and the official openai SDK iterates ``stream=True`` answers.

Each image an event carries is decoded and measured, and each event's ``url`` is downloaded from S3 (moto)
and compared with the bytes of the event.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY, RunningStack, running_stack

pytestmark = pytest.mark.e2e

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def downloaded(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    return response.content


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, "PNG")
    return out.getvalue()


def stored_objects(stack: RunningStack, prefix: str = "images/") -> list[str]:
    s3 = boto3.client(
        "s3", endpoint_url=stack.aws_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    (bucket,) = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


# --- stream: true through the SDK ---------------------------------------------------------------------------


@pytest.mark.parametrize("partials", [0, 1, 2, 3])
def test_sdk_streams_a_generation_with_partial_images(stack, openai_client, partials):
    raw = openai_client.images.with_raw_response.generate(
        model="gpt-image-2", prompt="a lighthouse at dawn", size="1536x1024", stream=True, partial_images=partials
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = list(raw.parse())

    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * partials + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:-1]] == list(range(partials))
    for event in events:
        image = decoded(event.b64_json)
        assert (image.format, image.size) == ("PNG", (1536, 1024))
        assert (event.size, event.output_format) == ("1536x1024", "png")
        assert event.created_at > 0
        # the stored copy (a preview for a partial) is the very image the event carries
        assert downloaded(event.model_extra["url"]) == base64.b64decode(event.b64_json)
    completed = events[-1]
    assert completed.usage.total_tokens > 0
    assert stack.upstream_calls() == 1

    record = stack.request_record(raw.headers["x-amzn-requestid"])
    assert (record["outcome"], record["streamed"], record["delivery"]) == ("success", True, "sse")
    assert record["events_relayed"] == partials + 1
    assert record["bytes_sent"] > len(completed.b64_json)
    assert record["client_disconnected"] is False
    assert (record["first_partial_ms"] is not None) == (partials > 0)


@pytest.mark.parametrize("partials", [0, 2])
def test_sdk_streams_an_edit_with_partial_images(stack, openai_client, partials):
    events = list(
        openai_client.images.edit(
            model="gpt-image-2",
            image=("in.png", png(1024, 1024), "image/png"),
            prompt="make it evening",
            size="1024x1024",
            output_format="jpeg",
            stream=True,
            partial_images=partials,
        )
    )

    assert [event.type for event in events] == ["image_edit.partial_image"] * partials + ["image_edit.completed"]
    for event in events:
        image = decoded(event.b64_json)
        assert (image.format, image.size) == ("JPEG", (1024, 1024))
        assert downloaded(event.model_extra["url"]) == base64.b64decode(event.b64_json)
    assert events[-1].usage.input_tokens > 0
    # the upstream was asked to stream, with the previews wanted
    form = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["last_request"]["form"]
    assert form["stream"] == "true"


def test_a_refusal_before_the_first_event_is_an_ordinary_http_error(stack, openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(prompt="p", size="1000x1000", stream=True, partial_images=2)
    assert caught.value.body["param"] == "size"

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(prompt="p", stream=True, partial_images=4)
    assert caught.value.body["param"] == "partial_images"

    stack.queue_faults(
        {"status": 400, "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"}}
    )
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.images.generate(prompt="p", stream=True, partial_images=1)
    assert caught.value.body["code"] == "moderation_blocked"


def test_an_upstream_failure_after_the_first_event_is_an_error_event(stack, openai_client):
    stack.queue_faults({"mode": "sse_error", "after_partials": 1})
    response = httpx.post(
        stack.api_url + "/images/generations",
        headers=HEADERS,
        json={"prompt": "a storm", "size": "1024x1024", "stream": True, "partial_images": 2},
        timeout=60,
    )

    assert response.status_code == 200
    events = sse_events(response.content)
    assert [name for name, _ in events] == ["image_generation.partial_image", "error"]
    error = events[-1][1]["error"]
    assert error["type"] == "upstream_error" and error["message"]
    # the preview that did arrive is stored
    assert downloaded(events[0][1]["url"]) == base64.b64decode(events[0][1]["b64_json"])
    record = stack.request_record(response.headers["x-amzn-requestid"])
    assert (record["delivery"], record["events_relayed"], record["outcome"]) == ("sse", 2, "upstream_failed")

    # the SDK raises it while iterating
    stack.queue_faults({"mode": "sse_error", "after_partials": 1})
    with pytest.raises(openai.APIError):
        list(openai_client.images.generate(prompt="a storm", size="1024x1024", stream=True, partial_images=2))


def test_client_leaving_mid_stream_still_stores_every_image(stack):
    stack.slow_simulator(3000)
    before = set(stored_objects(stack))
    url = urlparse(stack.api_url)
    body = json.dumps({"prompt": "a slow comet", "size": "1024x1024", "stream": True, "partial_images": 2}).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as client:
        client.sendall(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = client.recv(65536)  # the first event (a partial, after a third of the latency) ...
        assert b" 200 " in head.split(b"\r\n", 1)[0]
        request_id = next(
            line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"x-amzn-")
        )
    # ... and the client is gone. The function goes on and stores the rest.
    record = stack.request_record(request_id, timeout=15)
    assert record["client_disconnected"] is True
    assert record["outcome"] == "success"
    new = set(stored_objects(stack)) - before
    assert len([key for key in new if "/partial-" in key or "preview" in key]) == 2
    assert len(new) == 3  # two previews and the image
    assert stack.upstream_calls() == 1


# --- no stream: the JSON contract, held status, keep-alives -------------------------------------------------


@pytest.fixture(scope="module")
def tight_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A stack whose idle limit is scaled down so the tests stay fast: a streamed response is closed after 4 s of
    silence (API Gateway's 5 minutes), so the status is held for 3 s (its 270 s)."""
    with running_stack(tmp_path_factory.mktemp("tight") / "stack.log", STREAM_IDLE_LIMIT_SECONDS="4") as running:
        yield running


@pytest.fixture
def tight(tight_stack: RunningStack) -> Iterator[RunningStack]:
    tight_stack.reset_simulator()
    yield tight_stack
    tight_stack.reset_simulator()


def test_a_request_within_the_hold_time_gets_its_normal_json_without_keepalives(tight):
    tight.slow_simulator(1200)  # well within the 3 s hold (idle limit 4 s - margin 1 s), even on a loaded machine
    started = time.monotonic()
    response = httpx.post(
        tight.api_url + "/images/generations", headers=HEADERS, json={"prompt": "slow", "size": "1024x1024"}, timeout=30
    )

    assert time.monotonic() - started > 1.2
    assert response.status_code == 200
    assert response.content.startswith(b"{")  # the status was held, nothing before the JSON
    assert response.headers["content-type"] == "application/json"
    image = Image.open(io.BytesIO(downloaded(response.json()["data"][0]["url"])))
    assert image.size == (1024, 1024)
    record = tight.request_record(response.headers["x-amzn-requestid"])
    assert (record["delivery"], record["keepalives_sent"], record["streamed"]) == ("buffered", 0, False)
    assert record["bytes_sent"] == len(response.content)


def test_a_refusal_while_the_status_is_held_keeps_its_status(tight):
    tight.slow_simulator(2000)
    tight.queue_faults(
        {
            "status": 400,
            "latency_ms": 2000,
            "error": {"message": "no", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
    )
    response = httpx.post(tight.api_url + "/images/generations", headers=HEADERS, json={"prompt": "x"}, timeout=30)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "moderation_blocked"


def test_a_request_that_would_pass_the_idle_limit_gets_keepalives_then_its_json(tight, openai_client_for):
    tight.slow_simulator(7000)  # silent past the 4 s idle limit if nothing were sent
    response = httpx.post(
        tight.api_url + "/images/generations",
        headers=HEADERS,
        json={"prompt": "slower", "size": "1024x1024"},
        timeout=30,
    )

    assert response.status_code == 200
    whitespace = response.content.partition(b"{")[0]
    assert whitespace and not whitespace.strip()  # JSON-safe keep-alives first
    answer = response.json()  # a JSON parser reads past them
    assert Image.open(io.BytesIO(downloaded(answer["data"][0]["url"]))).size == (1024, 1024)
    record = tight.request_record(response.headers["x-amzn-requestid"])
    assert record["delivery"] == "json-keepalive"
    assert record["keepalives_sent"] >= 2
    assert record["outcome"] == "success"

    # the SDK reads the same answer
    tight.reset_simulator()
    tight.slow_simulator(5000)
    result = openai_client_for(tight).images.generate(prompt="slower", size="1024x1024")
    assert result.data[0].url


def test_a_failure_after_keepalives_is_an_error_object_under_the_200(tight):
    tight.queue_faults(
        {
            "status": 400,
            "latency_ms": 5000,
            "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
    )
    response = httpx.post(tight.api_url + "/images/generations", headers=HEADERS, json={"prompt": "x"}, timeout=30)

    assert response.status_code == 200
    assert response.content[:1].isspace()
    assert response.json()["error"]["code"] == "moderation_blocked"
    record = tight.request_record(response.headers["x-amzn-requestid"])
    assert (record["delivery"], record["status"], record["error_code"]) == ("json-keepalive", 400, "moderation_blocked")


def test_a_stream_speaks_before_the_idle_limit(tight):
    tight.slow_simulator(7000)  # one completed event after 7 s: comments keep the stream alive meanwhile
    response = httpx.post(
        tight.api_url + "/images/generations",
        headers=HEADERS,
        json={"prompt": "slow stream", "size": "1024x1024", "stream": True},
        timeout=30,
    )

    assert response.status_code == 200
    assert b": keep-alive\n\n" in response.content
    assert [name for name, _ in sse_events(response.content)] == ["image_generation.completed"]


@pytest.fixture
def openai_client_for() -> Any:
    def make(stack: RunningStack) -> Any:
        return openai.OpenAI(base_url=stack.api_url, api_key=API_KEY, max_retries=0, timeout=60)

    return make


def test_stored_partials_are_previews_beside_the_image(stack, openai_client):
    events = list(openai_client.images.generate(prompt="keys", size="1024x1024", stream=True, partial_images=2))
    keys = [urlparse(event.model_extra["url"]).path.split("/", 2)[2] for event in events]

    final = keys[-1]
    folder = final.rsplit("/", 1)[0]
    assert all(key.startswith(folder + "/") for key in keys)
    assert len(set(keys)) == 3
    assert (
        hashlib.sha256(downloaded(events[0].model_extra["url"])).hexdigest()
        != hashlib.sha256(downloaded(events[-1].model_extra["url"])).hexdigest()
    )


# --- async tasks show their previews -------------------------------------------------------------------------


def test_an_async_task_shows_its_previews_while_it_runs(stack):
    stack.slow_simulator(4500)  # two previews and the image, spread over 4.5 s
    submitted = httpx.post(
        stack.api_url + "/images/generations/async",
        headers=HEADERS,
        json={"prompt": "a harbour forming", "size": "1024x1024", "partial_images": 2},
    )
    assert submitted.status_code == 202, submitted.text
    poll_url = submitted.headers["location"]

    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while True:
        task = httpx.get(poll_url, headers=HEADERS).json()
        if task["status"] != "processing":
            break
        for preview in task.get("partial_images", []):
            seen[preview["index"]] = preview
        assert time.monotonic() < deadline, task
        time.sleep(0.3)

    assert task["status"] == "completed", task
    assert "partial_images" not in task  # done: the result is the answer
    assert sorted(seen) == [0, 1]
    for preview in seen.values():
        image = Image.open(io.BytesIO(downloaded(preview["url"])))
        assert (image.format, image.size) == ("PNG", (1024, 1024))
        assert preview["created_at"] > 0
    final = Image.open(io.BytesIO(downloaded(task["result"]["data"][0]["url"])))
    assert final.size == (1024, 1024)
    assert stack.upstream_calls() == 1


def test_an_async_task_cannot_be_streamed(stack):
    response = httpx.post(
        stack.api_url + "/images/generations/async", headers=HEADERS, json={"prompt": "p", "stream": True}
    )

    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("stream", "stream_unsupported")
    assert stack.upstream_calls() == 0


def test_events_arrive_through_the_gateway_as_they_are_made(stack):
    stack.slow_simulator(3000)  # two previews and the image, a second apart
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        stack.api_url + "/images/generations",
        headers=HEADERS,
        json={"prompt": "a tide coming in", "size": "1024x1024", "stream": True, "partial_images": 2},
        timeout=30,
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        for line in response.iter_lines():
            if line.startswith("event: "):
                arrivals.append((time.monotonic() - started, line.removeprefix("event: ")))

    assert [name for _, name in arrivals] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    # the first preview is in the client's hands long before the image is done
    assert arrivals[-1][0] - arrivals[0][0] > 1.2
