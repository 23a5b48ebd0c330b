"""The local gateway's streamed integrations (``local.streaming``): the function's app served on a loopback
port as the Lambda Web Adapter serves it, its answer relayed chunk by chunk, and API Gateway's streaming limits
applied (the idle limit closes a silent stream; no payload limit)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from local.gateway import load_template, read_api
from local.streaming import StreamedFunction, StreamedIntegrations, _AppServer, asgi_target, idle_limit_of

ROOT = Path(__file__).resolve().parents[2]


def chunky_app(chunks: list[tuple[float, bytes]]):
    """An ASGI app that writes each chunk after its pause, and tells what it received."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = (await receive()).get("body", b"")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        seen = json.dumps({"body": body.decode(), "context": json.loads(headers["x-amzn-request-context"])})
        await send({"type": "http.response.body", "body": seen.encode() + b"\n", "more_body": True})
        for pause, chunk in chunks:
            await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def relay(chunks: list[tuple[float, bytes]], idle_limit: float) -> tuple[list[tuple[float, bytes]], Any]:
    integrations = StreamedIntegrations(ROOT, idle_limit)
    function = StreamedFunction("TestFunction", "functions/test/", "app:app", False, 60, 128)
    integrations.idle[function.name] = [_AppServer(chunky_app(chunks))]
    event = {
        "httpMethod": "POST",
        "path": "/v1/images/generations",
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "requestContext": {"requestId": "r-1", "authorizer": {"keyId": "key_1"}},
    }
    try:
        started = time.monotonic()
        response = integrations.invoke(
            function, event, b'{"prompt": "p"}', integration_timeout_s=900, request_id="r-1", on_timeout=None
        )
        received = [(time.monotonic() - started, chunk) for chunk in response.response]
    finally:
        integrations.close()
    return received, response


def test_chunks_are_relayed_as_they_are_written_with_the_request_context():
    received, response = relay([(0.3, b"one\n"), (0.3, b"two\n")], idle_limit=5)

    assert response.status_code == 200
    text = b"".join(chunk for _, chunk in received)
    first = json.loads(text.split(b"\n", 1)[0])
    assert first == {"body": '{"prompt": "p"}', "context": {"requestId": "r-1", "authorizer": {"keyId": "key_1"}}}
    assert text.endswith(b"one\ntwo\n")
    times = {chunk: at for at, chunk in received}
    assert times[b"one\n"] < times[b"two\n"] - 0.2  # the first was not held back for the second


def test_a_stream_silent_past_the_idle_limit_is_closed():
    received, _ = relay([(0.1, b"early\n"), (2.0, b"too late\n")], idle_limit=0.5)

    text = b"".join(chunk for _, chunk in received)
    assert text.endswith(b"early\n")
    assert b"too late" not in text
    assert received[-1][0] < 1.5


def test_a_large_answer_is_not_cut_at_lambdas_6_mb():
    big = b"x" * (8 * 1024 * 1024)
    received, _ = relay([(0, big)], idle_limit=5)

    assert sum(len(chunk) for _, chunk in received) > len(big)


def test_the_template_streams_exactly_the_two_image_routes_with_their_apps():
    template = load_template(ROOT / "template.yaml")
    api = read_api(template)

    streamed = {(route.method, route.path): route for route in api.routes if route.streamed}
    assert set(streamed) == {("POST", "/v1/images/generations"), ("POST", "/v1/images/edits")}
    for route in streamed.values():
        assert route.integration_timeout_ms == 900_000
        assert route.timeout_s == 360
        assert asgi_target(ROOT / route.code_uri / route.handler) == ("app:streamed_app", True)
    assert idle_limit_of(template) == 300  # a Regional endpoint
