"""POST /v1/uploads: a presigned S3 POST for one large edit input, under the caller's own prefix."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.domain.route_models import UploadRequest, UploadResponse
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.platform.observability import current_record, logger, metrics, tracer
from imagecore.platform.route_settings import UploadSettings
from imagecore.storage.store import UploadStore, make_s3_client
from imagecore.usecases.idempotency import Idempotency, ModelCodec, Once

app = create_resolver()


@cache
def settings() -> UploadSettings:
    return UploadSettings.from_environment()


@cache
def idempotency() -> Idempotency:
    config = settings()
    return Idempotency(config.idempotency_table or None, region=config.aws_region)


@cache
def upload_store() -> UploadStore:
    config = settings()
    s3 = make_s3_client(config.aws_region, config.s3_endpoint_url)
    return UploadStore(s3, config.images_bucket, config.upload_expiry_seconds)


@app.post(
    "/v1/uploads",
    summary="Get a presigned S3 POST for one reference image or mask",
    description=(
        "POST the returned fields plus the file (as the last part, named file) to url as multipart/form-data. "
        'Then name it in an edit: {"images": [{"upload_id": id}]}. Uploads expire after about a day.'
    ),
    responses={
        200: {"description": "The presigned POST", "content": {"application/json": {"model": UploadResponse}}},
        400: {"description": "Invalid request", "content": ERROR_CONTENT},
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
            caller.owner_id,
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

    once = Once.of(event, app.lambda_context, scope="uploads", payload=request.model_dump())
    return idempotency().once(once, ModelCodec(UploadResponse), presign)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="uploads")
