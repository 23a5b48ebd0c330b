"""Work deferred past the answer (``imagecore.platform.after_response``): the
internal extension against the Extensions API
(``local.extensions_api``): it registers during init, holds the environment until each invocation's own work has
run, matches work to invocations by request id, lets go at the deadline, survives failing work, and never
drops work when it cannot run it later."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from PIL import Image

from imagecore.accounts.budgets import Budget, UsageLedger
from imagecore.accounts.caller import spender_of
from imagecore.platform import after_response
from local.extensions_api import EnvironmentBusy, LocalExtensionsApi
from tests.helpers import key_of
from tests.integration.conftest import BUCKET


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalExtensionsApi]:
    emulated = LocalExtensionsApi()
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", emulated.address)
    after_response.stop_extension()
    yield emulated
    extension = after_response._extension  # the one this test started, if any
    emulated.close()
    if extension is not None:
        extension.join(5)  # its last log line is this test's, not the next one's
    after_response.stop_extension()


@pytest.fixture
def started(api: LocalExtensionsApi) -> after_response.InternalExtension:
    extension = after_response.start_extension()
    assert extension is not None
    api.finish_init()
    return extension


def _served(api: LocalExtensionsApi, ran: list[str], label: str, request_id: str | None = None) -> None:
    """One invocation (``request_id``, or a new one) whose handler defers appending ``label``, to its end."""
    request_id = request_id or api.invoke()
    with after_response.invocation(request_id):
        after_response.defer(lambda: ran.append(label))
    api.wait_idle(5)


def test_outside_lambda_deferred_work_runs_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    after_response.stop_extension()
    assert after_response.start_extension() is None
    order: list[str] = []
    with after_response.invocation("r-1"):
        after_response.defer(lambda: order.append("deferred"))
        order.append("answer")
    assert order == ["deferred", "answer"]


def test_the_extension_registers_for_invoke_during_init(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    assert started.identifier and started.alive
    assert after_response.start_extension() is started  # once per process


def test_the_answer_does_not_wait_for_deferred_work_but_the_environment_does(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    release = threading.Event()
    done: list[str] = []

    def settle() -> None:
        release.wait(10)
        done.append("settled")

    request_id = api.invoke()
    began = time.monotonic()
    with after_response.invocation(request_id):
        after_response.defer(settle)
    answered_in = time.monotonic() - began

    assert answered_in < 0.5  # the invocation ended with its work still blocked
    assert done == []
    time.sleep(0.1)
    with pytest.raises(TimeoutError):  # the extension holds the environment
        api.wait_idle(0.1)
    with pytest.raises(EnvironmentBusy):
        api.invoke()
    release.set()
    api.wait_idle(5)
    assert done == ["settled"]


def test_deferred_work_runs_in_the_invocations_context(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    seen: list[str] = []
    request_id = api.invoke()
    with after_response.invocation(request_id):
        who.set("the invocation")
        after_response.defer(lambda: seen.append(who.get()))
    api.wait_idle(5)
    assert seen == ["the invocation"]


def test_only_the_outermost_invocation_hands_over(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    ran: list[str] = []
    request_id = api.invoke()
    with after_response.invocation(request_id):  # the streamed edge
        with after_response.invocation(request_id):  # the function's handler inside it
            after_response.defer(lambda: ran.append("inner"))
        assert ran == []  # not handed over when the handler returned
        after_response.defer(lambda: ran.append("outer"))
    api.wait_idle(5)
    assert ran == ["inner", "outer"]
    _served(api, ran, "second")  # the next invocation is served on its own hand-over, not on a stray one
    assert ran == ["inner", "outer", "second"]


def test_work_of_a_request_that_was_no_invocation_runs_without_letting_the_environment_go(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    ran: list[str] = []
    with after_response.invocation("not-an-invocation"):  # e.g. handed over before Lambda's event arrived
        after_response.defer(lambda: ran.append("stray"))
    request_id = api.invoke()
    time.sleep(0.2)
    assert ran == ["stray"]
    with pytest.raises(TimeoutError):  # still waiting for this invocation's own hand-over
        api.wait_idle(0.1)
    _served(api, ran, "own", request_id)
    assert ran == ["stray", "own"]


def test_a_request_that_cannot_name_its_invocation_defers_nothing_and_hands_nothing_over(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    order: list[str] = []
    with after_response.invocation(None):  # e.g. the adapter's readiness check, or no x-amzn-lambda-context
        after_response.defer(lambda: order.append("deferred"))
        order.append("answer")
    assert order == ["deferred", "answer"]
    # nothing stray is queued: the next invocation is held until its own hand-over, then let go
    request_id = api.invoke()
    with pytest.raises(TimeoutError):
        api.wait_idle(0.2)
    _served(api, order, "own", request_id)
    assert order == ["deferred", "answer", "own"]


def test_an_invocation_with_nothing_deferred_still_lets_the_environment_go(
    api: LocalExtensionsApi, started: after_response.InternalExtension
) -> None:
    request_id = api.invoke()
    with after_response.invocation(request_id):
        pass
    api.wait_idle(5)


def test_failing_work_is_logged_and_the_rest_still_runs(
    api: LocalExtensionsApi, started: after_response.InternalExtension, log_tap: Any
) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ConnectionError("the table is unreachable")

    request_id = api.invoke()
    with after_response.invocation(request_id):
        after_response.defer(broken)
        after_response.defer(lambda: ran.append("next"))
    api.wait_idle(5)
    assert ran == ["next"]
    failures = [line for line in log_tap.lines if line.get("message") == "after-response work failed"]
    assert [line["error"] for line in failures] == ["ConnectionError"]


def test_an_invocation_that_never_hands_over_is_let_go_before_its_deadline_and_deferring_stops(
    api: LocalExtensionsApi, started: after_response.InternalExtension, log_tap: Any
) -> None:
    began = time.monotonic()
    api.invoke(timeout_s=after_response.DEADLINE_MARGIN_S + 0.3)
    api.wait_idle(5)
    assert time.monotonic() - began < 2
    assert any(line.get("message", "").startswith("no after-response hand-over") for line in log_tap.lines)
    # from then on work runs before the answer, and invocations are let go at once
    assert not started.alive
    order: list[str] = []
    request_id = api.invoke()
    with after_response.invocation(request_id):
        after_response.defer(lambda: order.append("deferred"))
        order.append("answer")
    assert order == ["deferred", "answer"]
    api.wait_idle(5)


def test_registration_after_init_is_refused_and_nothing_is_deferred(api: LocalExtensionsApi, log_tap: Any) -> None:
    api.finish_init()  # the runtime asked for its first event already
    assert after_response.start_extension() is None
    assert any("not registered" in line.get("message", "") for line in log_tap.lines)
    order: list[str] = []
    with after_response.invocation("r-1"):
        after_response.defer(lambda: order.append("deferred"))
        order.append("answer")
    assert order == ["deferred", "answer"]


def test_an_unreachable_extensions_api_defers_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{port}")
    after_response.stop_extension()
    try:
        assert after_response.start_extension() is None
    finally:
        after_response.stop_extension()


def test_when_the_extensions_api_goes_away_work_is_run_not_dropped(
    api: LocalExtensionsApi, started: after_response.InternalExtension, log_tap: Any
) -> None:
    api.close()
    deadline = time.monotonic() + 5
    while started.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not started.alive
    assert any(line.get("message") == "after-response extension stopped" for line in log_tap.lines)
    ran: list[str] = []
    with after_response.invocation("r-1"):
        after_response.defer(lambda: ran.append("work"))
    assert ran == ["work"]  # ran at once, in order


# --- the generations function: its usage settlement after the answer ------------------------------------------
def _drive_edge(edge: Any, request_context: dict[str, Any], request_id: str, body: dict[str, Any]) -> list[Any]:
    """One request through the streamed edge, as the Web Adapter sends it; the ASGI messages it wrote."""
    headers = [
        ("content-type", "application/json"),
        ("x-amzn-request-context", json.dumps(request_context)),
        ("x-amzn-lambda-context", json.dumps({"request_id": request_id, "deadline": int(time.time() * 1000) + 60_000})),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/images/generations",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    sent: list[Any] = []

    async def main() -> None:
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await edge(scope, receive, send)

    asyncio.run(main())
    return sent


@pytest.fixture
def blocked_settlements(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Every usage settlement waits for the event before it writes; the list says which thread wrote."""
    release = threading.Event()
    writers: list[str] = []
    settle = UsageLedger.settle

    def blocked(self: UsageLedger, *args: Any, **kwargs: Any) -> None:
        release.wait(10)
        settle(self, *args, **kwargs)
        writers.append(threading.current_thread().name)

    monkeypatch.setattr(UsageLedger, "settle", blocked)
    return release, writers


@pytest.fixture
def streamed(api: LocalExtensionsApi, configure: Any, simulator: Any) -> tuple[Any, Any]:
    """The generations function's module and its streamed edge, after init: its extension registered."""
    generations = configure()
    edge = generations.streamed_app()
    api.finish_init()
    return generations, edge


def _answer_of(sent: list[Any]) -> dict[str, Any]:
    assert sent[0]["status"] == 200 and sent[-1]["more_body"] is False  # the whole answer went out
    answer: dict[str, Any] = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return answer


def _usage_today(aws_resources: Any, event: dict[str, Any]) -> dict[str, Any]:
    ledger = UsageLedger(aws_resources.usage_table, client=boto3.client("dynamodb", region_name="us-east-1"))
    day: dict[str, Any] = ledger.usage(spender_of(event).account, Budget(), 1)["days"][0]
    return day


def test_a_streamed_generation_is_answered_before_its_usage_is_written_and_the_environment_waits_for_it(
    api: LocalExtensionsApi,
    streamed: tuple[Any, Any],
    api_event: Any,
    aws_resources: Any,
    simulator: Any,
    aws: Any,
    log_tap: Any,
    blocked_settlements: tuple[threading.Event, list[str]],
) -> None:
    release, writers = blocked_settlements
    event = api_event("generations")

    sent = _drive_edge(streamed[1], event["requestContext"], api.invoke(), {"prompt": "a red fox", "size": "1024x1024"})

    # the answer went out, with its stored image, and the request line was written ...
    answer = _answer_of(sent)
    stored = aws.get_object(Bucket=BUCKET, Key=key_of(answer["data"][0]["url"]))["Body"].read()
    image = Image.open(io.BytesIO(stored))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert len(log_tap.records()) == 1
    assert simulator.calls == 1
    # ... while its usage was not yet counted and the environment was still held
    assert writers == []
    assert _usage_today(aws_resources, event)["requests"] == 0
    with pytest.raises(TimeoutError):
        api.wait_idle(0.1)

    release.set()
    api.wait_idle(10)
    assert writers == [f"extension-{after_response.EXTENSION_NAME}"]
    day = _usage_today(aws_resources, event)
    assert (day["requests"], day["images"]) == (1, 1)
    assert day["input_tokens"] + day["output_tokens"] == answer["usage"]["total_tokens"]
    assert simulator.calls == 1


def test_a_refused_request_is_counted_after_its_answer_too(
    api: LocalExtensionsApi,
    streamed: tuple[Any, Any],
    api_event: Any,
    aws_resources: Any,
    simulator: Any,
    lambda_context: Any,
    blocked_settlements: tuple[threading.Event, list[str]],
) -> None:
    release, writers = blocked_settlements
    generations = streamed[0]
    event = api_event("generations", body={"prompt": "p", "n": 3})
    event["requestContext"]["authorizer"]["budget_images_per_day"] = 2
    lambda_context.aws_request_id = api.invoke()

    response = generations.lambda_handler(event, lambda_context)  # the buffered handler hands over on its own

    assert response["statusCode"] == 429
    assert json.loads(response["body"])["error"]["code"] == "budget_exceeded"
    assert writers == [] and simulator.calls == 0
    release.set()
    api.wait_idle(10)
    day = _usage_today(aws_resources, event)
    assert (day["requests"], day["images"], day["failures"]) == (1, 0, {"budget_exceeded": 1})


def test_a_usage_write_that_fails_after_the_answer_is_logged_and_the_environment_is_let_go(
    api: LocalExtensionsApi,
    aws_resources: Any,
    aws_faults: Any,
    streamed: tuple[Any, Any],
    api_event: Any,
    simulator: Any,
    aws: Any,
    log_tap: Any,
) -> None:
    usage_writes = aws_faults.fail(
        "dynamodb", "UpdateItem", when=lambda params: params.get("TableName") == aws_resources.usage_table
    )
    event = api_event("generations")

    sent = _drive_edge(streamed[1], event["requestContext"], api.invoke(), {"prompt": "a red fox", "size": "1024x1024"})
    api.wait_idle(10)

    answer = _answer_of(sent)
    assert aws.head_object(Bucket=BUCKET, Key=key_of(answer["data"][0]["url"]))["ContentLength"] > 0
    assert simulator.calls == 1
    assert usage_writes.failed >= 1
    warnings = [line for line in log_tap.lines if line.get("message") == "usage not counted"]
    assert [line["code"] for line in warnings] == ["ServiceUnavailable"]
    assert _usage_today(aws_resources, event)["requests"] == 0


def test_a_streamed_edit_settles_after_its_answer_too(
    api: LocalExtensionsApi,
    monkeypatch: pytest.MonkeyPatch,
    simulator: Any,
    aws_resources: Any,
    api_event: Any,
    lambda_context: Any,
    blocked_settlements: tuple[threading.Event, list[str]],
) -> None:
    from functions.edits import app as edits
    from tests.helpers import encode, multipart
    from tests.integration.environment import set_function_env

    release, writers = blocked_settlements
    set_function_env(monkeypatch, simulator.url, function="EditsFunction")
    edits.runtime.cache_clear()
    edits.streamed_app()  # init: the edits function registers its extension too
    api.finish_init()
    body, content_type = multipart(
        {"prompt": "add a hat"}, [("image", ("cat.png", encode(Image.new("RGB", (64, 64))), "image/png"))]
    )
    event = api_event("generations", raw_body=base64.b64encode(body).decode(), headers={"Content-Type": content_type})
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = "/v1/images/edits"
    event["isBase64Encoded"] = True
    lambda_context.aws_request_id = api.invoke()
    try:
        response = edits.lambda_handler(event, lambda_context)

        assert response["statusCode"] == 200, response["body"]
        assert writers == [] and simulator.calls == 1
        release.set()
        api.wait_idle(10)
        day = _usage_today(aws_resources, event)
        assert (day["requests"], day["images"]) == (1, 1)
    finally:
        edits.runtime.cache_clear()
