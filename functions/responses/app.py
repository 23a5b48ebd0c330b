"""POST /v1/responses: the Responses API with the image_generation tool (a text model that draws and edits in a
conversation), every image stored in S3 and linked, the conversation kept by the service for its owner.

Deployed behind the Lambda Web Adapter like the streamed image routes (``run.sh`` serves ``streamed_app()``, which
runs this same ``lambda_handler`` on each request): the 300 s budget, and ``stream: true`` relayed as it comes."""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.domain.responses import ResponsesRequest
from imagecore.domain.responses_schema import ResponseObject
from imagecore.edge.resolver import ERROR_CONTENT, answer_content, create_resolver, serve
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import ResponsesSettings
from imagecore.usecases.idempotency import Once
from imagecore.usecases.respond import RespondCommand, respond
from imagecore.usecases.respond_runtime import ResponsesRuntime
from imagecore.usecases.response_codec import EventSink

app = create_resolver()


@cache
def runtime() -> ResponsesRuntime:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return ResponsesRuntime.from_settings(ResponsesSettings.from_environment())


@app.post(
    "/v1/responses",
    summary="Create a response with the image_generation tool (conversational image generation and editing)",
    responses={
        200: {
            "description": (
                "OpenAI's response object; each image_generation_call item carries a presigned url beside result "
                "(result is null with X-Image-Result: url). With stream: true, text/event-stream of the Responses "
                "events (response.created ... response.completed)."
            ),
            "content": answer_content(ResponseObject),
        },
        400: {"description": "Invalid request, or refused by the upstream's policy", "content": ERROR_CONTENT},
        404: {
            "description": "previous_response_id is not a response of yours (or has expired)",
            "content": ERROR_CONTENT,
        },
        409: {"description": "The same Idempotency-Key is still running", "content": ERROR_CONTENT},
        429: {"description": "Over the key's budgets or the client token's max_images", "content": ERROR_CONTENT},
        502: {"description": "The upstream failed", "content": ERROR_CONTENT},
        504: {"description": "The upstream did not answer in time", "content": ERROR_CONTENT},
    },
)
def create_response(
    request: Annotated[ResponsesRequest, Body()],
    runtime: Annotated[ResponsesRuntime, Depends(runtime)],
) -> Response[str]:
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    command = RespondCommand(
        caller=caller,
        request=request,
        deadline=runtime.deadline(event, context),
        once=Once.of(event, context, scope="responses", payload=request.model_dump(exclude_none=True)),
        links_only=_header(event, "x-image-result").strip().lower() == "url",
        events=_event_sink() if request.stream else None,
    )
    answer = respond(command, runtime.responder)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=json.dumps(answer))


def _header(event: dict[str, Any], name: str) -> str:
    return next((str(v) for k, v in (event.get("headers") or {}).items() if k.lower() == name), "")


def _event_sink() -> EventSink:
    """The streamed edge's event channel (a stream: true that reached a buffered integration is refused)."""
    from imagecore.edge.stream_events import stream_channel

    channel = stream_channel()
    channel.expect_events()
    return channel.send


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="responses")


def streamed_app() -> Any:
    """The ASGI app ``run.sh`` serves behind the Lambda Web Adapter (uvicorn --factory)."""
    from imagecore.edge.streaming import function_edge

    return function_edge(lambda_handler, runtime().settings.stream_idle_limit_seconds)
