"""What the responses function builds once per execution environment: the use case's dependencies (the image
service, conversations, uploads, admission, idempotency) and its request deadline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.admission import Admission
from imagecore.domain.deadline import Deadline
from imagecore.platform.settings import ResponsesSettings
from imagecore.storage.conversations import ConversationStore
from imagecore.storage.store import UploadStore
from imagecore.usecases.deps import api_deadline
from imagecore.usecases.idempotency import Idempotency
from imagecore.usecases.respond import Responder
from imagecore.usecases.service import ImageService


@dataclass
class ResponsesRuntime:
    settings: ResponsesSettings
    responder: Responder

    @classmethod
    def from_settings(cls, settings: ResponsesSettings) -> ResponsesRuntime:
        region = settings.aws_region
        service = ImageService.from_settings(settings)
        uploads = UploadStore(service.store.s3, settings.images_bucket)
        conversations = None
        if settings.conversations_table:
            ttl = settings.conversation_ttl_days * 86400
            conversations = ConversationStore(settings.conversations_table, region=region, ttl_seconds=ttl)

        def read_upload(owner: str, upload_id: str) -> Any:
            return uploads.read(owner, upload_id, max_bytes=settings.max_input_image_bytes)

        admission = Admission.from_settings(settings)
        responder = Responder(
            service=service,
            conversations=conversations,
            read_upload=read_upload,
            admission=admission,
            idempotency=Idempotency(settings.idempotency_table or None, region=region),
            allowed_models=settings.allowed_models,
            max_image_bytes=settings.max_input_image_bytes,
            log_prompts=settings.log_prompts,
        )
        return cls(settings, responder)

    def deadline(self, event: dict[str, Any], context: LambdaContext) -> Deadline:
        """When the upstream call must be over."""
        return api_deadline(self.settings, event, context)
