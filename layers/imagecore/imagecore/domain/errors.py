"""Domain errors. Each one knows the HTTP status and the OpenAI error fields it becomes.

One place (``imagecore.edge.http_errors``) turns them into responses; nothing else builds error bodies.
"""

from __future__ import annotations

from typing import Any

# The statuses that tell a client to come back later: each answer with one says when (Retry-After, seconds).
RETRY_LATER_STATUSES = frozenset({429, 503})
DEFAULT_RETRY_AFTER_SECONDS = 5


class ImageServiceError(Exception):
    """Base of every error a client may see. ``message`` is written for the client: never put
    exception text from a library, a secret or user data in it. A 429 or 503 always carries ``Retry-After``:
    the one given in ``headers``, else ``retry_after_seconds``."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = dict(headers or {})
        if self.status in RETRY_LATER_STATUSES and not any(name.lower() == "retry-after" for name in self.headers):
            self.headers["Retry-After"] = str(self.retry_after_seconds)

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# Failures after the upstream had committed a 200 (and billed the images) that never reached the caller: a body
# cut short, or one larger than the request can produce. What was reserved for them stays spent.
BILLED_FAILURE_CODES = frozenset({"upstream_incomplete", "upstream_too_large"})


class InvalidRequest(ImageServiceError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class UnsupportedMediaType(ImageServiceError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class PayloadTooLarge(ImageServiceError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class NotFound(ImageServiceError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Unauthorized(ImageServiceError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(ImageServiceError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class TokenBudgetExceeded(ImageServiceError):
    """A client token asked for more images than its ``max_images`` has left: refused before the upstream. Its
    ``Retry-After`` is the token's remaining life: this token will not make more images; a new one will."""

    status = 429
    type = "insufficient_quota"
    code = "token_budget_exceeded"


class UpstreamRejected(ImageServiceError):
    """The upstream answered a 4xx (or an error object that means one): relayed with its status and code."""

    status = 400
    type = "invalid_request_error"


class UpstreamFailed(ImageServiceError):
    """The upstream failed (5xx after retries, garbage, no image): 502."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(ImageServiceError):
    """No answer within the time budget: 504."""

    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class StorageUnavailable(ImageServiceError):
    """S3 refused the images after retries and they were too large to hand back inline."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"


class TasksUnavailable(ImageServiceError):
    """The task store or the jobs queue did not answer: nothing was queued or read."""

    status = 503
    type = "server_error"
    code = "tasks_unavailable"


class ServiceMisconfigured(ImageServiceError):
    status = 500
    type = "server_error"
    code = "service_misconfigured"
