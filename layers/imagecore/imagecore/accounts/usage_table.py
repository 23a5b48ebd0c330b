"""The usage table as its two users see it (``UsageLedger``: budgets and usage; ``ConcurrencyLeases``: the per-key
leases): its name, a DynamoDB client given or made on first use, a clock, and how its faults are told apart."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

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

    @cached_property
    def dynamodb(self) -> Any:
        """The given client, or one made on first use."""
        return self.client or aws.client("dynamodb", region_name=self.region)


def error_code(exc: BaseException) -> str | None:
    """DynamoDB's error code of a failed call (``ConditionalCheckFailedException``, ...), None if it has none."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None
