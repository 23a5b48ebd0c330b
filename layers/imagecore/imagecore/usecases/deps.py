"""What the image functions' use cases work with, built once per execution environment from the function's
settings: the image service, idempotency, admission (budgets, client-token counts) and the task queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.admission import Admission
from imagecore.domain.deadline import Deadline, request_deadline
from imagecore.domain.errors import ServiceMisconfigured
from imagecore.jobs.submitter import JobQueue, TaskSubmitter
from imagecore.jobs.tasks import TaskStore
from imagecore.jobs.webhook_urls import UrlPolicy
from imagecore.platform.settings import GenerationSettings
from imagecore.usecases.idempotency import Idempotency
from imagecore.usecases.service import ImageService


@dataclass
class ImageDeps:
    service: ImageService
    idempotency: Idempotency
    admission: Admission
    submitter: TaskSubmitter | None = None

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageDeps:
        region = settings.aws_region
        submitter = None
        if settings.tasks_table and settings.jobs_queue_url:
            submitter = TaskSubmitter(
                TaskStore(settings.tasks_table, region=region),
                JobQueue(settings.jobs_queue_url, region=region),
                UrlPolicy(allow_loopback=settings.webhook_allow_loopback),
            )
        admission = Admission.from_settings(settings)
        idempotency = Idempotency(settings.idempotency_table or None, region=region)
        return cls(ImageService.from_settings(settings), idempotency, admission, submitter)

    @property
    def settings(self) -> GenerationSettings:
        return self.service.settings

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call of this API request must be over."""
        return api_deadline(self.settings, event, context)

    def tasks_submitter(self) -> TaskSubmitter:
        if self.submitter is None:
            raise ServiceMisconfigured("Async tasks are not configured (TASKS_TABLE, JOBS_QUEUE_URL).")
        return self.submitter

    def now(self) -> int:
        """The tasks' clock (seconds since the epoch)."""
        return self.tasks_submitter().tasks.now()


def api_deadline(settings: GenerationSettings, event: dict[str, Any], context: LambdaContext) -> Deadline:
    """When the upstream call of an API request to an image function must be over (see ``request_deadline``)."""
    return request_deadline(
        event,
        context,
        integration_timeout_ms=settings.integration_timeout_ms,
        margin_seconds=settings.storage_margin_seconds,
    )
