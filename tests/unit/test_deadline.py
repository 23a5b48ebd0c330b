"""The upstream call's deadline: before the Lambda times out and before API Gateway gives up on the request
(whose clock started at requestTimeEpoch), minus the margin kept to store the images and answer."""

from __future__ import annotations

from typing import Any

import pytest

from imagecore.domain.deadline import request_deadline

NOW_WALL = 1_760_000_000.0  # seconds since the epoch, as time.time() gives
NOW_MONO = 5_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(request_time_epoch: Any = None) -> dict[str, Any]:
    context: dict[str, Any] = {"requestId": "req-1", "stage": "prod"}
    if request_time_epoch is not None:
        context["requestTimeEpoch"] = request_time_epoch
    return {"httpMethod": "POST", "path": "/v1/images/generations", "requestContext": context}


def deadline_for(evt: dict[str, Any], context, *, integration_timeout_ms: int, margin: float = 4.0):
    clock = Clock(NOW_MONO)
    deadline = request_deadline(
        evt,
        context,
        integration_timeout_ms=integration_timeout_ms,
        margin_seconds=margin,
        clock=clock,
        wall_clock=Clock(NOW_WALL),
    )
    return deadline, clock


def test_api_gateway_29s_budget_minus_time_already_spent_and_margin(lambda_context) -> None:
    lambda_context.remaining_ms = 330_000
    started_ms = int(NOW_WALL * 1000) - 5000  # API Gateway received the request 5 s ago
    deadline, _ = deadline_for(event(started_ms), lambda_context, integration_timeout_ms=29_000)
    assert deadline.remaining() == pytest.approx(29 - 5 - 4, abs=0.01)


def test_the_lambda_remaining_time_wins_when_it_is_shorter(lambda_context) -> None:
    lambda_context.remaining_ms = 60_000
    started_ms = int(NOW_WALL * 1000) - 5000
    deadline, _ = deadline_for(event(started_ms), lambda_context, integration_timeout_ms=300_000)
    assert deadline.remaining() == pytest.approx(60 - 4, abs=0.01)


def test_without_request_time_epoch_only_the_lambda_remaining_time_counts(lambda_context) -> None:
    lambda_context.remaining_ms = 45_000
    deadline, _ = deadline_for(event(), lambda_context, integration_timeout_ms=29_000)
    assert deadline.remaining() == pytest.approx(45 - 4, abs=0.01)


@pytest.mark.parametrize("bad", [0, -1, "1760000000000", None])
def test_an_unusable_request_time_epoch_is_ignored(lambda_context, bad: Any) -> None:
    lambda_context.remaining_ms = 45_000
    evt = event()
    evt["requestContext"]["requestTimeEpoch"] = bad
    deadline, _ = deadline_for(evt, lambda_context, integration_timeout_ms=29_000)
    assert deadline.remaining() == pytest.approx(41, abs=0.01)


def test_without_a_request_context_at_all(lambda_context) -> None:
    lambda_context.remaining_ms = 20_000
    deadline, _ = deadline_for({}, lambda_context, integration_timeout_ms=29_000, margin=2)
    assert deadline.remaining() == pytest.approx(18, abs=0.01)


def test_the_deadline_runs_on_the_given_monotonic_clock(lambda_context) -> None:
    lambda_context.remaining_ms = 330_000
    deadline, clock = deadline_for(event(int(NOW_WALL * 1000)), lambda_context, integration_timeout_ms=29_000)
    assert deadline.at == pytest.approx(NOW_MONO + 25)
    clock.now += 10
    assert deadline.remaining() == pytest.approx(15)


def test_a_request_api_gateway_has_already_given_up_on_has_no_time_left(lambda_context) -> None:
    lambda_context.remaining_ms = 330_000
    started_ms = int(NOW_WALL * 1000) - 30_000
    deadline, _ = deadline_for(event(started_ms), lambda_context, integration_timeout_ms=29_000)
    assert deadline.remaining() < 0
