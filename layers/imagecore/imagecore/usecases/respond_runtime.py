"""What the responses function builds once per execution environment (the use case's dependencies, the
Idempotency-Key guard, its request deadline), and the use case run once per Idempotency-Key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import UsageLedger
from imagecore.accounts.token_usage import TokenImageCounter
from imagecore.domain.deadline import Deadline, request_deadline
from imagecore.domain.errors import NotFound, StorageUnavailable
from imagecore.platform.observability import logger
from imagecore.platform.settings import ResponsesSettings
from imagecore.storage.conversations import ConversationStore
from imagecore.storage.store import StorageError, UploadStore
from imagecore.usecases.idempotency import Idempotency, answer_once
from imagecore.usecases.respond import RespondCommand, Responder, is_image_call, respond
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
            log_prompts=settings.log_prompts,
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


def respond_once(
    command: RespondCommand,
    deps: Responder,
    idempotency: Idempotency | None,
    event: dict[str, Any],
    context: Any,
) -> dict[str, Any]:
    """``respond``, once per Idempotency-Key: a retry gets the first answer (its images are not paid again). The
    record holds the key of the answer, written to S3 beside its images; a streamed replay is the answer's
    finished items and ``response.completed`` again."""
    store = deps.service.store
    replayed = False

    def remember(answer: dict[str, Any]) -> dict[str, Any] | None:
        key = f"images/responses/answers/{answer['id']}.json"
        output = [
            {**item, "key": command.stored[item["id"]]}
            if is_image_call(item) and item.get("id") in command.stored
            else item
            for item in answer.get("output", [])
        ]
        try:
            store.write_json(key, {**answer, "output": output})
        except StorageError:
            logger.warning("responses answer not remembered: a retry runs again")
            return None
        return {"response": key}

    def recall(remembered: dict[str, Any]) -> dict[str, Any]:
        nonlocal replayed
        replayed = True
        try:
            answer = store.read_json(str(remembered.get("response")))
        except StorageError:
            raise StorageUnavailable(
                "The answer of this Idempotency-Key cannot be read right now; try again."
            ) from None
        if answer is None:
            raise NotFound("The answer of this Idempotency-Key is gone.", param="Idempotency-Key")
        return answer

    payload = command.request.model_dump(exclude_none=True)
    answer = answer_once(
        idempotency,
        event,
        context,
        scope="responses",
        payload=payload,
        produce=lambda: respond(command, deps),
        encode=remember,
        decode=recall,
    )
    if replayed:
        command.record.idempotent_replay = True
        answer = _relinked(deps, answer, command.links_only)
        if command.events is not None:
            for index, item in enumerate(answer.get("output", [])):
                command.events(
                    "response.output_item.done",
                    {
                        "type": "response.output_item.done",
                        "output_index": index,
                        "item": item,
                        "sequence_number": index,
                    },
                )
            command.events(
                "response.completed",
                {"type": "response.completed", "response": answer, "sequence_number": len(answer.get("output", []))},
            )
    return answer


def _relinked(deps: Responder, answer: dict[str, Any], links_only: bool) -> dict[str, Any]:
    """A remembered answer with fresh links (the first ones may have expired)."""
    output = []
    for item in answer.get("output", []):
        key = item.pop("key", None) if isinstance(item, dict) else None
        if is_image_call(item) and isinstance(key, str):
            item = {**item, "url": deps.service.store.presign(key)}
            if links_only:
                item["result"] = None
        output.append(item)
    return {**answer, "output": output}
