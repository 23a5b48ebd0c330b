"""What the image functions share around the use cases: their dependencies (built once per execution
environment) and the idempotent way to answer a POST synchronously or as an async task."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.api import poll_url, request_deadline
from imagecore.errors import ImageServiceError, ServiceMisconfigured
from imagecore.idempotency import Idempotency, idempotency_key
from imagecore.observability import current_record
from imagecore.service import Delivery, ImageService, StoredResult
from imagecore.settings import GenerationSettings
from imagecore.storage import StorageError, image_folder
from imagecore.tasks import RETRY_AFTER_SECONDS, JobQueue, Task, TaskStore, TaskStoreError, TaskSubmitter, task_view
from imagecore.upstream import Deadline

NO_STORE = {"Cache-Control": "no-store"}


class TasksUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "tasks_unavailable"


@dataclass
class ImageRuntime:
    service: ImageService
    idempotency: Idempotency | None
    submitter: TaskSubmitter | None

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageRuntime:
        region = settings.aws_region
        submitter = None
        if settings.tasks_table and settings.jobs_queue_url:
            submitter = TaskSubmitter(
                TaskStore(settings.tasks_table, region=region), JobQueue(settings.jobs_queue_url, region=region)
            )
        idempotency = Idempotency(settings.idempotency_table, region=region) if settings.idempotency_table else None
        return cls(ImageService.from_settings(settings), idempotency, submitter)

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call of this API request must be over (see ``request_deadline``)."""
        settings = self.service.settings
        return request_deadline(
            event,
            context,
            integration_timeout_ms=settings.integration_timeout_ms,
            margin_seconds=settings.storage_margin_seconds,
        )

    def once(
        self,
        event: dict[str, Any],
        context: LambdaContext,
        *,
        scope: str,
        payload: Any,
        produce: Callable[[], Any],
        encode: Callable[[Any], dict[str, Any] | None],
        decode: Callable[[dict[str, Any]], Any],
    ) -> Any:
        key = idempotency_key(event)
        if self.idempotency is None:
            return produce()
        owner = current_record().api_key_id or "anonymous"
        return self.idempotency.once(
            key=key,
            scope=f"{owner}#{scope}",
            payload=payload,
            context=context,
            produce=produce,
            encode=encode,
            decode=decode,
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
        return self.once(
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
    ) -> Response:
        """202 with the task object, ``Location`` and ``Retry-After``, once per Idempotency-Key."""
        submitter = self.submitter
        if submitter is None:
            raise ServiceMisconfigured("Async tasks are not configured (TASKS_TABLE, JOBS_QUEUE_URL).")

        def produce() -> Task:
            try:
                return make_task(submitter)
            except (TaskStoreError, StorageError):
                raise TasksUnavailable("The task could not be queued; nothing was run. Try again.") from None

        task = self.once(
            event,
            context,
            scope=scope,
            payload=payload,
            produce=produce,
            encode=lambda made: made.to_item(),
            decode=Task.from_item,
        )
        current_record().task_id = task.id
        url = poll_url(event, task.id, scheme=self.service.settings.public_url_scheme)
        view = task_view(task, submitter.tasks.now(), presign=lambda key: key, poll_url=url)
        return Response(
            status_code=202,
            content_type=content_types.APPLICATION_JSON,
            body=json.dumps(view),
            headers={"Location": url, "Retry-After": str(RETRY_AFTER_SECONDS), **NO_STORE},
        )


def task_folder(task_id: str) -> str:
    return image_folder(datetime.now(UTC), task_id)
