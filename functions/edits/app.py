"""POST /v1/images/edits (answered when the images are ready): reference images (multipart, or uploads named in
JSON) checked for real, forwarded intact to the upstream's edits, results stored in S3 and answered as presigned
URLs (or as server-sent events with stream: true).

Deployed behind the Lambda Web Adapter (``run.sh`` serves ``streamed_app()``, which runs this same
``lambda_handler`` on each request). POST /v1/images/edits/async is a function of its own (``functions/edits_async``),
which loads none of the upstream's code."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.domain.errors import StorageUnavailable
from imagecore.domain.models import GenerationResponse
from imagecore.edge.edit_requests import EDIT_ERRORS, multipart_body
from imagecore.edge.request_body import JSON, MULTIPART, content_type_of
from imagecore.edge.resolver import ERROR_CONTENT, answer_content, create_resolver, serve
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import EditSettings, GenerationSettings
from imagecore.storage.spool import InputFiles
from imagecore.storage.store import StorageError, UploadStore
from imagecore.usecases.deliveries import answer_images
from imagecore.usecases.deps import ImageDeps
from imagecore.usecases.edit import Edit
from imagecore.usecases.edit import edit_images as edit_use_case
from imagecore.usecases.edits import EditInput, OwnUploads, edit_fingerprint, edit_from_multipart, edit_from_uploads
from imagecore.usecases.idempotency import Once

app = create_resolver()


@cache
def deps() -> ImageDeps:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return ImageDeps.from_settings(EditSettings.from_environment())


@cache
def upload_store() -> UploadStore:
    service = deps().service
    return UploadStore(service.store.s3, service.settings.images_bucket)


def read_edit(
    event: dict[str, Any], owner: str, settings: GenerationSettings, uploads: UploadStore, files: InputFiles
) -> EditInput:
    """The edit asked; the uploads it names are copied to ``files`` on local disk (a multipart body's images,
    a few MB at most, stay in memory)."""
    assert isinstance(settings, EditSettings)
    if content_type_of(event).lower().startswith(JSON):
        try:
            return edit_from_uploads(
                event.get("body") or "",
                OwnUploads(uploads, owner, settings.max_input_image_bytes, files),
                max_image_bytes=settings.max_input_image_bytes,
            )
        except StorageError:
            raise StorageUnavailable(
                "The uploaded images cannot be read right now; nothing was run. Try again."
            ) from None
    body = multipart_body(event, settings)
    return edit_from_multipart(body, content_type_of(event), max_image_bytes=settings.max_input_image_bytes)


@app.post(
    "/v1/images/edits",
    summary="Edit or combine images",
    description=(
        "multipart/form-data: prompt and the generation parameters as fields, 1 to 16 reference images as image, "
        "image[] or image[N], an optional mask. Or application/json naming images uploaded through /v1/uploads."
    ),
    responses={
        200: {
            "description": (
                "The edited images, as presigned S3 URLs (or inline base64 when asked). With stream: true, "
                "text/event-stream: image_edit.partial_image and image_edit.completed events."
            ),
            "content": answer_content(GenerationResponse),
        },
        **EDIT_ERRORS,
        502: {"description": "The upstream failed", "content": ERROR_CONTENT},
        504: {"description": "The upstream did not answer in time", "content": ERROR_CONTENT},
    },
)
def edit_images(
    deps: Annotated[ImageDeps, Depends(deps)],
    uploads: Annotated[UploadStore, Depends(upload_store)],
) -> GenerationResponse:
    with InputFiles() as files:  # the inputs on local disk are removed however the request ends
        return _edit_images(deps, uploads, files)


def _edit_images(deps: ImageDeps, uploads: UploadStore, files: InputFiles) -> GenerationResponse:
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    edit = read_edit(event, caller.owner_id, deps.settings, uploads, files)
    edit.parameters.check_synchronous()
    command = Edit(
        caller,
        edit,
        deps.deadline(event, context),
        Once.of(event, context, scope="edits", payload=edit_fingerprint(edit)),
    )
    if edit.parameters.stream:
        # Only a streamed answer needs the event stream (and asyncio): imported on the first one.
        from imagecore.edge.stream_events import open_image_stream

        stream = open_image_stream("image_edit", deps.service, edit.parameters)
        return stream.completed(edit_use_case(command, deps, events=stream))
    delivery = edit_use_case(command, deps)
    return answer_images(delivery, command.once, edit.parameters.response_format, deps)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="edits", accepted_content_types=(MULTIPART, JSON))


def streamed_app() -> Any:
    """The ASGI app ``run.sh`` serves behind the Lambda Web Adapter (uvicorn --factory)."""
    from imagecore.edge.streaming import function_edge

    return function_edge(lambda_handler, deps().settings.stream_idle_limit_seconds)
