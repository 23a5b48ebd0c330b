"""The upstream client's retry, timeout and interpretation policy, against httpx.MockTransport with a fake
clock: what is retried, what is relayed, what becomes a 502 or a 504, and what the call trace records."""

from __future__ import annotations

import base64
import json
import random
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import ImageServiceError, UpstreamFailed, UpstreamRejected, UpstreamTimeout
from imagecore.domain.images import ImageInfo
from imagecore.upstream.client import (
    MAX_ERROR_BODY_BYTES,
    CallTrace,
    RetryPolicy,
    UpstreamClient,
    UpstreamResult,
)

BASE_URL = "https://sub2api.example.test/v1"
API_KEY = "sk-upstream-test-key"
BODY = {"model": "gpt-image-2", "prompt": "a red fox in snow", "n": 1, "size": "1024x1024", "quality": "low"}
USAGE = {"input_tokens": 43, "output_tokens": 196, "total_tokens": 239}


class FakeClock:
    """A monotonic clock that only moves when told to (by the fake sleep or by a handler)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeUpstream:
    """Answers each request with the next scripted reply (the last one repeats) and records what it got."""

    def __init__(self, clock: FakeClock, replies: list[Reply], seconds_per_call: float = 0.0) -> None:
        self.clock = clock
        self.replies = replies
        self.seconds_per_call = seconds_per_call
        self.requests: list[httpx.Request] = []
        self.remaining_at_call: list[float] = []
        self.deadline: Deadline | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.deadline is not None:
            self.remaining_at_call.append(self.deadline.remaining())
        self.clock.advance(self.seconds_per_call)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    @property
    def calls(self) -> int:
        return len(self.requests)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock: FakeClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def png(make_image) -> bytes:
    return make_image("PNG", (64, 48))


@pytest.fixture
def call(clock: FakeClock, sleep: FakeSleep):
    """``call(replies, budget=100, timeout=120, ...)`` -> (result or raised error, upstream, trace)."""

    def run(
        replies: list[Reply],
        *,
        budget: float = 100.0,
        timeout: float = 120.0,
        seconds_per_call: float = 0.0,
        retry: RetryPolicy | None = None,
        account_id_header: str = "x-account-id",
    ) -> tuple[UpstreamResult | ImageServiceError, FakeUpstream, CallTrace]:
        upstream = FakeUpstream(clock, replies, seconds_per_call)
        deadline = Deadline(clock() + budget, clock)
        upstream.deadline = deadline
        client = UpstreamClient(
            BASE_URL + "/",
            lambda: API_KEY,
            http=httpx.Client(transport=httpx.MockTransport(upstream)),
            retry=retry,
            account_id_header=account_id_header,
            sleep=sleep,
            rng=random.Random(1234),
        )
        trace = CallTrace()
        try:
            outcome: UpstreamResult | ImageServiceError = client.generate(
                dict(BODY), timeout=timeout, deadline=deadline, trace=trace
            )
        except ImageServiceError as exc:
            outcome = exc
        return outcome, upstream, trace

    return run


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ok(png: bytes, *, n: int = 1, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "created": 1_760_000_000,
        "data": [{"b64_json": b64(png), "revised_prompt": f"revised {i}"} for i in range(n)],
        "model": "gpt-image-2",
        "size": "64x48",
        "quality": "low",
        "output_format": "png",
        "usage": USAGE,
    }
    return httpx.Response(200, json=body, headers=headers)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status(code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(code, json=body or error_body(f"HTTP {code}", "server_error"), headers=headers)


# --- success ----------------------------------------------------------------------------------------------


class TestSuccess:
    def test_returns_the_decoded_images_and_usage(self, call, png: bytes) -> None:
        result, upstream, trace = call([ok(png, n=2)])
        assert isinstance(result, UpstreamResult)
        assert [image.data for image in result.images] == [png, png]
        assert result.images[0].info == ImageInfo(format="png", width=64, height=48, has_alpha=False)
        assert [image.revised_prompt for image in result.images] == ["revised 0", "revised 1"]
        assert result.usage == USAGE
        assert upstream.calls == 1
        assert trace.attempts == 1
        assert trace.errors == []

    @pytest.mark.parametrize("fmt, name", [("JPEG", "jpeg"), ("WEBP", "webp")])
    def test_identifies_jpeg_and_webp_from_the_bytes(self, call, make_image, fmt: str, name: str) -> None:
        result, _, _ = call([ok(make_image(fmt, (32, 16)))])
        assert isinstance(result, UpstreamResult)
        assert result.images[0].info.format == name
        assert result.images[0].info.size == "32x16"

    def test_tolerates_sub2api_keep_alive_whitespace_before_the_json(self, call, png: bytes) -> None:
        body = json.dumps({"data": [{"b64_json": b64(png)}], "usage": USAGE}).encode()
        result, upstream, _ = call([httpx.Response(200, content=b" \n \n" + body)])
        assert isinstance(result, UpstreamResult)
        assert result.images[0].data == png
        assert upstream.calls == 1

    def test_keep_alive_trickling_in_chunks_within_the_budget_is_fine(self, call, clock: FakeClock, png) -> None:
        body = json.dumps({"data": [{"b64_json": b64(png)}]}).encode()

        def chunks() -> Iterator[bytes]:
            for _ in range(5):
                clock.advance(10)
                yield b" \n"
            yield body

        result, _, _ = call([lambda request: httpx.Response(200, content=chunks())], budget=100)
        assert isinstance(result, UpstreamResult)
        assert result.images[0].data == png

    def test_sends_the_bearer_key_and_the_body_as_json(self, call, png: bytes) -> None:
        _, upstream, _ = call([ok(png)])
        request = upstream.requests[0]
        assert request.method == "POST"
        assert str(request.url) == BASE_URL + "/images/generations"
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == BODY

    def test_without_usage_the_result_has_none(self, call, png: bytes) -> None:
        result, _, _ = call([httpx.Response(200, json={"data": [{"b64_json": b64(png)}]})])
        assert isinstance(result, UpstreamResult)
        assert result.usage is None


# --- errors the caller must see as they are: never retried ----------------------------------------------------


class TestRelayedRejections:
    def test_policy_block_under_a_200_is_a_400_moderation_blocked_after_one_call(self, call) -> None:
        body = error_body(
            "Your request was rejected by the safety system.", "image_generation_user_error", code="moderation_blocked"
        )
        error, upstream, trace = call([httpx.Response(200, content=b" \n \n" + json.dumps(body).encode())])
        assert isinstance(error, UpstreamRejected)
        assert error.status == 400
        assert error.code == "moderation_blocked"
        assert error.message == "Your request was rejected by the safety system."
        assert upstream.calls == 1
        assert trace.errors == ["200:error"]

    def test_caller_error_type_under_a_200_is_a_400_after_one_call(self, call) -> None:
        body = error_body("Invalid size.", "invalid_request_error", param="size")
        error, upstream, _ = call([httpx.Response(200, json=body)])
        assert isinstance(error, UpstreamRejected)
        assert error.status == 400
        assert error.param == "size"
        assert upstream.calls == 1

    @pytest.mark.parametrize("code", [400, 413, 422])
    def test_upstream_4xx_is_relayed_with_its_status_message_and_code_and_never_retried(
        self, call, sleep: FakeSleep, code: int
    ) -> None:
        body = error_body(
            "The prompt is not allowed.", "invalid_request_error", code="moderation_blocked", param="prompt"
        )
        error, upstream, trace = call([status(code, body)])
        assert isinstance(error, UpstreamRejected)
        assert error.status == code
        assert error.message == "The prompt is not allowed."
        assert error.code == "moderation_blocked"
        assert error.param == "prompt"
        assert error.type == "invalid_request_error"
        assert upstream.calls == 1
        assert sleep.delays == []
        assert trace.errors == [str(code)]

    def test_upstream_4xx_without_an_error_body_still_keeps_its_status(self, call) -> None:
        error, upstream, _ = call([httpx.Response(400, content=b"bad request")])
        assert isinstance(error, UpstreamRejected)
        assert error.status == 400
        assert "HTTP 400" in error.message
        assert upstream.calls == 1

    @pytest.mark.parametrize("code", [401, 403, 404])
    def test_our_own_key_or_url_being_wrong_is_a_502_misconfiguration(self, call, code: int) -> None:
        error, upstream, _ = call([status(code, error_body("Invalid API key", "invalid_request_error"))])
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert error.code == "upstream_misconfigured"
        assert "Invalid API key" not in error.message  # the upstream's words about our key stay with us
        assert upstream.calls == 1


# --- transient faults: retried within budget ------------------------------------------------------------------


class TestRetries:
    def test_503_then_200_recovers_after_a_backoff(self, call, sleep: FakeSleep, png: bytes) -> None:
        result, upstream, trace = call([status(503), ok(png)])
        assert isinstance(result, UpstreamResult)
        assert upstream.calls == 2
        assert len(sleep.delays) == 1
        assert 0 <= sleep.delays[0] <= RetryPolicy().base_delay
        assert trace.attempts == 2
        assert trace.errors == ["503"]

    def test_three_500s_give_up_with_502_after_exactly_three_calls(self, call, sleep: FakeSleep) -> None:
        error, upstream, trace = call([status(500)])
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert upstream.calls == 3
        assert len(sleep.delays) == 2
        assert trace.errors == ["500", "500", "500"]

    def test_max_attempts_is_configurable(self, call) -> None:
        error, upstream, _ = call([status(502)], retry=RetryPolicy(max_attempts=1))
        assert isinstance(error, UpstreamFailed)
        assert upstream.calls == 1

    def test_429_honours_retry_after_when_it_fits(self, call, sleep: FakeSleep, png: bytes) -> None:
        result, upstream, trace = call([status(429, headers={"Retry-After": "2"}), ok(png)])
        assert isinstance(result, UpstreamResult)
        assert upstream.calls == 2
        assert sleep.delays and sleep.delays[0] >= 2
        assert trace.errors == ["429"]

    def test_429_whose_retry_after_exceeds_the_budget_is_returned_at_once(self, call, sleep: FakeSleep) -> None:
        body = error_body("Rate limit reached", "rate_limit_error", code="rate_limit_exceeded")
        error, upstream, _ = call([status(429, body, headers={"Retry-After": "30"})], budget=10)
        assert isinstance(error, UpstreamRejected)
        assert error.status == 429
        assert error.code == "rate_limit_exceeded"
        assert error.headers == {"Retry-After": "30"}
        assert sleep.delays == []
        assert upstream.calls == 1

    def test_connect_error_then_success(self, call, sleep: FakeSleep, png: bytes) -> None:
        result, upstream, trace = call([httpx.ConnectError("connection refused"), ok(png)])
        assert isinstance(result, UpstreamResult)
        assert upstream.calls == 2
        assert len(sleep.delays) == 1
        assert trace.errors == ["ConnectError"]

    def test_connect_errors_only_give_a_502(self, call) -> None:
        error, upstream, _ = call([httpx.ConnectError("connection refused")])
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert upstream.calls == 3

    def test_connect_timeout_is_retried(self, call, png: bytes) -> None:
        result, upstream, _ = call([httpx.ConnectTimeout("connect timed out"), ok(png)])
        assert isinstance(result, UpstreamResult)
        assert upstream.calls == 2

    def test_read_timeout_is_a_504_and_not_retried(self, call, sleep: FakeSleep, png: bytes) -> None:
        error, upstream, trace = call([httpx.ReadTimeout("read timed out"), ok(png)])
        assert isinstance(error, UpstreamTimeout)
        assert error.status == 504
        assert upstream.calls == 1
        assert sleep.delays == []
        assert trace.errors == ["ReadTimeout"]

    def test_server_error_object_under_a_200_is_retried(self, call, png: bytes) -> None:
        body = error_body("upstream account failed", "server_error", code="upstream_error")
        result, upstream, trace = call([httpx.Response(200, json=body), ok(png)])
        assert isinstance(result, UpstreamResult)
        assert upstream.calls == 2
        assert trace.errors == ["200:error"]

    def test_server_error_objects_under_200_only_give_a_502(self, call) -> None:
        error, upstream, _ = call([httpx.Response(200, json=error_body("boom", "server_error"))])
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert upstream.calls == 3

    def test_a_retry_that_would_not_fit_the_budget_is_not_attempted(self, call, sleep: FakeSleep) -> None:
        error, upstream, _ = call([status(503)], budget=10, seconds_per_call=9.5)
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert upstream.calls == 1
        assert sleep.delays == []


# --- answers that are not images ----------------------------------------------------------------------------------


class TestGarbageUnder200:
    @pytest.mark.parametrize(
        "content",
        [
            b"<html>Bad gateway</html>",
            b"",
            b" \n \n",
            b'["not", "an", "object"]',
            json.dumps({"data": []}).encode(),
            json.dumps({"created": 1}).encode(),
            json.dumps({"data": [{"url": "https://example.test/x.png"}]}).encode(),
            json.dumps({"data": [{"b64_json": "!!! not base64 !!!"}]}).encode(),
            json.dumps({"data": [{"b64_json": base64.b64encode(b"hello, not an image").decode()}]}).encode(),
        ],
        ids=[
            "html",
            "empty",
            "only-keepalive",
            "array",
            "empty-data",
            "no-data",
            "url-only",
            "not-base64",
            "not-an-image",
        ],
    )
    def test_is_a_502_after_one_call(self, call, sleep: FakeSleep, content: bytes) -> None:
        error, upstream, _ = call([httpx.Response(200, content=content)])
        assert isinstance(error, UpstreamFailed)
        assert error.status == 502
        assert error.type == "upstream_error"
        assert upstream.calls == 1
        assert sleep.delays == []

    def test_one_bad_image_among_good_ones_fails_the_call(self, call, png: bytes) -> None:
        body = {"data": [{"b64_json": b64(png)}, {"b64_json": b64(b"GIF89a-not-really")}]}
        error, upstream, _ = call([httpx.Response(200, json=body)])
        assert isinstance(error, UpstreamFailed)
        assert "data[1]" in error.message
        assert upstream.calls == 1

    def test_a_gif_is_not_an_accepted_image(self, call, make_image) -> None:
        error, _, _ = call([ok(make_image("GIF", (16, 16)))])
        assert isinstance(error, UpstreamFailed)


# --- the time budget -------------------------------------------------------------------------------------------


class TestTimeBudget:
    def test_less_than_a_second_left_means_no_call_at_all(self, call) -> None:
        error, upstream, trace = call([status(500)], budget=0.5)
        assert isinstance(error, UpstreamTimeout)
        assert error.status == 504
        assert upstream.calls == 0
        assert trace.attempts == 0

    def test_an_already_past_deadline_means_no_call_at_all(self, call) -> None:
        error, upstream, _ = call([status(500)], budget=-5)
        assert isinstance(error, UpstreamTimeout)
        assert upstream.calls == 0

    def test_attempt_timeout_never_exceeds_the_remaining_budget(self, call, png: bytes) -> None:
        _, upstream, _ = call([status(503), status(503), ok(png)], budget=50, timeout=120, seconds_per_call=3)
        assert upstream.calls == 3
        for request, remaining in zip(upstream.requests, upstream.remaining_at_call, strict=True):
            timeout = request.extensions["timeout"]
            assert all(value is not None and value <= remaining for value in timeout.values()), (timeout, remaining)
        assert upstream.remaining_at_call[0] == pytest.approx(50)
        assert upstream.requests[0].extensions["timeout"]["read"] == pytest.approx(50)

    def test_attempt_timeout_is_the_per_call_timeout_when_the_budget_is_larger(self, call, png: bytes) -> None:
        _, upstream, _ = call([ok(png)], budget=500, timeout=120)
        timeout = upstream.requests[0].extensions["timeout"]
        assert timeout["read"] == pytest.approx(120)
        assert timeout["connect"] <= 10

    def test_keep_alive_whitespace_past_the_deadline_is_a_504(self, call, clock: FakeClock) -> None:
        chunks_sent = 0

        def keep_alive_forever() -> Iterator[bytes]:
            nonlocal chunks_sent
            while True:
                clock.advance(5)
                chunks_sent += 1
                yield b" \n"

        error, upstream, trace = call([lambda request: httpx.Response(200, content=keep_alive_forever())], budget=20)
        assert isinstance(error, UpstreamTimeout)
        assert error.status == 504
        assert upstream.calls == 1
        assert chunks_sent == 4  # stopped as soon as the budget was spent
        assert trace.errors == ["timeout"]

    def test_keep_alive_past_the_per_attempt_timeout_is_a_504_too(self, call, clock: FakeClock) -> None:
        def keep_alive_forever() -> Iterator[bytes]:
            while True:
                clock.advance(10)
                yield b" \n"

        error, upstream, _ = call(
            [lambda request: httpx.Response(200, content=keep_alive_forever())], budget=1000, timeout=120
        )
        assert isinstance(error, UpstreamTimeout)
        assert upstream.calls == 1


# --- the trace -----------------------------------------------------------------------------------------------


class TestCallTrace:
    def test_records_request_id_account_id_attempts_and_latency(self, call, sleep: FakeSleep, png: bytes) -> None:
        first = status(503, headers={"x-request-id": "req-1"})
        second = ok(png, headers={"x-request-id": "req-2", "x-account-id": "acct-42"})
        result, _, trace = call([first, second], seconds_per_call=1.5)
        assert isinstance(result, UpstreamResult)
        assert trace.attempts == 2
        assert trace.errors == ["503"]
        assert trace.request_id == "req-2"
        assert trace.account_id == "acct-42"
        assert trace.latency_ms == pytest.approx((1.5 + sleep.delays[0] + 1.5) * 1000, abs=0.1)

    def test_account_id_is_none_without_the_header(self, call, png: bytes) -> None:
        _, _, trace = call([ok(png, headers={"x-request-id": "req-9"})])
        assert trace.request_id == "req-9"
        assert trace.account_id is None

    def test_account_id_header_name_is_configurable(self, call, png: bytes) -> None:
        _, _, trace = call(
            [ok(png, headers={"x-sub2api-account": "acct-7", "x-account-id": "other"})],
            account_id_header="X-Sub2api-Account",
        )
        assert trace.account_id == "acct-7"

    def test_is_filled_in_on_failure_too(self, call) -> None:
        error, _, trace = call([status(500, headers={"x-request-id": "req-500"})], seconds_per_call=2)
        assert isinstance(error, UpstreamFailed)
        assert trace.attempts == 3
        assert trace.request_id == "req-500"
        assert trace.latency_ms is not None and trace.latency_ms >= 6000

    def test_a_trace_is_optional(self, clock: FakeClock, png: bytes) -> None:
        client = UpstreamClient(
            BASE_URL, lambda: API_KEY, http=httpx.Client(transport=httpx.MockTransport(lambda request: ok(png)))
        )
        result = client.generate(dict(BODY), timeout=120, deadline=Deadline(clock() + 100, clock))
        assert len(result.images) == 1


# --- the backoff -----------------------------------------------------------------------------------------------


class TestRetryPolicy:
    @pytest.mark.parametrize("attempt", range(1, 9))
    def test_backoff_is_full_jitter_within_the_exponential_cap(self, attempt: int) -> None:
        policy = RetryPolicy()
        rng = random.Random(attempt)
        cap = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        delays = [policy.backoff(attempt, rng) for _ in range(500)]
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) > cap * 0.9  # the whole range is used, not just a corner of it

    def test_backoff_never_exceeds_max_delay(self) -> None:
        policy = RetryPolicy(base_delay=1, max_delay=3)
        rng = random.Random(7)
        assert all(policy.backoff(20, rng) <= 3 for _ in range(200))

    def test_the_same_seed_gives_the_same_delays(self) -> None:
        policy = RetryPolicy()
        assert [policy.backoff(2, random.Random(3)) for _ in range(3)] == [policy.backoff(2, random.Random(3))] * 3


class TestDeadline:
    def test_remaining_follows_the_clock(self, clock: FakeClock) -> None:
        deadline = Deadline.after(30, clock)
        clock.advance(12)
        assert deadline.remaining() == pytest.approx(18)

    def test_earliest_picks_the_sooner_end(self, clock: FakeClock) -> None:
        deadline = Deadline.after(30, clock)
        assert deadline.earliest(10).remaining() == pytest.approx(10)
        assert deadline.earliest(100).remaining() == pytest.approx(30)


class TestNoNetwork:
    """The unit suite's conftest refuses real connections, so nothing here can reach a real upstream."""

    def test_raw_sockets_cannot_connect(self) -> None:
        with socket.socket() as sock, pytest.raises(RuntimeError, match="must not open network connections"):
            sock.connect(("192.0.2.1", 443))

    def test_a_real_http_client_cannot_connect(self) -> None:
        with httpx.Client() as client, pytest.raises((RuntimeError, httpx.TransportError)):
            client.get("http://192.0.2.1:9/", timeout=1)


# --- a committed 200 is final ------------------------------------------------------------------------------------


def cut_after(prefix: bytes, error: Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A 200 whose body stops after ``prefix`` with ``error`` (what httpx raises when the peer closes early)."""

    def stream() -> Iterator[bytes]:
        yield prefix
        raise error

    return lambda request: httpx.Response(200, content=stream())


class TestCommitted200:
    @pytest.mark.parametrize(
        "prefix",
        [b"", b" \n \n", b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgo'],
        ids=["nothing", "keep-alive-then-close", "half-the-json"],
    )
    @pytest.mark.parametrize(
        "error", [httpx.RemoteProtocolError("peer closed"), httpx.ReadError("reset")], ids=["protocol", "read"]
    )
    def test_a_cut_body_is_a_502_incomplete_after_exactly_one_call(
        self, call, sleep: FakeSleep, png: bytes, prefix: bytes, error: Exception
    ) -> None:
        outcome, upstream, trace = call([cut_after(prefix, error), ok(png)])
        assert isinstance(outcome, UpstreamFailed)
        assert (outcome.status, outcome.code) == (502, "upstream_incomplete")
        assert upstream.calls == 1
        assert trace.attempts == 1
        assert sleep.delays == []

    def test_a_body_that_simply_ends_early_is_incomplete_too(self, call, png: bytes) -> None:
        body = json.dumps({"data": [{"b64_json": b64(png)}]}).encode()
        outcome, upstream, _ = call([httpx.Response(200, content=body[: len(body) // 2]), ok(png)])
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.code == "upstream_incomplete"
        assert upstream.calls == 1

    def test_a_body_larger_than_the_request_can_produce_is_cut_off(self, call, clock: FakeClock) -> None:
        sent = 0

        def runaway() -> Iterator[bytes]:
            nonlocal sent
            yield b'{"data": [{"b64_json": "'
            while True:
                sent += 65536
                yield b"A" * 65536

        outcome, upstream, _ = call([lambda request: httpx.Response(200, content=runaway())])
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.code == "upstream_too_large"
        assert upstream.calls == 1
        assert sent < 40 << 20  # 1024x1024 n=1: stopped long before the end that never comes

    def test_whitespace_padding_is_bounded_too(self, call) -> None:
        sent = 0

        def padding() -> Iterator[bytes]:
            nonlocal sent
            while True:
                sent += 1 << 20
                yield b" " * (1 << 20)

        outcome, _, _ = call([lambda request: httpx.Response(200, content=padding())])
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.code == "upstream_too_large"
        assert sent < 40 << 20

    def test_a_callback_failure_ends_the_call_without_a_retry(self, clock: FakeClock, png: bytes) -> None:
        calls = 0

        def answer(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return ok(png)

        def refuse(image: Any) -> None:
            raise UpstreamTimeout("no room left")

        client = UpstreamClient(BASE_URL, lambda: API_KEY, http=httpx.Client(transport=httpx.MockTransport(answer)))
        with pytest.raises(UpstreamTimeout):
            client.generate(dict(BODY), timeout=120, deadline=Deadline(clock() + 100, clock), on_image=refuse)
        assert calls == 1


class TestOddStatuses:
    @pytest.mark.parametrize("code", [418, 451, 302, 304, 199, 201, 204, 299])
    def test_a_status_outside_the_contract_is_a_502_without_a_retry(self, call, code: int) -> None:
        outcome, upstream, trace = call([httpx.Response(code, content=b'{"error": {"message": "teapot"}}')])
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.status == 502
        assert "teapot" not in outcome.message
        assert upstream.calls == 1
        assert trace.attempts == 1

    @pytest.mark.parametrize(
        "header, relayed, waited",
        # an invalid one is not relayed: the client gets the service's own default instead (every 429 has one)
        [("abc", "5", None), ("-5", "5", None), ("2.5", "5", None), ("99999999", "3600", None), ("2", "2", 2)],
    )
    def test_retry_after_is_honoured_and_relayed_only_when_valid(
        self, call, sleep: FakeSleep, png: bytes, header: str, relayed: str | None, waited: float | None
    ) -> None:
        outcome, _, _ = call([status(429, headers={"Retry-After": header})], budget=60)
        assert isinstance(outcome, UpstreamRejected)
        assert outcome.headers.get("Retry-After") == relayed
        if waited is not None:
            assert sleep.delays and min(sleep.delays) >= waited
        else:
            assert all(delay <= RetryPolicy().max_delay for delay in sleep.delays)

    def test_an_error_body_is_read_only_up_to_its_limit(self, call) -> None:
        sent = 0

        def endless_error() -> Iterator[bytes]:
            nonlocal sent
            yield b'{"error": {"message": "'
            while True:
                sent += 4096
                yield b"x" * 4096

        outcome, upstream, _ = call([lambda request: httpx.Response(400, content=endless_error())])
        assert isinstance(outcome, UpstreamRejected)
        assert outcome.status == 400
        assert sent <= MAX_ERROR_BODY_BYTES + 8192
        assert upstream.calls == 1


# --- server-sent events ------------------------------------------------------------------------------------------


def event_stream(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def partial_event(index: int, data: bytes) -> dict[str, Any]:
    return {
        "type": "image_generation.partial_image",
        "b64_json": b64(data),
        "partial_image_index": index,
        "size": "64x48",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "created_at": 1_760_000_000,
    }


def completed_event(data: bytes) -> dict[str, Any]:
    return {
        "type": "image_generation.completed",
        "b64_json": b64(data),
        "size": "64x48",
        "quality": "low",
        "background": "opaque",
        "output_format": "png",
        "created_at": 1_760_000_005,
        "usage": USAGE,
    }


class TestServerSentEvents:
    def stream(self, clock: FakeClock, replies: list[Reply]) -> tuple[Any, list[Any], list[Any], FakeUpstream]:
        upstream = FakeUpstream(clock, replies)
        client = UpstreamClient(
            BASE_URL,
            lambda: API_KEY,
            http=httpx.Client(transport=httpx.MockTransport(upstream)),
            sleep=FakeSleep(clock),
        )
        images: list[Any] = []
        partials: list[Any] = []
        body = {**BODY, "stream": True, "partial_images": 2}
        try:
            outcome: Any = client.generate(
                body,
                timeout=120,
                deadline=Deadline(clock() + 100, clock),
                on_image=images.append,
                on_partial=partials.append,
            )
        except ImageServiceError as exc:
            outcome = exc
        return outcome, images, partials, upstream

    def sse(self, content: bytes) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": "text/event-stream; charset=utf-8"})

    def test_partials_then_the_image_with_usage(self, clock: FakeClock, make_image, png: bytes) -> None:
        preview = make_image("PNG", (32, 24))
        content = event_stream(partial_event(0, preview), partial_event(1, preview), completed_event(png))
        outcome, images, partials, upstream = self.stream(clock, [self.sse(content)])
        assert isinstance(outcome, UpstreamResult)
        assert upstream.requests[0].headers["Accept"] == "text/event-stream"
        assert json.loads(upstream.requests[0].content)["stream"] is True
        assert [(p.index, p.data, p.fields["quality"]) for p in partials] == [(0, preview, "low"), (1, preview, "low")]
        assert [image.data for image in images] == [png]
        assert outcome.images == []  # handed to the sink, not kept
        assert outcome.usage == USAGE
        assert outcome.body["created"] == 1_760_000_005
        assert [summary.info.size for summary in outcome.summaries] == ["64x48"]

    def test_an_error_event_before_any_image_is_the_upstream_error(self, clock: FakeClock, png: bytes) -> None:
        error = {
            "type": "error",
            "error": {"message": "blocked", "type": "invalid_request_error", "code": "moderation_blocked"},
        }
        content = f"event: error\ndata: {json.dumps(error)}\n\n".encode()
        outcome, _, _, upstream = self.stream(clock, [self.sse(content), self.sse(event_stream(completed_event(png)))])
        assert isinstance(outcome, UpstreamRejected)
        assert (outcome.status, outcome.code) == (400, "moderation_blocked")
        assert upstream.calls == 1

    def test_an_error_event_after_a_partial_is_final(self, clock: FakeClock, make_image, png: bytes) -> None:
        error = {"type": "error", "error": {"message": "account failed", "type": "server_error"}}
        content = (
            event_stream(partial_event(0, make_image("PNG", (8, 8))))
            + f"event: error\ndata: {json.dumps(error)}\n\n".encode()
        )
        outcome, _, partials, upstream = self.stream(
            clock, [self.sse(content), self.sse(event_stream(completed_event(png)))]
        )
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.status == 502
        assert len(partials) == 1
        assert upstream.calls == 1

    def test_a_stream_cut_after_a_partial_is_incomplete_after_one_call(self, clock: FakeClock, make_image, png) -> None:
        def cut(request: httpx.Request) -> httpx.Response:
            def body() -> Iterator[bytes]:
                yield event_stream(partial_event(0, make_image("PNG", (8, 8))))
                raise httpx.RemoteProtocolError("peer closed")

            return httpx.Response(200, content=body(), headers={"content-type": "text/event-stream"})

        outcome, images, partials, upstream = self.stream(clock, [cut, self.sse(event_stream(completed_event(png)))])
        assert isinstance(outcome, UpstreamFailed)
        assert outcome.code == "upstream_incomplete"
        assert (len(partials), images, upstream.calls) == (1, [], 1)
