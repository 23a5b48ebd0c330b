"""The streamed edge (``imagecore.edge.streaming``) as an ASGI app, driven directly: what goes on the wire and when,
for a handler that answers at once, late, with events, with an error after events, or for a client that left;
and the proxy event and Lambda context it rebuilds from the adapter's headers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from imagecore.edge.adapter_event import AdapterLambdaContext, proxy_event
from imagecore.edge.streaming import READINESS_PATH, StreamedEdge, StreamLimits, current_events
from imagecore.platform.observability import current_record, request_record

FAST = StreamLimits(idle_limit=0.4, margin=0.1, keepalive_interval=0.1)  # hold 0.3 s


def scope(path: str = "/v1/images/generations", headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    context = {"requestId": "req-1", "authorizer": {"keyId": "key_abc"}, "resourcePath": path}
    lambda_context = {"request_id": "lam-1", "deadline": int(time.time() * 1000) + 60_000}
    base = [
        ("content-type", "application/json"),
        ("x-amzn-request-context", json.dumps(context)),
        ("x-amzn-lambda-context", json.dumps(lambda_context)),
    ]
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in (headers if headers is not None else base)],
    }


def proxy(status: int, body: Any, content_type: str = "application/json") -> dict[str, Any]:
    return {
        "statusCode": status,
        "multiValueHeaders": {"Content-Type": [content_type], "Cache-Control": ["no-store"]},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def run(edge: StreamedEdge, *, disconnect_after: float | None = None, request: dict[str, Any] | None = None):
    """Drive one request; returns (messages with their time since the start, the ASGI messages sent)."""
    sent: list[tuple[float, dict[str, Any]]] = []

    async def main() -> None:
        started = time.monotonic()
        body_read = False

        async def receive() -> dict[str, Any]:
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": b'{"prompt": "p"}', "more_body": False}
            if disconnect_after is not None:
                await asyncio.sleep(disconnect_after)
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append((time.monotonic() - started, message))

        await edge(request or scope(), receive, send)

    asyncio.run(main())
    return sent


def body_of(sent: list[tuple[float, dict[str, Any]]]) -> bytes:
    return b"".join(m["body"] for _, m in sent if m["type"] == "http.response.body")


def start_of(sent: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    (start,) = [m for _, m in sent if m["type"] == "http.response.start"]
    return start


def recorded(operation: str = "generations"):
    """A handler wrapper that writes one request record, as ``imagecore.api.serve`` does."""

    def wrap(inner):
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            with request_record(operation, event, context.aws_request_id) as record:
                result = inner(event, context)
                record.status = result["statusCode"]
                return result

        return handler

    return wrap


def test_an_answer_known_within_the_hold_time_goes_out_as_the_handler_made_it(log_tap):
    @recorded()
    def handler(event, context):
        return proxy(400, {"error": {"message": "bad", "type": "invalid_request_error", "param": "size"}})

    sent = run(StreamedEdge(handler, FAST))

    start = start_of(sent)
    assert start["status"] == 400
    assert (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body_of(sent))["error"]["param"] == "size"
    (line,) = log_tap.records()
    request = line["request"]
    assert (request["delivery"], request["streamed"], request["keepalives_sent"]) == ("buffered", False, 0)
    assert request["bytes_sent"] == len(body_of(sent))
    assert request["api_key_id"] == "key_abc"
    assert request["lambda_request_id"] == "lam-1"


def test_a_late_answer_commits_a_200_and_whitespace_then_the_json(log_tap):
    @recorded()
    def handler(event, context):
        time.sleep(0.75)
        return proxy(200, {"created": 1, "data": [{"url": "https://example/x.png"}]})

    sent = run(StreamedEdge(handler, FAST))

    start_at, start = next((t, m) for t, m in sent if m["type"] == "http.response.start")
    assert start["status"] == 200
    assert 0.25 < start_at < 0.6  # after the hold time (0.3 s), long before the answer
    body = body_of(sent)
    assert body.startswith(b" \n") and json.loads(body)["data"][0]["url"]
    request = log_tap.records()[0]["request"]
    assert request["delivery"] == "json-keepalive"
    assert request["keepalives_sent"] >= 3
    assert request["outcome"] == "success"


def test_a_late_failure_is_an_error_object_under_the_committed_200(log_tap):
    @recorded()
    def handler(event, context):
        time.sleep(1.5)  # well past the 0.3 s hold, even on a busy machine
        return proxy(502, {"error": {"message": "upstream failed", "type": "upstream_error", "code": "upstream_error"}})

    sent = run(StreamedEdge(handler, FAST))

    assert start_of(sent)["status"] == 200
    assert json.loads(body_of(sent))["error"]["code"] == "upstream_error"
    request = log_tap.records()[0]["request"]
    assert (request["status"], request["delivery"]) == (502, "json-keepalive")


def test_events_commit_an_event_stream_and_go_out_as_they_are_sent(log_tap):
    @recorded()
    def handler(event, context):
        channel = current_events()
        assert channel is not None
        channel.expect_events()
        channel.send("image_generation.partial_image", {"type": "image_generation.partial_image", "n": 0})
        time.sleep(0.2)
        channel.send("image_generation.completed", {"type": "image_generation.completed"})
        return proxy(200, {"created": 1, "data": []})

    sent = run(StreamedEdge(handler, StreamLimits(idle_limit=60, margin=1, keepalive_interval=10)))

    start = start_of(sent)
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    first_at = next(t for t, m in sent if m["type"] == "http.response.body" and m["body"].startswith(b"event: "))
    assert first_at < 0.15  # not held until the handler returned
    body = body_of(sent).decode()
    assert body.startswith("event: image_generation.partial_image\ndata: {")
    assert body.count("event: ") == 2
    assert '"created"' not in body  # the handler's closing answer is not sent: the events were the answer
    request = log_tap.records()[0]["request"]
    assert (request["streamed"], request["events_relayed"]) == (True, 2)
    assert request["first_partial_ms"] < 150


def test_a_failure_after_an_event_is_an_error_event_then_the_end(log_tap):
    @recorded()
    def handler(event, context):
        current_events().send("image_edit.partial_image", {"type": "image_edit.partial_image"})
        time.sleep(0.05)
        return proxy(502, {"error": {"message": "cut", "type": "upstream_error", "param": None, "code": "x"}})

    sent = run(StreamedEdge(handler, FAST))

    body = body_of(sent).decode()
    frames = [frame for frame in body.split("\n\n") if frame]
    assert frames[-1].startswith("event: error\ndata: ")
    # the Images stream's error object, and the Responses API's flat error event fields beside it
    assert json.loads(frames[-1].split("data: ", 1)[1]) == {
        "type": "error",
        "code": "x",
        "message": "cut",
        "param": None,
        "error": {"message": "cut", "type": "upstream_error", "param": None, "code": "x"},
    }
    assert sent[-1][1]["more_body"] is False


def test_a_stream_waiting_past_the_hold_time_keeps_alive_with_comments():
    def handler(event, context):
        current_events().expect_events()
        time.sleep(0.6)
        current_events().send("image_generation.completed", {"type": "image_generation.completed"})
        return proxy(200, {})

    sent = run(StreamedEdge(handler, FAST))

    assert (b"content-type", b"text/event-stream; charset=utf-8") in start_of(sent)["headers"]
    body = body_of(sent)
    assert body.startswith(b": keep-alive\n\n")
    assert body.endswith(b'event: image_generation.completed\ndata: {"type":"image_generation.completed"}\n\n')


def test_a_client_that_leaves_does_not_stop_the_handler(log_tap):
    finished = []

    @recorded()
    def handler(event, context):
        current_events().send("image_generation.partial_image", {"type": "image_generation.partial_image"})
        time.sleep(0.4)  # the client leaves meanwhile
        finished.append(True)  # e.g. the images stored
        current_events().send("image_generation.completed", {"type": "image_generation.completed"})
        return proxy(200, {})

    sent = run(StreamedEdge(handler, FAST), disconnect_after=0.1)

    assert finished == [True]
    assert body_of(sent).count(b"event: ") == 1  # nothing written after the client left
    request = log_tap.records()[0]["request"]
    assert request["client_disconnected"] is True
    assert request["events_relayed"] == 1


def test_a_crash_below_the_resolver_is_a_500_in_the_openai_shape():
    def handler(event, context):
        raise RuntimeError("boom")

    sent = run(StreamedEdge(handler, FAST))

    assert start_of(sent)["status"] == 500
    assert json.loads(body_of(sent))["error"]["code"] == "internal_error"
    assert b"boom" not in body_of(sent)


def test_readiness_path_answers_without_the_handler():
    def handler(event, context):
        raise AssertionError("not called")

    sent = run(StreamedEdge(handler, FAST), request={**scope(READINESS_PATH), "method": "GET"})

    assert start_of(sent)["status"] == 200


def test_the_event_carries_the_request_context_and_the_body():
    seen: list[tuple[dict[str, Any], Any]] = []

    def handler(event, context):
        seen.append((event, context))
        return proxy(200, {})

    run(StreamedEdge(handler, FAST))

    ((event, context),) = seen
    assert event["requestContext"]["authorizer"]["keyId"] == "key_abc"
    assert event["requestContext"]["requestId"] == "req-1"
    assert event["resource"] == "/v1/images/generations"
    assert (event["httpMethod"], event["path"], event["body"], event["isBase64Encoded"]) == (
        "POST",
        "/v1/images/generations",
        '{"prompt": "p"}',
        False,
    )
    assert "x-amzn-request-context" not in {k.lower() for k in event["headers"]}
    assert context.aws_request_id == "lam-1"
    assert 55_000 < context.get_remaining_time_in_millis() <= 60_000
    assert current_record().operation == "none"  # nothing leaked out of the request


def test_multipart_bodies_reach_the_handler_base64_encoded_like_api_gateways():
    raw = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG\xff\r\n--b--\r\n'
    event = proxy_event(
        "POST", "/v1/images/edits", [("a", "1"), ("a", "2")], [("Content-Type", "multipart/form-data; boundary=b")], raw
    )

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}


@pytest.mark.parametrize("header", [None, "not json", "[]"])
def test_a_missing_or_odd_lambda_context_still_gives_a_usable_context(header):
    context = AdapterLambdaContext.from_header(header)

    assert context.aws_request_id
    assert context.get_remaining_time_in_millis() > 0


def test_limits_scale_with_the_idle_limit():
    regional = StreamLimits.for_idle_limit(300)
    assert (regional.hold, regional.keepalive_interval) == (270, 15)
    tiny = StreamLimits.for_idle_limit(4)
    assert tiny.hold == 3 and tiny.keepalive_interval <= tiny.hold


def test_a_streamed_answer_carries_the_cors_headers_of_its_origin(monkeypatch):
    """Its headers go out with the first event, before the handler's own answer (and its CORS headers) exist."""
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://app.example.com")

    def handler(event, context):
        channel = current_events()
        assert channel is not None
        channel.expect_events()
        channel.send("image_generation.partial_image", {"type": "image_generation.partial_image"})
        return proxy(200, {"created": 1, "data": []})

    edge = StreamedEdge(handler, StreamLimits(idle_limit=60, margin=1, keepalive_interval=10))
    request = scope()
    allowed = run(edge, request={**request, "headers": [*request["headers"], (b"origin", b"https://app.example.com")]})
    other = run(edge, request={**request, "headers": [*request["headers"], (b"origin", b"https://evil.example")]})

    headers = dict(start_of(allowed)["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"access-control-allow-origin"] == b"https://app.example.com"
    assert b"Retry-After" in headers[b"access-control-expose-headers"]
    assert b"access-control-allow-origin" not in dict(start_of(other)["headers"])
