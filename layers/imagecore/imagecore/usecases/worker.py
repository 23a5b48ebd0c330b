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

import time
from collections.abc import Callable
from typing import TypeVar

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from imagecore.accounts.concurrency import ConcurrencyLeases
from imagecore.accounts.ledger import UsageLedger
from imagecore.accounts.token_usage import TokenImageCounter
from imagecore.jobs.messages import BadJob, GenerationJob, TaskJob, parse_job
from imagecore.jobs.outcomes import (
    abandoned_error,
    receive_count,
)
from imagecore.jobs.publishing import DeadLetters, EventPublisher, EventPublishError
from imagecore.jobs.tasks import (
    JobIdentityMismatch,
    TaskBusy,
    TaskStore,
    TaskStoreError,
)
from imagecore.platform.observability import JOB_LOG_MESSAGE, RequestRecord, logger, recording
from imagecore.platform.settings import WorkerSettings
from imagecore.storage.manifest import (
    Finished,
)
from imagecore.storage.store import StorageError
from imagecore.usecases.event_jobs import EventJobs
from imagecore.usecases.job_steps import JobSteps
from imagecore.usecases.service import ImageService
from imagecore.usecases.task_jobs import TaskJobs

T = TypeVar("T")


# Faults that pass: the record is delivered again (or, on its last delivery, the job ends as failed).
PASSING_FAULTS = (TaskStoreError, StorageError, EventPublishError, BotoCoreError, ClientError)


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
        leases: ConcurrencyLeases | None = None,
    ) -> None:
        self.service = service
        self.tasks = tasks
        self.events = events
        self.settings = settings
        self.dead_letters = dead_letters
        self.steps = steps = JobSteps(service, tasks, settings, sleep)
        self.task_jobs = TaskJobs(steps, ledger, token_images, leases)
        self.event_jobs = EventJobs(steps, events)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Worker:
        service = ImageService.from_settings(settings)
        service.store_attempts = settings.store_attempts
        region = settings.aws_region
        if not settings.tasks_table:
            raise ValueError("the worker needs TASKS_TABLE")
        ledger = UsageLedger(settings.usage_table, region=region) if settings.usage_table else None
        return cls(
            service,
            TaskStore(settings.tasks_table, region=region),
            EventPublisher(settings.event_bus_name, region=region),
            DeadLetters(settings.dead_letter_queue_url, region=region),
            settings,
            ledger=ledger,
            token_images=(
                TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None
            ),
            leases=ConcurrencyLeases.beside(ledger) if ledger else None,
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
            last_delivery = receive_count(record) >= self.settings.job_max_receives
            try:
                if isinstance(job, TaskJob):
                    self.task_jobs.run(job.task_id, context, job_record)
                else:
                    self.event_jobs.run(job, context, job_record)
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
        abandoned = Finished(http_status=503, error=abandoned_error(self.settings.job_max_receives))
        if isinstance(job, TaskJob):
            self.task_jobs.finish(
                job.task_id, self.task_jobs.salvage(job.task_id, context, record) or abandoned, context, record
            )
            return
        finished = self.event_jobs.salvage(job, context, record) or abandoned
        if finished.result is not None:
            self.event_jobs.complete(job, finished.result, context, record, last_word=True)
            return
        status, error = finished.http_status or 500, finished.error or {}
        self.event_jobs.end(job, status, error, context, last_word=True)
        record.status = status
        record.fail("failed", str(error.get("code")))
