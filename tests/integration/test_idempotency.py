"""Idempotency-Key on every POST (generations, edits, their async forms, uploads) through the real handlers, with
Powertools Idempotency on a moto DynamoDB table: a retry gets the first answer (same S3 objects, no second
upstream call), a different body is a 422, a retry while the first runs is a 409, failures are not remembered.

The stack (moto's S3, DynamoDB, SQS, EventBridge; the upstream simulator) is ``Stack`` from stack.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest

from imagecore.storage.store import owner_prefix
from tests.conftest import owner_of_key_id
from tests.helpers import key_of, multipart, rgba_mask, sha256
from tests.integration.conftest import BUCKET
from tests.integration.stack import KEY_ID, OTHER_KEY_ID, Reply, png, submit_generation

GENERATION = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low"}


def keyed(key: str, header: str = "Idempotency-Key") -> dict[str, Any]:
    return {"headers": {header: key}}


def request_lines(log_tap: Any) -> list[dict[str, Any]]:
    return [line["request"] for line in log_tap.records()]


def paths(answer: Reply) -> list[str]:
    return [key_of(item["url"]) for item in answer.body["data"]]


# --- generations ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Idempotency-Key", "idempotency-key", "IDEMPOTENCY-KEY"])
def test_a_retry_with_the_same_key_gets_the_same_images_without_a_second_upstream_call(
    stack, simulator, log_tap, header
):
    first = stack.post("/v1/images/generations", GENERATION, **keyed("retry-1", header))
    second = stack.post("/v1/images/generations", GENERATION, **keyed("retry-1", header))

    assert first.status == second.status == 200, (first.body, second.body)
    assert simulator.calls == 1
    assert paths(first) == paths(second)
    # The image once in the key's own folder, its record, and the result.json the idempotency record points to
    # (which holds no result of its own).
    folder = paths(first)[0].rsplit("/", 1)[0]
    assert folder.startswith("images/keyed/")
    assert stack.stored_keys() == [f"{folder}/0.json", paths(first)[0], f"{folder}/result.json"]
    for field in ("created", "model", "size", "quality", "output_format", "usage"):
        assert first.body[field] == second.body[field], field
    assert [item["revised_prompt"] for item in second.body["data"]] == [
        item["revised_prompt"] for item in first.body["data"]
    ]
    assert stack.image(paths(second)[0]).size == (1024, 1024)
    lines = request_lines(log_tap)
    assert [line["idempotent_replay"] for line in lines] == [False, True]
    assert [line["attempts"] for line in lines] == [1, 0]  # the replay asked nothing of the upstream
    assert [line["status"] for line in lines] == [200, 200]


def test_without_a_key_every_post_runs(stack, simulator, log_tap):
    first = stack.post("/v1/images/generations", GENERATION)
    second = stack.post("/v1/images/generations", GENERATION)
    assert first.status == second.status == 200
    assert simulator.calls == 2
    assert paths(first) != paths(second)
    assert [line["idempotent_replay"] for line in request_lines(log_tap)] == [None, None]


def test_the_same_key_with_another_body_is_a_422_and_runs_nothing(stack, simulator):
    assert stack.post("/v1/images/generations", GENERATION, **keyed("reused")).status == 200

    answer = stack.post("/v1/images/generations", {**GENERATION, "prompt": "something else"}, **keyed("reused"))

    assert answer.status == 422, answer.body
    error = answer.body["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "idempotency_key_reused",
        "invalid_request_error",
        "Idempotency-Key",
    )
    assert "different request" in error["message"]
    assert answer.headers["cache-control"] == "no-store"
    assert simulator.calls == 1
    assert len([key for key in stack.stored_keys() if not key.endswith(".json")]) == 1


def test_json_key_order_does_not_make_another_request(stack, simulator):
    reordered = dict(reversed(list(GENERATION.items())))
    first = stack.post("/v1/images/generations", GENERATION, **keyed("order"))
    second = stack.post("/v1/images/generations", reordered, **keyed("order"))
    assert (first.status, second.status, simulator.calls) == (200, 200, 1)
    assert paths(first) == paths(second)


def test_a_retry_while_the_first_is_still_running_is_a_409(stack, simulator):
    simulator.options.latency_ms = 1500
    outcome: dict[str, Reply] = {}
    first = threading.Thread(
        target=lambda: outcome.setdefault(
            "first", stack.post("/v1/images/generations", GENERATION, **keyed("slow-one"))
        )
    )
    first.start()
    try:
        waited = time.monotonic() + 10
        while simulator.calls == 0 and time.monotonic() < waited:
            time.sleep(0.02)
        assert simulator.calls == 1, "the first request never reached the upstream"

        answer = stack.post("/v1/images/generations", GENERATION, **keyed("slow-one"))
    finally:
        first.join(timeout=30)

    assert answer.status == 409, answer.body
    assert answer.body["error"]["code"] == "idempotency_request_in_progress"
    assert answer.body["error"]["type"] == "invalid_request_error"
    assert int(answer.headers["retry-after"]) > 0
    assert outcome["first"].status == 200, outcome["first"].body

    simulator.options.latency_ms = 0
    later = stack.post("/v1/images/generations", GENERATION, **keyed("slow-one"))
    assert later.status == 200
    assert paths(later) == paths(outcome["first"])
    assert simulator.calls == 1


def test_a_failed_first_attempt_is_not_remembered(stack, simulator, log_tap):
    simulator.queue_faults({"status": 500}, {"status": 500}, {"status": 500})
    failed = stack.post("/v1/images/generations", GENERATION, **keyed("flaky"))
    assert failed.status == 502, failed.body
    assert simulator.calls == 3

    retried = stack.post("/v1/images/generations", GENERATION, **keyed("flaky"))

    assert retried.status == 200, retried.body
    assert simulator.calls == 4  # the upstream is asked again
    assert stack.image(paths(retried)[0]).size == (1024, 1024)
    assert request_lines(log_tap)[-1]["idempotent_replay"] is False

    again = stack.post("/v1/images/generations", GENERATION, **keyed("flaky"))
    assert (again.status, paths(again), simulator.calls) == (200, paths(retried), 4)


def test_an_upstream_refusal_is_not_remembered_either(stack, simulator):
    simulator.queue_faults(
        {"status": 400, "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"}}
    )
    assert stack.post("/v1/images/generations", GENERATION, **keyed("refused")).status == 400
    assert stack.post("/v1/images/generations", GENERATION, **keyed("refused")).status == 200
    assert simulator.calls == 2


def test_a_b64_json_replay_answers_the_same_image_read_back_from_s3(stack, simulator):
    body = {**GENERATION, "response_format": "b64_json", "output_format": "webp"}
    first = stack.post("/v1/images/generations", body, **keyed("inline"))
    second = stack.post("/v1/images/generations", body, **keyed("inline"))

    assert first.status == second.status == 200
    assert simulator.calls == 1
    (original,), (replayed,) = first.body["data"], second.body["data"]
    assert "url" not in replayed or replayed["url"] is None
    assert base64.b64decode(replayed["b64_json"]) == base64.b64decode(original["b64_json"])
    (stored_key,) = [key for key in stack.stored_keys() if not key.endswith(".json")]
    assert base64.b64decode(replayed["b64_json"]) == stack.s3.get_object(Bucket=BUCKET, Key=stored_key)["Body"].read()


def test_different_api_keys_with_the_same_idempotency_key_do_not_collide(stack, simulator):
    mine = stack.post("/v1/images/generations", GENERATION, key_id=KEY_ID, **keyed("shared-key"))
    theirs = stack.post("/v1/images/generations", GENERATION, key_id=OTHER_KEY_ID, **keyed("shared-key"))
    other_body = stack.post(
        "/v1/images/generations", {**GENERATION, "prompt": "theirs"}, key_id=OTHER_KEY_ID, **keyed("shared-key-2")
    )

    assert mine.status == theirs.status == other_body.status == 200
    assert simulator.calls == 3
    assert paths(mine) != paths(theirs)


def test_the_same_key_on_another_route_is_another_request(stack, simulator):
    sync = stack.post("/v1/images/generations", GENERATION, **keyed("route"))
    task = submit_generation(stack, GENERATION, **keyed("route"))
    assert (sync.status, task.status) == (200, 202)
    assert len(stack.jobs()) == 1


@pytest.mark.parametrize("key", ["x" * 256, "bad\nkey"])
def test_an_unusable_key_is_a_400_naming_the_header(stack, simulator, key):
    answer = stack.post("/v1/images/generations", GENERATION, **keyed(key))
    assert answer.status == 400, answer.body
    assert answer.body["error"]["param"] == "Idempotency-Key"
    assert simulator.calls == 0


# --- async submits ----------------------------------------------------------------------------------------------


def test_an_async_retry_gets_the_same_task_and_queues_one_job(stack, simulator, log_tap):
    first = submit_generation(stack, GENERATION, **keyed("async-1"))
    second = submit_generation(stack, GENERATION, headers={"idempotency-key": "async-1"})

    assert first.status == second.status == 202, (first.body, second.body)
    assert second.body["id"] == first.body["id"]
    assert second.body["created_at"] == first.body["created_at"]
    assert second.headers["location"] == first.headers["location"]
    assert len(stack.task_items()) == 1
    assert len(stack.jobs()) == 1
    assert [line["idempotent_replay"] for line in request_lines(log_tap)] == [False, True]

    other = submit_generation(stack, {**GENERATION, "prompt": "another"}, **keyed("async-1"))
    assert other.status == 422
    assert len(stack.task_items()) == 1

    stack.run_worker()
    assert simulator.calls == 1
    assert stack.get_task(first.body["id"]).body["status"] == "completed"


# --- edits ------------------------------------------------------------------------------------------------------

EDIT_FIELDS = {"prompt": "put both on one table", "size": "1024x1024", "quality": "low"}


def edit_files(first: bytes, second: bytes, mask: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("image[]", ("first.png", first, "image/png")),
        ("image[]", ("second.png", second, "image/png")),
        ("mask", ("mask.png", mask, "image/png")),
    ]


def test_an_edit_retry_with_a_new_multipart_boundary_is_the_same_request(stack, simulator, log_tap):
    files = edit_files(png(), png((320, 200), (10, 160, 90)), rgba_mask())

    first = stack.post_multipart("/v1/images/edits", EDIT_FIELDS, files, **keyed("edit-1"))
    second = stack.post_multipart("/v1/images/edits", EDIT_FIELDS, files, **keyed("edit-1"))

    assert first.status == second.status == 200, (first.body, second.body)
    assert simulator.calls == 1
    assert paths(first) == paths(second)
    assert [line["idempotent_replay"] for line in request_lines(log_tap)] == [False, True]


def test_the_multipart_boundary_really_differs_between_encodings():
    files = edit_files(png(), png(), rgba_mask())
    (_, first), (_, second) = multipart(EDIT_FIELDS, files), multipart(EDIT_FIELDS, files)
    assert first != second


def test_an_edit_with_other_image_bytes_under_the_same_key_is_a_422(stack, simulator):
    assert (
        stack.post_multipart(
            "/v1/images/edits", EDIT_FIELDS, edit_files(png(), png(), rgba_mask()), **keyed("edit-2")
        ).status
        == 200
    )

    answer = stack.post_multipart(
        "/v1/images/edits",
        EDIT_FIELDS,
        edit_files(png(color=(1, 2, 3)), png(), rgba_mask()),
        **keyed("edit-2"),
    )

    assert answer.status == 422, answer.body
    assert answer.body["error"]["code"] == "idempotency_key_reused"
    assert simulator.calls == 1


def test_the_same_inputs_sent_as_uploads_are_the_same_edit(stack, simulator):
    first_png, second_png, mask = png(), png((320, 200), (10, 160, 90)), rgba_mask()
    inline = stack.post_multipart(
        "/v1/images/edits", EDIT_FIELDS, edit_files(first_png, second_png, mask), **keyed("edit-3")
    )
    ids = []
    for name, data in (("first.png", first_png), ("second.png", second_png), ("mask.png", mask)):
        upload_id = "upl_" + sha256(data + name.encode())[:32]
        stack.s3.put_object(
            Bucket=BUCKET,
            Key=owner_prefix(owner_of_key_id(KEY_ID)) + upload_id,
            Body=data,
            ContentType="image/png",
            Metadata={"filename": name},
        )
        ids.append(upload_id)

    uploaded = stack.post(
        "/v1/images/edits",
        {**EDIT_FIELDS, "images": [{"upload_id": ids[0]}, {"upload_id": ids[1]}], "mask": {"upload_id": ids[2]}},
        **keyed("edit-3"),
    )

    assert inline.status == uploaded.status == 200, (inline.body, uploaded.body)
    assert simulator.calls == 1
    assert paths(uploaded) == paths(inline)


def test_an_async_edit_retry_gets_the_same_task(stack, simulator):
    files = edit_files(png(), png((320, 200), (10, 160, 90)), rgba_mask())
    first = stack.post_multipart("/v1/images/edits/async", EDIT_FIELDS, files, **keyed("edit-async"))
    second = stack.post_multipart("/v1/images/edits/async", EDIT_FIELDS, files, **keyed("edit-async"))

    assert first.status == second.status == 202, (first.body, second.body)
    assert first.body["id"] == second.body["id"]
    assert len(stack.jobs()) == 1
    stack.run_worker()
    assert stack.get_task(first.body["id"]).body["status"] == "completed"
    assert simulator.calls == 1


# --- uploads ----------------------------------------------------------------------------------------------------

UPLOAD = {"content_type": "image/png", "bytes": 123_456, "filename": "big.png"}


@pytest.mark.parametrize("header", ["Idempotency-Key", "idempotency-key"])
def test_an_upload_retry_gets_the_same_ticket(stack, log_tap, header):
    first = stack.post("/v1/uploads", UPLOAD, **keyed("upload-1", header))
    second = stack.post("/v1/uploads", UPLOAD, **keyed("upload-1", header))

    assert first.status == second.status == 200, (first.body, second.body)
    assert second.body == first.body
    assert first.body["id"].startswith("upl_")
    assert [line["idempotent_replay"] for line in request_lines(log_tap)] == [False, True]

    fresh = stack.post("/v1/uploads", UPLOAD)
    assert fresh.body["id"] != first.body["id"]


def test_an_upload_key_reused_for_another_file_is_a_422(stack):
    assert stack.post("/v1/uploads", UPLOAD, **keyed("upload-2")).status == 200
    answer = stack.post("/v1/uploads", {**UPLOAD, "bytes": 99}, **keyed("upload-2"))
    assert answer.status == 422, answer.body
    assert answer.body["error"]["code"] == "idempotency_key_reused"


def test_upload_keys_of_different_callers_do_not_collide(stack):
    mine = stack.post("/v1/uploads", UPLOAD, key_id=KEY_ID, **keyed("upload-3"))
    theirs = stack.post("/v1/uploads", UPLOAD, key_id=OTHER_KEY_ID, **keyed("upload-3"))
    assert mine.status == theirs.status == 200
    assert mine.body["id"] != theirs.body["id"]
    assert mine.body["fields"]["key"].startswith(owner_prefix(owner_of_key_id(KEY_ID)))
    assert theirs.body["fields"]["key"].startswith(owner_prefix(owner_of_key_id(OTHER_KEY_ID)))


def test_an_async_replay_after_the_task_completed_shows_it_completed_with_presigned_urls(stack, simulator):
    first = submit_generation(stack, GENERATION, **keyed("async-done"))
    stack.run_worker()

    again = submit_generation(stack, GENERATION, **keyed("async-done"))

    assert again.status == 202, again.body
    assert (again.body["id"], again.body["status"]) == (first.body["id"], "completed")
    url = again.body["result"]["data"][0]["url"]
    assert url.startswith("http") and "Signature" in url
    assert stack.image(key_of(url)).size == (1024, 1024)
    assert simulator.calls == 1
    (record,) = stack.idempotency_table.scan()["Items"]
    assert first.body["id"] in record["data"] and "lighthouse" not in json.dumps(record, default=str)


def test_a_retry_after_an_answer_cut_past_its_first_image_answers_that_image_without_paying_again(
    stack, simulator, log_tap
):
    body = {**GENERATION, "n": 2}
    simulator.queue_faults({"mode": "cut", "fraction": 0.75})  # image 1 whole, image 2 cut off
    first = stack.post("/v1/images/generations", body, **keyed("cut-1"))
    assert first.status == 502, first.body
    assert first.body["error"]["code"] == "upstream_incomplete"
    (stored,) = [key for key in stack.stored_keys("images/keyed/") if key.endswith(".png")]

    retry = stack.post("/v1/images/generations", body, **keyed("cut-1"))

    assert retry.status == 200, retry.body
    assert paths(retry) == [stored]
    assert retry.body["data"][0]["revised_prompt"] == body["prompt"] + " (as drawn)"
    assert retry.body["usage"] is None  # the upstream reports it at the end of the answer that was cut
    assert stack.image(stored).size == (1024, 1024)
    assert simulator.calls == 1
    assert request_lines(log_tap)[-1]["images_recovered"] == 1
    # The same request without a key is a new request: it runs.
    plain = stack.post("/v1/images/generations", body)
    assert (plain.status, len(plain.body["data"]), simulator.calls) == (200, 2, 2)


def test_a_client_tokens_idempotency_keys_are_its_own(stack, simulator):
    """Two browser users of one app (two client tokens of one key) who both send ``order-42`` get their own
    images; each one's retry gets its own first answer."""

    def as_token(token_id: str) -> Reply:
        event = stack.event("/v1/images/generations", body=GENERATION, headers={"Idempotency-Key": "order-42"})
        event["requestContext"]["authorizer"].update(
            credential="client_token", tokenId=token_id, tokenExpiresAt=str(int(time.time()) + 600)
        )
        return stack.call(stack.generations, event)

    alice, bob = as_token("ctk_alice"), as_token("ctk_bob")
    assert alice.status == bob.status == 200
    assert simulator.calls == 2
    assert paths(alice) != paths(bob)
    assert paths(as_token("ctk_alice")) == paths(alice)
    assert paths(as_token("ctk_bob")) == paths(bob)
    assert simulator.calls == 2
    # the key itself has its own space too
    assert paths(stack.post("/v1/images/generations", GENERATION, **keyed("order-42"))) not in (
        paths(alice),
        paths(bob),
    )
