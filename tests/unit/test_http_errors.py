"""The one error-to-HTTP map: every domain error becomes a status, its headers and the OpenAI error body, as
plain data any edge can frame; the Powertools wrapper sends exactly that and records the outcome."""

from __future__ import annotations

import json

import pytest

from imagecore.domain.errors import (
    ImageServiceError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    StorageUnavailable,
    TasksUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from imagecore.edge.http_errors import ErrorAnswer, error_answer, internal_error, outcome_of
from imagecore.edge.resolver import error_response
from imagecore.platform.observability import RequestRecord, recording
from imagecore.usecases.idempotency import IdempotencyConflict


@pytest.mark.parametrize(
    ("error", "status", "type_", "code", "outcome"),
    [
        (InvalidRequest("bad size", param="size"), 400, "invalid_request_error", "invalid_value", "rejected"),
        (Unauthorized("Unauthorized"), 401, "invalid_request_error", "invalid_api_key", "rejected"),
        (NotFound("no task", code="task_not_found"), 404, "invalid_request_error", "task_not_found", "rejected"),
        (PayloadTooLarge("too big"), 413, "invalid_request_error", "payload_too_large", "rejected"),
        (UnsupportedMediaType("xml"), 415, "invalid_request_error", "unsupported_media_type", "rejected"),
        (UpstreamRejected("policy", status=400, code="moderation_blocked"), 400, "invalid_request_error",
         "moderation_blocked", "upstream_rejected"),
        (UpstreamFailed("5xx"), 502, "upstream_error", "upstream_error", "upstream_failed"),
        (UpstreamTimeout("slow"), 504, "upstream_error", "upstream_timeout", "upstream_failed"),
        (StorageUnavailable("s3"), 503, "server_error", "storage_unavailable", "error"),
        (TasksUnavailable("ddb"), 503, "server_error", "tasks_unavailable", "error"),
    ],
)  # fmt: skip
def test_each_error_maps_to_its_status_body_and_outcome(
    error: ImageServiceError, status: int, type_: str, code: str, outcome: str
) -> None:
    answer = error_answer(error)

    # a 503 says when to come back (every 429 and 503 does: tests/unit/test_retry_after.py)
    headers = {"Retry-After": "5"} if status == 503 else {}
    assert answer == ErrorAnswer(
        status, headers, {"error": {"message": error.message, "type": type_, "param": error.param, "code": code}}
    )
    assert outcome_of(error) == outcome


def test_headers_travel_with_the_answer_and_are_a_copy() -> None:
    error = IdempotencyConflict("still running", param="Idempotency-Key", headers={"Retry-After": "5"})

    answer = error_answer(error)
    answer.headers["X-Other"] = "1"

    assert answer.status == 409
    assert error_answer(error).headers == {"Retry-After": "5"}
    assert answer.body["error"]["param"] == "Idempotency-Key"


def test_an_unforeseen_failure_says_nothing_of_its_cause() -> None:
    answer = error_answer(internal_error())

    assert answer.status == 500
    assert answer.body == {
        "error": {
            "message": "The image service failed unexpectedly. Try again later.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert outcome_of(internal_error()) == "error"


def test_the_powertools_response_is_the_same_answer_and_the_record_keeps_its_outcome() -> None:
    error = UpstreamTimeout("The upstream did not answer in time.")
    record = RequestRecord(operation="generations")

    with recording(record):
        response = error_response(error)

    answer = error_answer(error)
    assert response.status_code == answer.status
    assert json.loads(str(response.body)) == answer.body
    assert (record.status, record.outcome, record.error_code) == (504, "upstream_failed", "upstream_timeout")
