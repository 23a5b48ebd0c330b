"""POST /v1/images/generations: validate, generate upstream, store in S3, answer presigned URLs."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.api import caller_of, create_resolver, request_deadline, serve
from imagecore.models import ErrorResponse, GenerationRequest, GenerationResponse
from imagecore.observability import current_record, logger, metrics, tracer
from imagecore.service import ImageService
from imagecore.settings import GenerationSettings

app = create_resolver()


@cache
def generation_service() -> ImageService:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return ImageService.from_settings(GenerationSettings())


@app.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    responses={
        200: {"description": "The images, as presigned S3 URLs (or inline base64 when asked)."},
        400: {
            "description": "Invalid request or refused by the upstream's policy",
            "content": {"application/json": {"model": ErrorResponse}},
        },
        502: {"description": "The upstream failed", "content": {"application/json": {"model": ErrorResponse}}},
        504: {
            "description": "The upstream did not answer in time",
            "content": {"application/json": {"model": ErrorResponse}},
        },
    },
)
def create_images(
    request: Annotated[GenerationRequest, Body()],
    service: Annotated[ImageService, Depends(generation_service)],
) -> GenerationResponse:
    event = app.current_event.raw_event
    record = current_record()
    record.api_key_id = caller_of(event).key_id
    deadline = request_deadline(
        event,
        app.lambda_context,
        integration_timeout_ms=service.settings.integration_timeout_ms,
        margin_seconds=service.settings.storage_margin_seconds,
    )
    return service.generate(request, deadline, record)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="generations")
