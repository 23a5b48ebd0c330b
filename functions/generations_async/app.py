"""POST /v1/images/generations/async: validate, reserve what the task may cost, record it and queue it for the
worker, answer 202 with the task to poll. An ordinary Lambda proxy integration; it never calls the upstream."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import estimated_cost
from imagecore.accounts.caller import caller_of
from imagecore.domain.models import GenerationRequest, TaskObject
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.edge.task_answers import ACCEPTED_HEADERS, task_accepted
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import ImageSettings
from imagecore.usecases.idempotency import Once
from imagecore.usecases.submit import TaskDeps, TaskSubmission, submit_task

app = create_resolver()


@cache
def deps() -> TaskDeps:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return TaskDeps.from_settings(ImageSettings.from_environment())


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
    deps: Annotated[TaskDeps, Depends(deps)],
) -> Response[str]:  # status and headers of its own
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    request.check_task()
    submission = TaskSubmission(
        caller,
        kind="generation",
        parameters=request,
        request=request.model_dump(exclude_none=True),
        cost=estimated_cost(request),
        once=Once.of(event, context, scope="generations/async", payload=request.model_dump()),
    )
    task = submit_task(submission, deps)
    return task_accepted(event, task, deps.now(), deps.store.presign, scheme=deps.settings.public_url_scheme)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="generations")
