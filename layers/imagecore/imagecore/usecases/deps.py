"""What the synchronous image routes' use cases work with, built once per execution environment from the
function's settings: the image service, idempotency and admission (budgets, client-token counts). The async
routes, deployed as functions of their own, work with ``submit.TaskDeps`` instead."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.admission import Admission
from imagecore.domain.deadline import Deadline, request_deadline
from imagecore.platform.settings import GenerationSettings
from imagecore.usecases.idempotency import Idempotency
from imagecore.usecases.service import ImageService


@dataclass
class ImageDeps:
    service: ImageService
    idempotency: Idempotency
    admission: Admission

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageDeps:
        idempotency = Idempotency(settings.idempotency_table or None, region=settings.aws_region)
        return cls(ImageService.from_settings(settings), idempotency, Admission.from_settings(settings))

    @property
    def settings(self) -> GenerationSettings:
        return self.service.settings

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call of this API request must be over."""
        return api_deadline(self.settings, event, context)


def api_deadline(settings: GenerationSettings, event: dict[str, Any], context: LambdaContext) -> Deadline:
    """When the upstream call of an API request to an image function must be over (see ``request_deadline``)."""
    return request_deadline(
        event,
        context,
        integration_timeout_ms=settings.integration_timeout_ms,
        margin_seconds=settings.storage_margin_seconds,
    )
