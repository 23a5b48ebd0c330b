"""The jobs-queue worker through its real lambda_handler (Powertools batch, partial failures): nothing is lost and
nothing is paid twice. Redelivery, a crash between S3 and DynamoDB, S3 faults after the upstream answered, a
task another worker holds, EventBridge events and plain SQS requests, bad jobs to the dead-letter queue.

The stack (moto's S3, DynamoDB, SQS, EventBridge; the upstream simulator) is ``Stack`` from stack.py.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from imagecore.jobs.messages import COMPLETED, FAILED
from imagecore.storage.manifest import MANIFEST
from tests.conftest import owner_of_key_id
from tests.faults import Crash, faults  # noqa: F401 (fixture)
from tests.helpers import key_of
from tests.integration.conftest import BUCKET
from tests.integration.stack import KEY_ID, submit_generation


def job_lines(log_tap: Any) -> list[dict[str, Any]]:
    return [line["request"] for line in log_tap.records("image job")]


def requested_event(detail: dict[str, Any], *, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """What the ImageGenerationRequested rule delivers to the jobs queue: the whole event as the message body."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "ImageGenerationRequested",
        "source": "com.example.orders",
        "account": "123456789012",
        "time": "2026-11-25T14:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
        **fields,
    }


# --- async tasks: redelivery and crashes ----------------------------------------------------------------------


def test_a_redelivered_task_job_makes_no_second_upstream_call(stack, simulator, log_tap):
    task_id = submit_generation(stack).body["id"]
    (job,) = stack.jobs()

    assert stack.run_worker([job]) == []
    first = stack.get_task(task_id).body
    assert stack.run_worker([job]) == []  # SQS is at-least-once: the same message again

    assert simulator.calls == 1
    second = stack.get_task(task_id).body
    assert (second["status"], second["http_status"]) == ("completed", 200)
    assert key_of(second["image_url"]) == key_of(first["image_url"])
    assert second["completed_at"] == first["completed_at"]
    assert len(stack.stored_keys()) == 3  # the image, its record and the result.json, once
    assert [(line["status"], line["outcome"]) for line in job_lines(log_tap)] == [
        (200, "success"),
        (200, "already_finished"),
    ]


def test_a_crash_between_storing_and_recording_finishes_from_the_manifest(stack, simulator, log_tap):
    task_id = submit_generation(stack).body["id"]
    (job,) = stack.jobs()
    assert stack.run_worker([job]) == []
    stored = stack.get_task(task_id).body
    folder = key_of(stored["image_url"]).rsplit("/", 1)[0]
    assert json.loads(stack.s3.get_object(Bucket=BUCKET, Key=f"{folder}/{MANIFEST}")["Body"].read())["images"]
    # As if the worker died after S3 and before DynamoDB: the task is still processing, with no result.
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET #s = :p REMOVE #r, http_status, completed_at, claimed_until",
        ExpressionAttributeNames={"#s": "status", "#r": "result"},
        ExpressionAttributeValues={":p": "processing"},
    )
    assert stack.get_task(task_id).body["status"] == "processing"

    assert stack.run_worker([job]) == []

    assert simulator.calls == 1
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("completed", 200)
    assert key_of(view["image_url"]) == key_of(stored["image_url"])
    assert stack.image(key_of(view["image_url"])).size == (1536, 1024)
    assert job_lines(log_tap)[-1]["outcome"] == "recovered"


def test_a_task_held_by_another_worker_comes_back_later_without_an_upstream_call(stack, simulator, log_tap):
    task_id = submit_generation(stack).body["id"]
    (job,) = stack.jobs()
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) + 300},
    )

    assert stack.run_worker([job]) == [job["MessageId"]]  # TaskBusy: SQS delivers it again later

    assert simulator.calls == 0
    assert stack.task_item(task_id)["status"] == "processing"
    assert stack.get_task(task_id).body["status"] == "processing"
    assert job_lines(log_tap)[-1]["task_id"] == task_id

    # The other worker's hold lapses (it died): the redelivery runs it.
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) - 1},
    )
    assert stack.run_worker([job]) == []
    assert simulator.calls == 1
    assert stack.get_task(task_id).body["status"] == "completed"


def test_one_busy_record_does_not_fail_the_rest_of_the_batch(stack, simulator):
    busy_id = submit_generation(stack, {"prompt": "busy", "size": "1024x1024"}).body["id"]
    free_id = submit_generation(stack, {"prompt": "free", "size": "1024x1024"}).body["id"]
    stack.task_table.update_item(
        Key={"id": busy_id},
        UpdateExpression="SET claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) + 300},
    )
    jobs = stack.jobs()
    assert len(jobs) == 2
    bad = stack.send_job("not json")
    busy_job = next(job for job in jobs if json.loads(job["Body"])["task_id"] == busy_id)

    assert stack.run_worker([*jobs, bad]) == [busy_job["MessageId"]]

    assert simulator.calls == 1
    assert stack.get_task(free_id).body["status"] == "completed"
    assert stack.get_task(busy_id).body["status"] == "processing"
    assert len(stack.dead_letters()) == 1


def test_each_record_of_a_batch_counts_under_its_own_operation(stack, simulator, capsys):
    task_id = submit_generation(stack, {"prompt": "counted", "size": "1024x1024"}).body["id"]
    jobs = stack.jobs()
    unknown = stack.send_job(json.dumps({"task_id": "task_" + "e" * 32}))
    capsys.readouterr()

    assert stack.run_worker([*jobs, unknown]) == []

    out = capsys.readouterr().out
    blobs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    counted = [
        (blob["operation"], blob["Requests"], blob.get("ImagesGenerated")) for blob in blobs if "Requests" in blob
    ]
    # one EMF document per record, each with its own request (not both under the last record's operation)
    assert sorted(counted, key=str) == [("worker.task", [1.0], None), ("worker.task", [1.0], [1.0])]
    assert stack.get_task(task_id).body["status"] == "completed"
    assert simulator.calls == 1


def test_a_job_for_an_unknown_or_expired_task_is_done_with(stack, simulator, log_tap):
    message = stack.send_job(json.dumps({"task_id": "task_" + "f" * 32}))
    assert stack.run_worker([message]) == []
    assert simulator.calls == 0
    assert job_lines(log_tap)[-1]["outcome"] == "unknown_task"
    assert stack.dead_letters() == []


# --- S3 faults after the upstream answered ---------------------------------------------------------------------


def test_s3_faults_after_the_upstream_answered_are_retried_to_completion(
    stack, simulator, monkeypatch, log_tap, aws_faults
):
    task_id = submit_generation(stack).body["id"]
    put = aws_faults.fail("s3", "PutObject", times=2)  # the worker's client, made below, sees it
    service = stack.worker().service
    pauses: list[float] = []
    monkeypatch.setattr(service, "sleep", pauses.append)

    assert stack.run_worker() == []

    assert simulator.calls == 1  # the upstream once: only the store was tried again
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("completed", 200), view
    assert stack.image(key_of(view["image_url"])).size == (1536, 1024)
    assert (put.calls, put.failed) == (5, 2)  # two refused, the image, its record, then result.json
    assert pauses == [1.0, 2.0]
    assert job_lines(log_tap)[-1]["storage"] == "s3"


def test_s3_down_for_every_attempt_fails_the_task_with_the_reason(stack, simulator, monkeypatch, log_tap, aws_faults):
    monkeypatch.setenv("STORE_ATTEMPTS", "3")
    stack.clear()
    task_id = submit_generation(stack).body["id"]
    put = aws_faults.fail("s3", "PutObject")
    service = stack.worker().service
    assert service.store_attempts == 3
    pauses: list[float] = []
    monkeypatch.setattr(service, "sleep", pauses.append)

    assert stack.run_worker() == []  # finished: failed with why, never left processing

    assert simulator.calls == 1
    assert (put.calls, put.failed) == (4, 4)  # the image three times, then failure.json (refused too)
    assert pauses == [1.0, 2.0]
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("failed", 503)
    assert view["error"]["code"] == "storage_unavailable"
    assert stack.task_item(task_id)["status"] == "failed"
    line = job_lines(log_tap)[-1]
    assert (line["status"], line["outcome"], line["error_code"], line["storage"]) == (
        503,
        "failed",
        "storage_unavailable",
        "failed",
    )


# --- event-triggered generations --------------------------------------------------------------------------------


def test_an_eventbridge_event_is_generated_stored_and_announced(stack, simulator, log_tap):
    event = requested_event(
        {
            "prompt": "a red bicycle",
            "size": "1024x1024",
            "quality": "low",
            "correlation_id": "order-42",
            "output_prefix": "orders/2026",
        }
    )
    message = stack.send_job(json.dumps(event))

    assert stack.run_worker([message]) == []

    key = f"images/events/orders/2026/{event['id']}/0.png"
    assert key in stack.stored_keys()
    image = stack.image(key)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    (completed,) = stack.published()
    assert (completed["source"], completed["detail-type"]) == ("image-service", COMPLETED)
    detail = completed["detail"]
    assert detail["keys"] == [key]
    assert detail["bucket"] == BUCKET
    assert detail["correlation_id"] == "order-42"
    assert detail["request_id"] == event["id"]
    assert detail["usage"]["total_tokens"] > 0
    assert (detail["size"], detail["quality"], detail["output_format"]) == ("1024x1024", "low", "png")
    line = job_lines(log_tap)[-1]
    assert (line["operation"], line["job_id"], line["correlation_id"], line["status"]) == (
        "worker.eventbridge",
        event["id"],
        "order-42",
        200,
    )
    assert "a red bicycle" not in log_tap.text

    # The same event again (EventBridge and SQS are both at-least-once): no second upstream call.
    assert stack.run_worker([message]) == []
    assert simulator.calls == 1
    (again,) = stack.published()
    assert again["detail-type"] == COMPLETED
    assert again["detail"]["keys"] == [key]
    assert job_lines(log_tap)[-1]["outcome"] == "recovered"


def test_an_event_put_on_the_bus_reaches_the_worker_through_the_rule(stack, simulator):
    answer = stack.events_client.put_events(
        Entries=[
            {
                "Source": "com.example.orders",
                "DetailType": "ImageGenerationRequested",
                "Detail": json.dumps({"prompt": "a teapot", "size": "1024x1024", "correlation_id": "c-1"}),
                "EventBusName": stack.resources.event_bus_name,
            }
        ]
    )
    event_id = answer["Entries"][0]["EventId"]

    assert stack.run_worker() == []

    (completed,) = stack.published()
    assert completed["detail"]["keys"] == [f"images/events/jobs/{event_id}/0.png"]
    assert completed["detail"]["correlation_id"] == "c-1"
    assert stack.image(completed["detail"]["keys"][0]).size == (1024, 1024)
    assert simulator.calls == 1


def test_a_generation_request_sent_straight_to_the_queue(stack, simulator, log_tap):
    message = stack.send_job(
        json.dumps({"prompt": "a blue kite", "size": "1536x1024", "n": 2, "correlation_id": "kite-7"})
    )

    assert stack.run_worker([message]) == []

    folder = f"images/events/jobs/{message['MessageId']}"
    assert stack.stored_keys(folder) == [
        f"{folder}/0.json",
        f"{folder}/0.png",
        f"{folder}/1.json",
        f"{folder}/1.png",
        f"{folder}/{MANIFEST}",
    ]
    assert {stack.image(f"{folder}/{i}.png").size for i in (0, 1)} == {(1536, 1024)}
    (completed,) = stack.published()
    assert completed["detail"]["keys"] == [f"{folder}/0.png", f"{folder}/1.png"]
    assert completed["detail"]["correlation_id"] == "kite-7"
    assert job_lines(log_tap)[-1]["operation"] == "worker.sqs"

    assert stack.run_worker([message]) == []
    assert simulator.calls == 1
    assert [event["detail-type"] for event in stack.published()] == [COMPLETED]


def test_an_upstream_refusal_of_an_event_is_announced_as_failed(stack, simulator):
    simulator.queue_faults(
        {
            "status": 400,
            "error": {
                "message": "rejected by the safety system",
                "type": "invalid_request_error",
                "code": "moderation_blocked",
            },
        }
    )
    event = requested_event({"prompt": "p", "size": "1024x1024", "correlation_id": "x-1"})

    assert stack.run_worker([stack.send_job(json.dumps(event))]) == []

    (failed,) = stack.published()
    assert failed["detail-type"] == FAILED
    detail = failed["detail"]
    assert (detail["http_status"], detail["correlation_id"], detail["request_id"]) == (400, "x-1", event["id"])
    assert detail["error"]["code"] == "moderation_blocked"
    assert detail["error"]["message"] == "rejected by the safety system"
    # No image; only the failure, where a redelivery finds it and announces it again without the upstream.
    assert stack.stored_keys() == [f"images/events/jobs/{event['id']}/failure.json"]
    assert stack.dead_letters() == []


def test_s3_down_for_an_event_is_announced_as_failed(stack, simulator, monkeypatch, aws_faults):
    put = aws_faults.fail("s3", "PutObject")
    service = stack.worker().service
    monkeypatch.setattr(service, "sleep", lambda _seconds: None)

    assert stack.run_worker([stack.send_job(json.dumps({"prompt": "p", "size": "1024x1024"}))]) == []

    (failed,) = stack.published()
    assert failed["detail-type"] == FAILED
    assert (failed["detail"]["http_status"], failed["detail"]["error"]["code"]) == (503, "storage_unavailable")
    assert simulator.calls == 1
    # the image at every attempt, then failure.json (refused too)
    assert put.failed == put.calls == service.store_attempts + 1


BAD_JOBS = [
    ("not-json", "{this is not json", "not JSON"),
    ("not-an-object", json.dumps(["a", "list"]), "not a JSON object"),
    (
        "wrong-detail-type",
        json.dumps({**requested_event({"prompt": "p"}), "detail-type": "OrderPlaced"}),
        "unexpected detail-type 'OrderPlaced'",
    ),
    ("invalid-size", json.dumps(requested_event({"prompt": "p", "size": "1000x1000"})), "size"),
    ("no-prompt", json.dumps({"size": "1024x1024"}), "prompt"),
    ("bad-prefix", json.dumps(requested_event({"prompt": "p", "output_prefix": "../x"})), "output_prefix"),
    ("bad-correlation", json.dumps({"prompt": "p", "correlation_id": 42}), "correlation_id"),
]


@pytest.mark.parametrize(("body", "reason"), [case[1:] for case in BAD_JOBS], ids=[case[0] for case in BAD_JOBS])
def test_a_bad_job_goes_to_the_dead_letter_queue_with_its_reason(stack, simulator, log_tap, body, reason):
    message = stack.send_job(body)

    assert stack.run_worker([message]) == []  # done with: retrying cannot help it

    (dead,) = stack.dead_letters()
    assert dead["Body"] == body  # kept whole, to be looked at or replayed
    attributes = dead["MessageAttributes"]
    assert reason in attributes["reason"]["StringValue"]
    assert attributes["original_message_id"]["StringValue"] == message["MessageId"]
    (refused,) = [line for line in log_tap.lines if line["message"] == "job refused, sent to the dead-letter queue"]
    assert reason in refused["reason"]
    line = job_lines(log_tap)[-1]
    assert (line["status"], line["outcome"], line["error_code"]) == (400, "dead_lettered", "bad_job")
    assert simulator.calls == 0
    assert stack.published() == []
    assert stack.stored_keys() == []


def test_a_passing_eventbridge_fault_fails_the_record_and_the_retry_finishes_it(stack, simulator, aws_faults):
    put_events = aws_faults.fail("events", "PutEvents", times=1)
    message = stack.send_job(json.dumps(requested_event({"prompt": "p", "size": "1024x1024"})))

    assert stack.run_worker([message]) == [message["MessageId"]]  # SQS will deliver it again
    assert stack.published() == []
    assert stack.dead_letters() == []

    assert stack.run_worker([message]) == []
    assert simulator.calls == 1  # the images were kept: the retry only announces them
    (completed,) = stack.published()
    assert completed["detail-type"] == COMPLETED
    assert (put_events.calls, put_events.failed) == (2, 1)


def test_a_passing_dynamodb_fault_fails_the_record_and_the_retry_finishes_it(stack, simulator, aws_faults):
    task_id = submit_generation(stack).body["id"]
    (job,) = stack.jobs()
    tasks_table = stack.resources.tasks_table
    get = aws_faults.fail("dynamodb", "GetItem", times=1, when=lambda params: params["TableName"] == tasks_table)

    assert stack.run_worker([job]) == [job["MessageId"]]
    assert simulator.calls == 0
    assert get.failed == 1

    assert stack.run_worker([job]) == []
    assert simulator.calls == 1
    view = stack.get_task(task_id).body
    assert (view["status"], view["http_status"]) == ("completed", 200)
    assert stack.task_item(task_id)["owner"] == owner_of_key_id(KEY_ID)


def test_a_finished_event_whose_manifest_is_gone_is_announced_again_from_its_claim(stack, simulator):
    message = stack.send_job(json.dumps(requested_event({"prompt": "p", "size": "1024x1024", "correlation_id": "c"})))
    assert stack.run_worker([message]) == []
    (first,) = stack.published()
    folder = first["detail"]["keys"][0].rsplit("/", 1)[0]
    stack.s3.delete_object(Bucket=BUCKET, Key=f"{folder}/{MANIFEST}")

    assert stack.run_worker([message]) == []

    assert simulator.calls == 1
    (again,) = stack.published()
    assert (again["detail-type"], again["detail"]["keys"]) == (COMPLETED, first["detail"]["keys"])
    assert stack.image(again["detail"]["keys"][0]).size == (1024, 1024)


def test_a_busy_job_on_its_last_delivery_is_left_to_the_delivery_that_holds_it(stack, simulator, log_tap):
    task_id = submit_generation(stack).body["id"]
    (job,) = stack.jobs()
    stack.task_table.update_item(
        Key={"id": task_id},
        UpdateExpression="SET claimed_until = :t",
        ExpressionAttributeValues={":t": int(time.time()) + 300},
    )
    last = {**job, "Attributes": {**job["Attributes"], "ApproximateReceiveCount": "5"}}

    assert stack.run_worker([last]) == []  # not failed: the holder finishes it; nothing goes to the DLQ

    assert simulator.calls == 0
    assert stack.task_item(task_id)["status"] == "processing"
    line = job_lines(log_tap)[-1]
    assert (line["status"], line["error_code"]) == (409, "task_busy")


# --- budgets: an async task reserves when it is queued, the worker settles once -------------------------------


def test_a_task_reserves_its_images_when_queued_and_the_worker_settles_them_once(stack, simulator):
    from imagecore.accounts.budgets import Budget
    from imagecore.accounts.ledger import UsageLedger

    def submit(n: int) -> Any:
        event = stack.event(
            "/v1/images/generations/async", body={"prompt": "a lighthouse", "size": "1024x1024", "n": n}
        )
        event["requestContext"]["authorizer"]["budget_images_per_day"] = "3"  # as the authorizer passes it
        return stack.call(stack.generations_async, event)

    assert submit(2).status == 202
    over = submit(2)  # 2 reserved + 2 > 3, before any upstream call
    assert (over.status, over.body["error"]["code"]) == (429, "budget_exceeded")
    (job,) = stack.jobs()
    assert stack.run_worker([job]) == []
    assert stack.run_worker([job]) == []  # the same message again: nothing settled twice

    assert simulator.calls == 1
    report = UsageLedger(stack.resources.usage_table, region="us-east-1").usage(
        owner_of_key_id(KEY_ID), Budget(images_per_day=3), 1
    )
    day = report["days"][0]
    assert (day["requests"], day["images"], day["failures"]) == (2, 2, {"budget_exceeded": 1})
    assert day["output_tokens"] > 0
    assert report["budgets"]["images_per_day"]["used"] == 2


def test_a_job_finished_from_part_of_its_images_says_so_in_its_log_line(stack, simulator, log_tap, faults):  # noqa: F811
    task_id = submit_generation(stack, {"prompt": "p", "size": "1024x1024", "n": 3}).body["id"]
    (job,) = stack.jobs()
    faults.crash(stack.worker().service.store.s3, "PutObject", when=lambda call: call.url_path.endswith("/2.png"))
    with pytest.raises(Crash):
        stack.run_worker([job])
    faults.clear()
    item = stack.task_item(task_id)
    stack.task_table.update_item(
        Key={"id": task_id}, UpdateExpression="SET claimed_until = :t", ExpressionAttributeValues={":t": 1}
    )
    redelivered = {**job, "Attributes": {**job.get("Attributes", {}), "ApproximateReceiveCount": "2"}}

    assert stack.run_worker([redelivered]) == []

    view = stack.get_task(task_id).body
    assert (view["status"], len(view["result"]["data"])) == ("completed", 2), view
    assert simulator.calls == 1
    line = job_lines(log_tap)[-1]
    assert (line["status"], line["outcome"], line["n"], line["images_recovered"]) == (200, "recovered_partial", 3, 2)
    assert stack.stored_keys(item["folder"] + "/") == [
        f"{item['folder']}/{name}" for name in ("0.json", "0.png", "1.json", "1.png", "result.json")
    ]


def test_a_borrowed_job_id_on_its_last_delivery_neither_gets_nor_ends_the_job(stack, simulator, faults):  # noqa: F811
    detail = {"prompt": "the victim's drawing", "size": "1024x1024", "correlation_id": "victim"}
    victim = stack.send_job(json.dumps(requested_event(detail)))
    event_id = json.loads(victim["Body"])["id"]
    faults.crash(stack.worker().service.store.s3, "PutObject", when=lambda call: call.url_path.endswith("/result.json"))
    with pytest.raises(Crash):
        stack.run_worker([victim])  # its image is stored, its claim still processing
    faults.clear()
    forged = stack.send_job(
        json.dumps(requested_event({**detail, "correlation_id": "thief"}, event_id=event_id)),
    )
    faults.refuse(stack.worker().tasks.client, "UpdateItem", times=10**6)
    last = {**forged, "Attributes": {**forged.get("Attributes", {}), "ApproximateReceiveCount": "5"}}

    assert stack.run_worker([last]) == []  # dead-lettered: the victim's images are not handed over

    (dead,) = stack.dead_letters()
    assert "another request" in dead["MessageAttributes"]["reason"]["StringValue"]
    assert stack.published() == []
    folder = f"images/events/jobs/{event_id}"
    assert stack.stored_keys(folder + "/") == [f"{folder}/0.json", f"{folder}/0.png"]  # no failure.json
    faults.clear()
    stack.task_table.update_item(
        Key={"id": f"job#{folder}"}, UpdateExpression="SET claimed_until = :t", ExpressionAttributeValues={":t": 1}
    )
    redelivered = {**victim, "Attributes": {**victim.get("Attributes", {}), "ApproximateReceiveCount": "2"}}
    assert stack.run_worker([redelivered]) == []
    (event,) = stack.published()
    assert (event["detail-type"], event["detail"]["correlation_id"]) == (COMPLETED, "victim")
    assert stack.image(event["detail"]["keys"][0]).size == (1024, 1024)
    assert simulator.calls == 1
