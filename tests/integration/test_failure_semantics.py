"""The "Failure semantics" table of docs/api.md, row by row: each fault is injected at a chosen AWS call through
botocore's event hooks on the function's real clients (``tests/faults.py``), or the process is crashed there, and the
row says what the caller then sees, what is stored, and how many times the upstream was asked (the simulator counts).

docs/api.md shows the same rows; ``test_the_api_docs_show_this_table`` keeps the two the same.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.faults import Call, Crash, Faults, dynamodb_status, faults  # noqa: F401 (fixture)
from tests.helpers import key_of
from tests.integration.stack import Stack, submit_generation

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@dataclass(frozen=True)
class Row:
    fault: str
    where: str
    caller_sees: str
    stored: str
    upstream_calls: int
    run: Callable[[Stack, Faults, list[float]], tuple[str, str]]


# --- what the rows look at --------------------------------------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def stored_in(stack: Stack, folder: str) -> str:
    """'1 image + 1 record + result.json': every image opened whole, the records beside them (one per image, in a
    folder the service comes back to), then the manifests."""
    keys = stack.stored_keys(folder + "/")
    images = [key for key in keys if not key.endswith(".json")]
    for key in images:
        assert stack.image(key).size == (1024, 1024), key
    names = [key.rsplit("/", 1)[1] for key in keys if key.endswith(".json")]
    records = [name for name in names if name.split(".")[0].isdigit()]
    manifests = sorted(name for name in names if name not in records)
    return " + ".join(
        [plural(len(images), "image"), *([plural(len(records), "record")] if records else []), *manifests]
    )


def downloaded(url: str) -> Image.Image:
    """The image a presigned URL answers, opened whole."""
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, url
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    return image


def task_seen(stack: Stack, task_id: str) -> str:
    view = stack.get_task(task_id).body
    seen = f"task {view['status']} {view['http_status']}"
    if view["status"] == "failed":
        return f"{seen} {view['error']['code']}"
    assert view["image_url"] == view["result"]["data"][0]["url"]
    for item in view["result"]["data"]:
        assert downloaded(item["url"]).size == (1024, 1024)
    return seen


def task_images(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    return list(stack.get_task(task_id).body["result"]["data"])


def events_seen(stack: Stack) -> str:
    seen = []
    for event in stack.published():
        code = event["detail"].get("error", {}).get("code")
        seen.append(event["detail-type"] + (f" {code}" if code else ""))
    return ", ".join(seen) or "no event"


def task_folder(stack: Stack, task_id: str) -> str:
    item = stack.task_item(task_id)
    assert item is not None
    return str(item["folder"])


def lapse_hold(stack: Stack, key: str) -> None:
    """Time passes: the dead delivery's claim runs out (it holds as long as that invocation could live)."""
    stack.task_table.update_item(
        Key={"id": key},
        UpdateExpression="SET claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 1},
    )


def on_delivery(message: dict[str, Any], count: int) -> dict[str, Any]:
    """The same message as SQS hands it over on its ``count``-th receive."""
    return {**message, "Attributes": {**message.get("Attributes", {}), "ApproximateReceiveCount": str(count)}}


def lapse_in_progress(stack: Stack) -> None:
    """Time passes: the dead invocation's in-progress idempotency record expires (Powertools gives it as long as
    that invocation could live), so a retry may run."""
    for item in stack.idempotency_table.scan()["Items"]:
        stack.idempotency_table.update_item(
            Key={"id": item["id"]},
            UpdateExpression="SET in_progress_expiration = :t",
            ExpressionAttributeValues={":t": int(time.time() * 1000) - 1},
        )


def completed_images(stack: Stack) -> tuple[str, int]:
    """The events published, and how many images the completion names (each downloaded from a fresh presigned
    URL and opened whole)."""
    (event,) = stack.published()
    keys = event["detail"].get("keys") or []
    presign = stack.worker().service.store.presign
    for key in keys:
        assert key.startswith(f"images/events/jobs/{event['detail']['request_id']}/")
        assert downloaded(presign(key)).size == (1024, 1024)
    return event["detail-type"], len(keys)


def second_image(call: Call) -> bool:
    return call.url_path.endswith("/1.png")


def result_put(call: Call) -> bool:
    return call.url_path.endswith("/result.json")


def completing(call: Call) -> bool:
    return dynamodb_status(call) == "completed"


def image_put(call: Call) -> bool:
    return not call.url_path.endswith(".json")


def event_job(stack: Stack, detail: dict[str, Any] | None = None, event_id: str | None = None) -> dict[str, Any]:
    event = {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "ImageGenerationRequested",
        "source": "com.example.orders",
        "account": "123456789012",
        "time": "2026-11-25T14:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail or {"prompt": "a red bicycle", "size": "1024x1024", "correlation_id": "order-42"},
    }
    return stack.send_job(json.dumps(event))


def event_folder(message: dict[str, Any]) -> str:
    return f"images/events/jobs/{json.loads(message['Body'])['id']}"


# --- the rows ---------------------------------------------------------------------------------------------------


def refused_completed_write(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    refused = inject.refuse(stack.worker().tasks.client, "UpdateItem", times=3, when=completing)
    assert stack.run_worker() == []
    assert refused.hits == 3
    assert pauses == [0.5, 1.0, 2.0]
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def refused_past_the_delivery(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    (job,) = stack.jobs()
    refused = inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=completing)
    assert stack.run_worker([job]) == [job["MessageId"]]  # the function's time is spent: delivered again
    assert refused.hits > 10 and sum(pauses) > 500
    inject.clear()
    # On AWS the redelivery comes after the visibility timeout (an hour): past the 30-minute limit, with the
    # claim long lapsed, and S3 unreachable for its first reads.
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET created_at = :t, claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 3600},
    )
    unreachable = inject.refuse(stack.worker().service.store.s3, "GetObject", times=2, unreachable=True)
    assert stack.run_worker([on_delivery(job, 2)]) == []
    assert unreachable.hits == 2
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def s3_unreachable_at_start(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    unreachable = inject.refuse(stack.worker().service.store.s3, "GetObject", times=3, unreachable=True)
    assert stack.run_worker() == []
    assert unreachable.hits == 3
    assert pauses == [0.5, 1.0, 2.0]
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def s3_refuses_the_image_twice(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    refused = inject.refuse(stack.worker().service.store.s3, "PutObject", times=2, when=image_put)
    assert stack.run_worker() == []
    assert (refused.hits, refused.seen) == (2, 3)
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def s3_refuses_every_write(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    inject.refuse(stack.worker().service.store.s3, "PutObject", times=10**6)
    assert stack.run_worker() == []  # finished: failed with why, never left processing
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def task_claim_refused_every_delivery(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    (job,) = stack.jobs()
    inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=lambda call: not dynamodb_status(call))
    for count in (1, 2, 3, 4):
        assert stack.run_worker([on_delivery(job, count)]) == [job["MessageId"]]
    assert stack.run_worker([on_delivery(job, 5)]) == []
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def idempotency_store_down_before(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    inject.refuse(stack.generations.deps().idempotency.client, "PutItem", times=10**6, unreachable=True)
    answer = stack.post(
        "/v1/images/generations", {"prompt": "p", "size": "1024x1024"}, headers={"Idempotency-Key": "k-2"}
    )
    assert "not run" in answer.body["error"]["message"]
    return f"{answer.status} {answer.body['error']['code']}", stored_in(stack, "images")


def crash_at_completed_write(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().tasks.client, "UpdateItem", when=completing)
    with pytest.raises(Crash):
        stack.run_worker([job])
    assert stack.task_item(task_id)["status"] == "processing"
    assert stack.run_worker([on_delivery(job, 2)]) == []  # the claim still holds: result.json comes first
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def crash_storing_the_image(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().service.store.s3, "PutObject", when=image_put)
    with pytest.raises(Crash):
        stack.run_worker([job])
    assert stack.run_worker([on_delivery(job, 2)]) == [job["MessageId"]]  # held by the dead delivery: later
    lapse_hold(stack, task_id)
    assert stack.run_worker([on_delivery(job, 3)]) == []
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def event_crash_at_publish(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack)
    inject.crash(stack.worker().events.client, "PutEvents")
    with pytest.raises(Crash):
        stack.run_worker([message])
    assert stack.run_worker([on_delivery(message, 2)]) == []
    return events_seen(stack), stored_in(stack, event_folder(message))


def event_publish_refused(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack)
    inject.refuse(stack.worker().events.client, "PutEvents", times=1)
    assert stack.run_worker([message]) == [message["MessageId"]]
    assert stack.dead_letters() == []
    assert stack.run_worker([on_delivery(message, 2)]) == []
    return events_seen(stack), stored_in(stack, event_folder(message))


def event_claim_refused_every_delivery(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack)
    inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=lambda call: not dynamodb_status(call))
    for count in (1, 2, 3, 4):
        assert stack.run_worker([on_delivery(message, count)]) == [message["MessageId"]]
    assert stack.run_worker([on_delivery(message, 5)]) == []  # maxReceiveCount: ends as failed, not silently
    assert stack.dead_letters() == []
    return events_seen(stack), stored_in(stack, event_folder(message))


def event_crash_storing_the_image(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack)
    inject.crash(stack.worker().service.store.s3, "PutObject", when=image_put)
    with pytest.raises(Crash):
        stack.run_worker([message])
    lapse_hold(stack, f"job#{event_folder(message)}")
    assert stack.run_worker([on_delivery(message, 2)]) == []
    return events_seen(stack), stored_in(stack, event_folder(message))


def claiming(call: Call) -> bool:
    return dynamodb_status(call) is None


def later_deliveries_refuse_the_claim(stack: Stack, inject: Faults, message: dict[str, Any]) -> None:
    """Deliveries 2 to 4 meet a refused claim and come back; the 5th (the last) meets it too and ends the job."""
    inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=claiming)
    for count in (2, 3, 4):
        assert stack.run_worker([on_delivery(message, count)]) == [message["MessageId"]]
    assert stack.run_worker([on_delivery(message, 5)]) == []
    assert stack.dead_letters() == []


def task_stored_then_writes_refused_to_the_last_delivery(
    stack: Stack, inject: Faults, pauses: list[float]
) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024"}).body["id"]
    (job,) = stack.jobs()
    manifest = inject.refuse(stack.worker().service.store.s3, "PutObject", times=10**6, when=result_put)
    completed = inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=completing)
    assert stack.run_worker([job]) == [job["MessageId"]]  # the function's time is spent: delivered again
    assert manifest.hits > 10 and completed.hits > 10
    assert stack.task_item(task_id)["status"] == "processing"
    inject.clear()
    later_deliveries_refuse_the_claim(stack, inject, job)
    (image,) = task_images(stack, task_id)  # what the first delivery stored, with its revised prompt
    assert image["revised_prompt"] == "p (as drawn)"
    return task_seen(stack, task_id), stored_in(stack, task_folder(stack, task_id))


def task_crash_before_the_manifest_then_claims_refused(
    stack: Stack, inject: Faults, pauses: list[float]
) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 2}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().service.store.s3, "PutObject", when=result_put)
    with pytest.raises(Crash):
        stack.run_worker([job])
    inject.clear()
    later_deliveries_refuse_the_claim(stack, inject, job)
    assert len(task_images(stack, task_id)) == 2
    return f"{task_seen(stack, task_id)} with 2 images", stored_in(stack, task_folder(stack, task_id))


def event_stored_then_writes_refused_to_the_last_delivery(
    stack: Stack, inject: Faults, pauses: list[float]
) -> tuple[str, str]:
    message = event_job(stack)
    manifest = inject.refuse(stack.worker().service.store.s3, "PutObject", times=10**6, when=result_put)
    completed = inject.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6, when=completing)
    assert stack.run_worker([message]) == [message["MessageId"]]  # the function's time is spent: delivered again
    assert manifest.hits > 10 and completed.hits > 10
    assert stack.published() == []
    inject.clear()
    later_deliveries_refuse_the_claim(stack, inject, message)
    kind, count = completed_images(stack)
    return f"{kind} with {count} image", stored_in(stack, event_folder(message))


def event_crash_before_the_manifest_then_claims_refused(
    stack: Stack, inject: Faults, pauses: list[float]
) -> tuple[str, str]:
    message = event_job(stack, {"prompt": "p", "size": "1024x1024", "n": 2, "correlation_id": "order-9"})
    inject.crash(stack.worker().service.store.s3, "PutObject", when=result_put)
    with pytest.raises(Crash):
        stack.run_worker([message])
    inject.clear()
    later_deliveries_refuse_the_claim(stack, inject, message)
    kind, count = completed_images(stack)
    return f"{kind} with {count} images", stored_in(stack, event_folder(message))


def forged_envelope(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    victim = event_job(stack, {"prompt": "the victim's drawing", "size": "1024x1024", "correlation_id": "victim"})
    assert stack.run_worker([victim]) == []
    stack.published()
    victim_id = json.loads(victim["Body"])["id"]
    forged = event_job(stack, {"prompt": "x", "size": "1024x1024", "correlation_id": "thief"}, event_id=victim_id)
    assert stack.run_worker([forged]) == []
    (dead,) = stack.dead_letters()
    assert "another request" in dead["MessageAttributes"]["reason"]["StringValue"]
    # Nor with the very same detail under another correlation id.
    borrowed = event_job(
        stack, {"prompt": "the victim's drawing", "size": "1024x1024", "correlation_id": "thief"}, event_id=victim_id
    )
    assert stack.run_worker([borrowed]) == []
    assert len(stack.dead_letters()) == 2
    return f"dead-lettered, {events_seen(stack)}", stored_in(stack, event_folder(victim))


def queue_refused_at_submit(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    inject.refuse(stack.generations_async.deps().submitter.queue.client, "SendMessage")
    answer = submit_generation(stack, {"prompt": "p", "size": "1024x1024"})
    (item,) = stack.task_items()
    seen = f"{answer.status} {answer.body['error']['code']}; {task_seen(stack, item['id'])}"
    return seen, stored_in(stack, "images")


def idempotency_record_refused(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    inject.refuse(stack.generations.deps().idempotency.client, "UpdateItem", times=1)
    answer = stack.post(
        "/v1/images/generations", {"prompt": "p", "size": "1024x1024"}, headers={"Idempotency-Key": "k-1"}
    )
    assert answer.status == 200, answer.body
    (url,) = [item["url"] for item in answer.body["data"]]
    folder = key_of(url).rsplit("/", 1)[0]
    return f"{answer.status} with the images", stored_in(stack, folder)


def inline_too_large_then_url(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAX_INLINE_RESPONSE_BYTES", "100000")
        stack.clear()
        body = {"prompt": "p", "size": "1024x1024", "n": 2, "response_format": "b64_json"}
        refused = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "big-1"})
        assert refused.status == 400, refused.body
        assert "'Idempotency-Key: big-1'" in refused.body["error"]["message"]
        assert refused.headers["idempotency-key"] == "big-1"
        answer = stack.post(
            "/v1/images/generations", {**body, "response_format": "url"}, headers={"Idempotency-Key": "big-1"}
        )
    stack.clear()
    assert answer.status == 200, answer.body
    folder = key_of(answer.body["data"][0]["url"]).rsplit("/", 1)[0]
    return f"{refused.status} {refused.body['error']['code']}, then {answer.status} with the images", stored_in(
        stack, folder
    )


def inline_too_large_without_a_key(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAX_INLINE_RESPONSE_BYTES", "100000")
        stack.clear()
        body = {"prompt": "p", "size": "1024x1024", "n": 2, "response_format": "b64_json"}
        refused = stack.post("/v1/images/generations", body)
        assert refused.status == 400, refused.body
        key = refused.headers["idempotency-key"]
        assert key.startswith("auto-") and f"Idempotency-Key: {key}" in refused.body["error"]["message"]
        answer = stack.post(
            "/v1/images/generations", {**body, "response_format": "url"}, headers={"Idempotency-Key": key}
        )
    stack.clear()
    assert answer.status == 200, answer.body
    folder = key_of(answer.body["data"][0]["url"]).rsplit("/", 1)[0]
    seen = f"{refused.status} {refused.body['error']['code']}, then {answer.status} with the images"
    return seen, stored_in(stack, folder)


def emoji_prompt_with_a_key(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    body = {"prompt": "\U0001f600" * 32_000, "size": "1024x1024", "n": 2}
    first = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "emoji"})
    again = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "emoji"})
    assert first.status == 200, first.body
    assert [key_of(item["url"]) for item in again.body["data"]] == [key_of(item["url"]) for item in first.body["data"]]
    assert again.body["data"][0]["revised_prompt"] == first.body["data"][0]["revised_prompt"]
    submitted = submit_generation(stack, body, headers={"Idempotency-Key": "emoji-async"})
    resubmitted = submit_generation(stack, body, headers={"Idempotency-Key": "emoji-async"})
    assert (submitted.status, resubmitted.status) == (202, 202), submitted.body
    assert resubmitted.body["id"] == submitted.body["id"]
    assert stack.run_worker() == []
    task = stack.get_task(submitted.body["id"]).body
    assert task["status"] == "completed", task
    # The task record keeps the revised prompts out (result.json has them): the poll still answers them whole.
    assert [item["revised_prompt"] for item in task["result"]["data"]] == [body["prompt"] + " (as drawn)"] * 2
    assert len(json.dumps(stack.task_item(task["id"]), default=str, ensure_ascii=False).encode()) < 200_000
    for item in stack.idempotency_table.scan()["Items"]:
        assert len(json.dumps(item, default=str)) < 2_000  # a digest and a reference, not the request
    folder = key_of(first.body["data"][0]["url"]).rsplit("/", 1)[0]
    seen = f"{first.status}, the retry {again.status} with the same images; async 202, the same task, {task['status']}"
    return seen, stored_in(stack, folder)


def crash_after_image_one_of_two(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 2}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().service.store.s3, "PutObject", when=second_image)
    with pytest.raises(Crash):
        stack.run_worker([job])
    inject.clear()
    assert stack.run_worker([on_delivery(job, 2)]) == [job["MessageId"]]  # held by the dead delivery: later
    lapse_hold(stack, task_id)
    assert stack.run_worker([on_delivery(job, 3)]) == []
    (image,) = task_images(stack, task_id)  # what it stored, with its revised prompt
    assert image["revised_prompt"] == "p (as drawn)"
    return f"{task_seen(stack, task_id)} with 1 image", stored_in(stack, task_folder(stack, task_id))


def crash_after_image_one_of_two_redelivered_late(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 2}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().service.store.s3, "PutObject", when=second_image)
    with pytest.raises(Crash):
        stack.run_worker([job])
    inject.clear()
    # On AWS the redelivery comes after the visibility timeout (an hour): past the 30-minute limit, claim lapsed.
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET created_at = :t, claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 3600},
    )
    assert stack.run_worker([on_delivery(job, 2)]) == []
    assert len(task_images(stack, task_id)) == 1
    return f"{task_seen(stack, task_id)} with 1 image", stored_in(stack, task_folder(stack, task_id))


def crash_before_the_result_manifest(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 2}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().service.store.s3, "PutObject", when=result_put)
    with pytest.raises(Crash):
        stack.run_worker([job])
    inject.clear()
    assert stack.stored_keys(task_folder(stack, task_id) + "/result.json") == []
    lapse_hold(stack, task_id)
    assert stack.run_worker([on_delivery(job, 2)]) == []
    images = task_images(stack, task_id)
    assert [image["revised_prompt"] for image in images] == ["p (as drawn)"] * 2
    assert stack.get_task(task_id).body["result"]["usage"] is None  # reported at the end of the lost answer
    return f"{task_seen(stack, task_id)} with 2 images", stored_in(stack, task_folder(stack, task_id))


def crash_at_completed_write_two_images(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 2}).body["id"]
    (job,) = stack.jobs()
    inject.crash(stack.worker().tasks.client, "UpdateItem", when=completing)
    with pytest.raises(Crash):
        stack.run_worker([job])
    inject.clear()
    assert stack.run_worker([on_delivery(job, 2)]) == []  # the claim still holds: result.json comes first
    assert stack.get_task(task_id).body["result"]["usage"]["total_tokens"] > 0
    return f"{task_seen(stack, task_id)} with 2 images", stored_in(stack, task_folder(stack, task_id))


def event_crash_after_image_one_of_two(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack, {"prompt": "p", "size": "1024x1024", "n": 2, "correlation_id": "order-7"})
    inject.crash(stack.worker().service.store.s3, "PutObject", when=second_image)
    with pytest.raises(Crash):
        stack.run_worker([message])
    inject.clear()
    lapse_hold(stack, f"job#{event_folder(message)}")
    assert stack.run_worker([on_delivery(message, 2)]) == []
    kind, count = completed_images(stack)
    assert stack.run_worker([on_delivery(message, 3)]) == []  # a later delivery finishes from result.json
    assert completed_images(stack) == (kind, count)
    return f"{kind} with {count} image", stored_in(stack, event_folder(message))


def event_crash_before_the_result_manifest(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    message = event_job(stack, {"prompt": "p", "size": "1024x1024", "n": 2, "correlation_id": "order-8"})
    inject.crash(stack.worker().service.store.s3, "PutObject", when=result_put)
    with pytest.raises(Crash):
        stack.run_worker([message])
    inject.clear()
    lapse_hold(stack, f"job#{event_folder(message)}")
    assert stack.run_worker([on_delivery(message, 2)]) == []
    kind, count = completed_images(stack)
    return f"{kind} with {count} images", stored_in(stack, event_folder(message))


def keyed_crash_before_the_answer(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    body = {"prompt": "p", "size": "1024x1024", "n": 2}
    inject.crash(stack.generations.deps().service.store.s3, "PutObject", when=result_put)
    with pytest.raises(Crash):
        stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-1"})
    inject.clear()
    busy = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-1"})
    assert busy.status == 409, busy.body  # the dead run could still be alive: the retry waits
    lapse_in_progress(stack)
    answer = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-1"})
    assert answer.status == 200, answer.body
    assert [item["revised_prompt"] for item in answer.body["data"]] == ["p (as drawn)"] * 2
    for item in answer.body["data"]:
        assert downloaded(item["url"]).size == (1024, 1024)
    again = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-1"})
    assert [key_of(item["url"]) for item in again.body["data"]] == [key_of(item["url"]) for item in answer.body["data"]]
    folder = key_of(answer.body["data"][0]["url"]).rsplit("/", 1)[0]
    assert folder.startswith("images/keyed/")
    seen = f"{busy.status} {busy.body['error']['code']}, then {answer.status} with the 2 images"
    return seen, stored_in(stack, folder)


def keyed_crash_after_image_one_of_two(stack: Stack, inject: Faults, pauses: list[float]) -> tuple[str, str]:
    body = {"prompt": "p", "size": "1024x1024", "n": 2, "response_format": "b64_json"}
    inject.crash(stack.generations.deps().service.store.s3, "PutObject", when=second_image)
    with pytest.raises(Crash):
        stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-2"})
    inject.clear()
    lapse_in_progress(stack)
    answer = stack.post("/v1/images/generations", body, headers={"Idempotency-Key": "crash-2"})
    assert answer.status == 200, answer.body
    (item,) = answer.body["data"]

    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert image.size == (1024, 1024)
    (folder,) = {key.rsplit("/", 1)[0] for key in stack.stored_keys("images/keyed/")}
    return f"{answer.status} with 1 image", stored_in(stack, folder)


ROWS = [
    Row(
        "DynamoDB refuses the task's `completed` write 3 times",
        "worker, UpdateItem (terminal write)",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        refused_completed_write,
    ),
    Row(
        "DynamoDB refuses `completed` for longer than the delivery; the redelivery comes after 1 h with S3 unreachable",
        "worker, UpdateItem; then GetObject",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        refused_past_the_delivery,
    ),
    Row(
        "S3 unreachable as the worker starts",
        "worker, GetObject (result.json)",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        s3_unreachable_at_start,
    ),
    Row(
        "S3 refuses the image twice",
        "worker, PutObject (image)",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        s3_refuses_the_image_twice,
    ),
    Row(
        "S3 refuses every write (5 attempts)",
        "worker, PutObject",
        "task failed 503 storage_unavailable",
        "0 images",
        1,
        s3_refuses_every_write,
    ),
    Row(
        "DynamoDB refuses the task's claim on all 5 deliveries",
        "worker, UpdateItem (claim)",
        "task failed 503 job_abandoned",
        "0 images",
        0,
        task_claim_refused_every_delivery,
    ),
    Row(
        "image stored, then result.json and `completed` refused past the delivery, and the claim on deliveries 2 to 5",
        "worker, PutObject (result.json), UpdateItem",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        task_stored_then_writes_refused_to_the_last_delivery,
    ),
    Row(
        "crash after both images are stored, before result.json; DynamoDB refuses the claim on deliveries 2 to 5",
        "worker, PutObject (result.json); then UpdateItem (claim)",
        "task completed 200 with 2 images",
        "2 images + 2 records + result.json",
        1,
        task_crash_before_the_manifest_then_claims_refused,
    ),
    Row(
        "crash after result.json, before `completed` is written; redelivery",
        "worker, UpdateItem (terminal write)",
        "task completed 200",
        "1 image + 1 record + result.json",
        1,
        crash_at_completed_write,
    ),
    Row(
        "crash after the upstream answered, before the image is stored; redelivery",
        "worker, PutObject (image)",
        "task failed 500 job_interrupted",
        "0 images",
        1,
        crash_storing_the_image,
    ),
    Row(
        "crash after image 1 of 2 is stored; redelivery",
        "worker, PutObject (image 2)",
        "task completed 200 with 1 image",
        "1 image + 1 record + result.json",
        1,
        crash_after_image_one_of_two,
    ),
    Row(
        "crash after image 1 of 2 is stored; the redelivery comes after 1 h (past the 30-minute limit)",
        "worker, PutObject (image 2)",
        "task completed 200 with 1 image",
        "1 image + 1 record + result.json",
        1,
        crash_after_image_one_of_two_redelivered_late,
    ),
    Row(
        "crash after both images are stored, before result.json; redelivery",
        "worker, PutObject (result.json)",
        "task completed 200 with 2 images",
        "2 images + 2 records + result.json",
        1,
        crash_before_the_result_manifest,
    ),
    Row(
        "crash after result.json (2 images), before `completed` is written; redelivery",
        "worker, UpdateItem (terminal write)",
        "task completed 200 with 2 images",
        "2 images + 2 records + result.json",
        1,
        crash_at_completed_write_two_images,
    ),
    Row(
        "event job: crash after image 1 of 2 is stored; redelivery",
        "worker, PutObject (image 2)",
        "ImageGenerationCompleted with 1 image",
        "1 image + 1 record + result.json",
        1,
        event_crash_after_image_one_of_two,
    ),
    Row(
        "event job: crash after both images are stored, before result.json; redelivery",
        "worker, PutObject (result.json)",
        "ImageGenerationCompleted with 2 images",
        "2 images + 2 records + result.json",
        1,
        event_crash_before_the_result_manifest,
    ),
    Row(
        "Idempotency-Key: crash after both images are stored, before the answer; the same request again",
        "generations, PutObject (result.json)",
        "409 idempotency_request_in_progress, then 200 with the 2 images",
        "2 images + 2 records + result.json",
        1,
        keyed_crash_before_the_answer,
    ),
    Row(
        "Idempotency-Key: crash after image 1 of 2 is stored; the same request again",
        "generations, PutObject (image 2)",
        "200 with 1 image",
        "1 image + 1 record + result.json",
        1,
        keyed_crash_after_image_one_of_two,
    ),
    Row(
        "event job: crash as the completion is published; redelivery",
        "worker, PutEvents",
        "ImageGenerationCompleted",
        "1 image + 1 record + result.json",
        1,
        event_crash_at_publish,
    ),
    Row(
        "event job: EventBridge refuses the completion once",
        "worker, PutEvents",
        "ImageGenerationCompleted",
        "1 image + 1 record + result.json",
        1,
        event_publish_refused,
    ),
    Row(
        "event job: DynamoDB refuses the claim on all 5 deliveries",
        "worker, UpdateItem (claim)",
        "ImageGenerationFailed job_abandoned",
        "0 images + failure.json",
        0,
        event_claim_refused_every_delivery,
    ),
    Row(
        "event job: image stored, then result.json and `completed` refused past the delivery, and the claim on "
        "deliveries 2 to 5",
        "worker, PutObject (result.json), UpdateItem",
        "ImageGenerationCompleted with 1 image",
        "1 image + 1 record + result.json",
        1,
        event_stored_then_writes_refused_to_the_last_delivery,
    ),
    Row(
        "event job: crash after both images are stored, before result.json; DynamoDB refuses the claim on "
        "deliveries 2 to 5",
        "worker, PutObject (result.json); then UpdateItem (claim)",
        "ImageGenerationCompleted with 2 images",
        "2 images + 2 records + result.json",
        1,
        event_crash_before_the_manifest_then_claims_refused,
    ),
    Row(
        "event job: crash after the upstream answered, before the image is stored; redelivery",
        "worker, PutObject (image)",
        "ImageGenerationFailed job_interrupted",
        "0 images + failure.json",
        1,
        event_crash_storing_the_image,
    ),
    Row(
        "forged SQS envelope: another event's `id` with another request",
        "jobs queue",
        "dead-lettered, no event",
        "1 image + 1 record + result.json",
        1,
        forged_envelope,
    ),
    Row(
        "SQS refuses the job at submit",
        "generations, SendMessage",
        "503 tasks_unavailable; task failed 503 queue_unavailable",
        "0 images",
        0,
        queue_refused_at_submit,
    ),
    Row(
        "Idempotency store unreachable before the request runs",
        "generations, PutItem (idempotency)",
        "503 idempotency_unavailable",
        "0 images",
        0,
        idempotency_store_down_before,
    ),
    Row(
        "Idempotency store refuses the record after the images were made",
        "generations, UpdateItem (idempotency)",
        "200 with the images",
        "1 image + 1 record + result.json",
        1,
        idempotency_record_refused,
    ),
    Row(
        "`b64_json` answer too large; the same Idempotency-Key asks `url`",
        "generations, the answer",
        "400 response_too_large, then 200 with the images",
        "2 images + 2 records + result.json",
        1,
        inline_too_large_then_url,
    ),
    Row(
        "`b64_json` answer too large, without an Idempotency-Key; the key the refusal names asks `url`",
        "generations, the answer",
        "400 response_too_large, then 200 with the images",
        "2 images + result.json",
        1,
        inline_too_large_without_a_key,
    ),
    Row(
        "a 32,000-emoji prompt, n=2, with an Idempotency-Key (sync and async)",
        "idempotency record",
        "200, the retry 200 with the same images; async 202, the same task, completed",
        "2 images + 2 records + result.json",
        2,
        emoji_prompt_with_a_key,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.run.__name__ for row in ROWS])
def test_failure_semantics(stack, simulator, faults, row):  # noqa: F811 (fixture)
    pauses: list[float] = []
    stack.worker().steps.sleep = pauses.append
    stack.worker().service.sleep = pauses.append

    seen, stored = row.run(stack, faults, pauses)

    assert (seen, stored, simulator.calls) == (row.caller_sees, row.stored, row.upstream_calls)


def readme_rows() -> list[list[str]]:
    text = API_DOC.read_text()
    section = text[text.index("**Failure semantics") :]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_api_docs_show_this_table():
    shown = readme_rows()
    expected = [[row.fault, row.where, row.caller_sees, row.stored, str(row.upstream_calls)] for row in ROWS]
    for row in expected:
        assert row in shown, row
