"""The way a task's end becomes a webhook delivery, and each delivery's state on the task record.

Nothing is lost between ending a task and queueing its delivery because there is no such step: the update that
ends a task (``TaskStore.complete`` / ``fail``) is itself the outbox. The tasks table's stream carries that
change (the status leaving ``processing``, on a task with a ``webhook_url``) to the webhook function, which puts
the first attempt on the webhooks queue; the stream retries until it has (and keeps its records 24 hours). A
redelivered worker message finds the task ended and changes nothing, so the stream carries no second end.

Each attempt is a queue message ``{"task_id", "attempt", "not_before"}``. Before it sends, an attempt claims its
number on the task (``claim_attempt``): a second message for the same attempt (the stream delivered the end
twice; the queue delivered a message twice) finds it taken and is dropped, while the same message delivered
again after a crash takes it again. Once the delivery is ``delivered`` or ``failed`` no message sends anything.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.jobs.tasks import TASK_TTL_SECONDS, Task, TaskStoreError
from imagecore.jobs.webhook_state import WebhookStatus
from imagecore.platform import aws

# SQS delays a message 15 minutes at most: a longer wait is that delay again, until its "not before".
MAX_QUEUE_DELAY_SECONDS = 900
ENDED = ("completed", "failed")


def parse_schedule(text: str) -> tuple[int, ...]:
    """``"0,5,300"`` -> (0, 5, 300): the wait in seconds before each attempt, the first one's included."""
    waits = tuple(int(part) for part in text.split(",") if part.strip())
    if not waits or any(wait < 0 for wait in waits):
        raise ValueError("a retry schedule is one or more waits in seconds, none negative")
    return waits


def ended_task_id(record: dict[str, Any]) -> str | None:
    """The id of the task a tasks-table stream record ends, when that task has a webhook; None for any other
    change (a claim, a preview, a delivery's own state, an event job, a new or expired task)."""
    change = record.get("dynamodb") or {}
    old, new = change.get("OldImage") or {}, change.get("NewImage") or {}
    if record.get("eventName") != "MODIFY" or "webhook_url" not in new:
        return None
    was, now = (old.get("status") or {}).get("S"), (new.get("status") or {}).get("S")
    if was != "processing" or now not in ENDED:
        return None
    task_id = (new.get("id") or {}).get("S")
    return str(task_id) if task_id else None


class WebhookQueue:
    """The webhooks queue (SQS): one message per attempt."""

    def __init__(self, queue_url: str, *, region: str) -> None:
        self._url = queue_url
        self._region = region

    @cached_property
    def client(self) -> Any:
        return aws.client("sqs", region_name=self._region)

    def send(self, task_id: str, attempt: int, *, not_before: int, delay: int) -> None:
        body = {"task_id": task_id, "attempt": attempt, "not_before": not_before}
        try:
            self.client.send_message(
                QueueUrl=self._url,
                MessageBody=json.dumps(body),
                DelaySeconds=max(0, min(delay, MAX_QUEUE_DELAY_SECONDS)),
            )
        except (BotoCoreError, ClientError) as exc:
            raise TaskStoreError(f"send_message: {type(exc).__name__}") from exc


class WebhookRecords:
    """The delivery's state in the task's record (the tasks table)."""

    def __init__(self, table_name: str, *, region: str) -> None:
        self._table_name = table_name
        self._region = region

    @cached_property
    def _table(self) -> Any:
        return aws.resource("dynamodb", region_name=self._region).Table(self._table_name)

    @property
    def client(self) -> Any:
        return self._table.meta.client

    def claim_attempt(self, task_id: str, attempt: int, claim: str, now: int) -> Task | None:
        """Take attempt number ``attempt`` for the message ``claim``: the task as it stands then, or None when
        this attempt is another message's, or the delivery is over (or the task gone). The task's expiry moves
        on with each attempt, so the record outlives the schedule."""
        from boto3.dynamodb.conditions import Attr

        mine = Attr("webhook.claim").eq(claim) & Attr("webhook.attempts").eq(attempt)
        try:
            answer = self._table.update_item(
                Key={"id": task_id},
                UpdateExpression="SET #w.#a = :k, #w.#c = :c, updated_at = :now, expires_at = :e",
                ConditionExpression=Attr("webhook.status").eq("pending")
                & Attr("status").is_in(list(ENDED))
                & (Attr("webhook.attempts").eq(attempt - 1) | mine),
                ExpressionAttributeNames={"#w": "webhook", "#a": "attempts", "#c": "claim"},
                ExpressionAttributeValues={":k": attempt, ":c": claim, ":now": now, ":e": now + TASK_TTL_SECONDS},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise TaskStoreError(f"claim webhook {task_id}: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise TaskStoreError(f"claim webhook {task_id}: {type(exc).__name__}") from exc
        return Task.from_item(answer["Attributes"])

    def record(self, task_id: str, claim: str, status: WebhookStatus, last_status: int | str) -> None:
        """What the attempt held by ``claim`` got; ``status`` pending while more attempts follow."""
        from boto3.dynamodb.conditions import Attr

        try:
            self._table.update_item(
                Key={"id": task_id},
                UpdateExpression="SET #w.#s = :s, #w.#l = :l",
                ConditionExpression=Attr("webhook.claim").eq(claim) & Attr("webhook.status").eq("pending"),
                ExpressionAttributeNames={"#w": "webhook", "#s": "status", "#l": "last_status"},
                ExpressionAttributeValues={":s": status, ":l": last_status},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return  # another message's attempt took over meanwhile: its outcome is the one recorded
            raise TaskStoreError(f"record webhook {task_id}: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise TaskStoreError(f"record webhook {task_id}: {type(exc).__name__}") from exc
