"""Time budgets: a point on the monotonic clock after which nothing more may be started or awaited, and how
an API request's budget follows from the Lambda's remaining time and API Gateway's integration timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock after which nothing more may be started or awaited."""

    at: float
    clock: Clock = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()

    def earliest(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first."""
        return Deadline(min(self.at, self.clock() + seconds), self.clock)


def request_deadline(
    event: dict[str, Any],
    context: LambdaContext,
    *,
    integration_timeout_ms: int,
    margin_seconds: float,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
) -> Deadline:
    """When the upstream call must be over: before the Lambda times out and before API Gateway gives up
    on the request (its clock started at ``requestTimeEpoch``), minus the time needed to store and answer."""
    remaining = context.get_remaining_time_in_millis() / 1000
    started_ms = (event.get("requestContext") or {}).get("requestTimeEpoch")
    if isinstance(started_ms, int | float) and started_ms > 0:
        api_remaining = (started_ms + integration_timeout_ms) / 1000 - wall_clock()
        remaining = min(remaining, api_remaining)
    return Deadline(clock() + remaining - margin_seconds, clock)
