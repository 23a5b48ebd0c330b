"""What the responses function builds once per execution environment: the use case's dependencies, the
Idempotency-Key guard, and its request deadline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import UsageLedger
from imagecore.accounts.token_usage import TokenImageCounter
from imagecore.domain.deadline import Deadline, request_deadline
from imagecore.platform.settings import ResponsesSettings
from imagecore.storage.conversations import ConversationStore
from imagecore.storage.store import UploadStore
from imagecore.usecases.idempotency import Idempotency
from imagecore.usecases.respond import Responder
from imagecore.usecases.service import ImageService


@dataclass
class ResponsesRuntime:
    settings: ResponsesSettings
    responder: Responder
    idempotency: Idempotency | None

    @classmethod
    def from_settings(cls, settings: ResponsesSettings) -> ResponsesRuntime:
        region = settings.aws_region
        service = ImageService.from_settings(settings)
        uploads = UploadStore(service.store.s3, settings.images_bucket)
        conversations = (
            ConversationStore(
                settings.conversations_table, region=region, ttl_seconds=settings.conversation_ttl_days * 86400
            )
            if settings.conversations_table
            else None
        )

        def read_upload(owner: str, upload_id: str) -> Any:
            return uploads.read(owner, upload_id, max_bytes=settings.max_input_image_bytes)

        responder = Responder(
            service=service,
            conversations=conversations,
            read_upload=read_upload,
            ledger=UsageLedger(settings.usage_table, region=region) if settings.usage_table else None,
            token_images=(
                TokenImageCounter(settings.token_usage_table, region=region) if settings.token_usage_table else None
            ),
            allowed_models=settings.allowed_models,
            max_image_bytes=settings.max_input_image_bytes,
        )
        idempotency = Idempotency(settings.idempotency_table, region=region) if settings.idempotency_table else None
        return cls(settings, responder, idempotency)

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call must be over (see ``request_deadline``)."""
        return request_deadline(
            event,
            context,
            integration_timeout_ms=self.settings.integration_timeout_ms,
            margin_seconds=self.settings.storage_margin_seconds,
        )
