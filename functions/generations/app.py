"""POST /v1/images/generations (answered when the images are ready, or as server-sent events with stream: true)
and POST /v1/images/generations/async (a task to poll): validate, generate upstream, store in S3, answer
presigned URLs.

The synchronous route is deployed behind the Lambda Web Adapter (``run.sh`` serves ``streamed_app()``, which
runs this same ``lambda_handler`` on each request); the async route is an ordinary Lambda proxy integration."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import estimated_cost
from imagecore.accounts.caller import caller_of, spender_of
from imagecore.domain.models import GenerationRequest, GenerationResponse, TaskObject
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.edge.task_answers import ACCEPTED_HEADERS, task_accepted
from imagecore.jobs.tasks import new_task_id, task_folder
from imagecore.platform.observability import current_record, logger, metrics, tracer
from imagecore.platform.settings import GenerationSettings
from imagecore.usecases.runtime import ImageRuntime
from imagecore.usecases.service import Delivery, describe_request

app = create_resolver()


@cache
def runtime() -> ImageRuntime:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return ImageRuntime.from_settings(GenerationSettings.from_environment())


@app.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    responses={
        200: {
            "description": (
                "The images, as presigned S3 URLs (or inline base64 when asked). With stream: true, "
                "text/event-stream: image_generation.partial_image and image_generation.completed events."
            )
        },
        400: {"description": "Invalid request or refused by the upstream's policy", "content": ERROR_CONTENT},
        409: {"description": "The same Idempotency-Key is still running", "content": ERROR_CONTENT},
        429: {
            "description": "Over the key's image or token budget, or the client token's max_images (nothing generated)",
            "content": ERROR_CONTENT,
        },
        422: {"description": "The Idempotency-Key was used with another request", "content": ERROR_CONTENT},
        502: {"description": "The upstream failed", "content": ERROR_CONTENT},
        504: {"description": "The upstream did not answer in time", "content": ERROR_CONTENT},
    },
)
def create_images(
    request: Annotated[GenerationRequest, Body()],
    runtime: Annotated[ImageRuntime, Depends(runtime)],
) -> GenerationResponse:
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    request.check_synchronous()
    service = runtime.service
    deadline = runtime.deadline(event, context)

    def charge(make: Callable[[], Delivery]) -> Delivery:
        return runtime.charged(spender_of(event), caller.token, estimated_cost(request), request.n, make)

    if request.stream:
        # Only a streamed answer needs the event stream (and asyncio): imported on the first one.
        from imagecore.edge.stream_events import stream_answer

        return stream_answer(
            "image_generation",
            service,
            request,
            lambda events: runtime.deliver(
                event,
                context,
                scope="generations",
                payload=request.model_dump(),
                produce=lambda folder: charge(
                    lambda: service.generate(
                        request, deadline, current_record(), folder, on_partial=events.partial, on_stored=events.stored
                    )
                ),
            ),
        )
    return runtime.answer(
        event,
        context,
        scope="generations",
        payload=request.model_dump(),
        produce=lambda folder: charge(lambda: service.generate(request, deadline, current_record(), folder)),
        response_format=request.response_format,
    )


@app.post(
    "/v1/images/generations/async",
    summary="Create images from a prompt, as a task to poll",
    responses={
        202: {
            "description": "The task; poll its Location",
            "content": {"application/json": {"model": TaskObject}},
            "headers": ACCEPTED_HEADERS,
        },
        400: {"description": "Invalid request (no task is made)", "content": ERROR_CONTENT},
        429: {"description": "Over the key's image or token budget (no task is made)", "content": ERROR_CONTENT},
    },
)
def create_images_async(
    request: Annotated[GenerationRequest, Body()],
    runtime: Annotated[ImageRuntime, Depends(runtime)],
) -> Response[str]:  # status and headers of its own
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    request.check_task()
    runtime.check_webhook_url(request.webhook_url)
    record = current_record()
    record.operation = "generations.async"
    describe_request(record, request, include_prompt=runtime.service.settings.log_prompts)
    task_id = new_task_id()
    task = runtime.submit(
        event,
        context,
        scope="generations/async",
        payload=request.model_dump(),
        make_task=lambda submitter: runtime.queue_within_budget(
            spender_of(event),
            estimated_cost(request),
            task_id,
            lambda: runtime.counted_task(
                caller.token,
                request.n,
                lambda token_hold: submitter.submit(
                    task_id=task_id,
                    owner=caller.owner_id,
                    kind="generation",
                    request=request.model_dump(exclude_none=True, exclude={"webhook_url"}),
                    folder=task_folder(task_id),
                    token_hold=token_hold,
                    webhook_url=request.webhook_url,
                ),
            ),
        ),
    )
    settings = runtime.service.settings
    return task_accepted(event, task, runtime.now(), runtime.service.store.presign, scheme=settings.public_url_scheme)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="generations")


def streamed_app() -> Any:
    """The ASGI app ``run.sh`` serves behind the Lambda Web Adapter (uvicorn --factory)."""
    from imagecore.edge.streaming import function_edge

    return function_edge(lambda_handler, runtime().service.settings.stream_idle_limit_seconds)
