"""Async tasks, event-triggered generations and idempotent POSTs end to end through the local stack
(``make run``): curl-like httpx and the official openai SDK against the API, boto3 against the embedded moto
endpoint (EventBridge put_events, SQS, S3, DynamoDB), real images made and opened with Pillow."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from PIL import Image, ImageDraw

from tests.e2e.conftest import API_KEY
from tests.helpers import rgba_mask

pytestmark = pytest.mark.e2e

SECOND_KEY = "isk-e2e-second-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REGION = "us-east-1"
BUS = "image-service-local-images"
BUCKET = "image-service-local"
WAIT_SECONDS = 30


# --- AWS side (the moto endpoint) ---------------------------------------------------------------------------
def aws(stack: Any, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=stack.aws_url,
        region_name=REGION,
        aws_access_key_id="e2e",
        aws_secret_access_key="e2e",  # moto accepts any credentials
    )


class Inbox:
    """Everything that arrives on one SQS queue, read (and deleted) as it comes; tests wait for what they want
    among it, so messages meant for another test are never lost or hidden behind a visibility timeout."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.seen: list[dict[str, Any]] = []

    def _drain(self, wait_seconds: int) -> None:
        messages = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds, MessageAttributeNames=["All"]
        ).get("Messages", [])
        for message in messages:
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            self.seen.append(message)

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [message for message in self.seen if predicate(message)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.matching(predicate):
            assert time.monotonic() < deadline, f"nothing matching arrived on {self.url} in {timeout} s"
            self._drain(wait_seconds=1)
        return self.matching(predicate)[0]

    def settle(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds`` (to show that something did not come)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._drain(wait_seconds=1)


class Queues:
    def __init__(self, stack: Any) -> None:
        self.sqs = aws(stack, "sqs")
        urls = self.sqs.list_queues(QueueNamePrefix="image-service-local")["QueueUrls"]
        by_suffix = {url.rsplit("/", 1)[1].removeprefix("image-service-local-"): url for url in urls}
        self.jobs_url = by_suffix["jobs"]
        self.completions = Inbox(self.sqs, by_suffix["completions"])
        self.dead_letters = Inbox(self.sqs, by_suffix["jobs-dlq"])


@pytest.fixture(scope="module")
def queues(stack: Any) -> Queues:
    return Queues(stack)


def event_body(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])


def about(correlation_id: str) -> Callable[[dict[str, Any]], bool]:
    """A completions-queue message (an event the service published) for this correlation id."""
    return lambda message: event_body(message).get("detail", {}).get("correlation_id") == correlation_id


def s3_image(stack: Any, bucket: str, key: str) -> Image.Image:
    body = aws(stack, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def task_count(stack: Any) -> int:
    return aws(stack, "dynamodb").scan(TableName="image-service-local-tasks", Select="COUNT")["Count"]


# --- real images --------------------------------------------------------------------------------------------
def picture(width: int, height: int, seed: int) -> Image.Image:
    image = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize((width, height)),
            Image.linear_gradient("L").rotate(90 * (seed + 1)).resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ),
    )
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 5, width // 2, height // 2), fill=(30 * seed, 200, 90))
    return Image.blend(image, Image.effect_noise((width, height), 40).convert("RGB"), 0.2)


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# --- the API ------------------------------------------------------------------------------------------------
def download(url: str) -> Image.Image:
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def poll(url: str, key: str = API_KEY, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
    """Poll a task until it leaves ``processing`` (bounded); every answer must be a 200 marked no-store."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        task = response.json()
        if task["status"] != "processing":
            return task
        assert time.monotonic() < deadline, f"task still processing after {timeout} s: {task}"
        time.sleep(0.2)


def assert_accepted(response: httpx.Response, stack: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    assert response.headers["retry-after"] == "3"
    assert response.headers["cache-control"] == "no-store"
    task = response.json()
    location = response.headers["location"]
    assert location == f"{stack.api_url}/images/tasks/{task['id']}"
    assert task["poll_url"] == location
    assert task["object"] == "image.generation.task"
    assert task["status"] == "processing"
    assert task["id"] == task["task_id"] and task["id"].startswith("task_")
    # a task is kept 24 h after its last change (a replay may find it already taken by the worker)
    assert 24 * 3600 <= task["expires_at"] - task["created_at"] <= 24 * 3600 + 60
    return task


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


def object_path(url: str) -> str:
    return urlsplit(url).path


# --- 1. async 4K generation, curl-like ----------------------------------------------------------------------
def test_async_4k_generation_submit_poll_download(stack):
    submitted = httpx.post(
        stack.api_url + "/images/generations/async",
        json={"prompt": "a harbour city at night, 4K", "size": "3840x2160"},
        headers=AUTH,
        timeout=30,
    )
    task = assert_accepted(submitted, stack)

    done = poll(submitted.headers["location"])
    assert done["status"] == "completed", done
    assert (done["id"], done["object"], done["http_status"]) == (task["id"], "image.generation.task", 200)
    assert done["completed_at"] >= done["created_at"] == task["created_at"]
    assert "error" not in done
    image = download(done["image_url"])
    assert (image.format, image.size) == ("PNG", (3840, 2160))
    result = done["result"]
    assert len(result["data"]) == 1
    assert object_path(result["data"][0]["url"]) == object_path(done["image_url"])
    assert (result["size"], result["model"], result["output_format"]) == ("3840x2160", "gpt-image-2", "png")
    assert result["usage"]["total_tokens"] > 0
    assert stack.upstream_calls() == 1

    # A later poll still reads it (fresh URLs to the same object), and only the submitting key may.
    again = poll(task["poll_url"])
    assert object_path(again["image_url"]) == object_path(done["image_url"])
    for url, key in (
        (task["poll_url"], SECOND_KEY),
        (f"{stack.api_url}/images/tasks/task_{'0' * 32}", API_KEY),
        (f"{stack.api_url}/images/tasks/not-a-task", API_KEY),
    ):
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        assert assert_openai_error(response, 404)["code"] == "task_not_found"
        assert response.headers["cache-control"] == "no-store"
    assert httpx.get(task["poll_url"]).status_code == 401
    assert stack.upstream_calls() == 1


# --- 2. async failure ---------------------------------------------------------------------------------------
def test_async_task_relays_an_upstream_policy_block_as_failed(stack):
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
    submitted = httpx.post(
        stack.api_url + "/images/generations/async", json={"prompt": "forbidden", "size": "1024x1024"}, headers=AUTH
    )
    task = assert_accepted(submitted, stack)

    done = poll(task["poll_url"])
    assert (done["status"], done["http_status"]) == ("failed", 400)
    assert done["error"]["code"] == "moderation_blocked"
    assert done["error"]["message"]
    assert "result" not in done and "image_url" not in done
    assert done["completed_at"] >= done["created_at"]
    assert stack.upstream_calls() == 1  # a policy block is not retried


# --- 3. async edits -----------------------------------------------------------------------------------------
def test_async_edit_with_two_pngs_and_an_rgba_mask(stack):
    first, second = png_bytes(picture(768, 512, seed=1)), png_bytes(picture(640, 640, seed=2))
    submitted = httpx.post(
        stack.api_url + "/images/edits/async",
        files=[
            ("image[]", ("a.png", first, "image/png")),
            ("image[]", ("b.png", second, "image/png")),
            ("mask", ("mask.png", rgba_mask((768, 512)), "image/png")),
            ("prompt", (None, "the two scenes side by side under a stormy sky")),
            ("size", (None, "1536x1024")),
        ],
        headers=AUTH,
        timeout=60,
    )
    task = assert_accepted(submitted, stack)

    done = poll(task["poll_url"])
    assert (done["status"], done["http_status"]) == ("completed", 200), done
    image = download(done["image_url"])
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert done["result"]["usage"]["input_tokens_details"]["image_tokens"] > 0
    assert stack.upstream_calls() == 1
    upstream = httpx.get(stack.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["last_request"]
    assert upstream["path"] == "/v1/images/edits"
    assert httpx.get(task["poll_url"], headers={"Authorization": f"Bearer {SECOND_KEY}"}).status_code == 404


def test_bad_async_submits_are_a_400_and_make_no_task(stack):
    tasks_before = task_count(stack)
    stream = httpx.post(stack.api_url + "/images/generations/async", json={"prompt": "p", "stream": True}, headers=AUTH)
    assert assert_openai_error(stream, 400)["param"] == "stream"
    size = httpx.post(
        stack.api_url + "/images/generations/async", json={"prompt": "p", "size": "1000x1000"}, headers=AUTH
    )
    assert assert_openai_error(size, 400)["param"] == "size"

    real = png_bytes(picture(512, 512, seed=3))
    edit_stream = httpx.post(
        stack.api_url + "/images/edits/async",
        files=[("image", ("a.png", real, "image/png")), ("prompt", (None, "p")), ("stream", (None, "true"))],
        headers=AUTH,
    )
    assert assert_openai_error(edit_stream, 400)["param"] == "stream"
    for response in (stream, size, edit_stream):
        assert "location" not in response.headers

    time.sleep(1)  # a job queued by mistake would have reached the worker by now
    assert task_count(stack) == tasks_before
    assert stack.upstream_calls() == 0


# --- 4. event-triggered generation --------------------------------------------------------------------------
def test_eventbridge_event_generates_and_publishes_the_completion(stack, queues):
    correlation_id, prefix = f"order-{uuid.uuid4()}", f"e2e/{uuid.uuid4().hex[:12]}"
    answer = aws(stack, "events").put_events(
        Entries=[
            {
                "Source": "com.example.shop",
                "DetailType": "ImageGenerationRequested",
                "EventBusName": BUS,
                "Detail": json.dumps(
                    {
                        "prompt": "a product shot of a teapot",
                        "size": "1536x1024",
                        "correlation_id": correlation_id,
                        "output_prefix": prefix,
                    }
                ),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    event_id = answer["Entries"][0]["EventId"]

    event = event_body(queues.completions.wait_for(about(correlation_id)))
    assert (event["detail-type"], event["source"]) == ("ImageGenerationCompleted", "image-service")
    detail = event["detail"]
    assert (detail["correlation_id"], detail["request_id"], detail["bucket"]) == (correlation_id, event_id, BUCKET)
    assert (detail["size"], detail["output_format"], detail["model"]) == ("1536x1024", "png", "gpt-image-2")
    assert detail["usage"]["total_tokens"] > 0
    assert len(detail["keys"]) == 1
    assert detail["keys"][0].startswith(f"images/events/{prefix}/{event_id}/")
    image = s3_image(stack, detail["bucket"], detail["keys"][0])
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert stack.upstream_calls() == 1


def test_sqs_message_on_the_jobs_queue_generates_and_publishes_the_completion(stack, queues):
    correlation_id = f"batch-{uuid.uuid4()}"
    sent = queues.sqs.send_message(
        QueueUrl=queues.jobs_url,
        MessageBody=json.dumps(
            {"prompt": "a watercolour fox", "size": "1024x1536", "quality": "low", "correlation_id": correlation_id}
        ),
    )

    detail = event_body(queues.completions.wait_for(about(correlation_id)))["detail"]
    assert detail["request_id"] == sent["MessageId"]
    assert detail["keys"][0].startswith(f"images/events/jobs/{sent['MessageId']}/")
    assert (detail["quality"], detail["size"]) == ("low", "1024x1536")
    image = s3_image(stack, detail["bucket"], detail["keys"][0])
    assert (image.format, image.size) == ("PNG", (1024, 1536))
    assert stack.upstream_calls() == 1


def test_a_redelivered_event_finishes_from_s3_without_a_second_upstream_call(stack, queues):
    correlation_id, event_id = f"redelivery-{uuid.uuid4()}", str(uuid.uuid4())
    # What the rule puts on the jobs queue; SQS delivering it twice is the same body twice.
    body = json.dumps(
        {
            "id": event_id,
            "detail-type": "ImageGenerationRequested",
            "source": "com.example.shop",
            "detail": {"prompt": "a lantern", "size": "1024x1024", "correlation_id": correlation_id},
        }
    )
    queues.sqs.send_message(QueueUrl=queues.jobs_url, MessageBody=body)
    first = event_body(queues.completions.wait_for(about(correlation_id)))["detail"]
    queues.sqs.send_message(QueueUrl=queues.jobs_url, MessageBody=body)
    queues.completions.wait_for(lambda m: len(queues.completions.matching(about(correlation_id))) == 2)

    second = event_body(queues.completions.matching(about(correlation_id))[1])["detail"]
    assert (second["keys"], second["bucket"], second["request_id"]) == (first["keys"], first["bucket"], event_id)
    assert s3_image(stack, first["bucket"], first["keys"][0]).size == (1024, 1024)
    assert stack.upstream_calls() == 1


def test_an_upstream_failure_publishes_image_generation_failed(stack, queues):
    stack.queue_faults(
        {
            "status": 400,
            "error": {"message": "Rejected.", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
    )
    correlation_id = f"failing-{uuid.uuid4()}"
    aws(stack, "events").put_events(
        Entries=[
            {
                "Source": "com.example.shop",
                "DetailType": "ImageGenerationRequested",
                "EventBusName": BUS,
                "Detail": json.dumps({"prompt": "forbidden", "size": "1024x1024", "correlation_id": correlation_id}),
            }
        ]
    )
    event = event_body(queues.completions.wait_for(about(correlation_id)))
    assert event["detail-type"] == "ImageGenerationFailed"
    assert (event["detail"]["http_status"], event["detail"]["error"]["code"]) == (400, "moderation_blocked")
    assert stack.upstream_calls() == 1


def test_a_bad_event_goes_to_the_dead_letter_queue_with_its_reason(stack, queues):
    correlation_id = f"bad-{uuid.uuid4()}"
    answer = aws(stack, "events").put_events(
        Entries=[
            {
                "Source": "com.example.shop",
                "DetailType": "ImageGenerationRequested",
                "EventBusName": BUS,
                "Detail": json.dumps({"prompt": "p", "size": "1000x1000", "correlation_id": correlation_id}),
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0

    dead = queues.dead_letters.wait_for(lambda m: correlation_id in m["Body"])
    assert "multiples of 16" in dead["MessageAttributes"]["reason"]["StringValue"]
    assert event_body(dead)["detail"]["size"] == "1000x1000"  # the original event, kept whole
    assert dead["MessageAttributes"]["original_message_id"]["StringValue"]

    not_json = f"not json {correlation_id}"
    queues.sqs.send_message(QueueUrl=queues.jobs_url, MessageBody=not_json)
    dead = queues.dead_letters.wait_for(lambda m: m["Body"] == not_json)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "the message is not JSON"

    queues.completions.settle(1.5)
    assert queues.completions.matching(about(correlation_id)) == []
    assert stack.upstream_calls() == 0


# --- 5. idempotency -----------------------------------------------------------------------------------------
def test_idempotent_post_is_one_upstream_call_and_a_reused_key_is_a_422(stack):
    key, body = f"e2e-{uuid.uuid4()}", {"prompt": "a lighthouse at dawn", "size": "1024x1024"}
    first = httpx.post(
        stack.api_url + "/images/generations", json=body, headers={**AUTH, "Idempotency-Key": key}, timeout=60
    )
    second = httpx.post(
        stack.api_url + "/images/generations", json=body, headers={**AUTH, "idempotency-key": key}, timeout=60
    )
    assert (first.status_code, second.status_code) == (200, 200), second.text
    url_one, url_two = first.json()["data"][0]["url"], second.json()["data"][0]["url"]
    assert object_path(url_one) == object_path(url_two)
    assert download(url_two).size == (1024, 1024)
    assert first.json()["usage"] == second.json()["usage"]
    assert stack.upstream_calls() == 1

    reused = httpx.post(
        stack.api_url + "/images/generations",
        json={**body, "prompt": "something else"},
        headers={**AUTH, "Idempotency-Key": key},
        timeout=60,
    )
    error = assert_openai_error(reused, 422)
    assert (error["code"], error["type"]) == ("idempotency_key_reused", "invalid_request_error")
    assert stack.upstream_calls() == 1

    # The key belongs to the caller: another API key with the same Idempotency-Key is a new request.
    other = httpx.post(
        stack.api_url + "/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {SECOND_KEY}", "Idempotency-Key": key},
        timeout=60,
    )
    assert other.status_code == 200
    assert object_path(other.json()["data"][0]["url"]) != object_path(url_one)
    assert stack.upstream_calls() == 2


def test_a_retry_while_the_first_is_running_is_a_409(stack):
    stack.queue_faults(
        {
            "status": 400,
            "latency_ms": 2000,
            "error": {"message": "Rejected.", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
    )
    key, body = f"e2e-{uuid.uuid4()}", {"prompt": "slow", "size": "1024x1024"}
    headers = {**AUTH, "Idempotency-Key": key}
    answers: list[httpx.Response] = []
    running = threading.Thread(
        target=lambda: answers.append(
            httpx.post(stack.api_url + "/images/generations", json=body, headers=headers, timeout=60)
        )
    )
    running.start()
    time.sleep(0.7)
    retry = httpx.post(stack.api_url + "/images/generations", json=body, headers=headers, timeout=60)
    running.join(timeout=30)
    error = assert_openai_error(retry, 409)
    assert error["code"] == "idempotency_request_in_progress"
    assert retry.headers["retry-after"]
    assert assert_openai_error(answers[0], 400)["code"] == "moderation_blocked"

    # A failure is not remembered: the same key runs again.
    after = httpx.post(stack.api_url + "/images/generations", json=body, headers=headers, timeout=60)
    assert after.status_code == 200, after.text
    assert stack.upstream_calls() == 2


def test_idempotency_through_the_openai_sdk(stack, openai_client):
    key = f"sdk-{uuid.uuid4()}"
    first = openai_client.images.generate(
        model="gpt-image-2", prompt="a paper boat", size="1024x1536", extra_headers={"Idempotency-Key": key}
    )
    second = openai_client.images.generate(
        model="gpt-image-2", prompt="a paper boat", size="1024x1536", extra_headers={"Idempotency-Key": key}
    )
    assert object_path(first.data[0].url) == object_path(second.data[0].url)
    assert download(second.data[0].url).size == (1024, 1536)
    assert stack.upstream_calls() == 1


def test_async_submit_twice_with_the_same_key_is_one_task(stack):
    key, body = f"async-{uuid.uuid4()}", {"prompt": "a kite", "size": "1024x1024"}
    headers = {**AUTH, "Idempotency-Key": key}
    first = assert_accepted(httpx.post(stack.api_url + "/images/generations/async", json=body, headers=headers), stack)
    second = assert_accepted(httpx.post(stack.api_url + "/images/generations/async", json=body, headers=headers), stack)
    assert second["id"] == first["id"]

    done = poll(first["poll_url"])
    assert done["status"] == "completed"
    assert download(done["image_url"]).size == (1024, 1024)
    third = httpx.post(stack.api_url + "/images/generations/async", json=body, headers=headers)
    assert third.status_code == 202 and third.json()["id"] == first["id"]
    time.sleep(0.5)
    assert stack.upstream_calls() == 1


def test_an_async_edit_answers_at_once_and_a_bad_image_fails_its_task_as_the_sync_route_would(stack):
    started = time.monotonic()
    submitted = httpx.post(
        stack.api_url + "/images/edits/async",
        files=[("image", ("a.png", b"this is not a picture", "image/png")), ("prompt", (None, "p"))],
        headers=AUTH,
    )
    assert submitted.status_code == 202, submitted.text
    assert time.monotonic() - started < 2
    view = poll(submitted.headers["location"])
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 400, "invalid_image_format")
    assert stack.upstream_calls() == 0
