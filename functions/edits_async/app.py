"""POST /v1/images/edits/async: the same bodies as POST /v1/images/edits, answered at once with a task to poll.
The parameters are checked now; the images are kept for the worker, which reads and checks them when it runs the
task. An ordinary Lambda proxy integration; it never calls the upstream."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import estimated_cost
from imagecore.accounts.caller import caller_of
from imagecore.domain.models import TaskObject
from imagecore.edge.edit_requests import EDIT_ERRORS, multipart_body
from imagecore.edge.request_body import JSON, MULTIPART, content_type_of
from imagecore.edge.resolver import create_resolver, serve
from imagecore.edge.task_answers import ACCEPTED_HEADERS, task_accepted
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import EditTaskSettings, ImageSettings
from imagecore.storage.store import UploadStore
from imagecore.usecases.idempotency import Once
from imagecore.usecases.pending_edits import PendingEdit, pending_from_multipart, pending_from_uploads
from imagecore.usecases.submit import TaskDeps, TaskSubmission, submit_task

app = create_resolver()


@cache
def deps() -> TaskDeps:
    """Built once per execution environment (cold start); tests replace it via ``app.dependency_overrides``."""
    return TaskDeps.from_settings(EditTaskSettings.from_environment())


@cache
def upload_store() -> UploadStore:
    return UploadStore(deps().store.s3, deps().settings.images_bucket)


def read_pending_edit(event: dict[str, Any], settings: ImageSettings) -> PendingEdit:
    """An async edit's request, its images left for the worker to read and check."""
    assert isinstance(settings, EditTaskSettings)
    if content_type_of(event).lower().startswith(JSON):
        return pending_from_uploads(event.get("body") or "")
    return pending_from_multipart(multipart_body(event, settings), content_type_of(event))


@app.post(
    "/v1/images/edits/async",
    summary="Edit or combine images, as a task to poll",
    description=(
        "The same bodies as /v1/images/edits, answered at once: the parameters are checked now, the images when "
        "the task runs (a bad image ends the task failed, with the error the synchronous route would give)."
    ),
    responses={
        202: {
            "description": "The task; poll its Location",
            "content": {"application/json": {"model": TaskObject}},
            "headers": ACCEPTED_HEADERS,
        },
        **EDIT_ERRORS,
    },
)
def edit_images_async(
    deps: Annotated[TaskDeps, Depends(deps)],
    uploads: Annotated[UploadStore, Depends(upload_store)],
) -> Response[str]:  # status and headers of its own
    event, context = app.current_event.raw_event, app.lambda_context
    caller = caller_of(event)
    edit = read_pending_edit(event, deps.settings)
    edit.parameters.check_task()
    submission = TaskSubmission(
        caller,
        kind="edit",
        parameters=edit.parameters,
        request=edit.parameters.model_dump(exclude_none=True, exclude={"images", "mask"}),
        cost=estimated_cost(edit.parameters, reference_images=edit.images),
        once=Once.of(event, context, scope="edits/async", payload=edit.fingerprint),
        pending=edit,
    )
    task = submit_task(submission, deps, uploads)
    return task_accepted(event, task, deps.now(), deps.store.presign, scheme=deps.settings.public_url_scheme)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="edits", accepted_content_types=(MULTIPART, JSON))
