"""The messages the worker takes from the jobs queue: an async task's id, an EventBridge event, or a generation
request put straight on the queue; a message that can never run is a ``BadJob``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from imagecore.domain.errors import ImageServiceError, InvalidRequest
from imagecore.domain.fingerprint import digest
from imagecore.domain.jsonbody import NotJson, parse_json_body
from imagecore.domain.models import GenerationRequest
from imagecore.domain.validation import validation_error

REQUESTED = "ImageGenerationRequested"


COMPLETED = "ImageGenerationCompleted"


FAILED = "ImageGenerationFailed"


# Anchored with \Z (not $, which also matches before a trailing newline).
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,7}\Z")


_JOB_ID_RE = re.compile(r"[A-Za-z0-9-]{1,128}\Z")


class BadJob(Exception):
    """A message that can never run; the reason goes with it to the dead-letter queue."""


@dataclass(frozen=True)
class TaskJob:
    task_id: str


@dataclass(frozen=True)
class GenerationJob:
    job_id: str
    request: GenerationRequest
    correlation_id: str | None
    output_prefix: str | None
    source: str  # eventbridge | sqs

    @property
    def folder(self) -> str:
        return f"images/events/{self.output_prefix or 'jobs'}/{self.job_id}"

    @property
    def key(self) -> str:
        """The claim's key: the folder the job owns."""
        return f"job#{self.folder}"

    @property
    def digest(self) -> str:
        """What the job asks for, everything its result answers to: another request under the same id differs."""
        return digest(
            {
                "source": self.source,
                "request": self.request.model_dump(),
                "correlation_id": self.correlation_id,
                "output_prefix": self.output_prefix,
            }
        )


def parse_job(body: str, message_id: str) -> TaskJob | GenerationJob:
    try:
        message = parse_json_body(body)
    except NotJson:
        raise BadJob("the message is not JSON") from None
    except InvalidRequest as refused:  # NaN, a key twice, a huge number, deep nesting: never a crash
        raise BadJob(f"the message is not acceptable JSON: {refused.message}") from None
    if not isinstance(message, dict):
        raise BadJob("the message is not a JSON object")
    if set(message) == {"task_id"} and isinstance(message["task_id"], str):
        return TaskJob(message["task_id"])
    if "detail-type" in message:
        if message.get("detail-type") != REQUESTED:
            raise BadJob(f"unexpected detail-type {str(message.get('detail-type'))[:100]!r}")
        detail, job_id, source = message.get("detail"), str(message.get("id") or message_id), "eventbridge"
    else:
        detail, job_id, source = message, message_id, "sqs"
    if not isinstance(detail, dict):
        raise BadJob("the event has no detail object")
    detail = dict(detail)
    correlation_id = detail.pop("correlation_id", None)
    output_prefix = detail.pop("output_prefix", None)
    if correlation_id is not None and (not isinstance(correlation_id, str) or len(correlation_id) > 256):
        raise BadJob("correlation_id must be a string of at most 256 characters")
    if output_prefix is not None and (
        not isinstance(output_prefix, str) or not _PREFIX_RE.match(output_prefix) or ".." in output_prefix
    ):
        raise BadJob("output_prefix must be 1 to 8 path segments of letters, digits, '.', '_' or '-'")
    request = _job_request(detail)
    if not _JOB_ID_RE.match(job_id):
        raise BadJob("the event id is not usable as a key")
    return GenerationJob(job_id, request, correlation_id, output_prefix, source)


def _job_request(detail: dict[str, Any]) -> GenerationRequest:
    """The request a job carries, checked as the async routes check theirs (a job is run, never streamed)."""
    try:
        request = GenerationRequest.model_validate(detail)
        request.check_task()
    except ValidationError as exc:
        raise BadJob(validation_error(exc.errors(include_url=False)).message) from None
    except ImageServiceError as refused:
        raise BadJob(refused.message) from None
    return request
