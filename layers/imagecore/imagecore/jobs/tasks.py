"""Asynchronous tasks, shaped exactly like sub2api's (``docs/ASYNC_IMAGE_TASKS.md``): the record in DynamoDB
(here), the job on SQS (``jobs.submitter``), and the task object a client polls (``jobs.task_view``).

A task is ``processing`` until the worker completes or fails it. It expires 24 hours after its last update
(DynamoDB TTL) and may run 30 minutes at most: past that it reads as failed even if a worker never wrote so.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.accounts.token_usage import TokenHold
from imagecore.jobs.webhook_state import new_webhook_state, webhook_state
from imagecore.platform import aws
from imagecore.storage.store import image_folder

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from boto3.dynamodb.conditions import Attr


TASK_OBJECT = "image.generation.task"
RETRY_AFTER_SECONDS = 3
TASK_TTL_SECONDS = 24 * 3600
TASK_LIMIT_SECONDS = 30 * 60

TaskKind = Literal["generation", "edit"]
TaskStatus = Literal["processing", "completed", "failed"]


class TaskStoreError(Exception):
    """DynamoDB or SQS did not answer; the caller should be told to try again."""


class TaskBusy(Exception):
    """Another worker holds the task right now; the job should come back later."""


class JobIdentityMismatch(Exception):
    """A job message names an identity that belongs to another request: it may not borrow that job's result."""


@dataclass(frozen=True)
class JobClaim:
    """An event job's claim record: where the job stands and how many deliveries asked the upstream."""

    status: TaskStatus
    upstream_calls: int
    http_status: int | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    digest: str | None = None  # of the request that made the claim

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> JobClaim:
        return cls(
            digest=item.get("digest"),
            status=item["status"],
            upstream_calls=int(item.get("upstream_calls") or 0),
            http_status=int(item["http_status"]) if item.get("http_status") is not None else None,
            error=json.loads(item["error"]) if item.get("error") else None,
            result=json.loads(item["result"]) if item.get("result") else None,
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


def _json(value: Any) -> str:
    """JSON as UTF-8 text, not ASCII escapes: a prompt of emoji takes 4 bytes a character in the item, not 12."""
    return json.dumps(value, ensure_ascii=False)


def new_task_id() -> str:
    return "task_" + secrets.token_hex(16)


def task_folder(task_id: str) -> str:
    """Where a task's images go: a second run of the task finds them there."""
    return image_folder(datetime.now(UTC), task_id)


@dataclass
class Task:
    id: str
    owner: str  # the owner id of the key that submitted it (imagecore.accounts.auth): the only one that may read it
    kind: TaskKind
    request: dict[str, Any]  # the validated parameters
    folder: str  # where its images go: a second run finds them there
    created_at: int
    updated_at: int
    status: TaskStatus = "processing"
    inputs: list[dict[str, str]] = field(default_factory=list)  # edits: {"key", "filename", "role"}
    result: dict[str, Any] | None = None  # a StoredResult as JSON
    error: dict[str, Any] | None = None
    http_status: int | None = None
    completed_at: int | None = None
    claimed_until: int | None = None
    upstream_calls: int = 0  # deliveries that got as far as asking the upstream: never more than one
    # Previews stored while the task runs (asked with partial_images): {"index", "key", "created_at"}.
    partial_images: list[dict[str, Any]] = field(default_factory=list)
    # The images it counted against its client token when it was queued (a token with max_images).
    token_hold: TokenHold | None = None
    # Its key's limit of image requests in flight: the task counts in it while the worker runs it.
    max_concurrent: int | None = None
    # Where its end is announced (imagecore.jobs.webhook_outbox), and how that delivery stands.
    webhook_url: str | None = None
    webhook: dict[str, Any] | None = None

    @property
    def expires_at(self) -> int:
        return self.updated_at + TASK_TTL_SECONDS

    def overdue(self, now: int) -> bool:
        return self.status == "processing" and now - self.created_at > TASK_LIMIT_SECONDS

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "owner": self.owner,
            "kind": self.kind,
            "status": self.status,
            "request": _json(self.request),
            "folder": self.folder,
            "inputs": _json(self.inputs),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }
        for name in ("result", "error"):
            value = getattr(self, name)
            if value is not None:
                item[name] = _json(value)
        for name in ("http_status", "completed_at", "claimed_until", "max_concurrent"):
            value = getattr(self, name)
            if value is not None:
                item[name] = value
        if self.token_hold is not None:
            item["token_id"], item["token_images"] = self.token_hold.token_id, self.token_hold.images
        if self.webhook_url is not None:
            item["webhook_url"], item["webhook"] = self.webhook_url, self.webhook or new_webhook_state()
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Task:
        def number(name: str) -> int | None:
            return int(item[name]) if item.get(name) is not None else None

        return cls(
            id=item["id"],
            owner=item["owner"],
            kind=item["kind"],
            status=item["status"],
            request=json.loads(item["request"]),
            folder=item["folder"],
            inputs=json.loads(item.get("inputs") or "[]"),
            created_at=int(item["created_at"]),
            updated_at=int(item["updated_at"]),
            result=json.loads(item["result"]) if item.get("result") else None,
            error=json.loads(item["error"]) if item.get("error") else None,
            http_status=number("http_status"),
            completed_at=number("completed_at"),
            claimed_until=number("claimed_until"),
            upstream_calls=number("upstream_calls") or 0,
            partial_images=[
                {"index": int(p["index"]), "key": str(p["key"]), "created_at": int(p["created_at"])}
                for p in item.get("partial_images") or []
            ],
            token_hold=_token_hold(item),
            max_concurrent=number("max_concurrent"),
            webhook_url=item.get("webhook_url"),
            webhook=webhook_state(item.get("webhook")),
        )


def _token_hold(item: Mapping[str, Any]) -> TokenHold | None:
    if not item.get("token_id"):
        return None
    return TokenHold(str(item["token_id"]), int(item.get("token_images") or 0))


@dataclass(frozen=True)
class Ended:
    """What the one call that ended a task (or job) found on it: the client token's images it held, and how many
    deliveries had claimed it to ask the upstream."""

    token_hold: TokenHold | None
    upstream_calls: int

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Ended:
        return cls(_token_hold(item), int(item.get("upstream_calls") or 0))


def _attr(name: str) -> Attr:
    """A condition on the attribute ``name`` (boto3's conditions are imported with the first task written)."""
    from boto3.dynamodb.conditions import Attr

    return Attr(name)


class TaskStore:
    """Task records in DynamoDB (partition key ``id``, TTL attribute ``expires_at``)."""

    def __init__(self, table_name: str, *, region: str, clock: Callable[[], float] = time.time) -> None:
        self._table_name = table_name
        self._region = region
        self._clock = clock

    @cached_property
    def _table(self) -> Any:
        """Made on first use: most image requests never touch a task, so a cold start does not load DynamoDB's
        service and resource models (nor boto3) for them."""
        return aws.resource("dynamodb", region_name=self._region).Table(self._table_name)

    @property
    def client(self) -> Any:
        """The low-level DynamoDB client under the table (its botocore events are where faults are injected)."""
        return self._table.meta.client

    def now(self) -> int:
        return int(self._clock())

    def create(self, task: Task) -> None:
        self._call(self._table.put_item, Item=task.to_item(), ConditionExpression=_attr("id").not_exists())

    def get(self, task_id: str) -> Task | None:
        item = self._call(self._table.get_item, Key={"id": task_id}, ConsistentRead=True).get("Item")
        return Task.from_item(item) if item else None

    def claim(self, task_id: str, *, hold_seconds: int) -> Task | None:
        """Take the task for the one run that asks the upstream: None when it is already finished (or gone);
        ``TaskBusy`` while another delivery holds it. Each claim counts in ``upstream_calls``, so a delivery that
        finds the count above one knows an earlier delivery got that far and died."""
        now = self.now()
        try:
            answer = self._table.update_item(
                Key={"id": task_id},
                UpdateExpression="SET claimed_until = :until, updated_at = :now, expires_at = :expires "
                "ADD upstream_calls :one",
                ConditionExpression=_attr("status").eq("processing")
                & (_attr("claimed_until").not_exists() | _attr("claimed_until").lt(now)),
                ExpressionAttributeValues={
                    ":until": now + hold_seconds,
                    ":now": now,
                    ":expires": now + TASK_TTL_SECONDS,
                    ":one": 1,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise TaskStoreError(f"claim {task_id}: {_code(exc)}") from exc
            task = self.get(task_id)
            if task is None or task.status != "processing":
                return None
            raise TaskBusy(task_id) from None
        except BotoCoreError as exc:
            raise TaskStoreError(f"claim {task_id}: {type(exc).__name__}") from exc
        return Task.from_item(answer["Attributes"])

    def add_partial(self, task_id: str, index: int, key: str, created_at: int) -> None:
        """Note a preview the running task has stored; its poll answers list it until the task ends."""
        entry = {"index": index, "key": key, "created_at": created_at}
        try:
            self._table.update_item(
                Key={"id": task_id},
                UpdateExpression="SET partial_images = list_append(if_not_exists(partial_images, :none), :one)",
                ConditionExpression=_attr("status").eq("processing"),
                ExpressionAttributeValues={":none": [], ":one": [entry]},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return  # already finished: the preview no longer matters
            raise TaskStoreError(f"partial {task_id}: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise TaskStoreError(f"partial {task_id}: {type(exc).__name__}") from exc

    def claim_job(self, job_key: str, digest: str, *, hold_seconds: int) -> JobClaim:
        """The claim of an event job, keyed by its identity (its folder) and bound to the digest of its request:
        the first delivery makes it, a redelivery of the same request takes it again once the hold has lapsed,
        a message borrowing the identity with another request is refused (``JobIdentityMismatch``), a delivery
        while another holds it is ``TaskBusy``. A finished job's claim comes back unchanged, with its outcome."""
        now = self.now()
        try:
            answer = self._table.update_item(
                Key={"id": job_key},
                UpdateExpression="SET #k = :kind, digest = if_not_exists(digest, :d), #s = if_not_exists(#s, :p), "
                "created_at = if_not_exists(created_at, :now), claimed_until = :until, updated_at = :now, "
                "expires_at = :expires ADD upstream_calls :one",
                ConditionExpression=_attr("id").not_exists()
                | (
                    _attr("digest").eq(digest)
                    & _attr("status").eq("processing")
                    & (_attr("claimed_until").not_exists() | _attr("claimed_until").lt(now))
                ),
                ExpressionAttributeNames={"#k": "kind", "#s": "status"},
                ExpressionAttributeValues={
                    ":kind": "event",
                    ":d": digest,
                    ":p": "processing",
                    ":until": now + hold_seconds,
                    ":now": now,
                    ":expires": now + TASK_TTL_SECONDS,
                    ":one": 1,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise TaskStoreError(f"claim {job_key}: {_code(exc)}") from exc
            claim = self.job_claim(job_key)
            if claim is None:  # expired between the two calls: the next delivery makes it anew
                raise TaskBusy(job_key) from None
            if claim.digest != digest:
                raise JobIdentityMismatch(job_key) from None
            if claim.status == "processing":
                raise TaskBusy(job_key) from None
            return claim
        except BotoCoreError as exc:
            raise TaskStoreError(f"claim {job_key}: {type(exc).__name__}") from exc
        return JobClaim.from_item(answer["Attributes"])

    def job_claim(self, job_key: str) -> JobClaim | None:
        """An event job's claim as it stands (None when there is none), without taking it."""
        item = self._call(self._table.get_item, Key={"id": job_key}, ConsistentRead=True).get("Item")
        return JobClaim.from_item(item) if item else None

    def complete(self, task_id: str, result: dict[str, Any]) -> Ended | None:
        """Complete the task (or job): what it was as this call ended it, None when it had ended already."""
        now = self.now()
        return self._finish(
            task_id,
            "SET #s = :s, #r = :r, http_status = :h, completed_at = :now, updated_at = :now, expires_at = :e "
            "REMOVE claimed_until",
            {":s": "completed", ":r": _json(result), ":h": 200, ":now": now, ":e": now + TASK_TTL_SECONDS},
            {"#s": "status", "#r": "result"},
        )

    def fail(self, task_id: str, http_status: int, error: dict[str, Any]) -> Ended | None:
        """Fail the task (or job): what it was as this call ended it, None when it had ended already."""
        now = self.now()
        return self._finish(
            task_id,
            "SET #s = :s, #e = :err, http_status = :h, completed_at = :now, updated_at = :now, expires_at = :e "
            "REMOVE claimed_until",
            {":s": "failed", ":err": _json(error), ":h": http_status, ":now": now, ":e": now + TASK_TTL_SECONDS},
            {"#s": "status", "#e": "error"},
        )

    def _finish(self, task_id: str, expression: str, values: dict[str, Any], names: dict[str, str]) -> Ended | None:
        try:
            answer = self._table.update_item(
                Key={"id": task_id},
                UpdateExpression=expression,
                # Only a job still running is finished: the first outcome stands, a late delivery cannot turn a
                # completed task into a failed one.
                ConditionExpression=_attr("status").eq("processing"),
                ExpressionAttributeValues=values,
                ExpressionAttributeNames=names,
                # The one call that ends it reads what it held (its client token's images) as it ends it.
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None  # finished already, or expired and gone
            raise TaskStoreError(f"finish {task_id}: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise TaskStoreError(f"finish {task_id}: {type(exc).__name__}") from exc
        return Ended.from_item(answer.get("Attributes") or {})

    @staticmethod
    def _call(method: Callable[..., Mapping[str, Any]], **kwargs: Any) -> Mapping[str, Any]:
        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise TaskStoreError(f"{method.__name__}: {type(exc).__name__}") from exc


def task_timeout_error() -> dict[str, Any]:
    """The error of a task that ran past its limit, whether the worker found it so or a reader did."""
    return {
        "type": "upstream_error",
        "code": "task_timeout",
        "message": f"The task did not finish within {TASK_LIMIT_SECONDS // 60} minutes.",
    }
