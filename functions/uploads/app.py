"""POST /v1/uploads: a presigned S3 POST for one large edit input, under the caller's own prefix."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.api import caller_of, create_resolver, serve
from imagecore.idempotency import Idempotency, idempotency_key
from imagecore.models import ErrorResponse, UploadRequest, UploadResponse
from imagecore.observability import current_record, logger, metrics, tracer
from imagecore.settings import UploadSettings
from imagecore.storage import UploadStore, make_s3_client

app = create_resolver()


@cache
def settings() -> UploadSettings:
    return UploadSettings()


@cache
def idempotency() -> Idempotency | None:
    config = settings()
    return Idempotency(config.idempotency_table, region=config.aws_region) if config.idempotency_table else None


@cache
def upload_store() -> UploadStore:
    config = settings()
    endpoint = str(config.s3_endpoint_url) if config.s3_endpoint_url else None
    return UploadStore(make_s3_client(config.aws_region, endpoint), config.images_bucket, config.upload_expiry_seconds)


@app.post(
    "/v1/uploads",
    summary="Get a presigned S3 POST for one reference image or mask",
    description=(
        "POST the returned fields plus the file (as the last part, named file) to url as multipart/form-data. "
        'Then name it in an edit: {"images": [{"upload_id": id}]}. Uploads expire after about a day.'
    ),
    responses={
        200: {"description": "The presigned POST", "content": {"application/json": {"model": UploadResponse}}},
        400: {"description": "Invalid request", "content": {"application/json": {"model": ErrorResponse}}},
    },
)
def create_upload(
    request: Annotated[UploadRequest, Body()],
    store: Annotated[UploadStore, Depends(upload_store)],
) -> UploadResponse:
    event = app.current_event.raw_event
    caller = caller_of(event)
    current_record().input_bytes = request.bytes

    def presign() -> UploadResponse:
        ticket = store.presign(
            caller.key_id,
            content_type=request.content_type,
            max_bytes=min(request.bytes, settings().max_input_image_bytes),
            filename=request.filename,
            purpose=request.purpose,
        )
        return UploadResponse(
            id=ticket.upload_id,
            url=ticket.url,
            fields=ticket.fields,
            expires_at=ticket.expires_at,
            max_bytes=ticket.max_bytes,
            content_type=request.content_type,
        )

    guard = idempotency()
    if guard is None:
        return presign()
    return guard.once(
        key=idempotency_key(event),
        scope=f"{caller.key_id}#uploads",
        payload=request.model_dump(),
        context=app.lambda_context,
        produce=presign,
        encode=lambda answer: answer.model_dump(),
        decode=UploadResponse.model_validate,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="uploads")
