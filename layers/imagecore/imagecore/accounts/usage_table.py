"""The usage table as its two users see it (``UsageLedger``: budgets and usage; ``ConcurrencyLeases``: the per-key
leases): its name, a DynamoDB client given or made on first use (one for both users in a function: ``beside``), a
clock, and how its faults are told apart."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Self

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.platform import aws

# What a call to the table may raise.
FAULTS = (BotoCoreError, ClientError)


@dataclass
class UsageTable:
    table: str
    region: str = "us-east-1"
    client: Any = None
    clock: Callable[[], float] = time.time
    shares: UsageTable | None = None  # the table's other user, whose client this one uses

    @classmethod
    def beside(cls, other: UsageTable) -> Self:
        """The table's other user, over ``other``'s DynamoDB client (one client made, one connection pool)."""
        return cls(other.table, other.region, clock=other.clock, shares=other)

    @cached_property
    def dynamodb(self) -> Any:
        """The given client, the one of the user this one is ``beside``, or one made on first use."""
        if self.client is not None:
            return self.client
        if self.shares is not None:
            return self.shares.dynamodb
        return aws.client("dynamodb", region_name=self.region)


def error_code(exc: BaseException) -> str | None:
    """DynamoDB's error code of a failed call (``ConditionalCheckFailedException``, ...), None if it has none."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None
