"""Upstream faults, injected by the simulator, through the real generations handler: what the caller sees, what
is stored and how many times the upstream was called (a 200 once committed is billed: it is never asked again).

| fault | caller sees | stored | upstream calls |
|---|---|---|---|
| body cut halfway after a 200 | 502 upstream_incomplete | nothing | 1 |
| keep-alive whitespace, then the connection closes | 502 upstream_incomplete | nothing | 1 |
| a decompression-bomb image | 502 upstream_error | nothing | 1 |
| a truncated image | 502 upstream_error | nothing | 1 |
| a body larger than the request can produce | 502 upstream_too_large | nothing | 1 |
| an odd status (418, 302, 299) | 502 upstream_error | nothing | 1 |
| odd metadata (created 1e20, usage "lots"...) | 200, the image, sane fields | the image | 1 |
| 429 with a bad Retry-After | 429, no Retry-After (or a clamped one) | nothing | 1 |
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from tests.integration.conftest import BUCKET

REQUEST = {"prompt": "a lighthouse", "size": "1024x1024"}


def stored_keys(s3: Any) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def request_line(log_tap: Any) -> dict[str, Any]:
    (line,) = [record["request"] for record in log_tap.records() if "request" in record]
    return line


@pytest.mark.parametrize(
    "fault, code",
    [
        ({"mode": "cut"}, "upstream_incomplete"),
        ({"mode": "cut", "fraction": 0.02}, "upstream_incomplete"),
        ({"mode": "cut", "fraction": 0.999}, "upstream_incomplete"),
        ({"mode": "keepalive_cut"}, "upstream_incomplete"),
        ({"mode": "keepalive_cut", "keepalives": 0}, "upstream_incomplete"),
        ({"mode": "bomb"}, "upstream_error"),
        ({"mode": "bomb", "width": 4000, "height": 4000}, "upstream_error"),
        ({"mode": "truncated_image"}, "upstream_error"),
        ({"mode": "oversized", "bytes": 16 << 20}, "upstream_too_large"),
        ({"status": 418}, "upstream_error"),
        ({"status": 302}, "upstream_error"),
        ({"status": 299}, "upstream_error"),
    ],
    ids=[
        "cut-half",
        "cut-early",
        "cut-at-the-end",
        "keepalive-then-close",
        "close-before-any-byte",
        "bomb",
        "too-many-pixels",
        "truncated-image",
        "oversized",
        "418",
        "302",
        "299",
    ],
)
def test_a_faulty_answer_is_a_502_after_exactly_one_call(invoke, simulator, aws, log_tap, fault, code):
    simulator.queue_faults(fault)
    status, body, _ = invoke(REQUEST)

    assert status == 502, body
    assert body["error"]["type"] == "upstream_error"
    assert body["error"]["code"] == code
    assert simulator.calls == 1
    assert stored_keys(aws) == []
    line = request_line(log_tap)
    assert (line["attempts"], line["status"]) == (1, 502)


@pytest.mark.parametrize(
    "fields",
    [
        {"created": 10**20},
        {"created": -5},
        {"created": "soon"},
        {"created": True},
        {"usage": {"input_tokens": "lots", "output_tokens": -1, "total_tokens": 1.5}},
        {"usage": "lots"},
        {"usage": {"input_tokens_details": {"text_tokens": "x"}, "total_tokens": 7}},
        {"model": 42, "size": ["x"], "quality": {"a": 1}, "output_format": None, "background": 3.5},
        {"size": "x" * 5000},
    ],
    ids=[
        "created-1e20",
        "created-negative",
        "created-string",
        "created-bool",
        "usage-values",
        "usage-string",
        "usage-details",
        "text-fields",
        "huge-size-text",
    ],
)
def test_odd_metadata_never_costs_the_image(invoke, simulator, aws, log_tap, fields):
    simulator.queue_faults({"mode": "odd_metadata", "fields": fields})
    status, body, _ = invoke(REQUEST)

    assert status == 200, body
    assert simulator.calls == 1
    assert isinstance(body["created"], int) and 0 < body["created"] < 10**11
    assert (body["model"], body["size"], body["output_format"]) == ("gpt-image-2", "1024x1024", "png")
    usage = body.get("usage") or {}
    assert all(isinstance(v, int) for v in usage.values() if not isinstance(v, dict))
    (key,) = stored_keys(aws)
    with Image.open(io.BytesIO(aws.get_object(Bucket=BUCKET, Key=key)["Body"].read())) as image:
        assert image.size == (1024, 1024)
    assert request_line(log_tap)["attempts"] == 1


@pytest.mark.parametrize(
    "header, relayed",
    # an invalid one is not relayed: the service's own default (5 s) is sent instead, as on every 429
    [("abc", "5"), ("-5", "5"), ("1.5", "5"), ("", "5"), ("99999999999", "3600"), ("7", "7")],
    ids=["letters", "negative", "fraction", "empty", "huge-clamped", "valid"],
)
def test_retry_after_is_passed_on_only_when_valid(
    configure, api_event, lambda_context, simulator, aws, header, relayed
):
    generations = configure(UPSTREAM_MAX_ATTEMPTS="1")
    simulator.queue_faults({"status": 429, "retry_after": header})
    response = generations.lambda_handler(api_event("generations", body=REQUEST), lambda_context)

    assert response["statusCode"] == 429, response["body"]
    assert json.loads(response["body"])["error"]["code"] == "rate_limit_exceeded"
    headers = {k.lower(): values for k, values in response["multiValueHeaders"].items()}
    assert headers.get("retry-after") == ([relayed] if relayed else None)
    assert simulator.calls == 1
    assert stored_keys(aws) == []
