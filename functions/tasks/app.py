"""GET /v1/images/tasks/{id}: an async task as sub2api shows it, with fresh presigned URLs once completed.
Only the key that submitted a task (or a client token it minted) may read it: any other key, like an unknown
id, gets a 404. A key revoked and made again under the same name is another key and reads nothing of the old's."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.domain.errors import NotFound, TasksUnavailable
from imagecore.domain.models import TASK_ID, TaskObject, matches
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.edge.task_answers import NO_STORE, task_shown
from imagecore.jobs.task_view import full_result, task_view
from imagecore.jobs.tasks import TaskStore, TaskStoreError
from imagecore.platform.observability import current_record, logger, metrics, tracer
from imagecore.platform.route_settings import TaskReadSettings
from imagecore.storage.store import ImageStore, make_s3_client

app = create_resolver()


@cache
def stores() -> tuple[TaskStore, ImageStore]:
    settings = TaskReadSettings.from_environment()
    images = ImageStore(
        make_s3_client(settings.aws_region, settings.s3_endpoint_url),
        settings.images_bucket,
        settings.presign_expiry_seconds,
    )
    return TaskStore(settings.tasks_table, region=settings.aws_region), images


@app.get(
    "/v1/images/tasks/<task_id>",
    summary="Read an async task",
    responses={
        200: {"description": "The task", "content": {"application/json": {"model": TaskObject}}},
        404: {"description": "No such task for this key", "content": ERROR_CONTENT},
        503: {"description": "Tasks cannot be read right now", "content": ERROR_CONTENT},
    },
)
def get_task(
    task_id: str, stores: Annotated[tuple[TaskStore, ImageStore], Depends(stores)]
) -> Response[str]:  # status and headers of its own
    tasks, images = stores
    owner = caller_of(app.current_event.raw_event).owner_id
    record = current_record()
    record.task_id = task_id
    try:
        task = tasks.get(task_id) if matches(TASK_ID, task_id) else None
    except TaskStoreError:
        raise TasksUnavailable("Tasks cannot be read right now; try again.") from None
    if task is None or task.owner != owner:
        raise NotFound(f"No task '{task_id[:64]}'.", param="id", code="task_not_found", headers=dict(NO_STORE))
    if task.result and task.result.get("manifest"):
        task.result = full_result(images, task.result)
    return task_shown(task_view(task, tasks.now(), presign=images.presign))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="tasks")
