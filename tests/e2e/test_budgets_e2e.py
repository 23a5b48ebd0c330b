"""Usage plans and budgets through the local stack (``python -m local``), started with keys of its own: a plan's
request quota and throttle are the gateway's 429s, an image or token budget is the function's 429 before the
upstream is called, and GET /v1/usage reads back exactly what was generated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningStack, running_stack

QUOTA_KEY = "isk-e2e-quota"  # on plan free, 3 requests a day
THROTTLED_KEY = "isk-e2e-throttled"  # on plan trial, 1 request a second, bursts of 2
IMAGES_KEY = "isk-e2e-images"  # 4 images a day
USAGE_KEY = "isk-e2e-usage"  # no plan, no budget
EDGE_KEY = "isk-e2e-edge"  # 5 images a day, asked concurrently
TOKENS_KEY = "isk-e2e-tokens"  # 3000 tokens a day
ASYNC_KEY = "isk-e2e-async"  # 2 images a day, through async tasks
PARENT_KEY = "isk-e2e-parent"  # 2 images a day, spent through a client token it minted
API_KEYS = ",".join(
    [
        f"{QUOTA_KEY}@free",
        f"{THROTTLED_KEY}@trial",
        f"{IMAGES_KEY}:images_per_day=4",
        USAGE_KEY,
        f"{EDGE_KEY}:images_per_day=5",
        f"{TOKENS_KEY}:tokens_per_day=3000",
        f"{ASYNC_KEY}:images_per_day=2",
        f"{PARENT_KEY}:images_per_day=2",
    ]
)
# The plans' limits for this stack (sam deploy's --parameter-overrides syntax).
PARAMETER_OVERRIDES = (
    "FreePlanQuotaLimit=3 FreePlanRateLimit=100 FreePlanBurstLimit=100 TrialPlanRateLimit=1 TrialPlanBurstLimit=2"
)


@pytest.fixture(scope="module")
def plans_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    log_path = tmp_path_factory.mktemp("plans") / "stack.log"
    with running_stack(log_path, API_KEYS=API_KEYS, PARAMETER_OVERRIDES=PARAMETER_OVERRIDES) as running:
        yield running


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def generate(stack: RunningStack, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        stack.api_url + "/images/generations",
        headers=auth(key),
        json={"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low", **body},
        timeout=60,
    )


def usage(stack: RunningStack, key: str, days: int = 1) -> dict[str, Any]:
    response = httpx.get(stack.api_url + "/usage", params={"days": days}, headers=auth(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_a_key_over_its_plans_request_quota_gets_quota_exceeded(plans_stack: RunningStack) -> None:
    answers = [usage(plans_stack, QUOTA_KEY) for _ in range(3)]
    assert all(answer["object"] == "usage" for answer in answers)
    calls = plans_stack.upstream_calls()

    over = generate(plans_stack, QUOTA_KEY)

    assert over.status_code == 429
    assert error_of(over)["code"] == "quota_exceeded"
    assert int(over.headers["Retry-After"]) > 0
    assert over.headers["x-amzn-ErrorType"] == "LimitExceededException"
    assert plans_stack.upstream_calls() == calls  # refused before any function ran
    # another key's quota is its own
    assert httpx.get(plans_stack.api_url + "/usage", headers=auth(USAGE_KEY)).status_code == 200


def test_a_key_over_its_plans_rate_gets_rate_limit_exceeded(plans_stack: RunningStack) -> None:
    answers = [httpx.get(plans_stack.api_url + "/usage", headers=auth(THROTTLED_KEY)) for _ in range(5)]

    assert [a.status_code for a in answers[:2]] == [200, 200]  # the burst
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled, [a.status_code for a in answers]
    assert {error_of(a)["code"] for a in throttled} == {"rate_limit_exceeded"}
    assert all(a.headers["Retry-After"] == "1" for a in throttled)
    time.sleep(1.1)  # the bucket refills at the plan's rate
    assert httpx.get(plans_stack.api_url + "/usage", headers=auth(THROTTLED_KEY)).status_code == 200


def test_a_key_over_its_image_budget_gets_budget_exceeded_and_the_upstream_is_not_called(
    plans_stack: RunningStack,
) -> None:
    assert generate(plans_stack, IMAGES_KEY, n=3).status_code == 200
    calls = plans_stack.upstream_calls()

    over = generate(plans_stack, IMAGES_KEY, n=2)

    assert over.status_code == 429
    error = error_of(over)
    assert (error["code"], error["type"], error["param"]) == ("budget_exceeded", "rate_limit_error", "n")
    assert "daily budget of 4 images" in error["message"]
    assert 0 < int(over.headers["Retry-After"]) <= 86400
    assert plans_stack.upstream_calls() == calls
    # what is left can still be had
    assert generate(plans_stack, IMAGES_KEY, n=1).status_code == 200
    report = usage(plans_stack, IMAGES_KEY)
    assert report["days"][0]["images"] == 4
    assert report["days"][0]["failures"] == {"budget_exceeded": 1}
    assert report["budgets"]["images_per_day"]["remaining"] == 0


def test_usage_counts_exactly_what_was_generated(plans_stack: RunningStack) -> None:
    before = usage(plans_stack, USAGE_KEY, days=7)["totals"]

    made = generate(plans_stack, USAGE_KEY, n=3)

    assert made.status_code == 200
    reported = made.json()["usage"]
    report = usage(plans_stack, USAGE_KEY, days=7)
    after = report["totals"]
    assert after["requests"] == before["requests"] + 1
    assert after["images"] == before["images"] + 3
    assert after["input_tokens"] == before["input_tokens"] + reported["input_tokens"]
    assert after["output_tokens"] == before["output_tokens"] + reported["output_tokens"]
    assert after["upstream_seconds"] > before["upstream_seconds"]
    assert len(report["days"]) == 7
    assert report["days"][0]["date"] == time.strftime("%Y-%m-%d", time.gmtime())
    # a key without a budget of its own has the deployment's default daily image budget (KeyDailyImageBudget)
    assert set(report["budgets"]) == {"images_per_day"}
    daily = report["budgets"]["images_per_day"]
    assert daily["limit"] == 500 and daily["used"] == report["days"][0]["images"]
    assert daily["remaining"] == daily["limit"] - daily["used"]


def test_concurrent_requests_at_the_budget_edge_do_not_overshoot(plans_stack: RunningStack) -> None:
    calls = plans_stack.upstream_calls()
    answers: list[httpx.Response] = []
    start = threading.Barrier(6)

    def ask() -> None:
        start.wait()
        answers.append(generate(plans_stack, EDGE_KEY, n=2))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    made = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    images = sum(len(a.json()["data"]) for a in made)
    assert len(made) + len(refused) == 6
    assert {error_of(a)["code"] for a in refused} == {"budget_exceeded"}
    # 5 images a day, 2 a request: two requests get through, never a third (at most one request's worth over)
    assert images == 4 and len(made) == 2
    assert plans_stack.upstream_calls() == calls + len(made)
    assert usage(plans_stack, EDGE_KEY)["days"][0]["images"] == images


def test_a_token_budget_refuses_what_could_go_over_it(plans_stack: RunningStack) -> None:
    spent = 0
    while True:
        calls = plans_stack.upstream_calls()
        answer = generate(plans_stack, TOKENS_KEY, quality="medium")
        if answer.status_code != 200:
            break
        spent += answer.json()["usage"]["input_tokens"] + answer.json()["usage"]["output_tokens"]

    assert answer.status_code == 429 and error_of(answer)["code"] == "budget_exceeded"
    assert "daily budget of 3000 tokens" in error_of(answer)["message"]
    assert plans_stack.upstream_calls() == calls
    assert 0 < spent <= 3000
    left = usage(plans_stack, TOKENS_KEY)["budgets"]["tokens_per_day"]
    assert (left["used"], left["remaining"]) == (spent, 3000 - spent)


def test_an_async_task_reserves_its_images_when_it_is_queued(plans_stack: RunningStack) -> None:
    submitted = httpx.post(
        plans_stack.api_url + "/images/generations/async",
        headers=auth(ASYNC_KEY),
        json={"prompt": "a lighthouse", "size": "1024x1024", "quality": "low", "n": 2},
    )
    assert submitted.status_code == 202, submitted.text

    over = httpx.post(
        plans_stack.api_url + "/images/generations/async",
        headers=auth(ASYNC_KEY),
        json={"prompt": "a lighthouse", "n": 1},
    )
    assert over.status_code == 429 and error_of(over)["code"] == "budget_exceeded"

    deadline = time.monotonic() + 60
    while (task := httpx.get(submitted.json()["poll_url"], headers=auth(ASYNC_KEY)).json())["status"] == "processing":
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    assert task["status"] == "completed"
    deadline = time.monotonic() + 10
    while (report := usage(plans_stack, ASYNC_KEY))["days"][0]["images"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the worker settles right after its terminal write
    day = report["days"][0]
    assert (day["requests"], day["images"], day["failures"]) == (2, 2, {"budget_exceeded": 1})
    assert day["output_tokens"] == task["result"]["usage"]["output_tokens"]
    assert report["budgets"]["images_per_day"]["remaining"] == 0


@pytest.mark.parametrize("days", ["0", "91", "seven", "-1"])
def test_usage_days_out_of_range_is_a_400_on_days(plans_stack: RunningStack, days: str) -> None:
    answer = httpx.get(plans_stack.api_url + "/usage", params={"days": days}, headers=auth(USAGE_KEY))

    assert answer.status_code == 400
    error = error_of(answer)
    assert (error["param"], error["type"]) == ("days", "invalid_request_error")


def test_usage_refuses_unknown_query_parameters(plans_stack: RunningStack) -> None:
    answer = httpx.get(plans_stack.api_url + "/usage", params={"days": 3, "key": "other"}, headers=auth(USAGE_KEY))

    assert answer.status_code == 400
    assert (error_of(answer)["param"], error_of(answer)["code"]) == ("key", "unknown_parameter")


def test_usage_needs_a_key(plans_stack: RunningStack) -> None:
    assert httpx.get(plans_stack.api_url + "/usage").status_code == 401


def test_a_client_token_spends_its_parent_keys_budget_and_shows_in_its_usage(plans_stack: RunningStack) -> None:
    minted = httpx.post(plans_stack.api_url + "/client_tokens", json={}, headers=auth(PARENT_KEY), timeout=30)
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]

    assert generate(plans_stack, token, n=2).status_code == 200
    calls = plans_stack.upstream_calls()
    over = generate(plans_stack, PARENT_KEY)  # the key's own request: its budget is spent by its token

    assert over.status_code == 429
    assert error_of(over)["code"] == "budget_exceeded"
    assert plans_stack.upstream_calls() == calls
    report = usage(plans_stack, PARENT_KEY)
    assert report["totals"]["images"] == 2
    assert report["budgets"]["images_per_day"]["remaining"] == 0
