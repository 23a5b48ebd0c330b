"""Client tokens end to end through the local stack (``make run``): a backend mints one with its server key, a
browser or phone generates with it, the backend polls the task; API Gateway's answers for a bad, expired or
out-of-scope token, and the function's for one over its max_images, are OpenAI-style errors."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image

from imagecore.accounts.auth import hash_key, owner_for_hash
from imagecore.accounts.client_tokens import mint
from tests.e2e.conftest import API_KEY, SIGNING_KEY

pytestmark = pytest.mark.e2e

GENERATION = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "quality": "low"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def mint_token(stack, **request) -> dict:
    response = httpx.post(stack.api_url + "/client_tokens", json=request, headers=bearer(API_KEY), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error


def test_a_token_generates_and_its_backend_polls_the_task(stack):
    minted = mint_token(stack, max_images=4)
    assert minted["scope"] == ["generations", "edits", "uploads", "tasks", "responses"]
    assert minted["max_images"] == 4
    assert time.time() + 800 < minted["expires_at"] <= time.time() + 900
    token = minted["token"]

    done = httpx.post(stack.api_url + "/images/generations", json=GENERATION, headers=bearer(token), timeout=60)
    assert done.status_code == 200, done.text
    image = Image.open(io.BytesIO(httpx.get(done.json()["data"][0]["url"], timeout=30).content))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    record = stack.request_record(done.headers["x-amzn-requestid"])
    assert record["client_token_id"].startswith("ctk_")
    assert record["owner_id"] == owner_for_hash(hash_key(API_KEY))  # the parent key owns what the token made

    submitted = httpx.post(
        stack.api_url + "/images/generations/async", json=GENERATION, headers=bearer(token), timeout=30
    )
    assert submitted.status_code == 202, submitted.text
    poll_url = submitted.json()["poll_url"]
    deadline = time.monotonic() + 60
    while True:
        task = httpx.get(poll_url, headers=bearer(API_KEY), timeout=30)  # the backend, with its server key
        assert task.status_code == 200, task.text
        if task.json()["status"] != "processing" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert task.json()["status"] == "completed"
    # another server key does not see it
    assert httpx.get(poll_url, headers=bearer("isk-e2e-second-key"), timeout=30).status_code == 404
    assert stack.upstream_calls() == 2
    assert token not in stack.log_path.read_text()


def test_expired_and_tampered_tokens_are_401s(stack):
    owner = owner_for_hash(hash_key(API_KEY))
    expired, _ = mint(owner, signing_key=SIGNING_KEY, now=int(time.time()) - 901)
    valid = mint_token(stack)["token"]
    header, payload, signature = valid.split(".")
    tampered = f"{header}.{payload}.{signature[::-1]}"
    forged, _ = mint(owner, signing_key="not-the-service-key-0123456789abcdef0123456789", now=int(time.time()))

    for token in (expired, tampered, forged):
        response = httpx.post(stack.api_url + "/images/generations", json=GENERATION, headers=bearer(token))
        error = assert_openai_error(response, 401, "invalid_api_key")
        assert "client token" in error["message"]
        assert response.headers["x-amzn-errortype"].startswith("Unauthorized")  # API Gateway said it, not a function
    assert stack.upstream_calls() == 0


def test_a_token_out_of_its_scope_is_a_403(stack):
    token = mint_token(stack, scope=["tasks"])["token"]

    refused = httpx.post(stack.api_url + "/images/generations", json=GENERATION, headers=bearer(token))
    error = assert_openai_error(refused, 403, "access_denied")
    assert "scope" in error["message"]
    # and never the route that mints tokens
    assert_openai_error(
        httpx.post(stack.api_url + "/client_tokens", json={}, headers=bearer(token)), 403, "access_denied"
    )
    # its own scope works: an unknown task is the tasks function's 404
    missing = httpx.get(stack.api_url + "/images/tasks/task_" + "0" * 32, headers=bearer(token))
    assert_openai_error(missing, 404, "task_not_found")
    assert stack.upstream_calls() == 0


def test_a_token_over_its_max_images_is_a_429_without_an_upstream_call(stack):
    token = mint_token(stack, max_images=2, scope=["generations"])["token"]

    first = httpx.post(
        stack.api_url + "/images/generations", json={**GENERATION, "n": 2}, headers=bearer(token), timeout=60
    )
    assert first.status_code == 200, first.text
    assert len(first.json()["data"]) == 2
    calls = stack.upstream_calls()

    over = httpx.post(stack.api_url + "/images/generations", json=GENERATION, headers=bearer(token), timeout=60)
    error = assert_openai_error(over, 429, "token_budget_exceeded")
    assert error["type"] == "insufficient_quota"
    # when this token stops being worth retrying: its remaining life (at most its 15 minutes)
    assert 0 < int(over.headers["Retry-After"]) <= 900
    assert stack.upstream_calls() == calls
    record = stack.request_record(over.headers["x-amzn-requestid"])
    assert (record["status"], record["error_code"]) == (429, "token_budget_exceeded")


def test_a_streamed_request_over_max_images_is_refused_before_the_upstream(stack):
    token = mint_token(stack, max_images=1, scope=["generations"])["token"]
    streamed = {**GENERATION, "n": 2, "stream": True, "partial_images": 1}

    over = httpx.post(stack.api_url + "/images/generations", json=streamed, headers=bearer(token), timeout=60)
    assert_openai_error(over, 429, "token_budget_exceeded")
    assert int(over.headers["Retry-After"]) > 0
    assert stack.upstream_calls() == 0

    within = httpx.post(
        stack.api_url + "/images/generations", json={**streamed, "n": 1}, headers=bearer(token), timeout=60
    )
    assert within.status_code == 200, within.text
    assert within.headers["content-type"].startswith("text/event-stream")
    assert "image_generation.completed" in within.text
    assert stack.upstream_calls() == 1
