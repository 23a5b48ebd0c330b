"""The worker: runs what arrives on the jobs queue with the full upstream budget.

Three kinds of message:
- ``{"task_id": ...}``: an async task submitted through the API;
- an EventBridge event with ``detail-type: ImageGenerationRequested`` (the bus rule targets the queue);
- a generation request put straight on the queue (the same shape as the event's ``detail``).
The ``detail`` (or the message) is a generation request plus optional ``correlation_id`` and ``output_prefix``.

Nothing is lost and nothing is paid twice:
- every job (task or event) is claimed in DynamoDB right before it asks the upstream, and the claim counts the
  deliveries that got that far: two deliveries cannot both call the upstream, and a delivery that finds an
  earlier one died after asking does not ask again (it finishes from what that one stored, below);
- images go to a folder that belongs to the job, with a ``result.json`` written last (or a ``failure.json``):
  any later delivery reads it first, before the claim and before the 30-minute limit, and finishes from it;
- each image is stored as soon as it is read, with a record beside it: a delivery that finds an earlier one died
  after asking (its claim lapsed, no ``result.json``) completes the job from the images that run stored (all of
  them, or as many as it stored before it died: the log line says ``recovered_partial``), and only a folder
  without an image ends the job ``job_interrupted``;
- an event job's claim and manifest carry the digest of its request, so a message that borrows another job's id
  gets nothing of that job: it goes to the dead-letter queue;
- S3 is retried after the upstream has answered, every terminal write (complete, fail) is retried with backoff
  within the function's time; what still fails is finished by the next delivery;
- a message that can never run (not JSON, not a valid request) goes to the dead-letter queue with its reason;
- a passing fault (DynamoDB, S3, EventBridge) fails the record so SQS delivers it again, and on the last
  delivery the job ends rather than silently: from the images an earlier delivery stored when its folder holds
  any (task ``completed``, ``ImageGenerationCompleted``, with no upstream call), else as failed (task ``failed``,
  ``ImageGenerationFailed``);
- a task queued with a client token's images counted gives back, as it ends, the images it did not make (all
  of them when it failed before the upstream billed any): only the call that ends it does, so never twice.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from imagecore.accounts.budgets import Spent, UsageLedger
from imagecore.accounts.token_usage import TokenImageCounter, images_to_give_back
from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import ImageServiceError, InvalidRequest
from imagecore.domain.jsonbody import NotJson, parse_json_body
from imagecore.domain.models import GenerationRequest
from imagecore.domain.validation import validation_error
from imagecore.jobs.tasks import (
    Ended,
    JobClaim,
    JobIdentityMismatch,
    Task,
    TaskBusy,
    TaskStore,
    TaskStoreError,
    task_timeout_error,
)
from imagecore.platform import aws
from imagecore.platform.observability import JOB_LOG_MESSAGE, RequestRecord, logger, recording
from imagecore.platform.settings import WorkerSettings
from imagecore.storage.manifest import (
    MANIFEST,
    Finished,
    StoredResult,
    folder_of,
    manifest_key,
    read_finished,
    read_stored,
    write_failure,
    write_result,
)
from imagecore.storage.store import StorageError
from imagecore.usecases.delivery import ImageEvent
from imagecore.usecases.edits import edit_from_kept
from imagecore.usecases.idempotency import digest
from imagecore.usecases.service import ImageService, describe_request

__all__ = ["COMPLETED", "FAILED", "MANIFEST", "REQUESTED", "Worker", "parse_job"]

T = TypeVar("T")

REQUESTED = "ImageGenerationRequested"
COMPLETED = "ImageGenerationCompleted"
FAILED = "ImageGenerationFailed"
EVENT_SOURCE = "image-service"
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


@dataclass(frozen=True)
class TaskPreviews:
    """The previews of a task asked with ``partial_images``: each stored one is listed on the task at once, so
    its poll answers show the picture forming. A preview that cannot be listed is only logged."""

    tasks: TaskStore
    task_id: str

    def stored(self, event: ImageEvent) -> None:
        del event  # a task's images are listed when it completes

    def partial(self, event: ImageEvent) -> None:
        if event.key is None:
            return
        created = event.fields.get("created_at")
        try:
            self.tasks.add_partial(
                self.task_id, event.index, event.key, created if isinstance(created, int) else int(time.time())
            )
        except TaskStoreError:
            logger.warning("preview not listed on the task", extra={"task_id": self.task_id, "index": event.index})


class EventPublishError(Exception):
    """EventBridge did not take an event; the job is delivered again and publishes it then."""


class EventPublisher:
    def __init__(self, bus_name: str, *, region: str) -> None:
        self._events = aws.client("events", region_name=region)
        self._bus = bus_name

    @property
    def client(self) -> Any:
        return self._events

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        try:
            answer = self._events.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(detail),
                        "EventBusName": self._bus,
                    }
                ]
            )
        except (BotoCoreError, ClientError) as exc:
            raise EventPublishError(f"{detail_type}: {type(exc).__name__}") from exc
        if answer.get("FailedEntryCount"):
            raise EventPublishError(f"EventBridge refused the {detail_type} event: {answer['Entries'][0]}")


class DeadLetters:
    def __init__(self, queue_url: str, *, region: str) -> None:
        self._sqs = aws.client("sqs", region_name=region)
        self._url = queue_url

    def put(self, body: str, reason: str, message_id: str) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
                "original_message_id": {"DataType": "String", "StringValue": message_id},
            },
        )


# Faults that pass: the record is delivered again (or, on its last delivery, the job ends as failed).
PASSING_FAULTS = (TaskStoreError, StorageError, EventPublishError, BotoCoreError, ClientError)
# Time kept back from retrying a write, so the function still answers its batch before it times out.
_ANSWER_MARGIN_SECONDS = 5.0
_MAX_PAUSE_SECONDS = 8.0


class Worker:
    def __init__(
        self,
        service: ImageService,
        tasks: TaskStore,
        events: EventPublisher,
        dead_letters: DeadLetters,
        settings: WorkerSettings,
        sleep: Callable[[float], None] = time.sleep,
        ledger: UsageLedger | None = None,
        token_images: TokenImageCounter | None = None,
    ) -> None:
        self.service = service
        self.ledger = ledger
        self.token_images = token_images
        self.tasks = tasks
        self.events = events
        self.dead_letters = dead_letters
        self.settings = settings
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Worker:
        service = ImageService.from_settings(settings)
        service.store_attempts = settings.store_attempts
        region = settings.aws_region
        if not settings.tasks_table:
            raise ValueError("the worker needs TASKS_TABLE")
        return cls(
            service,
            TaskStore(settings.tasks_table, region=region),
            EventPublisher(settings.event_bus_name, region=region),
            DeadLetters(settings.dead_letter_queue_url, region=region),
            settings,
            ledger=UsageLedger(settings.usage_table, region=region) if settings.usage_table else None,
            token_images=(
                TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None
            ),
        )

    def handle(self, record: SQSRecord, context: LambdaContext) -> None:
        """One queue message. Returns when it is done with (ran, finished earlier, or dead-lettered); raises
        when it should be delivered again. On its last delivery a job that still meets a passing fault ends
        (``_abandon``) instead of going silently to the dead-letter queue."""
        job_record = RequestRecord(
            operation="worker", lambda_request_id=getattr(context, "aws_request_id", None), job_id=record.message_id
        )
        with recording(job_record, JOB_LOG_MESSAGE):
            try:
                job = parse_job(record.body, record.message_id)
            except BadJob as bad:
                self._dead_letter(record, str(bad), "bad_job", job_record)
                return
            last_delivery = _receive_count(record) >= self.settings.job_max_receives
            try:
                if isinstance(job, TaskJob):
                    self._run_task(job.task_id, context, job_record)
                else:
                    self._run_event(job, context, job_record)
            except TaskBusy:
                # Another delivery holds the job: it finishes it. This one comes back later and finds it done.
                job_record.status = 409
                job_record.fail("busy", "task_busy")
                if not last_delivery:
                    raise
            except JobIdentityMismatch:
                reason = "the job id belongs to another request: its result is not handed to this message"
                self._dead_letter(record, reason, "job_identity_taken", job_record)
            except PASSING_FAULTS as fault:
                if not last_delivery:
                    raise
                logger.exception("job ended on its last delivery", extra={"fault": type(fault).__name__})
                try:
                    self._abandon(job, context, job_record)
                except JobIdentityMismatch:
                    reason = "the job id belongs to another request: its images are not handed to this message"
                    self._dead_letter(record, reason, "job_identity_taken", job_record)

    def _dead_letter(self, record: SQSRecord, reason: str, code: str, job_record: RequestRecord) -> None:
        logger.error("job refused, sent to the dead-letter queue", extra={"reason": reason})
        self.dead_letters.put(record.body, reason, record.message_id)
        job_record.status, job_record.outcome, job_record.error_code = 400, "dead_lettered", code

    def _abandon(self, job: TaskJob | GenerationJob, context: LambdaContext, record: RequestRecord) -> None:
        """End a job on its last delivery, without asking the upstream: as its folder says (the outcome an earlier
        delivery wrote, or the images a run stored before a fault stopped it: completed from them), else failed
        ``job_abandoned``."""
        abandoned = Finished(http_status=503, error=_abandoned_error(self.settings.job_max_receives))
        if isinstance(job, TaskJob):
            self._finish_task(
                job.task_id, self._salvage_task(job.task_id, context, record) or abandoned, context, record
            )
            return
        finished = self._salvage_event(job, context, record) or abandoned
        if finished.result is not None:
            self._complete_event(job, finished.result, context, record, last_word=True)
            return
        status, error = finished.http_status or 500, finished.error or {}
        self._end_event(job, status, error, context, last_word=True)
        record.status = status
        record.fail("failed", str(error.get("code")))

    def _salvage_task(self, task_id: str, context: LambdaContext, record: RequestRecord) -> Finished | None:
        """What the task's folder holds, read once more on its last delivery: the outcome an earlier delivery
        wrote, or the images a run stored before it failed (the result rebuilt from them); None when it holds
        neither or cannot be read."""
        try:
            task = self.tasks.get(task_id)
            if task is None:
                return None
            finished = read_finished(self.service.store, task.folder)
            if finished is not None:
                return finished
            recovered = self._recover(task.folder, task.request, None, context, record)
        except (TaskStoreError, StorageError):
            return None
        return Finished(result=recovered) if recovered is not None else None

    def _salvage_event(self, job: GenerationJob, context: LambdaContext, record: RequestRecord) -> Finished | None:
        """The same for an event job, whose folder belongs to the request that claimed its id first: its recorded
        outcome, or the images a run stored; ``JobIdentityMismatch`` when this message borrows another request's
        job id (that job is neither answered to it nor ended by it)."""
        try:
            claim = self.tasks.job_claim(job.key)
            if claim is None:
                return None
            if claim.digest != job.digest:
                raise JobIdentityMismatch(job.key)
            if claim.status != "processing":
                return _finished_from(claim)
            finished = read_finished(self.service.store, job.folder)
            if finished is not None:
                if finished.digest != job.digest:
                    raise JobIdentityMismatch(job.key)
                return finished
            recovered = self._recover(job.folder, job.request.model_dump(), job.digest, context, record)
        except (TaskStoreError, StorageError):
            return None
        return Finished(result=recovered) if recovered is not None else None

    # --- async tasks --------------------------------------------------------------------------------------
    def _run_task(self, task_id: str, context: LambdaContext, record: RequestRecord) -> None:
        record.operation, record.task_id = "worker.task", task_id
        task = self.tasks.get(task_id)
        if task is None or task.status != "processing":
            record.status, record.outcome = 200, "already_finished" if task else "unknown_task"
            return
        record.owner_id = task.owner
        # What an earlier delivery left comes first, whatever happened since (a refused write, a crash, the time).
        finished = self._finished(task.folder, context)
        if finished is not None:
            self._finish_task(task_id, finished, context, record)
            record.outcome = "recovered"
            return
        now = self.tasks.now()
        if task.overdue(now):
            self._end_overdue(task, now, context, record)
            return
        try:
            run = self._prepare(task)
        except ImageServiceError as error:  # kept inputs that no longer pass their checks
            self._finish_task(
                task_id, Finished(http_status=error.status, error=error.to_body()["error"]), context, record
            )
            return
        claimed = self.tasks.claim(task_id, hold_seconds=_hold_seconds(context))
        if claimed is None:
            record.status, record.outcome = 200, "already_finished"
            return
        if claimed.upstream_calls > 1:
            # An earlier delivery asked the upstream and died: it is not asked twice. What it stored is answered.
            recovered = self._recover(task.folder, task.request, None, context, record)
            finished = (
                Finished(result=recovered) if recovered else Finished(http_status=500, error=_interrupted_error())
            )
            self._finish_task(task_id, finished, context, record)
            return
        try:
            stored = run(self._deadline(context), record, task.folder)
        except ImageServiceError as error:
            finished = Finished(http_status=error.status, error=error.to_body()["error"])
        else:
            if stored is None:
                finished = Finished(http_status=503, error=_storage_error())
            else:
                self._write_result(task.folder, stored, None, context)
                finished = Finished(result=stored)
        if finished.error is not None:
            self._write_failure(task.folder, finished, None)
        self._finish_task(task_id, finished, context, record)

    def _end_overdue(self, task: Task, now: int, context: LambdaContext, record: RequestRecord) -> None:
        """A task past its limit. On AWS the delivery after a crash comes after the visibility timeout, past the
        limit: what the dead run stored is answered first (its claim has lapsed, so nobody else writes the
        folder); without images it is ``task_timeout``."""
        if task.claimed_until is None or task.claimed_until < now:
            recovered = self._recover(task.folder, task.request, None, context, record)
            if recovered is not None:
                self._finish_task(task.id, Finished(result=recovered), context, record)
                return
        self._finish_task(task.id, Finished(http_status=504, error=task_timeout_error()), context, record)
        record.outcome = "task_timeout"

    def _finish_task(self, task_id: str, finished: Finished, context: LambdaContext, record: RequestRecord) -> None:
        """The terminal write, retried with backoff within the function's time; then what the task reserved of its
        key's budgets when it was queued is settled with what it really cost, and (by the call that ended it) the
        client token's images it did not make are given back."""
        if finished.result is not None:
            result = _compact(finished.result)
            ended = self._persist(context, lambda: self.tasks.complete(task_id, result))
            record.status = 200
        else:
            status, error = finished.http_status or 500, finished.error or {}
            ended = self._persist(context, lambda: self.tasks.fail(task_id, status, error))
            record.status = status
            record.fail("failed", str(error.get("code")))
        if self.ledger is not None:
            self.ledger.settle_task(task_id, _spent(finished, record))
        if ended is not None:
            self._give_back_images(task_id, ended, finished)

    def _give_back_images(self, task_id: str, ended: Ended, finished: Finished) -> None:
        """The images the task counted against its client token when it was queued and did not make."""
        hold = ended.token_hold
        if hold is None:
            return
        made = len(finished.result.images) if finished.result is not None else None
        failure = None if finished.error is None else str(finished.error.get("code"))
        back = images_to_give_back(hold, made, failure, ended.upstream_calls)
        if back <= 0:
            return
        if self.token_images is None:
            logger.warning("token images not given back: no TOKEN_USAGE_TABLE", extra={"task_id": task_id})
            return
        self.token_images.release(hold.token_id, back)

    def _prepare(self, task: Task) -> Callable[[Deadline, RequestRecord, str], StoredResult | None]:
        """The task's run, with what it needs read beforehand (so a passing S3 fault here leaves no claim); its
        previews, when it asked for them, are listed on the task as they are stored."""
        previews = TaskPreviews(self.tasks, task.id)
        if task.kind == "generation":
            request = GenerationRequest.model_validate(task.request)
            return lambda deadline, record, folder: (
                self.service.generate(request, deadline, record, folder=folder, events=previews).stored
            )
        edit = edit_from_kept(
            task.request, task.inputs, self.service.store, max_image_bytes=self.settings.max_input_image_bytes
        )
        return lambda deadline, record, folder: (
            self.service.edit(edit, deadline, record, folder=folder, events=previews).stored
        )

    # --- event-triggered generations ----------------------------------------------------------------------
    def _run_event(self, job: GenerationJob, context: LambdaContext, record: RequestRecord) -> None:
        record.operation, record.job_id, record.correlation_id = f"worker.{job.source}", job.job_id, job.correlation_id
        describe_request(record, job.request, include_prompt=self.settings.log_prompts)
        finished = self._finished(job.folder, context)
        if finished is not None:
            if finished.digest != job.digest:
                raise JobIdentityMismatch(job.key)
            record.outcome = "recovered"
            self._announce(job, finished, record)
            return
        claim = self.tasks.claim_job(job.key, job.digest, hold_seconds=_hold_seconds(context))
        if claim.status != "processing":  # finished, and its folder has lost what it left (or S3 hides it)
            record.outcome = "recovered"
            self._announce(job, _finished_from(claim), record)
            return
        if claim.upstream_calls > 1:
            # An earlier delivery asked the upstream and died: it is not asked twice. What it stored is answered.
            recovered = self._recover(job.folder, job.request.model_dump(), job.digest, context, record)
            if recovered is not None:
                self._complete_event(job, recovered, context, record)
                return
            self._end_event(job, 500, _interrupted_error(), context)
            record.status = 500
            record.fail("failed", "job_interrupted")
            return
        try:
            stored = self.service.generate(job.request, self._deadline(context), record, folder=job.folder).stored
        except ImageServiceError as error:
            self._end_event(job, error.status, error.to_body()["error"], context)
            record.status = error.status
            record.fail("failed", error.code)
            return
        if stored is None:
            self._end_event(job, 503, _storage_error(), context)
            record.status = 503
            record.fail("failed", "storage_unavailable")
            return
        self._write_result(job.folder, stored, job.digest, context)
        self._complete_event(job, stored, context, record)

    def _complete_event(
        self,
        job: GenerationJob,
        stored: StoredResult,
        context: LambdaContext,
        record: RequestRecord,
        *,
        last_word: bool = False,
    ) -> None:
        """Record the job completed, then announce it. As the ``last_word`` (no delivery follows) the announcement
        goes out even when DynamoDB cannot record it."""
        result = _compact(stored)
        try:
            self._persist(context, lambda: self.tasks.complete(job.key, result))
        except TaskStoreError:
            if not last_word:
                raise
            logger.warning("completed job not recorded", extra={"job_id": job.job_id})
        self._announce(job, Finished(result=stored), record)

    def _end_event(
        self,
        job: GenerationJob,
        http_status: int,
        error: dict[str, Any],
        context: LambdaContext,
        *,
        last_word: bool = False,
    ) -> None:
        """Record the failure where a redelivery finds it, then announce it. As the ``last_word`` (no delivery
        follows) the announcement goes out even when DynamoDB cannot record it."""
        finished = Finished(http_status=http_status, error=error, digest=job.digest)
        self._write_failure(job.folder, finished, job.digest)
        try:
            self._persist(context, lambda: self.tasks.fail(job.key, http_status, error))
        except TaskStoreError:
            if not last_word:
                raise
            logger.warning("failed job not recorded", extra={"job_id": job.job_id})
        self.events.publish(FAILED, self._failure(job, http_status, error))

    def _announce(self, job: GenerationJob, finished: Finished, record: RequestRecord) -> None:
        stored = finished.result
        if stored is None:
            status = finished.http_status or 500
            self.events.publish(FAILED, self._failure(job, status, finished.error or {}))
            record.status = status
            record.fail(record.outcome or "failed", str((finished.error or {}).get("code")))
            return
        self.events.publish(
            COMPLETED,
            {
                "request_id": job.job_id,
                "correlation_id": job.correlation_id,
                "bucket": stored.bucket,
                "keys": stored.keys,
                "usage": stored.usage,
                "model": stored.model,
                "size": stored.size,
                "quality": stored.quality,
                "output_format": stored.output_format,
                "created": stored.created,
            },
        )
        record.status = 200

    @staticmethod
    def _failure(job: GenerationJob, http_status: int, error: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_id": job.job_id,
            "correlation_id": job.correlation_id,
            "http_status": http_status,
            "error": error,
        }

    # --- shared -------------------------------------------------------------------------------------------
    def _deadline(self, context: LambdaContext) -> Deadline:
        remaining = context.get_remaining_time_in_millis() / 1000 - self.settings.storage_margin_seconds
        return Deadline.after(remaining)

    def _persist(self, context: LambdaContext, write: Callable[[], T]) -> T:
        """``write()``, tried again with backoff while a passing DynamoDB or S3 fault refuses it and the function
        has time left; the last refusal is raised (the record is then delivered again)."""
        budget = context.get_remaining_time_in_millis() / 1000 - _ANSWER_MARGIN_SECONDS
        started, waited, pause = time.monotonic(), 0.0, 0.5
        while True:
            try:
                return write()
            except (TaskStoreError, StorageError) as fault:
                spent = max(time.monotonic() - started, waited)
                if spent + pause > budget:
                    raise
                logger.warning("write refused, trying again", extra={"fault": str(fault)[:200], "pause": pause})
                self.sleep(pause)
                waited += pause
                pause = min(pause * 2, _MAX_PAUSE_SECONDS)

    def _finished(self, folder: str, context: LambdaContext) -> Finished | None:
        """What an earlier delivery of this job left in its folder; S3 faults are retried, never read as
        "nothing there"."""
        return self._persist(context, lambda: read_finished(self.service.store, folder))

    def _recover(
        self, folder: str, asked: dict[str, Any], digest: str | None, context: LambdaContext, record: RequestRecord
    ) -> StoredResult | None:
        """The result rebuilt from the images a dead run stored in the job's folder (None when there is none),
        written as its ``result.json`` so any later delivery finishes from it. Only for a job nobody else holds."""
        stored = self._persist(context, lambda: read_stored(self.service.store, folder, asked))
        if stored is None:
            return None
        self._write_result(folder, stored, digest, context)
        asked_n = int(asked.get("n") or 1)
        record.n = asked_n
        record.images_recovered = record.images_returned = len(stored.images)
        record.outcome = "recovered" if len(stored.images) >= asked_n else "recovered_partial"
        logger.warning(
            "job completed from the images a run that died had stored",
            extra={"folder": folder, "images": len(stored.images), "asked": asked_n},
        )
        return stored

    def _write_result(self, folder: str, stored: StoredResult, digest: str | None, context: LambdaContext) -> None:
        try:
            self._persist(context, lambda: write_result(self.service.store, folder, stored, digest=digest))
        except StorageError:
            # The images are stored and the answer is about to be recorded; only a redelivery's shortcut is lost.
            logger.warning("result manifest not written", extra={"folder": folder})

    def _write_failure(self, folder: str, finished: Finished, digest: str | None) -> None:
        try:
            write_failure(self.service.store, folder, finished.http_status or 500, finished.error or {}, digest=digest)
        except StorageError:
            logger.warning("failure manifest not written", extra={"folder": folder})


# Beyond this the task record keeps its result without the revised prompts (they can be as long as the prompt,
# one per image) and points at result.json for them: the record stays far below DynamoDB's 400 KB item limit.
TASK_RESULT_INLINE_BYTES = 32_000


def _compact(stored: StoredResult) -> dict[str, Any]:
    result = stored.to_dict()
    if len(json.dumps(result, ensure_ascii=False).encode("utf-8")) <= TASK_RESULT_INLINE_BYTES:
        return result
    result["images"] = [{"key": ref.key, "revised_prompt": None} for ref in stored.images]
    result["manifest"] = manifest_key(folder_of(stored))
    return result


def _spent(finished: Finished, record: RequestRecord) -> Spent:
    """What a finished task cost: its stored images and the usage the upstream reported (from this delivery's
    record, or from the result an earlier delivery stored)."""
    if finished.result is None:
        return Spent.from_record(record, failure=str((finished.error or {}).get("code") or "failed"))
    spent = Spent.from_record(record)
    usage = finished.result.usage or record.usage or {}
    return Spent(
        images=len(finished.result.images),
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        upstream_ms=spent.upstream_ms,
    )


def _finished_from(claim: JobClaim) -> Finished:
    if claim.status == "completed" and claim.result is not None:
        document = {name: value for name, value in claim.result.items() if name != "manifest"}
        return Finished(result=StoredResult.from_dict(document))
    return Finished(http_status=claim.http_status or 500, error=claim.error or _interrupted_error())


def _receive_count(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count or 1)
    except (TypeError, ValueError):
        return 1


def _hold_seconds(context: LambdaContext) -> int:
    """How long a claim holds: as long as this invocation can live, so a later delivery never waits on a dead one."""
    return int(context.get_remaining_time_in_millis() / 1000) + 5


def _interrupted_error() -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "job_interrupted",
        "message": "An earlier run of this job stopped after asking the upstream and left no images; "
        "it is not asked twice. Submit the request again.",
    }


def _abandoned_error(deliveries: int) -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "job_abandoned",
        "message": f"The job met passing faults on each of its {deliveries} deliveries and was given up.",
    }


def _storage_error() -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "storage_unavailable",
        "message": "The images were generated but could not be stored.",
    }
