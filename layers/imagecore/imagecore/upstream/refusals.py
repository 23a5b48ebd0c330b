"""How an upstream attempt that produced no images ended: the upstream's refusals and errors (a 4xx relayed, a 429
with its Retry-After, an error object under a 200, an unusable body) as the service's errors, and whether they
may be retried."""

from __future__ import annotations

import email.utils
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from imagecore.domain.errors import ImageServiceError, UpstreamFailed, UpstreamRejected
from imagecore.upstream.reader import (
    BodyError,
    BodyIncomplete,
    BodyMalformed,
    BodyTooLarge,
)

# Error types under a 200 (or in a 4xx body) that mean the request itself was refused: never retried.
CALLER_ERROR_TYPES = frozenset({"invalid_request_error", "image_generation_user_error"})


# Upstream statuses relayed to the caller as they are; any other 4xx is the upstream misbehaving (502).
RELAYED_STATUSES = frozenset({400, 409, 413, 415, 422})


# A Retry-After beyond this is clamped: no upstream limit lasts longer, and the caller is told no more.
MAX_RETRY_AFTER_SECONDS = 3600


@dataclass
class Attempt:
    """How one attempt ended when it did not produce images."""

    error: ImageServiceError
    retryable: bool
    label: str
    retry_after: float | None = None


def unusable(exc: BodyError) -> Attempt:
    if isinstance(exc, BodyMalformed):
        message = "The upstream image API answered something that is not an image response."
    elif isinstance(exc, BodyIncomplete):
        message = "The upstream image API's answer was cut short after it had started; it is not asked again."
    elif isinstance(exc, BodyTooLarge):
        message = "The upstream image API's answer is larger than the request can produce."
    else:
        message = f"The upstream image API answered without a usable image ({exc})."
    return Attempt(UpstreamFailed(message, code=exc.code), retryable=False, label=f"200:{exc.code}")


def refusal(status: int, headers: httpx.Headers, raw: bytes) -> Attempt:
    """A status other than 200: retried when transient, relayed when it is the caller's, a 502 otherwise."""
    body = json_object(raw)
    error = body.get("error") if body is not None else None
    if status == 429:
        return rate_limited(headers, error)
    if 500 <= status < 600:
        return Attempt(UpstreamFailed(f"The upstream image API failed (HTTP {status})."), True, str(status))
    if status in (401, 403, 404):
        # Our key or our base URL is wrong: the caller's request is fine, so this is not theirs to fix.
        failure = UpstreamFailed(
            "The image service is not configured correctly for its upstream image API.",
            code="upstream_misconfigured",
        )
        return Attempt(failure, False, str(status))
    if status in RELAYED_STATUSES:
        message, code, err_type, param = error_fields(
            error, f"The upstream image API refused the request (HTTP {status})."
        )
        rejected = UpstreamRejected(
            message, status=status, type=err_type or "invalid_request_error", code=code, param=param
        )
        return Attempt(rejected, False, str(status))
    odd = UpstreamFailed(f"The upstream image API answered an unexpected HTTP status ({status}).")
    return Attempt(odd, False, f"{status}:unexpected")


def rate_limited(headers: httpx.Headers, error: Any) -> Attempt:
    retry_after = parse_retry_after(headers.get("retry-after"))
    message, code, err_type, param = error_fields(error, "The upstream image API is rate limited.")
    failure = UpstreamRejected(
        message,
        status=429,
        type=err_type or "rate_limit_error",
        code=code or "rate_limit_exceeded",
        param=param,
        headers={"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None,
    )
    return Attempt(failure, True, "429", retry_after)


def error_under_200(error: Any) -> Attempt:
    """An error object after sub2api's keep-alive committed the 200 (or an SSE ``error`` event)."""
    message, code, err_type, param = error_fields(error, "The upstream image API failed.")
    if code == "moderation_blocked" or err_type in CALLER_ERROR_TYPES:
        rejected = UpstreamRejected(
            message, status=400, type=err_type or "invalid_request_error", code=code, param=param
        )
        return Attempt(rejected, False, "200:error")
    return Attempt(UpstreamFailed(f"The upstream image API failed: {message}"), True, "200:error")


def json_object(text: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def error_fields(error: Any, default: str) -> tuple[str, str | None, str | None, str | None]:
    if not isinstance(error, dict):
        return default, None, None, None

    def text(key: str) -> str | None:
        value = error.get(key)
        return str(value)[:2000] if isinstance(value, str | int) and value != "" else None

    return text("message") or default, text("code"), text("type"), text("param")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when it is not a valid one (``abc``, ``-5``);
    a value past ``MAX_RETRY_AFTER_SECONDS`` is clamped to it."""
    value = (value or "").strip()
    if value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER_SECONDS))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - time.time()), float(MAX_RETRY_AFTER_SECONDS))
