"""The dependencies the image functions share, built once per execution environment, and the idempotent way
a POST runs its use case: synchronously (the stored images) or as an async task (the queued task)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.deadline import Deadline, request_deadline
from imagecore.errors import ServiceMisconfigured, TasksUnavailable
from imagecore.idempotency import Idempotency, answer_once
from imagecore.observability import current_record
from imagecore.service import Delivery, ImageService, StoredResult
from imagecore.settings import GenerationSettings
from imagecore.storage import StorageError
from imagecore.tasks import JobQueue, Task, TaskStore, TaskStoreError, TaskSubmitter
from imagecore.token_usage import ClientTokenGrant, TokenImageCounter, counted_images

T = TypeVar("T")


@dataclass
class ImageRuntime:
    service: ImageService
    idempotency: Idempotency | None
    submitter: TaskSubmitter | None
    token_images: TokenImageCounter | None = None

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageRuntime:
        region = settings.aws_region
        submitter = None
        if settings.tasks_table and settings.jobs_queue_url:
            submitter = TaskSubmitter(
                TaskStore(settings.tasks_table, region=region), JobQueue(settings.jobs_queue_url, region=region)
            )
        idempotency = Idempotency(settings.idempotency_table, region=region) if settings.idempotency_table else None
        token_images = (
            TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None
        )
        return cls(ImageService.from_settings(settings), idempotency, submitter, token_images)

    def counted(self, token: ClientTokenGrant | None, n: int, produce: Callable[[], Delivery]) -> Delivery:
        """A generation or edit within the client token's image limit: ``n`` images are reserved before the
        upstream is called, and what was not made is given back."""
        return counted_images(self.token_images, token, n, produce, made=lambda delivery: len(delivery.images))

    def counted_task(self, token: ClientTokenGrant | None, n: int, make: Callable[[], T]) -> T:
        """An async task within the client token's image limit: its ``n`` images are counted when it is queued
        (given back only if it could not be queued)."""
        return counted_images(self.token_images, token, n, make, made=lambda _task: n)

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call of this API request must be over (see ``request_deadline``)."""
        settings = self.service.settings
        return request_deadline(
            event,
            context,
            integration_timeout_ms=settings.integration_timeout_ms,
            margin_seconds=settings.storage_margin_seconds,
        )

    def deliver(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        produce: Callable[[], Delivery],
    ) -> Delivery:
        """A synchronous generation or edit, once per Idempotency-Key: a replay is the same stored images."""
        return answer_once(
            self.idempotency,
            event,
            context,
            scope=scope,
            payload=payload,
            produce=produce,
            encode=lambda delivery: delivery.stored.to_dict() if delivery.stored is not None else None,
            decode=lambda remembered: Delivery.replay(StoredResult.from_dict(remembered)),
        )

    def submit(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        make_task: Callable[[TaskSubmitter], Task],
    ) -> Task:
        """The queued task, once per Idempotency-Key: a replay is the task the first request made."""
        submitter = self.tasks_submitter()

        def produce() -> Task:
            try:
                return make_task(submitter)
            except (TaskStoreError, StorageError):
                raise TasksUnavailable("The task could not be queued; nothing was run. Try again.") from None

        task = answer_once(
            self.idempotency,
            event,
            context,
            scope=scope,
            payload=payload,
            produce=produce,
            encode=lambda made: made.to_item(),
            decode=Task.from_item,
        )
        current_record().task_id = task.id
        return task

    def tasks_submitter(self) -> TaskSubmitter:
        if self.submitter is None:
            raise ServiceMisconfigured("Async tasks are not configured (TASKS_TABLE, JOBS_QUEUE_URL).")
        return self.submitter

    def now(self) -> int:
        """The tasks' clock (seconds since the epoch)."""
        return self.tasks_submitter().tasks.now()
