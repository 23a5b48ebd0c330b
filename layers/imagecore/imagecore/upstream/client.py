"""The upstream client: the only code that speaks HTTP to sub2api.

Policy (from the upstream contract):
- one attempt may take ``timeout`` seconds (120 s, 300 s for large sizes) but never past the deadline, which
  already leaves room to store the images and answer;
- only transient faults are retried: connect errors, 5xx, 429 (honouring a valid ``Retry-After`` when it fits
  the budget) and error objects under a 200 that are not the caller's fault; never a 4xx; at most 3 attempts
  with exponential backoff and full jitter;
- a 200 is billed: once its status line has come, the attempt is final. A body cut short (half the JSON, or
  keep-alive whitespace and then nothing) is a 502 ``upstream_incomplete``, never asked again; so is a read
  timeout (the upstream may still be working on, and billing, that image);
- sub2api may write whitespace keep-alives before the JSON, which commits a 200, so an ``error`` object or a
  body without a decodable image under a 200 is a failure;
- statuses outside the contract (418, 3xx, 2xx other than 200) are a 502; error bodies are read up to
  ``MAX_ERROR_BODY_BYTES`` and answers up to the largest the request can produce (``ReadLimits``).

The body is read by ``imagecore.upstream.reader`` as it arrives: each image is decoded, inspected and handed to
``on_image`` before the next is read, so memory holds one image whatever ``n`` is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import httpx

from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import ImageServiceError, UpstreamFailed, UpstreamTimeout
from imagecore.domain.images import ImageInfo
from imagecore.platform.tls import tls_context
from imagecore.upstream.bodies import JsonBody, SseBody
from imagecore.upstream.fields import normalise_fields
from imagecore.upstream.reader import (
    BodyError,
    ReadImage,
    ReadLimits,
    StreamFailed,
)
from imagecore.upstream.refusals import Attempt, error_under_200, refusal, unusable
from imagecore.upstream.responses_body import EventSink, ResponsesBody

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
    index: int = 0


# A partial image of a streamed answer: ``index`` is its ``partial_image_index``, ``fields`` its event's fields.
PartialImage = ReadImage
ImageSink = Callable[[GeneratedImage], None]
Barrier = Callable[[], None]
PartialSink = Callable[[PartialImage], None]


@dataclass(frozen=True)
class ImageSummary:
    """What the log line says about one image once its bytes have gone to a sink."""

    info: ImageInfo
    size_bytes: int


@dataclass
class CallTrace:
    """What the caller logs about one upstream call, filled in whether it succeeds or fails."""

    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    request_id: str | None = None
    account_id: str | None = None
    latency_ms: float | None = None  # waiting on the upstream: first request sent to last byte read
    last_byte_at: float | None = field(default=None, repr=False)
    partials: int = 0


@dataclass(frozen=True)
class UpstreamResult:
    """The answer's small fields (``data`` items keep their ``revised_prompt``; ``b64_json`` is ``true``), the
    images themselves when no sink took them, and a summary of every image either way."""

    body: dict[str, Any]
    images: list[GeneratedImage]
    summaries: list[ImageSummary] = field(default_factory=list)

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self.body.get("usage")
        return usage if isinstance(usage, dict) else None


@dataclass
class _Reading:
    """What one call reads: its framing, its limits and where its images go."""

    stream: bool
    limits: ReadLimits
    on_image: ImageSink | None
    on_partial: PartialSink | None
    before_image: Barrier | None = None
    # POST /responses: its events go to ``on_event`` as they come; the answer is the final response object.
    on_event: EventSink | None = None
    responses: bool = False
    kept: list[GeneratedImage] = field(default_factory=list)
    summaries: list[ImageSummary] = field(default_factory=list)

    def image(self, read: ReadImage) -> None:
        revised = read.fields.get("revised_prompt")
        image = GeneratedImage(read.data, read.info, revised if isinstance(revised, str) else None, read.index)
        self.summaries.append(ImageSummary(read.info, len(read.data)))
        if self.on_image is None:
            self.kept.append(image)
        else:
            self.on_image(image)


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
        self._http = http or httpx.Client(verify=tls_context(), follow_redirects=False)
        self._retry = retry or RetryPolicy()
        self._account_id_header = account_id_header
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def generate(
        self,
        body: dict[str, Any],
        *,
        timeout: float,
        deadline: Deadline,
        trace: CallTrace | None = None,
        on_image: ImageSink | None = None,
        on_partial: PartialSink | None = None,
        before_image: Barrier | None = None,
    ) -> UpstreamResult:
        """POST /images/generations; returns the answer or raises an ``ImageServiceError``.

        ``on_image(image)`` is called for each image as soon as it is decoded and inspected, in order, before
        the next one is read (the result then keeps only their summaries); without it the images are kept in
        the result. When ``body["stream"]`` is true the upstream is asked for server-sent events, and
        ``on_partial(partial)`` is called for each partial image (``partial.index`` is its
        ``partial_image_index``, ``partial.fields`` the event's fields). ``before_image()`` is called when an
        image's base64 has been read, before its bytes are put together (a sink storing in the background waits
        there for the previous one). An exception raised by a callback ends the call as it is, and is never
        retried: the upstream has already been paid."""
        reading = self._reading(body, on_image, on_partial, before_image)
        return self._call("/images/generations", {"json": body}, timeout, deadline, trace or CallTrace(), reading)

    def edit(
        self,
        fields: dict[str, Any],
        files: Sequence[tuple[str, tuple[str, bytes | BinaryIO, str]]],
        *,
        timeout: float,
        deadline: Deadline,
        trace: CallTrace | None = None,
        on_image: ImageSink | None = None,
        on_partial: PartialSink | None = None,
        before_image: Barrier | None = None,
    ) -> UpstreamResult:
        """POST /images/edits as multipart: ``files`` are ``(part name, (filename, content, content type))``,
        the content bytes or an open file, which httpx sends a block at a time (never read whole) and reads
        again from its start on each attempt. Callbacks as for ``generate``."""
        data = {name: _form_value(value) for name, value in fields.items()}
        reading = self._reading(fields, on_image, on_partial, before_image)
        content = {"data": data, "files": files}
        return self._call("/images/edits", content, timeout, deadline, trace or CallTrace(), reading)

    def respond(
        self,
        body: dict[str, Any],
        *,
        timeout: float,
        deadline: Deadline,
        trace: CallTrace | None = None,
        on_event: EventSink | None = None,
    ) -> UpstreamResult:
        """POST /responses (the Responses API); ``result.body`` is the final ``response`` object. With
        ``body["stream"]`` each event is given to ``on_event(event)`` as soon as it has come, in order. Same retry
        and deadline policy as the image calls, except that nothing is retried once a 200 has come (an error
        after it, even before any event, is final: the text model may already have been billed)."""
        reading = _Reading(bool(body.get("stream")), ReadLimits.for_request({}), None, None, on_event=on_event)
        reading.responses = True
        return self._call("/responses", {"json": body}, timeout, deadline, trace or CallTrace(), reading)

    @staticmethod
    def _reading(
        body: dict[str, Any], on_image: ImageSink | None, on_partial: PartialSink | None, before_image: Barrier | None
    ) -> _Reading:
        return _Reading(bool(body.get("stream")), ReadLimits.for_request(body), on_image, on_partial, before_image)

    def _call(
        self,
        path: str,
        content: dict[str, Any],
        timeout: float,
        deadline: Deadline,
        trace: CallTrace,
        reading: _Reading,
    ) -> UpstreamResult:
        started = deadline.clock()
        try:
            return self._attempts(path, content, timeout, deadline, trace, reading)
        finally:
            # Storing and decoding what came back is our work, not the upstream's, but it happens while the
            # body is read: the figure stops at the last byte read.
            ended = trace.last_byte_at if trace.last_byte_at is not None else deadline.clock()
            trace.latency_ms = round((ended - started) * 1000, 1)

    def _attempts(
        self,
        path: str,
        content: dict[str, Any],
        timeout: float,
        deadline: Deadline,
        trace: CallTrace,
        reading: _Reading,
    ) -> UpstreamResult:
        last: Attempt | None = None
        while trace.attempts < self._retry.max_attempts:
            attempt_deadline = deadline.earliest(timeout)
            if attempt_deadline.remaining() < MIN_ATTEMPT_SECONDS:
                raise self._out_of_time(last)
            trace.attempts += 1
            trace.last_byte_at = None
            outcome = self._attempt(path, content, attempt_deadline, trace, reading)
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
    def _out_of_time(last: Attempt | None) -> ImageServiceError:
        if last is not None and last.retryable and last.error.status != 504:
            return last.error
        return UpstreamTimeout("The image service ran out of time waiting for the upstream image API.")

    def _attempt(
        self, path: str, content: dict[str, Any], attempt_deadline: Deadline, trace: CallTrace, reading: _Reading
    ) -> UpstreamResult | Attempt:
        budget = attempt_deadline.remaining()
        headers = {
            "Authorization": f"Bearer {self._api_key()}",
            "Accept": "text/event-stream" if reading.stream else "application/json",
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
                if response.status_code != 200:
                    raw = _error_body(response, attempt_deadline)
                    trace.last_byte_at = attempt_deadline.clock()
                    return refusal(response.status_code, response.headers, raw)
                return self._read_answer(response, attempt_deadline, trace, reading)
        except _BudgetSpent:
            return Attempt(self._timeout_error(), retryable=False, label="timeout")
        except httpx.TimeoutException as exc:
            # Nothing was sent before a connect/pool timeout, so another attempt is safe; a read or write
            # timeout means the upstream may still be working on (and billing) the image.
            retryable = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            return Attempt(self._timeout_error(), retryable=retryable, label=type(exc).__name__)
        except httpx.TransportError as exc:
            return Attempt(
                UpstreamFailed("The upstream image API could not be reached."),
                retryable=True,
                label=type(exc).__name__,
            )

    def _read_answer(
        self, response: httpx.Response, deadline: Deadline, trace: CallTrace, reading: _Reading
    ) -> UpstreamResult | Attempt:
        """A 200 has been committed: whatever happens from here on, this attempt is the last one."""
        reading.kept.clear()
        reading.summaries.clear()
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        body: SseBody | JsonBody | ResponsesBody
        if reading.responses:
            body = ResponsesBody(sse=sse, on_event=reading.on_event)
        elif sse:
            body = SseBody(reading.limits, reading.image, reading.on_partial, reading.before_image)
        else:
            body = JsonBody(reading.limits, reading.image, reading.before_image)
        try:
            for chunk in _within(response, deadline):
                body.feed(chunk)
            trace.last_byte_at = deadline.clock()
            if isinstance(body, ResponsesBody):
                return UpstreamResult(body=body.close(), images=[])
            if isinstance(body, SseBody):
                outcome = body.close()
                trace.partials = outcome.partials
                return _success(_stream_body(outcome.fields, outcome.images), reading)
            return _success(body.close(), reading)
        except httpx.TimeoutException as exc:
            return Attempt(self._timeout_error(), retryable=False, label=f"200:{type(exc).__name__}")
        except httpx.TransportError as exc:
            failure = UpstreamFailed(
                "The upstream image API's answer was cut short after it had started; it is not asked again.",
                code="upstream_incomplete",
            )
            return Attempt(failure, retryable=False, label=f"200:{type(exc).__name__}")
        except BodyError as exc:
            return unusable(exc)
        except StreamFailed as exc:
            attempt = error_under_200(exc.error)
            attempt.retryable = attempt.retryable and not exc.after_events and not reading.summaries
            attempt.retryable = attempt.retryable and not reading.responses
            return attempt

    @staticmethod
    def _timeout_error() -> UpstreamTimeout:
        return UpstreamTimeout("The upstream image API did not answer within the time budget.")


class _BudgetSpent(Exception):
    pass


def _within(response: httpx.Response, deadline: Deadline) -> Iterator[bytes]:
    """The body's chunks, stopping at the deadline even if keep-alive whitespace keeps trickling in."""
    for chunk in response.iter_bytes():
        yield chunk
        if deadline.remaining() <= 0:
            raise _BudgetSpent


def _error_body(response: httpx.Response, deadline: Deadline) -> bytes:
    """At most ``MAX_ERROR_BODY_BYTES`` of an error answer (leading whitespace skipped); the rest is not read.
    A cut error body is still an error: what came is enough to tell which."""
    kept = bytearray()
    try:
        for chunk in _within(response, deadline):
            kept += chunk.lstrip() if not kept else chunk
            if len(kept) >= MAX_ERROR_BODY_BYTES:
                break
    except httpx.TransportError:
        pass
    return bytes(kept[:MAX_ERROR_BODY_BYTES])


def _success(body: dict[str, Any], reading: _Reading) -> UpstreamResult | Attempt:
    """The images were read (and handed on); the rest of the body decides whether the answer holds."""
    if body.get("error") is not None and not reading.summaries:
        return error_under_200(body["error"])
    missing = _missing_image(body.get("data"))
    if missing is not None:
        failure = UpstreamFailed(f"The upstream image API answered without a usable image ({missing}).")
        return Attempt(failure, False, "200:no_image")
    return UpstreamResult(body=normalise_fields(body), images=list(reading.kept), summaries=list(reading.summaries))


def _missing_image(data: Any) -> str | None:
    """Why ``data`` (read with each streamed image replaced by ``true``) does not hold all its images."""
    if not isinstance(data, list) or not data:
        return "no data"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or item.get("b64_json") is not True:
            return f"data[{index}] has no b64_json"
    return None


def _stream_body(fields: dict[str, Any], images: int) -> dict[str, Any]:
    """An event stream's outcome in the shape of a JSON answer: the last ``completed`` event's fields."""
    body = {k: v for k, v in fields.items() if k not in ("type", "created_at")}
    body["created"] = fields.get("created_at")
    body["data"] = [{"b64_json": True} for _ in range(images)]
    return body


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
