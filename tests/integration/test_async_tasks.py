"""Async tasks end to end, in-process: submit through the generations/edits handlers, run the worker on the SQS
event built from what is really on the jobs queue, poll through the tasks handler, download from S3.

moto serves S3, DynamoDB, SQS and EventBridge (the template's resources); the upstream simulator
runs on a real HTTP port. ``Stack`` (stack.py) is shared with test_worker.py and test_idempotency.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from imagecore.jobs.tasks import TASK_LIMIT_SECONDS, TASK_OBJECT, TASK_TTL_SECONDS
from tests.conftest import owner_of_key_id
from tests.helpers import key_of, rgba_mask, sha256
from tests.integration.conftest import BUCKET
from tests.integration.stack import HOST, KEY_ID, OTHER_KEY_ID, png, submit_generation

# --- submit, run, poll, download -----------------------------------------------------------------------------


def test_async_generation_submit_poll_and_download(stack, simulator, log_tap):
    before = int(time.time())
    submitted = submit_generation(stack, {"prompt": "a lighthouse at dawn", "size": "1536x1024", "quality": "low"})

    assert submitted.status == 202, submitted.body
    task = submitted.body
    task_id = task["id"]
    assert task_id.startswith("task_")
    poll_url = f"https://{HOST}/prod/v1/images/tasks/{task_id}"
    assert task == {
        "id": task_id,
        "task_id": task_id,
        "object": TASK_OBJECT,
        "status": "processing",
        "created_at": task["created_at"],
        "expires_at": task["created_at"] + TASK_TTL_SECONDS,
        "poll_url": poll_url,
    }
    assert before <= task["created_at"] <= int(time.time())
    assert submitted.headers["location"] == poll_url
    assert submitted.headers["retry-after"] == "3"
    assert submitted.headers["cache-control"] == "no-store"
    # Only queued: one job naming the task, nothing asked of the upstream yet.
    assert simulator.calls == 0
    (job,) = stack.jobs()
    assert json.loads(job["Body"]) == {"task_id": task_id}
    item = stack.task_item(task_id)
    assert (item["status"], item["owner"], item["kind"]) == ("processing", owner_of_key_id(KEY_ID), "generation")

    polled = stack.get_task(task_id)
    assert polled.status == 200
    assert polled.body["status"] == "processing"
    assert "http_status" not in polled.body and "result" not in polled.body
    assert polled.headers["cache-control"] == "no-store"

    assert stack.run_worker([job]) == []
    assert simulator.calls == 1

    done = stack.get_task(task_id)
    assert done.status == 200, done.body
    assert done.headers["cache-control"] == "no-store"
    view = done.body
    assert (view["id"], view["status"], view["http_status"]) == (task_id, "completed", 200)
    assert view["created_at"] == task["created_at"]
    assert view["created_at"] <= view["completed_at"] <= int(time.time())
    result = view["result"]
    assert set(result) == {"created", "data", "model", "size", "quality", "output_format", "background", "usage"}
    assert (result["model"], result["size"], result["quality"], result["output_format"]) == (
        "gpt-image-2",
        "1536x1024",
        "low",
        "png",
    )
    assert result["usage"]["total_tokens"] > 0
    (item,) = result["data"]
    # the synchronous answer's shape with URLs: b64_json is there, null
    assert set(item) == {"url", "b64_json", "revised_prompt"} and item["b64_json"] is None
    assert view["image_url"] == item["url"]
    image = stack.image(key_of(view["image_url"]))
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert key_of(view["image_url"]).endswith(f"/{task_id}/0.png")

    submit_line = stack_line(log_tap, "generations")
    assert (submit_line["status"], submit_line["task_id"], submit_line["attempts"]) == (202, task_id, 0)
    (job_line,) = log_tap.records("image job")
    job_line = job_line["request"]
    assert (job_line["operation"], job_line["task_id"], job_line["status"], job_line["outcome"]) == (
        "worker.task",
        task_id,
        200,
        "success",
    )
    assert job_line["owner_id"] == owner_of_key_id(KEY_ID)  # the key behind the task, by owner
    assert "a lighthouse at dawn" not in log_tap.text


def stack_line(log_tap: Any, operation: str) -> dict[str, Any]:
    lines = [line["request"] for line in log_tap.records() if line["request"]["operation"].startswith(operation)]
    assert lines, f"no {operation} line"
    return lines[0]


def test_each_poll_presigns_afresh_and_the_task_is_still_there(stack):
    task_id = submit_generation(stack).body["id"]
    stack.run_worker()
    first, second = stack.get_task(task_id).body, stack.get_task(task_id).body
    assert key_of(first["image_url"]) == key_of(second["image_url"])
    assert first["completed_at"] == second["completed_at"]


def test_only_the_submitting_key_may_read_a_task(stack):
    task_id = submit_generation(stack).body["id"]
    stack.run_worker()

    for answer in (
        stack.get_task(task_id, key_id=OTHER_KEY_ID),
        stack.get_task("task_" + "0" * 32),
        stack.get_task("not-a-task-id"),
    ):
        assert answer.status == 404, answer.body
        assert answer.body["error"]["code"] == "task_not_found"
        assert answer.body["error"]["type"] == "invalid_request_error"
        assert answer.headers["cache-control"] == "no-store"
        assert "result" not in answer.body
    # Another key's 404 says nothing that the unknown id's does not.
    other = stack.get_task(task_id, key_id=OTHER_KEY_ID).body["error"]
    unknown = stack.get_task("task_" + "0" * 32).body["error"]
    assert other["code"] == unknown["code"] and other["type"] == unknown["type"]
    assert stack.get_task(task_id).body["status"] == "completed"


def test_an_upstream_refusal_fails_the_task_with_its_status_and_error(stack, simulator, log_tap):
    simulator.queue_faults(
        {
            "status": 400,
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
            },
        }
    )
    task_id = submit_generation(stack).body["id"]
    assert stack.run_worker() == []  # a refusal is an answer: the job is done with

    view = stack.get_task(task_id)
    assert view.status == 200
    assert view.headers["cache-control"] == "no-store"
    assert (view.body["status"], view.body["http_status"]) == ("failed", 400)
    assert view.body["error"]["code"] == "moderation_blocked"
    assert view.body["error"]["message"] == "Your request was rejected by the safety system."
    assert "result" not in view.body and "image_url" not in view.body
    assert view.body["completed_at"] >= view.body["created_at"]
    assert simulator.calls == 1
    (failure_key,) = stack.stored_keys()  # no image: only the failure, for a redelivery to finish from
    assert failure_key.endswith(f"{task_id}/failure.json")
    line = log_tap.records("image job")[0]["request"]
    assert (line["status"], line["outcome"], line["error_code"]) == (400, "failed", "moderation_blocked")


def test_an_exhausted_upstream_fails_the_task_as_a_502(stack, simulator):
    simulator.queue_faults({"status": 500}, {"status": 500}, {"status": 500})
    task_id = submit_generation(stack).body["id"]
    assert stack.run_worker() == []
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 502, "upstream_error")
    assert simulator.calls == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "p", "size": "1000x1000"}, "size"),
        ({"prompt": "p", "size": "1024x1024", "stream": True}, "stream"),
        ({"size": "1024x1024"}, "prompt"),
    ],
)
def test_a_bad_submit_is_a_400_and_makes_no_task(stack, simulator, body, param):
    answer = submit_generation(stack, body)
    assert answer.status == 400, answer.body
    assert answer.body["error"]["param"] == param
    assert answer.headers["cache-control"] == "no-store"
    assert stack.task_items() == []
    assert stack.jobs() == []
    assert simulator.calls == 0


def test_async_edit_with_two_images_and_a_mask(stack, simulator):
    first, second, mask = png(), png((320, 200), (10, 160, 90)), rgba_mask()
    fields = {"prompt": "put both on one table", "size": "1024x1536", "quality": "low", "n": "1"}
    files = [
        ("image[]", ("first.png", first, "image/png")),
        ("image[]", ("second.png", second, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]

    submitted = stack.post_multipart("/v1/images/edits/async", fields, files)

    assert submitted.status == 202, submitted.body
    task_id = submitted.body["id"]
    assert submitted.body["status"] == "processing"
    assert submitted.headers["location"] == f"https://{HOST}/prod/v1/images/tasks/{task_id}"
    assert submitted.headers["retry-after"] == "3"
    assert simulator.calls == 0
    assert stack.task_item(task_id)["kind"] == "edit"

    assert stack.run_worker() == []

    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("completed", 200), view
    image = stack.image(key_of(view["image_url"]))
    assert (image.format, image.size) == ("PNG", (1024, 1536))
    assert simulator.calls == 1
    sent = simulator.last_request
    assert sent["path"].endswith("/images/edits")
    assert [(p["name"], p["filename"], p["content_type"], p["sha256"]) for p in sent["files"]] == [
        ("image[]", "first.png", "image/png", sha256(first)),
        ("image[]", "second.png", "image/png", sha256(second)),
        ("mask", "mask.png", "image/png", sha256(mask)),
    ]
    assert (sent["form"]["prompt"], sent["form"]["size"], sent["form"]["quality"]) == (
        "put both on one table",
        "1024x1536",
        "low",
    )


def test_a_bad_async_edit_image_fails_its_task_with_the_synchronous_routes_400(stack, simulator):
    """The async route answers at once without reading the images; the worker checks them as the synchronous
    route does, and a bad one ends the task failed with the same error."""
    started = time.monotonic()
    answer = stack.post_multipart(
        "/v1/images/edits/async",
        {"prompt": "p", "size": "1024x1024"},
        [("image[]", ("a.png", b"not an image at all", "image/png"))],
    )
    assert answer.status == 202, answer.body
    assert time.monotonic() - started < 2
    sync = stack.post_multipart(
        "/v1/images/edits",
        {"prompt": "p", "size": "1024x1024"},
        [("image[]", ("a.png", b"not an image at all", "image/png"))],
    )
    assert stack.run_worker() == []

    view = stack.get_task(answer.body["id"]).body
    assert (view["status"], view["http_status"]) == ("failed", 400), view
    assert view["error"]["code"] == sync.body["error"]["code"] == "invalid_image_format"
    assert view["error"]["message"] == sync.body["error"]["message"]
    assert simulator.calls == 0


def test_bad_async_edit_parameters_are_still_a_400_and_make_no_task(stack, simulator):
    answer = stack.post_multipart(
        "/v1/images/edits/async", {"prompt": "p", "n": "99"}, [("image[]", ("a.png", png((64, 64)), "image/png"))]
    )
    assert answer.status == 400, answer.body
    assert stack.task_items() == []
    assert stack.jobs() == []


def test_a_task_past_its_time_limit_reads_failed_and_the_worker_fails_it_without_the_upstream(stack, simulator):
    task_id = submit_generation(stack).body["id"]
    long_ago = int(time.time()) - TASK_LIMIT_SECONDS - 60
    stack.task_table.update_item(
        Key={"id": task_id}, UpdateExpression="SET created_at = :t", ExpressionAttributeValues={":t": long_ago}
    )

    view = stack.get_task(task_id).body
    assert stack.task_item(task_id)["status"] == "processing"  # nobody wrote so: it only reads as failed
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 504, "task_timeout")
    assert view["error"]["type"] == "upstream_error"
    assert "30 minutes" in view["error"]["message"]

    assert stack.run_worker() == []

    assert simulator.calls == 0
    item = stack.task_item(task_id)
    assert (item["status"], int(item["http_status"])) == ("failed", 504)
    assert json.loads(item["error"])["code"] == "task_timeout"
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"], view["error"]["code"]) == ("failed", 504, "task_timeout")
    assert view["completed_at"] >= long_ago
    assert stack.stored_keys() == []


def test_a_task_whose_job_cannot_be_queued_is_a_503_and_is_failed_not_left_processing(stack, simulator, aws_faults):
    send = aws_faults.fail("sqs", "SendMessage")
    answer = submit_generation(stack)

    assert answer.status == 503, answer.body
    assert answer.body["error"]["code"] == "tasks_unavailable"
    (item,) = stack.task_items()
    assert (item["status"], int(item["http_status"])) == ("failed", 503)
    assert json.loads(item["error"])["code"] == "queue_unavailable"
    assert simulator.calls == 0
    assert send.failed == send.calls == 1


def test_async_edit_of_uploaded_images(stack, simulator):
    from imagecore.storage.store import owner_prefix

    image, mask = png((512, 512), (30, 60, 90)), rgba_mask((512, 512))
    ids = []
    for name, data in (("photo.png", image), ("mask.png", mask)):
        upload_id = "upl_" + sha256(name.encode())[:32]
        stack.s3.put_object(
            Bucket=BUCKET,
            Key=owner_prefix(owner_of_key_id(KEY_ID)) + upload_id,
            Body=data,
            ContentType="image/png",
            Metadata={"filename": name},
        )
        ids.append(upload_id)

    submitted = stack.post(
        "/v1/images/edits/async",
        {
            "prompt": "make it night",
            "size": "1024x1024",
            "images": [{"upload_id": ids[0]}],
            "mask": {"upload_id": ids[1]},
        },
    )
    assert submitted.status == 202, submitted.body
    # Another key cannot name these uploads: its task reads them under its own prefix and fails with a 404.
    other = stack.post(
        "/v1/images/edits/async",
        {"prompt": "make it night", "images": [{"upload_id": ids[0]}]},
        key_id=OTHER_KEY_ID,
    )
    assert other.status == 202, other.body

    assert stack.run_worker() == []

    refused = stack.get_task(other.body["id"], key_id=OTHER_KEY_ID).body
    assert (refused["status"], refused["http_status"], refused["error"]["code"]) == ("failed", 404, "upload_not_found")

    view = stack.get_task(submitted.body["id"]).body
    assert (view["status"], view["http_status"]) == ("completed", 200), view
    assert stack.image(key_of(view["image_url"])).size == (1024, 1024)
    sent = simulator.last_request["files"]
    assert [(p["name"], p["filename"], p["sha256"]) for p in sent] == [
        ("image[]", "photo.png", sha256(image)),
        ("mask", "mask.png", sha256(mask)),
    ]
    assert simulator.calls == 1


@pytest.mark.parametrize("missing", ["TASKS_TABLE", "JOBS_QUEUE_URL"])
def test_an_async_function_without_its_queue_answers_service_misconfigured_and_runs_nothing(
    stack, simulator, monkeypatch, missing
):
    monkeypatch.delenv(missing)
    stack.clear()  # a cold start without the variable

    answer = submit_generation(stack)

    assert answer.status == 500
    assert (answer.body["error"]["type"], answer.body["error"]["code"]) == ("server_error", "service_misconfigured")
    assert missing in answer.body["error"]["message"]
    assert stack.task_items() == [] and stack.jobs() == []
    assert simulator.calls == 0
