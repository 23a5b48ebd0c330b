"""An async task run by the worker: claimed once, its use case run with the full upstream budget into the
task's folder, and ended once (completed or failed), settling what it reserved of its key's budgets and giving
back the client token's images it did not make."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.concurrency import ConcurrencyLeases, Slot
from imagecore.accounts.ledger import UsageLedger
from imagecore.accounts.token_usage import TokenImageCounter, images_to_give_back
from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import ImageServiceError
from imagecore.domain.models import GenerationRequest
from imagecore.jobs.outcomes import (
    compact_result,
    hold_seconds,
    interrupted_error,
    spent_of,
    storage_error,
)
from imagecore.jobs.tasks import Ended, Task, TaskStore, TaskStoreError, task_timeout_error
from imagecore.platform.observability import RequestRecord, logger
from imagecore.storage.manifest import Finished, StoredResult, read_finished
from imagecore.storage.spool import InputFiles
from imagecore.storage.store import StorageError, UploadStore
from imagecore.usecases.delivery import ImageEvent
from imagecore.usecases.edits import EditInput
from imagecore.usecases.job_steps import JobSteps
from imagecore.usecases.pending_edits import kept_edit
from imagecore.usecases.service import delivered

T = TypeVar("T")
# How long a task waits for a free slot in its key's concurrency before it runs anyway.
LEASE_WAIT_SECONDS = 30.0


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


@dataclass
class TaskJobs:
    steps: JobSteps
    ledger: UsageLedger | None = None
    token_images: TokenImageCounter | None = None
    leases: ConcurrencyLeases | None = None

    def run(self, task_id: str, context: LambdaContext, record: RequestRecord) -> None:
        """Run the task; an edit's inputs on local disk are removed when it ends, however it ends."""
        with InputFiles() as files:
            self._run_task(task_id, context, record, files)

    def _run_task(self, task_id: str, context: LambdaContext, record: RequestRecord, files: InputFiles) -> None:
        record.operation, record.task_id = "worker.task", task_id
        task = self.steps.tasks.get(task_id)
        if task is None or task.status != "processing":
            record.status, record.outcome = 200, "already_finished" if task else "unknown_task"
            return
        record.owner_id = task.owner
        # What an earlier delivery left comes first, whatever happened since (a refused write, a crash, the time).
        finished = self.steps.finished(task.folder, context)
        if finished is not None:
            self.finish(task_id, finished, context, record)
            record.outcome = "recovered"
            return
        now = self.steps.tasks.now()
        if task.overdue(now):
            self._end_overdue(task, now, context, record)
            return
        try:
            asked = self._prepare(task, files)
        except ImageServiceError as error:  # kept inputs that no longer pass their checks
            self.finish(task_id, Finished(http_status=error.status, error=error.to_body()["error"]), context, record)
            return
        claimed = self.steps.tasks.claim(task_id, hold_seconds=hold_seconds(context))
        if claimed is None:
            record.status, record.outcome = 200, "already_finished"
            return
        if claimed.upstream_calls > 1:
            # An earlier delivery asked the upstream and died: it is not asked twice. What it stored is answered.
            recovered = self.steps.recover(task.folder, task.request, None, context, record)
            finished = Finished(result=recovered) if recovered else Finished(http_status=500, error=interrupted_error())
            self.finish(task_id, finished, context, record)
            return
        deadline = self.steps.deadline(context)
        try:
            with self._counted_in_concurrency(task, deadline):
                stored = self._run(task, asked, deadline, record)
        except ImageServiceError as error:
            finished = Finished(http_status=error.status, error=error.to_body()["error"])
        else:
            if stored is None:
                finished = Finished(http_status=503, error=storage_error())
            else:
                self.steps.write_result(task.folder, stored, None, context)
                finished = Finished(result=stored)
        if finished.error is not None:
            self.steps.write_failure(task.folder, finished, None)
        self.finish(task_id, finished, context, record)

    def _end_overdue(self, task: Task, now: int, context: LambdaContext, record: RequestRecord) -> None:
        """A task past its limit. On AWS the delivery after a crash comes after the visibility timeout, past the
        limit: what the dead run stored is answered first (its claim has lapsed, so nobody else writes the
        folder); without images it is ``task_timeout``."""
        if task.claimed_until is None or task.claimed_until < now:
            recovered = self.steps.recover(task.folder, task.request, None, context, record)
            if recovered is not None:
                self.finish(task.id, Finished(result=recovered), context, record)
                return
        self.finish(task.id, Finished(http_status=504, error=task_timeout_error()), context, record)
        record.outcome = "task_timeout"

    def finish(self, task_id: str, finished: Finished, context: LambdaContext, record: RequestRecord) -> None:
        """The terminal write, retried with backoff within the function's time; then what the task reserved of its
        key's budgets when it was queued is settled with what it really cost, and (by the call that ended it) the
        client token's images it did not make are given back."""
        if finished.result is not None:
            result = compact_result(finished.result)
            ended = self.steps.persist(context, lambda: self.steps.tasks.complete(task_id, result))
            record.status = 200
        else:
            status, error = finished.http_status or 500, finished.error or {}
            ended = self.steps.persist(context, lambda: self.steps.tasks.fail(task_id, status, error))
            record.status = status
            record.fail("failed", str(error.get("code")))
        if self.ledger is not None:
            self.ledger.settle_task(task_id, spent_of(finished, record))
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

    def _prepare(self, task: Task, files: InputFiles) -> GenerationRequest | EditInput:
        """What the task asks, read beforehand (so a passing S3 fault here leaves no claim)."""
        if task.kind == "generation":
            return GenerationRequest.model_validate(task.request)
        max_bytes = self.steps.settings.max_input_image_bytes
        store = self.steps.service.store
        uploads = UploadStore(store.s3, store.bucket)
        return kept_edit(task.request, task.inputs, store, uploads, task.owner, files, max_image_bytes=max_bytes)

    def _counted_in_concurrency(self, task: Task, deadline: Deadline) -> AbstractContextManager[None]:
        """A running task holds a lease in its key's concurrency (waiting a little for a free slot, never
        dropped for want of one)."""
        if self.leases is None or not task.max_concurrent:
            return nullcontext()
        expires_at = time.time() + max(0.0, deadline.remaining()) + self.steps.settings.storage_margin_seconds
        return self.leases.hold_waiting(
            Slot(task.owner, task.max_concurrent), expires_at, wait_seconds=LEASE_WAIT_SECONDS, sleep=self.steps.sleep
        )

    def _run(
        self, task: Task, asked: GenerationRequest | EditInput, deadline: Deadline, record: RequestRecord
    ) -> StoredResult | None:
        """The task's generation or edit, into its folder; its previews, when it asked for them, are listed on
        the task as they are stored."""
        previews = TaskPreviews(self.steps.tasks, task.id)
        service = self.steps.service
        if isinstance(asked, GenerationRequest):
            return delivered(service.generation(asked, deadline, record, folder=task.folder, events=previews)).stored
        return delivered(service.editing(asked, deadline, record, folder=task.folder, events=previews)).stored

    def salvage(self, task_id: str, context: LambdaContext, record: RequestRecord) -> Finished | None:
        """What the task's folder holds, read once more on its last delivery: the outcome an earlier delivery
        wrote, or the images a run stored before it failed (the result rebuilt from them); None when it holds
        neither or cannot be read."""
        try:
            task = self.steps.tasks.get(task_id)
            if task is None:
                return None
            finished = read_finished(self.steps.service.store, task.folder)
            if finished is not None:
                return finished
            recovered = self.steps.recover(task.folder, task.request, None, context, record)
        except (TaskStoreError, StorageError):
            return None
        return Finished(result=recovered) if recovered is not None else None
