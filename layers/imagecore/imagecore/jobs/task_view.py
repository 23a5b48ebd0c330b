"""The task object a client polls, as sub2api answers it: its status, its previews while it runs, and when done the
synchronous answer with fresh presigned URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagecore.jobs.tasks import TASK_OBJECT, Task, task_timeout_error
from imagecore.jobs.webhook_state import webhook_view
from imagecore.platform.observability import logger
from imagecore.storage.store import StorageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from imagecore.storage.store import ImageStore


def task_view(task: Task, now: int, presign: Callable[[str], str], poll_url: str | None = None) -> dict[str, Any]:
    """The task object as sub2api answers it."""
    view: dict[str, Any] = {
        "id": task.id,
        "task_id": task.id,
        "object": TASK_OBJECT,
        "status": task.status,
        "created_at": task.created_at,
        "expires_at": task.expires_at,
    }
    if poll_url:
        view["poll_url"] = poll_url
    if task.webhook_url is not None:
        view["webhook"] = webhook_view(task.webhook)
    if task.overdue(now):
        view.update(status="failed", http_status=504, error=task_timeout_error())
    elif task.status == "processing" and task.partial_images:
        # The picture forming: each preview stored so far, freshly presigned.
        view["partial_images"] = [
            {"index": p["index"], "url": presign(p["key"]), "created_at": p["created_at"]}
            for p in sorted(task.partial_images, key=lambda p: p["index"])
        ]
    elif task.status == "completed" and task.result is not None:
        result = answer_body(task.result, presign)
        view.update(http_status=200, image_url=result["data"][0]["url"], result=result, completed_at=task.completed_at)
    elif task.status == "failed":
        view.update(http_status=task.http_status, error=task.error, completed_at=task.completed_at)
    return view


def full_result(images: ImageStore, compact: dict[str, Any]) -> dict[str, Any]:
    """A result the task record keeps without its revised prompts, made whole again from its ``result.json``;
    when S3 cannot read it the images are still answered (without revised prompts)."""
    try:
        document = images.read_json(compact["manifest"])
    except StorageError:
        logger.warning("task result manifest not read", extra={"key": compact["manifest"]})
        return compact
    return document or compact


def answer_body(stored: dict[str, Any], presign: Callable[[str], str]) -> dict[str, Any]:
    """The synchronous answer for a stored result, with fresh presigned URLs."""
    return {
        "created": stored["created"],
        # The same item shape as the synchronous answer (ImageData): b64_json is there, null.
        "data": [
            {"url": presign(ref["key"]), "b64_json": None, "revised_prompt": ref.get("revised_prompt")}
            for ref in stored["images"]
        ],
        "model": stored["model"],
        "size": stored["size"],
        "quality": stored["quality"],
        "output_format": stored["output_format"],
        "background": stored.get("background"),
        "usage": stored.get("usage"),
    }
