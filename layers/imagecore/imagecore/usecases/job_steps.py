"""The steps every job of the worker takes: its deadline, writes retried with backoff within the function's
time, what an earlier delivery left in the job's folder, and the result rebuilt from the images a dead run
stored."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.domain.deadline import Deadline
from imagecore.jobs.tasks import TaskStore, TaskStoreError
from imagecore.platform.observability import RequestRecord, logger
from imagecore.platform.settings import WorkerSettings
from imagecore.storage.manifest import Finished, StoredResult, read_finished, read_stored, write_failure, write_result
from imagecore.storage.store import StorageError
from imagecore.usecases.service import ImageService

T = TypeVar("T")

# Time kept back from retrying a write, so the function still answers its batch before it times out.
_ANSWER_MARGIN_SECONDS = 5.0
_MAX_PAUSE_SECONDS = 8.0


@dataclass
class JobSteps:
    service: ImageService
    tasks: TaskStore
    settings: WorkerSettings
    sleep: Callable[[float], None] = time.sleep

    def deadline(self, context: LambdaContext) -> Deadline:
        remaining = context.get_remaining_time_in_millis() / 1000 - self.settings.storage_margin_seconds
        return Deadline.after(remaining)

    def persist(self, context: LambdaContext, write: Callable[[], T]) -> T:
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

    def finished(self, folder: str, context: LambdaContext) -> Finished | None:
        """What an earlier delivery of this job left in its folder; S3 faults are retried, never read as
        "nothing there"."""
        return self.persist(context, lambda: read_finished(self.service.store, folder))

    def recover(
        self, folder: str, asked: dict[str, Any], digest: str | None, context: LambdaContext, record: RequestRecord
    ) -> StoredResult | None:
        """The result rebuilt from the images a dead run stored in the job's folder (None when there is none),
        written as its ``result.json`` so any later delivery finishes from it. Only for a job nobody else holds."""
        stored = self.persist(context, lambda: read_stored(self.service.store, folder, asked))
        if stored is None:
            return None
        self.write_result(folder, stored, digest, context)
        asked_n = int(asked.get("n") or 1)
        record.n = asked_n
        record.images_recovered = record.images_returned = len(stored.images)
        record.outcome = "recovered" if len(stored.images) >= asked_n else "recovered_partial"
        logger.warning(
            "job completed from the images a run that died had stored",
            extra={"folder": folder, "images": len(stored.images), "asked": asked_n},
        )
        return stored

    def write_result(self, folder: str, stored: StoredResult, digest: str | None, context: LambdaContext) -> None:
        try:
            self.persist(context, lambda: write_result(self.service.store, folder, stored, digest=digest))
        except StorageError:
            # The images are stored and the answer is about to be recorded; only a redelivery's shortcut is lost.
            logger.warning("result manifest not written", extra={"folder": folder})

    def write_failure(self, folder: str, finished: Finished, digest: str | None) -> None:
        try:
            write_failure(self.service.store, folder, finished.http_status or 500, finished.error or {}, digest=digest)
        except StorageError:
            logger.warning("failure manifest not written", extra={"folder": folder})
