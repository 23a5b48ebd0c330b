"""Submitting an async task: its record written, then its job queued on SQS; a task whose job cannot be queued is
failed at once."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.accounts.token_usage import TokenHold
from imagecore.jobs.tasks import Task, TaskKind, TaskStore, TaskStoreError
from imagecore.jobs.webhook_urls import RefusedUrl, UrlPolicy
from imagecore.platform import aws

if TYPE_CHECKING:
    pass


class JobQueue:
    """The jobs queue (SQS): one message per task, ``{"task_id": ...}``."""

    def __init__(self, queue_url: str, *, region: str) -> None:
        self._region = region
        self._url = queue_url

    @cached_property
    def _sqs(self) -> Any:
        """Made on first use (the first task queued), not at a cold start that may never queue one."""
        return aws.client("sqs", region_name=self._region)

    @property
    def client(self) -> Any:
        return self._sqs

    def send(self, body: dict[str, Any]) -> None:
        try:
            self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(body))
        except (BotoCoreError, ClientError) as exc:
            raise TaskStoreError(f"send_message: {type(exc).__name__}") from exc


class TaskSubmitter:
    """Makes the task record, then queues its job; a task whose job cannot be queued is failed at once, never
    left ``processing``."""

    def __init__(self, tasks: TaskStore, queue: JobQueue, webhook_urls: UrlPolicy | None = None) -> None:
        self.tasks = tasks
        self.queue = queue
        self.webhook_urls = webhook_urls or UrlPolicy()

    def check_webhook_url(self, url: str | None) -> None:
        """A 400 on ``webhook_url`` unless the URL may be called (``imagecore.jobs.webhook_urls``)."""
        if url is None:
            return
        try:
            self.webhook_urls.check(url)
        except RefusedUrl as refused:
            raise refused.as_invalid_request() from None

    def submit(
        self,
        *,
        task_id: str,
        owner: str,
        kind: TaskKind,
        request: dict[str, Any],
        folder: str,
        inputs: list[dict[str, str]] | None = None,
        token_hold: TokenHold | None = None,
        max_concurrent: int | None = None,
        webhook_url: str | None = None,
    ) -> Task:
        self.check_webhook_url(webhook_url)
        now = self.tasks.now()
        task = Task(
            id=task_id,
            owner=owner,
            kind=kind,
            request=request,
            folder=folder,
            inputs=inputs or [],
            created_at=now,
            updated_at=now,
            token_hold=token_hold,
            max_concurrent=max_concurrent,
            webhook_url=webhook_url,
        )
        self.tasks.create(task)
        try:
            self.queue.send({"task_id": task.id})
        except TaskStoreError:
            self.tasks.fail(
                task.id, 503, {"type": "server_error", "code": "queue_unavailable", "message": "not queued"}
            )
            raise
        return task
