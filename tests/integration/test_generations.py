"""POST /v1/images/generations through the real handler: stored objects read back and opened, upstream calls
counted, the log line read."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from botocore.exceptions import EndpointConnectionError
from PIL import Image

from tests.conftest import UPSTREAM_KEY, owner_of_key_id
from tests.integration.conftest import BUCKET

KEY_RE = re.compile(r"^images/\d{4}/\d{2}/\d{2}/[0-9a-f]{32}/(\d+)\.(png|jpg|webp)$")


def stored_objects(s3: Any) -> list[dict[str, Any]]:
    return s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])


def key_of(url: str) -> str:
    return urlparse(url).path.lstrip("/")


def open_stored(s3: Any, key: str) -> tuple[Image.Image, dict[str, Any]]:
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    image = Image.open(io.BytesIO(obj["Body"].read()))
    image.load()
    return image, obj


def test_generates_a_jpeg_and_answers_a_presigned_url(invoke, aws, simulator, log_tap):
    status, body, response = invoke(
        {"prompt": "a lighthouse at dawn", "size": "1536x1024", "output_format": "jpeg", "quality": "high"}
    )

    assert status == 200, body
    assert set(body) >= {"created", "data", "model", "size", "quality", "output_format", "usage"}
    assert body["model"] == "gpt-image-2"
    assert (body["size"], body["quality"], body["output_format"]) == ("1536x1024", "high", "jpeg")
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"] > 0
    assert len(body["data"]) == 1
    url = body["data"][0]["url"]
    assert body["data"][0]["revised_prompt"]

    # A SigV4 presigned GET on the regional endpoint, valid for the default hour.
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    assert parsed.scheme == "https"
    assert parsed.netloc == f"{BUCKET}.s3.us-east-1.amazonaws.com"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["3600"]

    key = key_of(url)
    assert KEY_RE.match(key), key
    image, obj = open_stored(aws, key)
    assert (image.format, image.size) == ("JPEG", (1536, 1024))
    assert obj["ContentType"] == "image/jpeg"
    assert obj["Metadata"]["model"] == "gpt-image-2"
    assert obj["Metadata"]["size"] == "1536x1024"
    assert obj["Metadata"]["quality"] == "high"

    # The upstream got one call, with our key and the request minus our own fields.
    assert simulator.calls == 1
    sent = simulator.last_request
    assert sent["authorization_ok"] is True
    assert sent["json"] == {
        "prompt": "a lighthouse at dawn",
        "model": "gpt-image-2",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "output_format": "jpeg",
    }
    assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]


def test_n_images_are_n_objects_and_n_urls(invoke, aws, simulator):
    status, body, _ = invoke({"prompt": "three variations", "n": 3, "size": "1024x1024"})

    assert status == 200, body
    keys = [key_of(item["url"]) for item in body["data"]]
    assert len(set(keys)) == 3
    assert sorted(int(KEY_RE.match(k).group(1)) for k in keys) == [0, 1, 2]
    assert len({k.rsplit("/", 1)[0] for k in keys}) == 1  # one id per request
    assert len(stored_objects(aws)) == 3
    for key in keys:
        image, obj = open_stored(aws, key)
        assert (image.format, image.size, obj["ContentType"]) == ("PNG", (1024, 1024), "image/png")
    assert simulator.calls == 1


def test_b64_json_answers_inline_and_still_stores(invoke, aws):
    status, body, _ = invoke({"prompt": "inline please", "size": "1024x1024", "response_format": "b64_json"})

    assert status == 200, body
    item = body["data"][0]
    assert item["url"] is None
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert len(stored_objects(aws)) == 1


def test_b64_json_too_large_for_lambda_is_a_400_and_the_images_are_kept(configure, api_event, lambda_context, aws):
    generations = configure(MAX_INLINE_RESPONSE_BYTES="200000")
    event = api_event(body={"prompt": "big", "size": "2048x2048", "response_format": "b64_json"})

    response = generations.lambda_handler(event, lambda_context)

    error = json.loads(response["body"])["error"]
    assert response["statusCode"] == 400
    assert error["code"] == "response_too_large"
    assert error["param"] == "response_format"
    assert "'url'" in error["message"]
    keys = sorted(o["Key"] for o in stored_objects(aws))
    assert [key.rsplit("/", 1)[1] for key in keys] == ["0.png", "result.json"], keys  # paid for, so kept


def test_one_log_line_per_request_with_every_field_and_no_secrets(invoke, log_tap):
    prompt = "a secret family recipe drawn as a diagram"
    status, body, _ = invoke({"prompt": prompt, "size": "1024x1536", "output_format": "webp", "n": 2})
    assert status == 200, body

    records = log_tap.records()
    assert len(records) == 1
    line = records[0]["request"]
    assert line["operation"] == "generations"
    assert line["usage"] == body["usage"]
    assert line["upstream_latency_ms"] > 0
    assert line["total_latency_ms"] >= line["upstream_latency_ms"]
    assert (line["size"], line["quality"], line["output_format"], line["n"], line["model"]) == (
        "1024x1536",
        "auto",
        "webp",
        2,
        "gpt-image-2",
    )
    assert line["upstream_request_id"].startswith("req_")
    assert line["account_id"] == "acct-local-simulator"
    assert line["api_key_id"] == "key_test0000001"
    assert line["attempts"] == 1
    assert line["outcome"] == "success"
    assert line["status"] == 200
    assert line["images_returned"] == 2
    assert line["sizes_returned"] == ["1024x1536", "1024x1536"]
    assert line["prompt_chars"] == len(prompt)
    assert len(line["prompt_hmac"]) == 16
    assert line["prompt_hmac"] != hashlib.sha256(prompt.encode()).hexdigest()[:16]  # keyed, not a plain hash
    assert records[0]["correlation_id"] == line["api_request_id"]
    assert "prompt" not in line
    assert prompt not in log_tap.text
    assert UPSTREAM_KEY not in log_tap.text
    assert "isk-example-not-a-real-key" not in log_tap.text


def test_prompt_text_is_logged_only_when_the_setting_says_so(configure, api_event, lambda_context, log_tap):
    generations = configure(LOG_PROMPTS="true")
    generations.lambda_handler(api_event(body={"prompt": "log me", "size": "1024x1024"}), lambda_context)
    assert log_tap.records()[0]["request"]["prompt"] == "log me"


BAD_BODIES = [
    ({"size": "1024x1024"}, "prompt", "missing_required_parameter"),
    ({"prompt": ""}, "prompt", None),
    ({"prompt": "   "}, "prompt", None),
    ({"prompt": "x" * 32_001}, "prompt", None),
    ({"prompt": "p", "model": "dall-e-3"}, "model", "invalid_value"),
    ({"prompt": "p", "n": 0}, "n", None),
    ({"prompt": "p", "n": 11}, "n", None),
    ({"prompt": "p", "n": "2"}, "n", "invalid_type"),
    ({"prompt": "p", "size": "3856x2160"}, "size", None),
    ({"prompt": "p", "size": "1024x1000"}, "size", None),
    ({"prompt": "p", "size": "2320x768"}, "size", None),
    ({"prompt": "p", "size": "1008x640"}, "size", None),
    ({"prompt": "p", "size": "3840x2176"}, "size", None),
    ({"prompt": "p", "size": "big"}, "size", None),
    ({"prompt": "p", "quality": "ultra"}, "quality", "invalid_value"),
    ({"prompt": "p", "output_format": "gif"}, "output_format", "invalid_value"),
    ({"prompt": "p", "background": "transparent"}, "background", None),
    ({"prompt": "p", "moderation": "none"}, "moderation", "invalid_value"),
    ({"prompt": "p", "output_compression": 50}, "output_compression", None),
    ({"prompt": "p", "output_format": "jpeg", "output_compression": 101}, "output_compression", None),
    ({"prompt": "p", "partial_images": 2}, "partial_images", None),
    ({"prompt": "p", "stream": True}, "stream", None),
    ({"prompt": "p", "user": 42}, "user", "invalid_type"),
    ({"prompt": "p", "response_format": "png"}, "response_format", "invalid_value"),
    ({"prompt": "p", "style": "vivid"}, "style", "unknown_parameter"),
]


@pytest.mark.parametrize(
    ("body", "param", "code"), BAD_BODIES, ids=[f"{p}-{i}" for i, (_, p, _c) in enumerate(BAD_BODIES)]
)
def test_every_bad_input_is_a_400_naming_the_field_without_calling_upstream(invoke, simulator, body, param, code):
    status, payload, _ = invoke(body)

    assert status == 400, payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    if code:
        assert error["code"] == code
    assert simulator.calls == 0


def test_error_messages_say_what_to_do(invoke):
    assert "does not support transparent" in invoke({"prompt": "p", "background": "transparent"})[1]["error"]["message"]
    assert "stream" in invoke({"prompt": "p", "stream": True})[1]["error"]["message"]
    assert "multiples of 16" in invoke({"prompt": "p", "size": "1024x1000"})[1]["error"]["message"]
    assert (
        invoke({"style": "x", "prompt": "p"})[1]["error"]["message"] == "Unrecognized request argument supplied: style"
    )


@pytest.mark.parametrize(
    ("raw_body", "content_type", "status", "code"),
    [
        ('{"prompt": "unterminated', "application/json", 400, "invalid_json"),
        ("not json at all", "application/json", 400, "invalid_json"),
        ("[1, 2, 3]", "application/json", 400, "invalid_type"),
        ('"just a string"', "application/json", 400, "invalid_type"),
        ("", "application/json", 400, None),
        ("prompt=hello", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"prompt": "p"}', "text/plain", 415, "unsupported_media_type"),
        ("--x\r\n", "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_and_wrong_content_types(invoke, simulator, raw_body, content_type, status, code):
    headers = {"Content-Type": content_type, "Authorization": "Bearer whatever"}
    got, payload, _ = invoke(raw_body=raw_body, headers=headers)

    assert got == status, payload
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]
    if code:
        assert payload["error"]["code"] == code
    assert simulator.calls == 0


def test_a_policy_block_is_relayed_once(invoke, simulator, log_tap):
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
    status, body, _ = invoke({"prompt": "something forbidden", "size": "1024x1024"})

    assert status == 400
    assert body["error"]["code"] == "moderation_blocked"
    assert body["error"]["message"] == "Your request was rejected by the safety system."
    assert simulator.calls == 1
    line = log_tap.records()[0]["request"]
    assert (line["outcome"], line["error_code"], line["attempts"]) == ("upstream_rejected", "moderation_blocked", 1)


def test_a_policy_block_after_keepalive_under_200_is_still_a_400(invoke, simulator):
    simulator.queue_faults(
        {
            "status": 200,
            "keepalive_ms": 50,
            "latency_ms": 200,
            "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
    )
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})
    assert (status, body["error"]["code"], simulator.calls) == (400, "moderation_blocked", 1)


def test_a_5xx_is_retried_and_recovered(invoke, simulator, aws, log_tap):
    simulator.queue_faults({"status": 503})
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})

    assert status == 200, body
    assert simulator.calls == 2
    assert len(stored_objects(aws)) == 1
    line = log_tap.records()[0]["request"]
    assert (line["attempts"], line["attempt_errors"], line["outcome"]) == (2, ["503"], "success")


def test_a_server_error_under_200_after_keepalive_is_retried(invoke, simulator):
    simulator.queue_faults(
        {
            "status": 200,
            "keepalive_ms": 20,
            "latency_ms": 60,
            "error": {"message": "account pool empty", "type": "server_error"},
        }
    )
    status, _, _ = invoke({"prompt": "p", "size": "1024x1024"})
    assert (status, simulator.calls) == (200, 2)


def test_exhausted_5xx_is_a_502_after_three_attempts(invoke, simulator, aws):
    simulator.queue_faults({"status": 500}, {"status": 502}, {"status": 503})
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})

    assert status == 502
    assert body["error"]["type"] == "upstream_error"
    assert simulator.calls == 3
    assert stored_objects(aws) == []


@pytest.mark.parametrize("retry_after", [7, 1])
def test_429_honours_retry_after_then_recovers(invoke, simulator, upstream_pauses, log_tap, aws, retry_after):
    simulator.queue_faults({"status": 429, "retry_after": str(retry_after)})
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})

    assert status == 200, body
    assert simulator.calls == 2
    # The wait is the upstream's Retry-After (the backoff's jitter stays under it at the first retry).
    assert upstream_pauses == [retry_after]
    line = log_tap.records()[0]["request"]
    assert (line["attempts"], line["attempt_errors"]) == (2, ["429"])
    assert len(stored_objects(aws)) == 1


def test_garbage_under_200_is_a_502(invoke, simulator):
    simulator.queue_faults({"status": 200, "garbage": True})
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})
    assert (status, body["error"]["code"], simulator.calls) == (502, "upstream_error", 1)


def test_keepalive_whitespace_before_the_image_is_tolerated(configure, api_event, lambda_context, simulator, aws):
    simulator.options.keepalive_ms = 30
    simulator.options.latency_ms = 150
    generations = configure()
    response = generations.lambda_handler(api_event(body={"prompt": "p", "size": "1024x1024"}), lambda_context)
    assert response["statusCode"] == 200, response["body"]
    assert len(stored_objects(aws)) == 1


def test_never_works_past_api_gateways_integration_timeout(configure, api_event, lambda_context, simulator, log_tap):
    # 6 s integration timeout - 4 s storage margin: 2 s for the upstream, which takes 5 s.
    simulator.options.latency_ms = 5000
    generations = configure(INTEGRATION_TIMEOUT_MS="6000")
    generations.deps()  # built at init, as in Lambda: outside the request's time (a busy machine takes seconds)
    response = generations.lambda_handler(api_event(body={"prompt": "p", "size": "1024x1024"}), lambda_context)

    assert response["statusCode"] == 504
    assert json.loads(response["body"])["error"]["code"] == "upstream_timeout"
    line = log_tap.records()[0]["request"]
    assert line["upstream_latency_ms"] < 3500
    assert simulator.calls == 1


def test_storage_failure_after_the_upstream_answered_hands_the_image_back_inline(invoke, aws, simulator, log_tap):
    aws.delete_bucket(Bucket=BUCKET)  # S3 refuses every write from now on
    status, body, _ = invoke({"prompt": "p", "size": "1024x1024"})

    assert status == 200
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.size == (1024, 1024)
    assert log_tap.records()[0]["request"]["storage"] == "failed"


def _usage_today(generations: Any) -> dict[str, Any]:
    from imagecore.accounts.budgets import Budget

    return generations.deps().admission.ledger.usage(owner_of_key_id("key_test0000001"), Budget(), 1)["days"][0]


def test_the_usage_is_written_while_the_last_image_is_being_stored(generations, api_event, lambda_context, aws):
    """Once the upstream has answered, its usage write and its last image's PUT run together: the PUT below waits
    for the write to start (with the write after the PUT it would wait out its 10 s and see none)."""
    deps = generations.deps()
    settling = threading.Event()
    seen_by_put: list[bool] = []

    def usage_write(params: dict[str, Any], **_: Any) -> None:
        if any(name.endswith("requests") for name in params.get("ExpressionAttributeNames", {}).values()):
            settling.set()

    def image_put(params: dict[str, Any], **_: Any) -> None:
        last = params["Key"].endswith("/1.png")  # the second of two images
        seen_by_put.append(settling.wait(10) if last else settling.is_set())

    deps.admission.ledger.dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", usage_write)
    deps.service.store.s3.meta.events.register("before-parameter-build.s3.PutObject", image_put)
    event = api_event("generations", body={"prompt": "p", "size": "1024x1024", "n": 2})
    response = generations.lambda_handler(event, lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert seen_by_put == [False, True]  # the first image is stored while the second is read, before any write
    assert len(stored_objects(aws)) == 2
    day = _usage_today(generations)
    assert (day["requests"], day["images"]) == (1, 2)


def test_a_put_refused_after_another_was_stored_still_answers_every_image_and_counts_them(
    generations, api_event, lambda_context, aws, simulator, log_tap
):
    deps = generations.deps()
    puts: list[str] = []

    def refuse_the_second(params: dict[str, Any], **_: Any) -> None:
        puts.append(params["Key"])
        if len(puts) > 1:
            raise EndpointConnectionError(endpoint_url="http://s3.test")

    deps.service.store.s3.meta.events.register("before-parameter-build.s3.PutObject", refuse_the_second)
    event = api_event("generations", body={"prompt": "p", "size": "1024x1024", "n": 2})
    response = generations.lambda_handler(event, lambda_context)

    assert response["statusCode"] == 200, response["body"]
    data = json.loads(response["body"])["data"]
    sizes = [Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size for item in data]
    assert sizes == [(1024, 1024), (1024, 1024)]  # the stored one read back, the refused one from memory
    assert log_tap.records()[0]["request"]["storage"] == "failed"
    assert simulator.calls == 1
    day = _usage_today(generations)
    assert (day["requests"], day["images"], day["failures"]) == (1, 2, {})


def test_a_request_without_the_authorizer_context_is_refused(invoke, simulator):
    status, body, _ = invoke({"prompt": "p"}, key_id=None)
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    assert simulator.calls == 0


def test_upstream_key_is_never_echoed_when_the_upstream_refuses_it(configure, api_event, lambda_context, simulator):
    generations = configure(UPSTREAM_API_KEY="wrong-key")
    response = generations.lambda_handler(api_event(body={"prompt": "p", "size": "1024x1024"}), lambda_context)
    assert response["statusCode"] == 502
    assert json.loads(response["body"])["error"]["code"] == "upstream_misconfigured"
    assert "wrong-key" not in response["body"]


def test_health_answers_without_a_key(api_event, lambda_context):
    from functions.health import app as health

    response = health.lambda_handler(api_event("health"), lambda_context)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "ok"


def test_unknown_route_is_a_404_in_the_openai_shape(generations, api_event, lambda_context):
    event = api_event(body={"prompt": "p"})
    event["path"] = event["resource"] = "/v1/images/variations"
    response = generations.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 404
    assert json.loads(response["body"])["error"]["type"] == "invalid_request_error"


def test_openapi_document_and_docs_are_public(api_event, lambda_context):
    from functions.health import app as health

    event = api_event("health")
    event["path"] = event["resource"] = "/v1/openapi.json"
    response = health.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200
    assert "/v1/images/generations" in json.loads(response["body"])["paths"]

    event["path"] = event["resource"] = "/v1/docs"
    response = health.lambda_handler(event, lambda_context)
    assert response["statusCode"] == 200
    assert "swagger-ui" in response["body"]
