"""The HTTP answers about async tasks: where a task is polled, the 202 that accepts one and the 200 that
shows one. Never cached: they carry task states and presigned URLs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from imagecore.jobs.task_view import task_view
from imagecore.jobs.tasks import RETRY_AFTER_SECONDS, Task

NO_STORE = {"Cache-Control": "no-store"}


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?\Z")
_BASE_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]{1,128}){0,8}\Z")

# The 202's headers, as the OpenAPI document shows them.
ACCEPTED_HEADERS: dict[str, Any] = {
    "Location": {"description": "The task's poll URL", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds before the first poll", "schema": {"type": "string"}},
}


def poll_url(event: dict[str, Any], task_id: str, *, scheme: str = "https") -> str:
    """Where the caller polls a task, on the host and base path it called (stage or custom-domain mapping).

    Built from trusted values only: the scheme is the deployment's (API Gateway serves only HTTPS; the local
    stack's configuration says http), never ``X-Forwarded-Proto`` as sent; the host is API Gateway's
    ``domainName`` and the base path its ``requestContext.path``, each used only when it is a plain host or
    path. Otherwise the URL is relative to the host the caller used, which is still where the task is."""
    if scheme not in ("https", "http"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    context = event.get("requestContext") or {}
    host = str(context.get("domainName") or "")
    full_path, route_path = str(context.get("path") or ""), str(event.get("path") or "")
    base = full_path[: -len(route_path)] if route_path and full_path.endswith(route_path) else ""
    if not _BASE_PATH.match(base) or ".." in base:
        base = ""
    path = f"{base}/v1/images/tasks/{task_id}"
    return f"{scheme}://{host}{path}" if _HOST.match(host) else path


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
