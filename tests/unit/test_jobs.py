"""The jobs the worker takes (``parse_job``: task jobs, EventBridge events, plain SQS requests, and why a bad
one is refused), the task object clients poll (``task_view``), and the task record (``Task`` <-> DynamoDB item,
``TaskStore``'s claim/complete/fail on moto's in-process DynamoDB)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from moto import mock_aws

from imagecore.domain.models import GenerationRequest, ImageData
from imagecore.jobs.messages import REQUESTED, BadJob, GenerationJob, TaskJob, parse_job
from imagecore.jobs.task_view import answer_body, task_view
from imagecore.jobs.tasks import (
    RETRY_AFTER_SECONDS,
    TASK_LIMIT_SECONDS,
    TASK_OBJECT,
    TASK_TTL_SECONDS,
    Task,
    TaskBusy,
    TaskStore,
)
from local.resources import create_resources
from local.template import project_template

MESSAGE_ID = "059f36b4-87a3-44ab-83d2-661975830a7d"
EVENT_ID = "6a7e8feb-b491-4cf7-a9f1-bf3703467718"


def event(detail: Any, **fields: Any) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": EVENT_ID,
            "detail-type": REQUESTED,
            "source": "com.example.orders",
            "account": "123456789012",
            "time": "2026-11-25T14:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
            **fields,
        }
    )


def refused(body: str, message_id: str = MESSAGE_ID) -> str:
    with pytest.raises(BadJob) as caught:
        parse_job(body, message_id)
    return str(caught.value)


# --- parse_job: the three shapes ----------------------------------------------------------------------------------


def test_a_task_job_names_only_its_task():
    assert parse_job(json.dumps({"task_id": "task_0123"}), MESSAGE_ID) == TaskJob("task_0123")


def test_an_eventbridge_event_is_a_generation_keyed_by_the_event_id():
    detail = {
        "prompt": "a red bicycle",
        "size": "1536x1024",
        "quality": "low",
        "n": 2,
        "correlation_id": "order-42",
        "output_prefix": "orders/2026",
    }
    job = parse_job(event(detail), MESSAGE_ID)

    assert isinstance(job, GenerationJob)
    assert (job.job_id, job.source, job.correlation_id, job.output_prefix) == (
        EVENT_ID,
        "eventbridge",
        "order-42",
        "orders/2026",
    )
    assert job.request == GenerationRequest(prompt="a red bicycle", size="1536x1024", quality="low", n=2)
    assert job.folder == f"images/events/orders/2026/{EVENT_ID}"
    assert "correlation_id" in detail  # the caller's dict is left alone


def test_an_event_without_an_id_is_keyed_by_the_message_id():
    job = parse_job(event({"prompt": "p"}, id=None), MESSAGE_ID)
    assert isinstance(job, GenerationJob)
    assert job.job_id == MESSAGE_ID
    assert job.folder == f"images/events/jobs/{MESSAGE_ID}"


def test_a_plain_sqs_request_is_a_generation_keyed_by_the_message_id():
    job = parse_job(json.dumps({"prompt": "a blue kite", "size": "1024x1024", "correlation_id": "k-7"}), MESSAGE_ID)
    assert isinstance(job, GenerationJob)
    assert (job.job_id, job.source, job.correlation_id, job.output_prefix) == (MESSAGE_ID, "sqs", "k-7", None)
    assert job.request.size == "1024x1024"
    assert job.folder == f"images/events/jobs/{MESSAGE_ID}"


def test_a_task_id_that_is_not_a_string_is_not_a_task_job():
    # Read as a generation request instead, which it is not.
    assert refused(json.dumps({"task_id": 42})) == "Missing required parameter: 'prompt'."


def test_a_task_id_with_more_fields_is_read_as_a_request():
    assert "task_id" in refused(json.dumps({"task_id": "task_1", "prompt": "p"}))


# --- parse_job: correlation_id and output_prefix ------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["a", "orders", "orders/2026", "A.b_c-d/e", "/".join(["s"] * 8), "x" * 64, "2026/11/25"]
)
def test_good_output_prefixes(prefix):
    job = parse_job(json.dumps({"prompt": "p", "output_prefix": prefix}), MESSAGE_ID)
    assert isinstance(job, GenerationJob)
    assert job.folder == f"images/events/{prefix}/{MESSAGE_ID}"


@pytest.mark.parametrize(
    "prefix",
    [
        "../x",
        "a/../b",
        "a..b",
        "/abs",
        "trailing/",
        "a//b",
        ".hidden",
        "_under",
        "-dash",
        "sp ace",
        "x" * 65,
        "/".join(["s"] * 9),
        "",
        "a\\b",
        "ünicode",
        42,
        ["a"],
    ],
)
def test_bad_output_prefixes_are_refused(prefix):
    assert "output_prefix" in refused(json.dumps({"prompt": "p", "output_prefix": prefix}))


def test_an_explicit_null_output_prefix_and_correlation_id_are_absent():
    job = parse_job(json.dumps({"prompt": "p", "output_prefix": None, "correlation_id": None}), MESSAGE_ID)
    assert isinstance(job, GenerationJob)
    assert (job.output_prefix, job.correlation_id) == (None, None)


@pytest.mark.parametrize("correlation_id", ["", "c", "c" * 256, "order 42 / ünicode"])
def test_good_correlation_ids(correlation_id):
    job = parse_job(event({"prompt": "p", "correlation_id": correlation_id}), MESSAGE_ID)
    assert isinstance(job, GenerationJob)
    assert job.correlation_id == correlation_id


@pytest.mark.parametrize("correlation_id", ["c" * 257, 42, {"id": 1}, ["a"], True])
def test_bad_correlation_ids_are_refused(correlation_id):
    assert "correlation_id" in refused(event({"prompt": "p", "correlation_id": correlation_id}))


# --- parse_job: every other refusal says why ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "the message is not JSON"),
        ("", "the message is not JSON"),
        (json.dumps(["task_1"]), "the message is not a JSON object"),
        (json.dumps("task_1"), "the message is not a JSON object"),
        (json.dumps(7), "the message is not a JSON object"),
        (json.dumps(None), "the message is not a JSON object"),
        (json.dumps({"detail-type": "OrderPlaced", "detail": {"prompt": "p"}}), "unexpected detail-type 'OrderPlaced'"),
        (json.dumps({"detail-type": None, "detail": {"prompt": "p"}}), "unexpected detail-type 'None'"),
        (event("a string"), "the event has no detail object"),
        (event(None), "the event has no detail object"),
        (event(["prompt"]), "the event has no detail object"),
    ],
)
def test_shape_refusals(body, reason):
    assert refused(body) == reason


def test_a_very_long_detail_type_is_cut_in_the_reason():
    reason = refused(json.dumps({"detail-type": "X" * 5000, "detail": {}}))
    assert reason.startswith("unexpected detail-type 'XXX")
    assert len(reason) < 200


@pytest.mark.parametrize(
    ("detail", "param"),
    [
        ({"prompt": "p", "size": "1000x1000"}, "size"),
        ({"prompt": "p", "stream": True}, "stream"),
        ({"size": "1024x1024"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "p", "n": 11}, "n"),
        ({"prompt": "p", "n": "2"}, "n"),
        ({"prompt": "p", "model": "dall-e-2"}, "model"),
        ({"prompt": "p", "background": "transparent"}, "background"),
        ({"prompt": "p", "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_request_is_refused_naming_the_field(detail, param):
    for body in (event(detail), json.dumps(detail)):
        reason = refused(body)
        assert param in reason, reason


@pytest.mark.parametrize("event_id", ["a/b", "../x", "x" * 129, "id with spaces", "ü"])
def test_an_event_id_that_cannot_be_a_key_is_refused(event_id):
    assert refused(event({"prompt": "p"}, id=event_id)) == "the event id is not usable as a key"


# --- the task record ----------------------------------------------------------------------------------------------


def full_task() -> Task:
    return Task(
        id="task_" + "a" * 32,
        owner="key_test0000001",
        kind="edit",
        request={"prompt": "p", "size": "1024x1024", "n": 2},
        folder="images/2026/11/25/task_" + "a" * 32,
        created_at=1_795_615_200,
        updated_at=1_795_615_260,
        status="completed",
        inputs=[{"key": "uploads/x/task/0-image", "filename": "a.png", "role": "image"}],
        result={"bucket": "b", "images": [{"key": "k/0.png", "revised_prompt": "r"}], "created": 1},
        error=None,
        http_status=200,
        completed_at=1_795_615_260,
        claimed_until=None,
    )


def test_a_task_survives_the_round_trip_through_its_item():
    task = full_task()
    item = task.to_item()
    assert Task.from_item(item) == task
    # As DynamoDB answers: numbers come back as Decimal.
    from_dynamodb = {k: Decimal(v) if isinstance(v, int) else v for k, v in item.items()}
    assert Task.from_item(from_dynamodb) == task


def test_an_item_holds_json_strings_and_leaves_out_what_is_unset():
    task = Task(
        id="task_1",
        owner="key_1",
        kind="generation",
        request={"prompt": "p"},
        folder="images/f",
        created_at=100,
        updated_at=160,
    )
    item = task.to_item()
    assert item == {
        "id": "task_1",
        "owner": "key_1",
        "kind": "generation",
        "status": "processing",
        "request": json.dumps({"prompt": "p"}),
        "folder": "images/f",
        "inputs": "[]",
        "created_at": 100,
        "updated_at": 160,
        "expires_at": 160 + TASK_TTL_SECONDS,
    }
    assert Task.from_item(item) == task


def test_a_failed_task_keeps_its_error_and_status_through_the_item():
    task = Task(
        id="task_2",
        owner="key_1",
        kind="generation",
        request={"prompt": "p"},
        folder="images/f",
        created_at=100,
        updated_at=200,
        status="failed",
        error={"type": "invalid_request_error", "code": "moderation_blocked", "message": "no", "param": None},
        http_status=400,
        completed_at=200,
        claimed_until=500,
    )
    assert Task.from_item(task.to_item()) == task


def test_a_task_expires_a_day_after_its_last_update():
    assert full_task().expires_at == 1_795_615_260 + 24 * 3600


# --- task_view: what a client polls ---------------------------------------------------------------------------------

NOW = 1_795_615_300
STORED = {
    "bucket": "images-test-bucket",
    "images": [
        {"key": "images/2026/11/25/t/0.png", "revised_prompt": "a lighthouse (as drawn)"},
        {"key": "images/2026/11/25/t/1.png", "revised_prompt": None},
    ],
    "created": 1_795_615_250,
    "model": "gpt-image-2",
    "size": "1024x1024",
    "quality": "low",
    "output_format": "png",
    "background": "opaque",
    "usage": {"input_tokens": 3, "output_tokens": 272, "total_tokens": 275},
}


def presign(key: str) -> str:
    return f"https://signed.example/{key}?sig=1"


TASK_ID = "task_" + "b" * 32


def task(status: str = "processing", created_at: int = NOW - 60, task_id: str = TASK_ID, **fields: Any) -> Task:
    return Task(
        id=task_id,
        owner="key_1",
        kind="generation",
        request={"prompt": "p"},
        folder="images/f",
        created_at=created_at,
        updated_at=created_at,
        status=status,  # type: ignore[arg-type]
        **fields,
    )


def test_a_processing_task_says_only_what_it_is():
    view = task_view(task(), NOW, presign)
    assert view == {
        "id": TASK_ID,
        "task_id": TASK_ID,
        "object": TASK_OBJECT,
        "status": "processing",
        "created_at": NOW - 60,
        "expires_at": NOW - 60 + TASK_TTL_SECONDS,
    }


def test_the_submit_answer_carries_the_poll_url():
    view = task_view(task(), NOW, presign, poll_url="https://h/prod/v1/images/tasks/x")
    assert view["poll_url"] == "https://h/prod/v1/images/tasks/x"
    assert RETRY_AFTER_SECONDS == 3


def test_a_completed_task_carries_the_sync_answer_with_fresh_urls():
    view = task_view(task("completed", result=STORED, http_status=200, completed_at=NOW - 5), NOW, presign)
    assert (view["status"], view["http_status"], view["completed_at"]) == ("completed", 200, NOW - 5)
    assert view["result"] == {
        "created": STORED["created"],
        "data": [
            {
                "url": presign("images/2026/11/25/t/0.png"),
                "b64_json": None,
                "revised_prompt": "a lighthouse (as drawn)",
            },
            {"url": presign("images/2026/11/25/t/1.png"), "b64_json": None, "revised_prompt": None},
        ],
        "model": "gpt-image-2",
        "size": "1024x1024",
        "quality": "low",
        "output_format": "png",
        "background": "opaque",
        "usage": STORED["usage"],
    }
    assert view["image_url"] == view["result"]["data"][0]["url"]
    assert "error" not in view


def test_a_completed_task_stays_completed_past_the_time_limit():
    old = NOW - TASK_LIMIT_SECONDS - 3600
    view = task_view(task("completed", created_at=old, result=STORED, http_status=200, completed_at=old), NOW, presign)
    assert (view["status"], view["http_status"]) == ("completed", 200)


def test_a_failed_task_carries_the_status_and_the_error():
    error = {"message": "blocked", "type": "invalid_request_error", "param": None, "code": "moderation_blocked"}
    view = task_view(task("failed", error=error, http_status=400, completed_at=NOW - 1), NOW, presign)
    assert (view["status"], view["http_status"], view["error"], view["completed_at"]) == (
        "failed",
        400,
        error,
        NOW - 1,
    )
    assert "result" not in view and "image_url" not in view


def test_a_processing_task_past_its_limit_reads_as_a_timeout():
    view = task_view(task(created_at=NOW - TASK_LIMIT_SECONDS - 1), NOW, presign)
    assert (view["status"], view["http_status"]) == ("failed", 504)
    assert (view["error"]["code"], view["error"]["type"]) == ("task_timeout", "upstream_error")
    assert "30 minutes" in view["error"]["message"]


def test_a_processing_task_at_exactly_its_limit_is_still_processing():
    assert task_view(task(created_at=NOW - TASK_LIMIT_SECONDS), NOW, presign)["status"] == "processing"


def test_answer_body_is_the_sync_shape():
    body = answer_body(STORED, presign)
    assert set(body) == {"created", "data", "model", "size", "quality", "output_format", "background", "usage"}
    # Each item has exactly the synchronous answer's fields (ImageData), b64_json null as there.
    assert all(set(item) == set(ImageData.model_fields) for item in body["data"])
    assert all(item["b64_json"] is None and item["url"] for item in body["data"])


# --- TaskStore on moto's in-process DynamoDB ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    # The tasks table as template.yaml declares it (key schema, TTL), made by the local stack's builder.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        table = create_resources(None, "us-east-1", project_template(), prefix="unit").tasks_table
        clock = Clock(NOW)
        tasks = TaskStore(table, region="us-east-1", clock=clock)
        tasks.clock = clock  # type: ignore[attr-defined]
        yield tasks


def test_a_task_is_claimed_once_until_its_hold_lapses(store):
    store.create(task(created_at=NOW))
    claimed = store.claim(TASK_ID, hold_seconds=600)
    assert claimed is not None and claimed.claimed_until == NOW + 600

    store.clock.now = NOW + 300
    with pytest.raises(TaskBusy):
        store.claim(TASK_ID, hold_seconds=600)

    store.clock.now = NOW + 601
    again = store.claim(TASK_ID, hold_seconds=600)
    assert again is not None and again.claimed_until == NOW + 1201
    assert again.expires_at == NOW + 601 + TASK_TTL_SECONDS


def test_a_running_task_lists_its_previews_and_a_finished_one_takes_no_more(store):
    store.create(task(created_at=NOW))
    store.add_partial(TASK_ID, 0, "images/x/partial-0.png", NOW + 1)
    store.add_partial(TASK_ID, 1, "images/x/partial-1.png", NOW + 2)
    assert [p["key"] for p in store.get(TASK_ID).partial_images] == ["images/x/partial-0.png", "images/x/partial-1.png"]

    store.complete(TASK_ID, STORED)
    store.add_partial(TASK_ID, 2, "images/x/partial-2.png", NOW + 3)  # too late: ignored, not an error
    assert len(store.get(TASK_ID).partial_images) == 2


def test_a_finished_or_unknown_task_is_not_claimed(store):
    store.create(task(created_at=NOW))
    store.complete(TASK_ID, STORED)
    assert store.claim(TASK_ID, hold_seconds=600) is None
    assert store.claim("task_nothing", hold_seconds=600) is None


def test_complete_and_fail_record_the_outcome_and_release_the_claim(store):
    store.create(task(created_at=NOW))
    store.create(task(created_at=NOW, task_id="task_other"))
    store.claim(TASK_ID, hold_seconds=600)
    store.clock.now = NOW + 30
    store.complete(TASK_ID, STORED)
    store.fail("task_other", 503, {"code": "storage_unavailable"})

    done = store.get(TASK_ID)
    assert (done.status, done.http_status, done.completed_at, done.claimed_until) == ("completed", 200, NOW + 30, None)
    assert done.result == STORED
    assert done.expires_at == NOW + 30 + TASK_TTL_SECONDS
    failed = store.get("task_other")
    assert (failed.status, failed.http_status, failed.error) == ("failed", 503, {"code": "storage_unavailable"})


def test_finishing_a_task_that_expired_is_harmless(store):
    store.complete("task_gone", STORED)
    store.fail("task_gone", 500, {"code": "x"})
    assert store.get("task_gone") is None


def test_a_task_id_is_made_once(store):
    from imagecore.jobs.tasks import TaskStoreError

    store.create(task(created_at=NOW))
    with pytest.raises(TaskStoreError):
        store.create(task(created_at=NOW))


def test_each_claim_counts_a_delivery_that_got_as_far_as_the_upstream(store):
    store.create(task(created_at=NOW))
    assert store.claim(TASK_ID, hold_seconds=600).upstream_calls == 1
    store.clock.now = NOW + 601  # the first delivery died holding it
    assert store.claim(TASK_ID, hold_seconds=600).upstream_calls == 2
    assert store.get(TASK_ID).upstream_calls == 2


JOB_KEY = "job#images/events/jobs/" + EVENT_ID


def test_an_event_job_is_claimed_by_its_identity_and_bound_to_its_request(store):
    from imagecore.jobs.tasks import JobIdentityMismatch

    first = store.claim_job(JOB_KEY, "digest-a", hold_seconds=600)
    assert (first.status, first.upstream_calls) == ("processing", 1)

    store.clock.now = NOW + 300
    with pytest.raises(TaskBusy):
        store.claim_job(JOB_KEY, "digest-a", hold_seconds=600)
    with pytest.raises(JobIdentityMismatch):  # another request under the same id: not busy, refused
        store.claim_job(JOB_KEY, "digest-b", hold_seconds=600)

    store.clock.now = NOW + 601
    assert store.claim_job(JOB_KEY, "digest-a", hold_seconds=600).upstream_calls == 2
    with pytest.raises(JobIdentityMismatch):
        store.claim_job(JOB_KEY, "digest-b", hold_seconds=600)


def test_a_finished_event_job_comes_back_with_its_outcome_and_is_not_claimed_again(store):
    store.claim_job(JOB_KEY, "digest-a", hold_seconds=600)
    store.fail(JOB_KEY, 400, {"code": "moderation_blocked"})

    claim = store.claim_job(JOB_KEY, "digest-a", hold_seconds=600)

    assert (claim.status, claim.http_status, claim.error, claim.upstream_calls) == (
        "failed",
        400,
        {"code": "moderation_blocked"},
        1,
    )


def test_a_task_item_keeps_text_as_utf8_not_ascii_escapes():
    prompt = "\U0001f600" * 32_000
    made = task(created_at=NOW)
    made.request = {"prompt": prompt, "size": "1024x1024"}
    item = made.to_item()
    assert len(item["request"].encode("utf-8")) < 4 * 32_000 + 100  # 4 bytes an emoji, not 12
    assert Task.from_item(item).request["prompt"] == prompt


def test_the_first_outcome_stands(store):
    store.create(task(created_at=NOW))
    store.complete(TASK_ID, STORED)
    store.fail(TASK_ID, 503, {"code": "job_abandoned"})  # a late delivery
    done = store.get(TASK_ID)
    assert (done.status, done.http_status, done.result, done.error) == ("completed", 200, STORED, None)
