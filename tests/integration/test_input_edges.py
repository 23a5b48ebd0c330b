"""Odd input through the real handlers (moto for AWS, the upstream simulator on a real port): every odd body,
header, field or image is a 4xx naming what is wrong, the upstream is never called for it, no task is made,
and media types are matched case-insensitively."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.helpers import multipart, rgba_mask
from tests.integration.environment import BUCKET
from tests.integration.stack import Stack, png
from tests.unit.test_input_checks import cut_png_keeping_iend, declared_png, noisy

JSON_ROUTES = ("/v1/images/generations", "/v1/images/generations/async", "/v1/images/edits", "/v1/images/edits/async")
ALL_JSON_ROUTES = (*JSON_ROUTES, "/v1/uploads")

ODD_BODIES = {
    "5000-digit integer": ('{"prompt": "x", "n": ' + "9" * 5000 + "}", "invalid_json", None),
    "1000 deep": ('{"prompt": "x", "user": ' + "[" * 1000 + "]" * 1000 + "}", "invalid_json", None),
    "NaN": ('{"prompt": "x", "n": NaN}', "invalid_json", None),
    "Infinity": ('{"prompt": "x", "n": Infinity}', "invalid_json", None),
    "duplicate key": ('{"prompt": "x", "prompt": "y"}', "duplicate_parameter", "prompt"),
    "lone surrogate": ('{"prompt": "\\udc00"}', "invalid_json", None),
    "array": ("[1, 2]", "invalid_type", None),
    "string": ('"draw"', "invalid_type", None),
    "null": ("null", "invalid_type", None),
    "number": ("42", "invalid_type", None),
}


def send_raw(stack: Stack, path: str, raw: str, **options: Any) -> Any:
    return stack.call(stack.function_of(path), stack.event(path, raw_body=raw, **options))


def assert_nothing_ran(stack: Stack) -> None:
    assert stack.simulator.calls == 0
    assert stack.task_items() == []
    assert stack.jobs() == []


def refusal(stack: Stack, path: str, reply: Any) -> tuple[int, dict[str, Any]]:
    """The synchronous route's refusal, or the async route's: the task submitted at once, then failed by the
    worker (which checks the images) with the same status and error."""
    if not path.endswith("/async"):
        return reply.status, reply.body["error"]
    assert reply.status == 202, reply.body
    assert stack.run_worker() == []
    view = stack.get_task(reply.body["id"]).body
    assert view["status"] == "failed", view
    return view["http_status"], view["error"]


def assert_no_upstream_call(stack: Stack) -> None:
    """Nothing asked of the upstream (an async edit's task may exist: it failed on its images)."""
    assert stack.simulator.calls == 0
    assert all(item["status"] == "failed" for item in stack.task_items())


@pytest.mark.parametrize("path", ALL_JSON_ROUTES)
def test_odd_json_is_a_400_on_every_json_route(stack, path):
    for name, (raw, code, param) in ODD_BODIES.items():
        reply = send_raw(stack, path, raw)
        assert reply.status == 400, (name, reply.body)
        assert reply.body["error"]["type"] == "invalid_request_error"
        assert (reply.body["error"]["code"], reply.body["error"]["param"]) == (code, param), (name, reply.body)
    not_utf8 = base64.b64encode(b'{"prompt": "caf\xe9"}').decode("ascii")
    reply = send_raw(stack, path, not_utf8, base64_encoded=True)
    assert (reply.status, reply.body["error"]["code"]) == (400, "invalid_json"), reply.body
    assert_nothing_ran(stack)


def upload(stack: Stack, data: bytes, *, content_type: str = "application/json") -> str:
    ticket = stack.post(
        "/v1/uploads",
        {"content_type": "image/png", "bytes": len(data), "filename": "in.png"},
        content_type=content_type,
    )
    assert ticket.status == 200, ticket.body
    stack.s3.put_object(
        Bucket=BUCKET,
        Key=ticket.body["fields"]["key"],
        Body=data,
        ContentType="image/png",
        Metadata={"filename": "in.png"},
    )
    return ticket.body["id"]


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; Charset=UTF-8"])
def test_json_media_types_are_case_insensitive_on_every_route(stack, content_type):
    body = {"prompt": "a lighthouse", "size": "1024x1024"}
    assert stack.post("/v1/images/generations", body, content_type=content_type).status == 200
    assert stack.post("/v1/images/generations/async", body, content_type=content_type).status == 202
    upload_id = upload(stack, png(), content_type=content_type)
    edit = {"prompt": "add a boat", "images": [{"upload_id": upload_id}]}
    assert stack.post("/v1/images/edits", edit, content_type=content_type).status == 200
    assert stack.post("/v1/images/edits/async", edit, content_type=content_type).status == 202
    assert stack.simulator.calls == 2


def test_a_multipart_media_type_in_capitals_is_read(stack):
    data, content_type = multipart({"prompt": "add a boat"}, [("image", ("in.png", png(), "image/png"))])
    event = stack.event(
        "/v1/images/edits",
        raw_body=base64.b64encode(data).decode("ascii"),
        content_type=content_type.replace("multipart/form-data", "MULTIPART/Form-Data"),
        base64_encoded=True,
    )
    reply = stack.call(stack.edits, event)
    assert reply.status == 200, reply.body


# --- bounds ------------------------------------------------------------------------------------------------


def test_a_500_kb_user_is_a_400_naming_user_not_a_503(stack):
    for path in JSON_ROUTES[:2]:
        reply = stack.post(path, {"prompt": "a lighthouse", "user": "u" * 500_000})
        assert (reply.status, reply.body["error"]["param"]) == (400, "user"), reply.body
    assert_nothing_ran(stack)


def test_a_prompt_of_32000_emoji_is_taken_stored_and_run(stack):
    prompt = "🌅" * 32_000  # 128,000 bytes of UTF-8
    submitted = stack.post("/v1/images/generations/async", {"prompt": prompt, "user": "👤" * 256})
    assert submitted.status == 202, submitted.body
    item = stack.task_item(submitted.body["id"])
    assert json.loads(item["request"])["prompt"] == prompt
    (job,) = stack.jobs()
    assert json.loads(job["Body"]) == {"task_id": submitted.body["id"]}  # the message names the task only
    assert stack.run_worker() == []
    done = stack.get_task(submitted.body["id"])
    assert done.body["status"] == "completed", done.body
    assert stack.simulator.last_request["json"]["prompt"] == prompt
    assert stack.simulator.calls == 1


def test_one_character_over_the_prompt_bound_is_a_400(stack):
    reply = stack.post("/v1/images/generations/async", {"prompt": "🌅" * 32_001})
    assert (reply.status, reply.body["error"]["param"]) == (400, "prompt")
    assert_nothing_ran(stack)


def test_an_upload_filename_over_its_bound_is_a_400(stack):
    reply = stack.post("/v1/uploads", {"content_type": "image/png", "bytes": 10, "filename": "f" * 256})
    assert (reply.status, reply.body["error"]["param"]) == (400, "filename")


def test_a_multipart_filename_over_its_bound_is_a_400(stack):
    for path in ("/v1/images/edits", "/v1/images/edits/async"):
        reply = stack.post_multipart(path, {"prompt": "x"}, [("image", ("n" * 300 + ".png", png(), "image/png"))])
        status, error = refusal(stack, path, reply)
        assert (status, error["code"], error["param"]) == (400, "invalid_filename", "image[0]")
    assert_no_upstream_call(stack)


# --- images ------------------------------------------------------------------------------------------------

BOMB = declared_png(50_000, 50_000)


MULTIPART_BOMBS = {
    "image": ([("image", ("bomb.png", BOMB, "image/png"))], "image[0]"),
    "second image": (
        [("image[]", ("a.png", png(), "image/png")), ("image[]", ("bomb.png", BOMB, "image/png"))],
        "image[1]",
    ),
    "mask": ([("image", ("a.png", png(), "image/png")), ("mask", ("bomb.png", BOMB, "image/png"))], "mask"),
    "12000x12000": ([("image", ("big.png", declared_png(12_000, 12_000), "image/png"))], "image[0]"),
}


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/edits/async"])
def test_a_decompression_bomb_in_multipart_is_image_too_large(stack, path):
    for name, (files, param) in MULTIPART_BOMBS.items():
        status, error = refusal(stack, path, stack.post_multipart(path, {"prompt": "x"}, files))
        assert status == 400, (name, error)
        assert (error["code"], error["param"]) == ("image_too_large", param), name
    assert_no_upstream_call(stack)


def test_an_uploaded_decompression_bomb_is_image_too_large(stack):
    good, bomb = upload(stack, png()), upload(stack, BOMB)
    for path in ("/v1/images/edits", "/v1/images/edits/async"):
        as_image = {"prompt": "x", "images": [{"upload_id": bomb}]}
        as_mask = {"prompt": "x", "images": [{"upload_id": good}], "mask": {"upload_id": bomb}}
        for body, param in ((as_image, "images[0]"), (as_mask, "mask")):
            status, error = refusal(stack, path, stack.post(path, body))
            assert status == 400, error
            assert (error["code"], error["param"]) == ("image_too_large", param)
    assert_no_upstream_call(stack)


def test_a_png_cut_short_that_keeps_iend_is_refused_before_the_upstream(stack):
    cut = cut_png_keeping_iend(noisy((300, 200)))
    upload_id = upload(stack, cut)
    for path in ("/v1/images/edits", "/v1/images/edits/async"):
        reply = stack.post_multipart(path, {"prompt": "x"}, [("image", ("cut.png", cut, "image/png"))])
        status, error = refusal(stack, path, reply)
        assert (status, error["code"], error["param"]) == (400, "invalid_image_format", "image[0]")
        uploaded = stack.post(path, {"prompt": "x", "images": [{"upload_id": upload_id}]})
        status, error = refusal(stack, path, uploaded)
        assert (status, error["param"]) == (400, "images[0]")
    assert_no_upstream_call(stack)


def test_a_whole_image_with_its_mask_still_passes(stack):
    reply = stack.post_multipart(
        "/v1/images/edits",
        {"prompt": "x"},
        [("image", ("a.png", png(), "image/png")), ("mask", ("m.png", rgba_mask(), "image/png"))],
    )
    assert reply.status == 200, reply.body
    assert stack.simulator.calls == 1


# --- URLs --------------------------------------------------------------------------------------------------


def test_the_poll_url_ignores_x_forwarded_proto(stack):
    for proto in ("javascript:alert(1)//", "http"):
        reply = stack.post(
            "/v1/images/generations/async", {"prompt": "a lighthouse"}, headers={"X-Forwarded-Proto": proto}
        )
        assert reply.status == 202
        host = "https://abcdef1234.execute-api.us-east-1.amazonaws.com"
        assert reply.headers["location"] == f"{host}/prod/v1/images/tasks/{reply.body['id']}"
        assert reply.body["poll_url"] == reply.headers["location"]


def test_an_unknown_or_malformed_task_id_is_a_404(stack):
    for task_id in ("task_" + "0" * 32, "x" * 5000):
        reply = stack.get_task(task_id)
        assert (reply.status, reply.body["error"]["code"]) == (404, "task_not_found")
        assert len(reply.body["error"]["message"]) < 200


def test_a_task_id_with_a_newline_after_it_names_no_route(stack):
    # The resolver's patterns end in $, which matches before a final newline: the id without it must not answer.
    task_id = stack.post("/v1/images/generations/async", {"prompt": "a lighthouse"}).body["id"]
    assert stack.get_task(task_id).status == 200
    reply = stack.get_task(task_id + "\n")
    assert (reply.status, reply.body["error"]["code"]) == (404, "unknown_route")
    assert list(reply.body) == ["error"]
