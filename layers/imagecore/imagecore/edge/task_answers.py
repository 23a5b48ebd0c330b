"""The HTTP answers about async tasks: where a task is polled, the 202 that accepts one and the 200 that
shows one. Never cached: they carry task states and presigned URLs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from imagecore.edge.urls import api_url
from imagecore.jobs.task_view import task_view
from imagecore.jobs.tasks import RETRY_AFTER_SECONDS, Task

NO_STORE = {"Cache-Control": "no-store"}


# The 202's headers, as the OpenAPI document shows them.
ACCEPTED_HEADERS: dict[str, Any] = {
    "Location": {"description": "The task's poll URL", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds before the first poll", "schema": {"type": "string"}},
}


def poll_url(event: dict[str, Any], task_id: str, *, scheme: str = "https") -> str:
    """Where the caller polls a task (``api_url``)."""
    return api_url(event, f"/v1/images/tasks/{task_id}", scheme=scheme)


def task_accepted(
    event: dict[str, Any],
    task: Task,
    now: int,
    presign: Callable[[str], str] = lambda key: key,
    *,
    scheme: str = "https",
) -> Response[str]:
    """202 with the task object, ``Location`` and ``Retry-After``. ``presign`` serves an idempotent replay of a
    task that has completed since (a fresh submit has no images yet)."""
    url = poll_url(event, task.id, scheme=scheme)
    view = task_view(task, now, presign=presign, poll_url=url)
    headers = {"Location": url, "Retry-After": str(RETRY_AFTER_SECONDS), **NO_STORE}
    return Response(
        status_code=202, content_type=content_types.APPLICATION_JSON, body=json.dumps(view), headers=headers
    )


def task_shown(view: dict[str, Any]) -> Response[str]:
    """200 with the task object as it stands."""
    return Response(200, content_types.APPLICATION_JSON, json.dumps(view), headers=dict(NO_STORE))
