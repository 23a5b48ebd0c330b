"""POST /v1/images/generations (answered when the images are ready, or as server-sent events with stream: true):
validate, generate upstream, store in S3, answer presigned URLs.

Deployed behind the Lambda Web Adapter (``run.sh`` serves ``streamed_app()``, which runs this same
``lambda_handler`` on each request). POST /v1/images/generations/async is a function of its own
(``functions/generations_async``), which loads none of the upstream's code."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.domain.models import GenerationRequest, GenerationResponse
from imagecore.edge.resolver import ERROR_CONTENT, OVER_LIMITS, answer_content, create_resolver, serve
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import GenerationSettings
from imagecore.usecases.deliveries import answer_images
from imagecore.usecases.deps import ImageDeps
from imagecore.usecases.generate import Generation, generate_images
from imagecore.usecases.idempotency import Once

app = create_resolver()


@cache
def deps() -> ImageDeps:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return ImageDeps.from_settings(GenerationSettings.from_environment())


@app.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    responses={
        200: {
            "description": (
                "The images, as presigned S3 URLs (or inline base64 when asked). With stream: true, "
                "text/event-stream: image_generation.partial_image and image_generation.completed events."
            ),
            "content": answer_content(GenerationResponse),
        },
        400: {"description": "Invalid request or refused by the upstream's policy", "content": ERROR_CONTENT},
        409: {"description": "The same Idempotency-Key is still running", "content": ERROR_CONTENT},
        429: OVER_LIMITS,
        422: {"description": "The Idempotency-Key was used with another request", "content": ERROR_CONTENT},
        502: {"description": "The upstream failed", "content": ERROR_CONTENT},
        504: {"description": "The upstream did not answer in time", "content": ERROR_CONTENT},
    },
)
def create_images(
    request: Annotated[GenerationRequest, Body()],
    deps: Annotated[ImageDeps, Depends(deps)],
) -> GenerationResponse:
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    request.check_synchronous()
    command = Generation(
        caller,
        request,
        deps.deadline(event, context),
        Once.of(event, context, scope="generations", payload=request.model_dump()),
    )
    if request.stream:
        # Only a streamed answer needs the event stream (and asyncio): imported on the first one.
        from imagecore.edge.stream_events import open_image_stream

        stream = open_image_stream("image_generation", deps.service, request)
        return stream.completed(generate_images(command, deps, events=stream))
    delivery = generate_images(command, deps)
    return answer_images(delivery, command.once, request.response_format, deps)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="generations")


def streamed_app() -> Any:
    """The ASGI app ``run.sh`` serves behind the Lambda Web Adapter (uvicorn --factory)."""
    from imagecore.edge.streaming import function_edge

    return function_edge(lambda_handler, deps().settings.stream_idle_limit_seconds)
