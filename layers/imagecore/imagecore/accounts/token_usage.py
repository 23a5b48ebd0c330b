"""The one thing stored per client token: how many images it has used or reserved, against its ``max_images``.

A request reserves its ``n`` images with one conditional atomic update before the upstream is called, so
concurrent requests can never together pass the limit; once the images are made it gives back what it did not
use (a failure before the upstream billed anything gives back everything). The item expires with the token.

An async task counts its ``n`` images when it is queued; the count it holds (``TokenHold``) travels with the task,
and the worker gives back what the task did not make when it ends the task, once: only the call that moves the
task out of ``processing`` gives back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.domain.errors import BILLED_FAILURE_CODES, ImageServiceError, TokenBudgetExceeded
from imagecore.platform import aws
from imagecore.platform.observability import logger

T = TypeVar("T")
# The count outlives the token a little, for whoever reads it after the last request.
KEEP_AFTER_EXPIRY_SECONDS = 3600


@dataclass(frozen=True)
class ClientTokenGrant:
    """The client token a request came with, as the authorizer vouched for it."""

    id: str
    expires_at: int
    max_images: int | None


@dataclass(frozen=True)
class TokenHold:
    """The images an async task counted against its client token when it was queued."""

    token_id: str
    images: int


# The failures after which the upstream may have made (and billed) the images: they stay counted.
_BILLED_FAILURES = frozenset({"storage_unavailable", "job_interrupted", *BILLED_FAILURE_CODES})
# The failures that say nothing of the upstream: billed only if a delivery got as far as asking it.
_UNKNOWN_FAILURES = frozenset({"job_abandoned", "task_timeout"})


def images_to_give_back(hold: TokenHold, made: int | None, failure: str | None, upstream_calls: int) -> int:
    """How many of the images ``hold`` counted an ended task gives back: those it did not make (``made``, when it
    completed), everything when it failed before the upstream billed anything, nothing when the upstream may have
    made images that were then lost."""
    if made is not None:
        return max(0, hold.images - made)
    if failure in _BILLED_FAILURES or (failure in _UNKNOWN_FAILURES and upstream_calls > 0):
        return 0
    return hold.images


class TokenUsageUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "token_usage_unavailable"


class TokenImageCounter:
    def __init__(self, table_name: str, *, region: str, client: Any = None) -> None:
        self._table = table_name
        self._region = region
        self._client = client

    @cached_property
    def _dynamodb(self) -> Any:
        """The DynamoDB client, made on first use (most requests carry no client token)."""
        return self._client or aws.client("dynamodb", region_name=self._region)

    def reserve(self, token_id: str, n: int, *, limit: int, expires_at: int) -> None:
        """Count ``n`` more images against the token, or raise ``TokenBudgetExceeded`` (nothing counted)."""
        if n > limit:
            raise _exceeded(n, limit, expires_at)
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"id": {"S": token_id}},
                UpdateExpression="ADD images :n SET expires_at = if_not_exists(expires_at, :expires)",
                ConditionExpression="attribute_not_exists(images) OR images <= :room",
                ExpressionAttributeValues={
                    ":n": {"N": str(n)},
                    ":room": {"N": str(limit - n)},
                    ":expires": {"N": str(expires_at + KEEP_AFTER_EXPIRY_SECONDS)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise _exceeded(n, limit, expires_at) from None
            raise _unavailable() from exc
        except BotoCoreError as exc:
            raise _unavailable() from exc

    def count_more(self, token_id: str, n: int) -> None:
        """Count ``n`` images made beyond what was reserved (a response whose text model drew more than one):
        they were made and billed, so they count whatever the limit; the token's next request is refused if it
        is now over. A failure here only leaves the count low."""
        if n > 0:
            self._adjust(token_id, n, "token images not counted")

    def release(self, token_id: str, n: int) -> None:
        """Give back ``n`` reserved images that were not made. A failure here only leaves the count high."""
        if n > 0:
            self._adjust(token_id, -n, "token images not given back")

    def _adjust(self, token_id: str, delta: int, failure: str) -> None:
        """Add ``delta`` to a counted token's images, unconditionally; a failure is logged as ``failure``."""
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"id": {"S": token_id}},
                UpdateExpression="ADD images :delta",
                ConditionExpression="attribute_exists(images)",
                ExpressionAttributeValues={":delta": {"N": str(delta)}},
            )
        except (BotoCoreError, ClientError) as exc:
            logger.warning(failure, extra={"token_id": token_id, "error": type(exc).__name__})


def _exceeded(n: int, limit: int, expires_at: int) -> TokenBudgetExceeded:
    left = max(1, expires_at - int(time.time()))
    return TokenBudgetExceeded(
        f"This client token may create {limit} image(s) in all; {n} more would go over. "
        f"Ask your backend for a new token (this one expires in {left} s).",
        param="n",
        headers={"Retry-After": str(left)},
    )


def _unavailable() -> TokenUsageUnavailable:
    return TokenUsageUnavailable("The client token's image count could not be read; nothing was generated. Try again.")
