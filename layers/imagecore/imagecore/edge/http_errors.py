"""THE map from domain errors to HTTP answers in the OpenAI error shape: status, headers and JSON body.

Plain data, no web framework: the Powertools edge wraps it in a ``Response`` (``imagecore.edge.resolver``), and any
other edge (a streamed route, an SSE ``event: error``) frames the same body, so there is one error table.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from imagecore.domain.errors import ImageServiceError, UpstreamFailed, UpstreamRejected, UpstreamTimeout
from imagecore.platform.observability import RequestRecord


class ErrorAnswer(NamedTuple):
    """What a client receives for an error: the body is JSON (``{"error": {message, type, param, code}}``)."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def error_answer(error: ImageServiceError) -> ErrorAnswer:
    return ErrorAnswer(error.status, dict(error.headers), error.to_body())


def internal_error() -> ImageServiceError:
    """What a client is told about a failure we did not foresee: nothing of its cause."""
    return ImageServiceError("The image service failed unexpectedly. Try again later.", code="internal_error")


def outcome_of(error: ImageServiceError) -> str:
    """The request log's ``outcome`` for an error answer."""
    if isinstance(error, UpstreamRejected):
        return "upstream_rejected"
    if isinstance(error, UpstreamFailed | UpstreamTimeout):
        return "upstream_failed"
    return "rejected" if error.status < 500 else "error"


def record_error(record: RequestRecord, error: ImageServiceError) -> None:
    """What the request log says of a request answered with ``error``: its status, outcome and code."""
    record.status = error.status
    record.fail(outcome_of(error), error.code)
