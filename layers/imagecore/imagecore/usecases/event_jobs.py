"""An event-triggered generation run by the worker (an EventBridge event, or a request put on the queue): its
claim bound to its request's digest, its images in the folder its id names, its outcome announced on the bus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.domain.errors import ImageServiceError
from imagecore.jobs.messages import COMPLETED, FAILED, GenerationJob
from imagecore.jobs.outcomes import (
    compact_result,
    finished_from,
    hold_seconds,
    interrupted_error,
    storage_error,
)
from imagecore.jobs.publishing import EventPublisher
from imagecore.jobs.tasks import JobIdentityMismatch, TaskStoreError
from imagecore.platform.observability import RequestRecord, logger
from imagecore.storage.manifest import Finished, StoredResult, read_finished
from imagecore.storage.store import StorageError
from imagecore.usecases.job_steps import JobSteps
from imagecore.usecases.service import delivered

T = TypeVar("T")


@dataclass
class EventJobs:
    steps: JobSteps
    publisher: EventPublisher

    def run(self, job: GenerationJob, context: LambdaContext, record: RequestRecord) -> None:
        record.operation, record.job_id, record.correlation_id = f"worker.{job.source}", job.job_id, job.correlation_id
        job.request.describe(record, include_prompt=self.steps.settings.log_prompts)
        finished = self.steps.finished(job.folder, context)
        if finished is not None:
            if finished.digest != job.digest:
                raise JobIdentityMismatch(job.key)
            record.outcome = "recovered"
            self._announce(job, finished, record)
            return
        claim = self.steps.tasks.claim_job(job.key, job.digest, hold_seconds=hold_seconds(context))
        if claim.status != "processing":  # finished, and its folder has lost what it left (or S3 hides it)
            record.outcome = "recovered"
            self._announce(job, finished_from(claim), record)
            return
        if claim.upstream_calls > 1:
            # An earlier delivery asked the upstream and died: it is not asked twice. What it stored is answered.
            recovered = self.steps.recover(job.folder, job.request.model_dump(), job.digest, context, record)
            if recovered is not None:
                self.complete(job, recovered, context, record)
                return
            self.end(job, 500, interrupted_error(), context)
            record.status = 500
            record.fail("failed", "job_interrupted")
            return
        try:
            generation = self.steps.service.generation(
                job.request, self.steps.deadline(context), record, folder=job.folder
            )
            stored = delivered(generation).stored
        except ImageServiceError as error:
            self.end(job, error.status, error.to_body()["error"], context)
            record.status = error.status
            record.fail("failed", error.code)
            return
        if stored is None:
            self.end(job, 503, storage_error(), context)
            record.status = 503
            record.fail("failed", "storage_unavailable")
            return
        self.steps.write_result(job.folder, stored, job.digest, context)
        self.complete(job, stored, context, record)

    def complete(
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
        result = compact_result(stored)
        try:
            self.steps.persist(context, lambda: self.steps.tasks.complete(job.key, result))
        except TaskStoreError:
            if not last_word:
                raise
            logger.warning("completed job not recorded", extra={"job_id": job.job_id})
        self._announce(job, Finished(result=stored), record)

    def end(
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
        self.steps.write_failure(job.folder, finished, job.digest)
        try:
            self.steps.persist(context, lambda: self.steps.tasks.fail(job.key, http_status, error))
        except TaskStoreError:
            if not last_word:
                raise
            logger.warning("failed job not recorded", extra={"job_id": job.job_id})
        self.publisher.publish(FAILED, self._failure(job, http_status, error))

    def _announce(self, job: GenerationJob, finished: Finished, record: RequestRecord) -> None:
        stored = finished.result
        if stored is None:
            status = finished.http_status or 500
            self.publisher.publish(FAILED, self._failure(job, status, finished.error or {}))
            record.status = status
            record.fail(record.outcome or "failed", str((finished.error or {}).get("code")))
            return
        self.publisher.publish(
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

    def salvage(self, job: GenerationJob, context: LambdaContext, record: RequestRecord) -> Finished | None:
        """The same for an event job, whose folder belongs to the request that claimed its id first: its recorded
        outcome, or the images a run stored; ``JobIdentityMismatch`` when this message borrows another request's
        job id (that job is neither answered to it nor ended by it)."""
        try:
            claim = self.steps.tasks.job_claim(job.key)
            if claim is None:
                return None
            if claim.digest != job.digest:
                raise JobIdentityMismatch(job.key)
            if claim.status != "processing":
                return finished_from(claim)
            finished = read_finished(self.steps.service.store, job.folder)
            if finished is not None:
                if finished.digest != job.digest:
                    raise JobIdentityMismatch(job.key)
                return finished
            recovered = self.steps.recover(job.folder, job.request.model_dump(), job.digest, context, record)
        except (TaskStoreError, StorageError):
            return None
        return Finished(result=recovered) if recovered is not None else None
