"""The worker: runs what arrives on the jobs queue with the full upstream budget.

Three kinds of message:
- ``{"task_id": ...}``: an async task submitted through the API;
- an EventBridge event with ``detail-type: ImageGenerationRequested`` (the bus rule targets the queue);
- a generation request put straight on the queue (the same shape as the event's ``detail``).
The ``detail`` (or the message) is a generation request plus optional ``correlation_id`` and ``output_prefix``.

Nothing is lost and nothing is paid twice:
- a task is claimed before it runs, so two deliveries of one job cannot both call the upstream;
- images go to a folder that belongs to the job, with a ``result.json`` written last: a redelivered job that
  finds it finishes from it without calling the upstream again;
- S3 is retried after the upstream has answered; a task that still fails is marked ``failed`` with why;
- a message that can never run (not JSON, not a valid request) goes to the dead-letter queue with its reason;
  a passing fault (DynamoDB, S3 after retries, EventBridge) fails the record so SQS delivers it again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from imagecore.deadline import Deadline
from imagecore.edits import edit_from_kept
from imagecore.errors import ImageServiceError
from imagecore.models import GenerationRequest
from imagecore.observability import JOB_LOG_MESSAGE, RequestRecord, logger, recording
from imagecore.service import ImageService, StoredResult, describe_request
from imagecore.settings import WorkerSettings
from imagecore.storage import StorageError
from imagecore.tasks import Task, TaskBusy, TaskStore, task_timeout_error
from imagecore.validation import validation_error

REQUESTED = "ImageGenerationRequested"
COMPLETED = "ImageGenerationCompleted"
FAILED = "ImageGenerationFailed"
EVENT_SOURCE = "image-service"
MANIFEST = "result.json"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,7}$")
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,128}$")


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


def parse_job(body: str, message_id: str) -> TaskJob | GenerationJob:
    try:
        message = json.loads(body)
    except ValueError:
        raise BadJob("the message is not JSON") from None
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
    try:
        request = GenerationRequest.model_validate(detail)
    except ValidationError as exc:
        raise BadJob(validation_error(exc.errors(include_url=False)).message) from None
    if not _JOB_ID_RE.match(job_id):
        raise BadJob("the event id is not usable as a key")
    return GenerationJob(job_id, request, correlation_id, output_prefix, source)


class EventPublisher:
    def __init__(self, bus_name: str, *, region: str) -> None:
        self._events = boto3.client("events", region_name=region)
        self._bus = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
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
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"EventBridge refused the {detail_type} event: {answer['Entries'][0]}")


class DeadLetters:
    def __init__(self, queue_url: str, *, region: str) -> None:
        self._sqs = boto3.client("sqs", region_name=region)
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


class Worker:
    def __init__(
        self,
        service: ImageService,
        tasks: TaskStore,
        events: EventPublisher,
        dead_letters: DeadLetters,
        settings: WorkerSettings,
    ) -> None:
        self.service = service
        self.tasks = tasks
        self.events = events
        self.dead_letters = dead_letters
        self.settings = settings

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
        )

    def handle(self, record: SQSRecord, context: LambdaContext) -> None:
        """One queue message. Returns when it is done with (ran, finished earlier, or dead-lettered); raises
        when it should be delivered again."""
        job_record = RequestRecord(
            operation="worker", lambda_request_id=getattr(context, "aws_request_id", None), job_id=record.message_id
        )
        with recording(job_record, JOB_LOG_MESSAGE):
            try:
                job = parse_job(record.body, record.message_id)
            except BadJob as bad:
                logger.error("job refused, sent to the dead-letter queue", extra={"reason": str(bad)})
                self.dead_letters.put(record.body, str(bad), record.message_id)
                job_record.status, job_record.outcome, job_record.error_code = 400, "dead_lettered", "bad_job"
                return
            try:
                if isinstance(job, TaskJob):
                    self._run_task(job.task_id, context, job_record)
                else:
                    self._run_event(job, context, job_record)
            except TaskBusy:
                # Another delivery of this job is running it: this one comes back later and finds it done.
                job_record.status = 409
                job_record.fail("busy", "task_busy")
                raise

    # --- async tasks --------------------------------------------------------------------------------------
    def _run_task(self, task_id: str, context: LambdaContext, record: RequestRecord) -> None:
        record.operation, record.task_id = "worker.task", task_id
        task = self.tasks.get(task_id)
        if task is None or task.status != "processing":
            record.status, record.outcome = 200, "already_finished" if task else "unknown_task"
            return
        record.owner_id = task.owner
        if task.overdue(self.tasks.now()):
            self.tasks.fail(task_id, 504, task_timeout_error())
            record.status, record.outcome = 504, "task_timeout"
            return
        claimed = self.tasks.claim(task_id, hold_seconds=int(context.get_remaining_time_in_millis() / 1000) + 5)
        if claimed is None:
            record.status, record.outcome = 200, "already_finished"
            return
        stored = self._already_stored(task.folder)
        if stored is not None:
            self.tasks.complete(task_id, stored.to_dict())
            record.status, record.outcome = 200, "recovered"
            return
        try:
            stored = self._produce(task, context, record)
        except ImageServiceError as error:
            self.tasks.fail(task_id, error.status, error.to_body()["error"])
            record.status = error.status
            record.fail("failed", error.code)
            return
        if stored is None:
            self.tasks.fail(task_id, 503, _storage_error())
            record.status = 503
            record.fail("failed", "storage_unavailable")
            return
        self._write_manifest(task.folder, stored)
        self.tasks.complete(task_id, stored.to_dict())
        record.status = 200

    def _produce(self, task: Task, context: LambdaContext, record: RequestRecord) -> StoredResult | None:
        deadline = self._deadline(context)
        if task.kind == "generation":
            request = GenerationRequest.model_validate(task.request)
            return self.service.generate(request, deadline, record, folder=task.folder).stored
        edit = edit_from_kept(
            task.request, task.inputs, self.service.store.read, max_image_bytes=self.settings.max_input_image_bytes
        )
        return self.service.edit(edit, deadline, record, folder=task.folder).stored

    # --- event-triggered generations ----------------------------------------------------------------------
    def _run_event(self, job: GenerationJob, context: LambdaContext, record: RequestRecord) -> None:
        record.operation, record.job_id, record.correlation_id = f"worker.{job.source}", job.job_id, job.correlation_id
        describe_request(record, job.request, include_prompt=self.settings.log_prompts)
        stored = self._already_stored(job.folder)
        if stored is not None:
            record.outcome = "recovered"
        else:
            try:
                stored = self.service.generate(job.request, self._deadline(context), record, folder=job.folder).stored
            except ImageServiceError as error:
                self.events.publish(FAILED, self._failure(job, error.status, error.to_body()["error"]))
                record.status = error.status
                record.fail("failed", error.code)
                return
            if stored is None:
                self.events.publish(FAILED, self._failure(job, 503, _storage_error()))
                record.status = 503
                record.fail("failed", "storage_unavailable")
                return
            self._write_manifest(job.folder, stored)
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

    def _already_stored(self, folder: str) -> StoredResult | None:
        """The result a previous run of this job left, if it got as far as writing it."""
        document = self.service.store.read_json(f"{folder}/{MANIFEST}")
        return StoredResult.from_dict(document) if document else None

    def _write_manifest(self, folder: str, stored: StoredResult) -> None:
        try:
            self.service.store.write_json(f"{folder}/{MANIFEST}", stored.to_dict())
        except StorageError:
            # The images are stored and the answer is about to be recorded; only a redelivery's shortcut is lost.
            logger.warning("result manifest not written", extra={"folder": folder})


def _storage_error() -> dict[str, Any]:
    return {
        "type": "server_error",
        "code": "storage_unavailable",
        "message": "The images were generated but could not be stored.",
    }
