"""Webhook deliveries: a task's end, announced to its ``webhook_url`` as the Standard Webhooks specification says.

Two steps, both in the webhook function:
- ``relay``: a tasks-table stream record that ends a task with a webhook puts its first attempt on the webhooks
  queue (see ``imagecore.jobs.webhook_outbox`` for why nothing is lost or doubled);
- ``deliver``: one attempt from the queue. It claims its number on the task, checks the URL again and POSTs the
  signed body to the address it checked; a 2xx is delivered, anything else waits on the queue for the next
  attempt of the schedule (a message delay, never a sleep: SQS delays 15 minutes at most, so a longer wait
  comes back early and goes round again until its ``not_before``), and after the last it is given up.

The body is ``{"type": "image.task.completed" | "image.task.failed", "timestamp": <ISO 8601>, "data": <the task
as GET /v1/images/tasks/{id} shows it then, fresh presigned URLs>}``, made anew at each attempt (its URLs must
outlive it, its timestamp must be recent); ``webhook-id`` is the same on every attempt: ``msg_<task id>``.
One log line per attempt (task id, attempt, status, latency, outcome; never the secret, the body or the URL's
query) and the metrics WebhooksDelivered / WebhooksRetried / WebhooksFailed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagecore.accounts.webhook_secrets import WebhookSecrets
from imagecore.jobs.task_view import full_result, task_view
from imagecore.jobs.tasks import Task
from imagecore.jobs.webhook_outbox import WebhookQueue, WebhookRecords, ended_task_id, parse_schedule
from imagecore.jobs.webhook_sender import Answer, WebhookSender, signed_headers
from imagecore.jobs.webhook_state import WebhookStatus
from imagecore.jobs.webhook_urls import RefusedUrl, UrlPolicy
from imagecore.platform.observability import count_webhook_attempt, logger
from imagecore.platform.route_settings import WebhookSettings
from imagecore.storage.store import ImageStore, make_s3_client

EVENT_TYPES = {"completed": "image.task.completed", "failed": "image.task.failed"}


def message_id(task_id: str) -> str:
    return f"msg_{task_id}"


@dataclass
class WebhookDeliveries:
    records: WebhookRecords
    queue: WebhookQueue
    secrets: WebhookSecrets
    images: ImageStore
    urls: UrlPolicy
    schedule: tuple[int, ...]
    sender: WebhookSender = field(default_factory=WebhookSender)
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> WebhookDeliveries:
        region = settings.aws_region
        return cls(
            records=WebhookRecords(settings.tasks_table, region=region),
            queue=WebhookQueue(settings.webhook_queue_url, region=region),
            secrets=WebhookSecrets(settings.webhook_secrets_table, settings.webhook_secrets_key_id, region=region),
            images=ImageStore(
                make_s3_client(region, settings.s3_endpoint_url),
                settings.images_bucket,
                settings.presign_expiry_seconds,
            ),
            urls=UrlPolicy(allow_loopback=settings.webhook_allow_loopback),
            schedule=parse_schedule(settings.webhook_retry_schedule),
        )

    def relay(self, record: dict[str, Any]) -> None:
        """A tasks-table stream record: the first attempt queued when it ends a task that has a webhook."""
        task_id = ended_task_id(record)
        if task_id is None:
            return
        wait = self.schedule[0]
        self.queue.send(task_id, 1, not_before=int(self.clock()) + wait, delay=wait)

    def deliver(self, body: str, queue_message_id: str) -> None:
        """One attempt from the webhooks queue (raises to have the message delivered again)."""
        try:
            message = json.loads(body)
            task_id, attempt = str(message["task_id"]), int(message["attempt"])
            not_before = int(message.get("not_before") or 0)
        except (ValueError, TypeError, KeyError):
            logger.error("webhook message dropped: not an attempt", extra={"message_id": queue_message_id})
            return
        now = int(self.clock())
        if not_before > now:  # a wait longer than SQS's longest delay: round again
            self.queue.send(task_id, attempt, not_before=not_before, delay=not_before - now)
            return
        task = self.records.claim_attempt(task_id, attempt, queue_message_id, now)
        if task is None:
            logger.info("webhook attempt skipped", extra={"task_id": task_id, "attempt": attempt})
            return
        started = time.monotonic()
        answer = self._attempt(task)
        latency_ms = int((time.monotonic() - started) * 1000)
        last = attempt >= len(self.schedule)
        status: WebhookStatus = "delivered" if answer.delivered else "failed" if last else "pending"
        self.records.record(task_id, queue_message_id, status, answer.shown)
        logger.info(
            "webhook attempt",
            extra={
                "task_id": task_id,
                "attempt": attempt,
                "webhook_status": status,
                "http_status": answer.status,
                "error": answer.error,
                "latency_ms": latency_ms,
                "event_type": EVENT_TYPES.get(task.status),
            },
        )
        count_webhook_attempt(status)
        if status == "pending":
            wait = self.schedule[attempt]
            self.queue.send(task_id, attempt + 1, not_before=int(self.clock()) + wait, delay=wait)

    def _attempt(self, task: Task) -> Answer:
        try:
            target = self.urls.check(task.webhook_url)
        except RefusedUrl:
            return Answer(error="refused_address")
        signing = self.secrets.signing_secrets(task.owner, create=True)
        assert signing is not None
        now = int(self.clock())
        body = json.dumps(self.payload(task, now), separators=(",", ":"))
        return self.sender.post(target, body, signed_headers(signing.all, message_id(task.id), now, body))

    def payload(self, task: Task, now: int) -> dict[str, Any]:
        if task.result and task.result.get("manifest"):
            task.result = full_result(self.images, task.result)
        return {
            "type": EVENT_TYPES[task.status],
            "timestamp": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "data": task_view(task, now, presign=self.images.presign),
        }
