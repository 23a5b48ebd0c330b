"""Capacity through the local stack with tight limits (``make run`` with API_KEYS and PARAMETER_OVERRIDES): a
key over its concurrency gets a 429 at once and the upstream is not called; a function over its reserved
concurrency is a 503 ``overloaded`` with Retry-After and CORS headers (the template's INTEGRATION_FAILURE
gateway response), never a bare 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack, running_stack

GREEDY = "isk-capacity-greedy"
POLITE = "isk-capacity-polite"
LATENCY_MS = 5000


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    log = Path(tmp_path_factory.mktemp("capacity")) / "stack.log"
    with running_stack(
        log,
        API_KEYS=f"{GREEDY}:concurrent=1,{POLITE}",
        PARAMETER_OVERRIDES="GenerationsReservedConcurrency=2",
    ) as stack:
        # warm (an upstream without delay: each test slows it down itself): the functions imported and their
        # clients made, so the bursts below time the admission only
        for key in (GREEDY, POLITE):
            assert _generate(stack, key)[0].status_code == 200
        yield stack


def _generate(stack: RunningStack, key: str, delay: float = 0.0) -> tuple[httpx.Response, float]:
    time.sleep(delay)
    started = time.monotonic()
    response = httpx.post(
        stack.api_url + "/images/generations",
        headers={"Authorization": f"Bearer {key}", "Origin": "https://app.example"},
        json={"prompt": "a lighthouse", "size": "1024x1024", "quality": "low"},
        timeout=60,
    )
    return response, time.monotonic() - started


def _burst(stack: RunningStack, keys: list[str]) -> list[tuple[httpx.Response, float]]:
    # the first starts, the others come while it waits for the upstream
    with ThreadPoolExecutor(len(keys)) as pool:
        return list(pool.map(lambda pair: _generate(stack, pair[1], 0.0 if pair[0] == 0 else 0.6), enumerate(keys)))


def test_a_key_over_its_concurrency_is_refused_at_once_and_the_upstream_is_not_called(tight: RunningStack) -> None:
    tight.reset_simulator()
    tight.slow_simulator(LATENCY_MS)
    results = _burst(tight, [GREEDY, GREEDY])
    statuses = sorted(response.status_code for response, _ in results)
    assert statuses == [200, 429]
    refused, took = next((r, t) for r, t in results if r.status_code == 429)
    error: dict[str, Any] = refused.json()["error"]
    assert error["code"] == "concurrency_exceeded" and error["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= 5
    assert took < 2.5  # at once (a second execution environment may start cold), not after the upstream wait
    assert tight.upstream_calls() == 1
    # the slot is free again once the first has its answer
    tight.reset_simulator()
    again, _ = _generate(tight, GREEDY)
    assert again.status_code == 200


def test_a_function_at_its_reserved_concurrency_answers_503_overloaded(tight: RunningStack) -> None:
    tight.reset_simulator()
    tight.slow_simulator(LATENCY_MS)
    results = _burst(tight, [POLITE, POLITE, POLITE])
    statuses = sorted(response.status_code for response, _ in results)
    assert statuses == [200, 200, 503]
    busy, took = next((r, t) for r, t in results if r.status_code == 503)
    assert busy.json() == {
        "error": {
            "message": busy.json()["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }
    assert busy.headers["Retry-After"] == "5"
    assert busy.headers["Access-Control-Allow-Origin"] == "*"
    assert took < 2.5
    assert tight.upstream_calls() == 2
