"""The upstream client: the only code that speaks HTTP to sub2api.

Policy (from the upstream contract):
- one attempt may take ``timeout`` seconds (120 s, 300 s for large sizes) but never past the deadline, which
  already leaves room to store the images and answer;
- only transient faults are retried: connect/read errors, 5xx, 429 (honouring ``Retry-After`` when it fits the
  budget) and error objects under a 200 that are not the caller's fault; never a 4xx; at most 3 attempts with
  exponential backoff and full jitter;
- a read timeout is not retried: the upstream may still be working (and billing) on that image;
- sub2api may write whitespace keep-alives before the JSON, which commits a 200, so an ``error`` object or a
  body without a decodable image under a 200 is a failure.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from imagecore.deadline import Deadline
from imagecore.errors import ImageServiceError, UpstreamFailed, UpstreamRejected, UpstreamTimeout
from imagecore.images import ImageInfo, NotAnImage, inspect_image

# Error types under a 200 (or in a 4xx body) that mean the request itself was refused: never retried.
CALLER_ERROR_TYPES = frozenset({"invalid_request_error", "image_generation_user_error"})
MIN_ATTEMPT_SECONDS = 1.0
MAX_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2^(attempt-1))]."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    info: ImageInfo
    revised_prompt: str | None = None


@dataclass
class CallTrace:
    """What the caller logs about one upstream call, filled in whether it succeeds or fails."""

    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    request_id: str | None = None
    account_id: str | None = None
    latency_ms: float | None = None  # waiting on the upstream: first request sent to last byte read
    last_byte_at: float | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UpstreamResult:
    body: dict[str, Any]
    images: list[GeneratedImage]

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self.body.get("usage")
        return usage if isinstance(usage, dict) else None


@dataclass
class _Attempt:
    """How one attempt ended when it did not produce images."""

    error: ImageServiceError
    retryable: bool
    label: str
    retry_after: float | None = None


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        account_id_header: str = "x-account-id",
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http or httpx.Client(http2=False, follow_redirects=False)
        self._retry = retry or RetryPolicy()
        self._account_id_header = account_id_header
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def generate(
        self, body: dict[str, Any], *, timeout: float, deadline: Deadline, trace: CallTrace | None = None
    ) -> UpstreamResult:
        """POST /images/generations; returns the decoded images or raises an ``ImageServiceError``."""
        return self._call(
            "/images/generations", {"json": body}, timeout=timeout, deadline=deadline, trace=trace or CallTrace()
        )

    def edit(
        self,
        fields: dict[str, Any],
        files: list[tuple[str, tuple[str, bytes, str]]],
        *,
        timeout: float,
        deadline: Deadline,
        trace: CallTrace | None = None,
    ) -> UpstreamResult:
        """POST /images/edits as multipart: ``files`` are ``(part name, (filename, bytes, content type))``.
        Every attempt sends the whole body again."""
        data = {name: _form_value(value) for name, value in fields.items()}
        return self._call(
            "/images/edits",
            {"data": data, "files": files},
            timeout=timeout,
            deadline=deadline,
            trace=trace or CallTrace(),
        )

    def _call(
        self, path: str, content: dict[str, Any], *, timeout: float, deadline: Deadline, trace: CallTrace
    ) -> UpstreamResult:
        started = deadline.clock()
        try:
            return self._attempts(path, content, timeout=timeout, deadline=deadline, trace=trace)
        finally:
            # Decoding what came back is our work, not the upstream's: it is not in this figure.
            ended = trace.last_byte_at if trace.last_byte_at is not None else deadline.clock()
            trace.latency_ms = round((ended - started) * 1000, 1)

    def _attempts(
        self, path: str, content: dict[str, Any], *, timeout: float, deadline: Deadline, trace: CallTrace
    ) -> UpstreamResult:
        last: _Attempt | None = None
        while trace.attempts < self._retry.max_attempts:
            attempt_deadline = deadline.earliest(timeout)
            if attempt_deadline.remaining() < MIN_ATTEMPT_SECONDS:
                raise self._out_of_time(last)
            trace.attempts += 1
            trace.last_byte_at = None
            outcome = self._attempt(path, content, attempt_deadline, trace)
            if isinstance(outcome, UpstreamResult):
                return outcome
            last = outcome
            trace.errors.append(outcome.label)
            if not outcome.retryable or trace.attempts == self._retry.max_attempts:
                break
            delay = self._retry.backoff(trace.attempts, self._rng)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            if deadline.remaining() - delay < MIN_ATTEMPT_SECONDS:
                break  # the wait (or Retry-After) does not fit the budget: answer with what we have
            self._sleep(delay)
        assert last is not None
        raise last.error

    @staticmethod
    def _out_of_time(last: _Attempt | None) -> ImageServiceError:
        if last is not None and last.retryable and last.error.status != 504:
            return last.error
        return UpstreamTimeout("The image service ran out of time waiting for the upstream image API.")

    def _attempt(
        self, path: str, content: dict[str, Any], attempt_deadline: Deadline, trace: CallTrace
    ) -> UpstreamResult | _Attempt:
        budget = attempt_deadline.remaining()
        headers = {
            "Authorization": f"Bearer {self._api_key()}",
            "Accept": "application/json",
        }
        try:
            with self._http.stream(
                "POST",
                self._base_url + path,
                **content,
                headers=headers,
                timeout=httpx.Timeout(budget, connect=min(10.0, budget)),
            ) as response:
                trace.request_id = response.headers.get("x-request-id") or trace.request_id
                trace.account_id = response.headers.get(self._account_id_header) or trace.account_id
                raw = self._read_within(response, attempt_deadline)
                trace.last_byte_at = attempt_deadline.clock()
        except _BudgetSpent:
            return _Attempt(self._timeout_error(), retryable=False, label="timeout")
        except httpx.TimeoutException as exc:
            # Nothing was sent before a connect/pool timeout, so another attempt is safe; a read or write
            # timeout means the upstream may still be working on (and billing) the image.
            retryable = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            return _Attempt(self._timeout_error(), retryable=retryable, label=type(exc).__name__)
        except httpx.TransportError as exc:
            return _Attempt(
                UpstreamFailed("The upstream image API could not be reached."),
                retryable=True,
                label=type(exc).__name__,
            )
        return self._interpret(response.status_code, response.headers, raw)

    @staticmethod
    def _timeout_error() -> UpstreamTimeout:
        return UpstreamTimeout("The upstream image API did not answer within the time budget.")

    @staticmethod
    def _read_within(response: httpx.Response, deadline: Deadline) -> bytes:
        """Read the whole body, but stop at the deadline even if keep-alive whitespace keeps trickling in."""
        chunks: list[bytes] = []
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                raise _BudgetSpent
        return b"".join(chunks)

    @staticmethod
    def _interpret(
        status: int,
        headers: httpx.Headers,
        raw: bytes,
    ) -> UpstreamResult | _Attempt:
        text = raw.lstrip()  # sub2api keep-alive: " \n" before the JSON
        body = _json_object(text)
        error = body.get("error") if body is not None else None

        if status == 429 or status >= 500:
            retry_after = _retry_after(headers.get("retry-after")) if status == 429 else None
            if status == 429:
                message, code, err_type, param = _error_fields(error, "The upstream image API is rate limited.")
                failure: ImageServiceError = UpstreamRejected(
                    message,
                    status=429,
                    type=err_type or "rate_limit_error",
                    code=code or "rate_limit_exceeded",
                    param=param,
                    headers={"Retry-After": headers["retry-after"]} if "retry-after" in headers else None,
                )
            else:
                failure = UpstreamFailed(f"The upstream image API failed (HTTP {status}).")
            return _Attempt(failure, True, str(status), retry_after)

        if status in (401, 403, 404):
            # Our key or our base URL is wrong: the caller's request is fine, so this is not theirs to fix.
            return _Attempt(
                UpstreamFailed(
                    "The image service is not configured correctly for its upstream image API.",
                    code="upstream_misconfigured",
                ),
                False,
                str(status),
            )

        if status >= 400:
            message, code, err_type, param = _error_fields(
                error, f"The upstream image API refused the request (HTTP {status})."
            )
            rejected = UpstreamRejected(
                message, status=status, type=err_type or "invalid_request_error", code=code, param=param
            )
            return _Attempt(rejected, False, str(status), None)

        if status != 200 or body is None:
            return _Attempt(
                UpstreamFailed("The upstream image API answered something that is not an image response."),
                False,
                f"{status}:garbage",
            )

        if error is not None:
            # An error after sub2api's keep-alive committed the 200.
            message, code, err_type, param = _error_fields(error, "The upstream image API failed.")
            if code == "moderation_blocked" or err_type in CALLER_ERROR_TYPES:
                rejected = UpstreamRejected(
                    message, status=400, type=err_type or "invalid_request_error", code=code, param=param
                )
                return _Attempt(rejected, False, "200:error", None)
            return _Attempt(
                UpstreamFailed(f"The upstream image API failed: {message}"),
                True,
                "200:error",
            )

        images = _decode_images(body)
        if isinstance(images, str):
            return _Attempt(
                UpstreamFailed(f"The upstream image API answered without a usable image ({images})."),
                False,
                "200:no_image",
            )
        # The decoded images are all that is kept of data[]: the base64 text is released here, not after S3.
        return UpstreamResult(body={k: v for k, v in body.items() if k != "data"}, images=images)


class _BudgetSpent(Exception):
    pass


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json_object(text: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _error_fields(error: Any, default: str) -> tuple[str, str | None, str | None, str | None]:
    if not isinstance(error, dict):
        return default, None, None, None

    def text(key: str) -> str | None:
        value = error.get(key)
        return str(value)[:2000] if isinstance(value, str | int) and value != "" else None

    return text("message") or default, text("code"), text("type"), text("param")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode_images(body: dict[str, Any]) -> list[GeneratedImage] | str:
    """The images under ``data[].b64_json``, decoded and identified, or why there are none."""
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return "no data"
    images = []
    for index, item in enumerate(data):
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(encoded, str) or not encoded:
            return f"data[{index}] has no b64_json"
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return f"data[{index}].b64_json is not base64"
        try:
            info = inspect_image(raw)
        except NotAnImage:
            return f"data[{index}] is not a PNG, JPEG or WebP image"
        revised = item.get("revised_prompt")
        images.append(GeneratedImage(raw, info, revised if isinstance(revised, str) else None))
    return images
