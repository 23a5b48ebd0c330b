"""The HTTP answers about async tasks: where a task is polled, the 202 that accepts one and the 200 that
shows one. Never cached: they carry task states and presigned URLs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from imagecore.request_body import headers_of
from imagecore.tasks import RETRY_AFTER_SECONDS, Task, task_view

NO_STORE = {"Cache-Control": "no-store"}


def poll_url(event: dict[str, Any], task_id: str) -> str:
    """Where the caller polls a task, on the host and base path it called (stage or custom-domain mapping)."""
    headers = headers_of(event)
    context = event.get("requestContext") or {}
    host = context.get("domainName") or headers.get("host") or "localhost"
    scheme = (headers.get("x-forwarded-proto") or "https").split(",")[0].strip()
    full_path, route_path = str(context.get("path") or ""), str(event.get("path") or "")
    base = full_path[: -len(route_path)] if route_path and full_path.endswith(route_path) else ""
    return f"{scheme}://{host}{base}/v1/images/tasks/{task_id}"


def task_accepted(
    event: dict[str, Any], task: Task, now: int, presign: Callable[[str], str] = lambda key: key
) -> Response[str]:
    """202 with the task object, ``Location`` and ``Retry-After``. ``presign`` serves an idempotent replay of a
    task that has completed since (a fresh submit has no images yet)."""
    url = poll_url(event, task.id)
    view = task_view(task, now, presign=presign, poll_url=url)
    headers = {"Location": url, "Retry-After": str(RETRY_AFTER_SECONDS), **NO_STORE}
    return Response(
        status_code=202, content_type=content_types.APPLICATION_JSON, body=json.dumps(view), headers=headers
    )


def task_shown(view: dict[str, Any]) -> Response[str]:
    """200 with the task object as it stands."""
    return Response(200, content_types.APPLICATION_JSON, json.dumps(view), headers=dict(NO_STORE))
