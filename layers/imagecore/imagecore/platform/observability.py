"""Powertools' Logger, Metrics and Tracer, configured from the environment (the template's ``Globals``), and the one
structured line each request writes.

The line is built up while the request runs (``current_record()``) and written exactly once when it ends,
whatever the outcome. It never holds a key or the prompt text: the prompt goes in as its length and a keyed
digest (HMAC-SHA256 under a secret key, so a guessed prompt cannot be confirmed from the logs; the same prompt
gives the same digest while the key stays).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "image-service")
# Powertools reads these from the environment the template sets; the defaults keep a missing variable from
# turning into a failed request (Metrics refuses to flush without a namespace).
logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "ImageService"))


# Powertools' own switch: on in Lambda (the template's ``Tracing: Active``) unless POWERTOOLS_TRACE_DISABLED says
# otherwise; off outside Lambda and under SAM local. It patches the two libraries the core calls out with (the AWS
# SDK and the upstream's HTTP client), not every library the X-Ray SDK knows, which each cold start would try.
TRACED_LIBRARIES = ("botocore", "httpx")
tracer = Tracer(service=SERVICE, patch_modules=TRACED_LIBRARIES)

# The outcomes the alarms watch (see template.yaml): an upstream that failed us (not a refusal of the prompt,
# which is the caller's), and a task that ran out of time.
UPSTREAM_FAILED = "upstream_failed"
TASK_TIMEOUT = "task_timeout"

REQUEST_LOG_MESSAGE = "image request"
JOB_LOG_MESSAGE = "image job"


@dataclass
class RequestRecord:
    operation: str
    api_request_id: str | None = None
    lambda_request_id: str | None = None
    api_key_id: str | None = None  # the key's name (a client token's: its parent's)
    owner_id: str | None = None  # what the key's tasks, uploads and replays belong to
    client_token_id: str | None = None
    model: str | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    n: int | None = None
    response_format: str | None = None
    prompt_chars: int | None = None
    prompt_hmac: str | None = None  # keyed digest, see prompt_digest()
    prompt: str | None = None  # only when LOG_PROMPTS is on
    images_in: int | None = None  # edits: reference images received
    input_bytes: int | None = None
    mask: bool | None = None
    dropped_params: list[str] | None = None  # accepted but not forwarded (input_fidelity)
    images_returned: int | None = None
    images_recovered: int | None = None  # a job finished from the images an earlier, dead run stored
    sizes_returned: list[str] | None = None
    formats_returned: list[str] | None = None
    bytes_returned: int | None = None
    usage: dict[str, Any] | None = None
    upstream_latency_ms: float | None = None
    upstream_request_id: str | None = None
    account_id: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    storage: str | None = None
    idempotent_replay: bool | None = None
    task_id: str | None = None
    job_id: str | None = None
    correlation_id: str | None = None
    status: int | None = None
    outcome: str = "unknown"
    error_code: str | None = None
    total_latency_ms: float | None = None
    # The streamed edge: how the answer went out (buffered, json-keepalive or sse) and what that took.
    streamed: bool | None = None
    delivery: str | None = None
    events_relayed: int | None = None
    first_partial_ms: float | None = None  # time to the first partial image event
    bytes_sent: int | None = None
    keepalives_sent: int | None = None
    client_disconnected: bool | None = None
    partial_images_stored: int | None = None
    # POST /v1/responses: the text model, the tool's options, the conversation (never the input text).
    responses: dict[str, Any] | None = None

    def describe_prompt(self, prompt: str, *, include_text: bool) -> None:
        self.prompt_chars = len(prompt)
        self.prompt_hmac = prompt_digest(prompt)
        if include_text:
            self.prompt = prompt

    def fail(self, outcome: str, code: str | None) -> None:
        self.outcome = outcome
        self.error_code = code


# Until the functions say otherwise (configure_prompt_digest), a key of this process's own: digests then
# compare within one process only, and nothing outside it can recompute them.
_digest_key: Callable[[], bytes] = (lambda key: lambda: key)(secrets.token_bytes(32))


def configure_prompt_digest(read_key: Callable[[], bytes]) -> None:
    """Where the prompt digest's key comes from (Secrets Manager in AWS, the environment locally)."""
    global _digest_key
    _digest_key = read_key


def prompt_digest(prompt: str) -> str | None:
    """HMAC-SHA256 of the prompt under the digest key, 16 hex digits; None (no digest) if the key cannot be read:
    a request never fails for its log line."""
    try:
        key = _digest_key()
    except Exception:  # the key's store is down: log the request without a digest
        logger.warning("prompt digest key unavailable: prompt logged by length only")
        return None
    return hmac.new(key, prompt.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


_current: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)
# Set by an edge that knows more about the request after the handler returns (the streamed edge: bytes sent,
# whether the client left): records are handed to it instead of written, and it writes each once.
_held: ContextVar[list[tuple[RequestRecord, str]] | None] = ContextVar("held_records", default=None)


@contextmanager
def hold_records() -> Iterator[list[tuple[RequestRecord, str]]]:
    """Within the block (and the threads started from it), finished records are collected, not written."""
    held: list[tuple[RequestRecord, str]] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def write_record(record: RequestRecord, message: str = REQUEST_LOG_MESSAGE) -> None:
    """Write a held record (see ``hold_records``)."""
    _emit(record, message)


def current_record() -> RequestRecord:
    """The record of the request being handled (a throwaway one outside a request, e.g. in a unit test)."""
    record = _current.get()
    return record if record is not None else RequestRecord(operation="none")


@contextmanager
def request_record(operation: str, event: dict[str, Any], lambda_request_id: str | None) -> Iterator[RequestRecord]:
    """Collect an API request's record and write it once, with its outcome, when the request ends."""
    context = event.get("requestContext") or {}
    authorizer = context.get("authorizer") or {}
    record = RequestRecord(
        operation=operation,
        api_request_id=context.get("requestId"),
        lambda_request_id=lambda_request_id,
        api_key_id=authorizer.get("keyId"),
        owner_id=authorizer.get("ownerId"),
        client_token_id=authorizer.get("tokenId"),
    )
    with recording(record) as current:
        yield current


@contextmanager
def recording(record: RequestRecord, message: str = REQUEST_LOG_MESSAGE) -> Iterator[RequestRecord]:
    """Make ``record`` the current one and write it once when the block ends, whatever happens in it."""
    started = time.perf_counter()
    token = _current.set(record)
    try:
        yield record
    except Exception:
        if record.outcome == "unknown":  # an expected exception may have said what it means first
            record.status = 500
            record.fail("error", "internal_error")
        raise
    finally:
        _current.reset(token)
        record.total_latency_ms = round((time.perf_counter() - started) * 1000, 1)
        if record.outcome == "unknown":
            record.outcome = "success" if record.status is not None and record.status < 400 else "error"
        held = _held.get()
        if held is not None:
            held.append((record, message))
        else:
            _emit(record, message)


def _emit(record: RequestRecord, message: str) -> None:
    fields = {k: v for k, v in asdict(record).items() if k != "prompt" or v is not None}
    level = logger.error if (record.status or 500) >= 500 else logger.info
    level(message, extra={"request": fields})
    _count(record)


def _count(record: RequestRecord) -> None:
    """The request's metrics: per operation, and rolled up to the whole service (what the alarms and the
    dashboard read); a failure also counts once under its error code. No per-key dimension: per-key data lives
    in the logs and the usage table, not in CloudWatch's bill. One invocation may count several requests (the
    worker's batch): each request's metrics then go out under its own operation, the ones before it flushed."""
    if "operation" in metrics.provider.dimension_set and metrics.provider.metric_set:
        metrics.flush_metrics()
    metrics.add_dimension(name="operation", value=record.operation)
    if {"service": SERVICE} not in metrics.provider.dimension_sets:
        metrics.add_dimensions(service=SERVICE)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="RequestLatency", unit=MetricUnit.Milliseconds, value=record.total_latency_ms or 0)
    if record.outcome == "success":
        metrics.add_metric(name="ImagesGenerated", unit=MetricUnit.Count, value=record.images_returned or 0)
    else:
        metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=1)
    if record.upstream_latency_ms is not None or record.outcome == UPSTREAM_FAILED:
        metrics.add_metric(name="UpstreamCalls", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="UpstreamFailures", unit=MetricUnit.Count, value=1 if record.outcome == UPSTREAM_FAILED else 0
        )
    if record.upstream_latency_ms is not None:
        metrics.add_metric(name="UpstreamLatency", unit=MetricUnit.Milliseconds, value=record.upstream_latency_ms)
        metrics.add_metric(name="UpstreamAttempts", unit=MetricUnit.Count, value=record.attempts)
    if TASK_TIMEOUT in (record.outcome, record.error_code):
        metrics.add_metric(name="TasksTimedOut", unit=MetricUnit.Count, value=1)
    if record.usage:
        total = record.usage.get("total_tokens")
        if isinstance(total, int):
            metrics.add_metric(name="TotalTokens", unit=MetricUnit.Count, value=total)
    if record.outcome != "success":
        _count_error(record.error_code or record.outcome)


def _count_error(code: str) -> None:
    """``Errors`` by code over the whole service (a rejected budget is ``budget_exceeded``), in a line of its
    own: its dimensions are not the request metrics' ones."""
    with single_metric(
        name="Errors",
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions={"service": SERVICE},
    ) as errors:
        errors.add_dimension(name="code", value=code)


# A webhook attempt's outcome (imagecore.usecases.webhooks): a retry to come, delivered, or given up.
WEBHOOK_METRICS = {"pending": "WebhooksRetried", "delivered": "WebhooksDelivered", "failed": "WebhooksFailed"}


def count_webhook_attempt(status: str) -> None:
    metrics.add_metric(name=WEBHOOK_METRICS[status], unit=MetricUnit.Count, value=1)
