"""The local gateway's streamed integrations (``local.streaming``): the function's app served on a loopback
port as the Lambda Web Adapter serves it (readiness checked first, the request context as the adapter filters
it, the answer framed as a prelude and read back as API Gateway reads it), relayed chunk by chunk, and API
Gateway's streaming limits applied (the idle limit closes a silent stream; no payload limit)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from local.api_definition import read_api
from local.gateway import load_template
from local.streaming import StreamedFunction, StreamedIntegrations, _AppServer, asgi_target, idle_limit_of
from local.web_adapter import AdapterSettings, PreludeError, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


STREAMING = AdapterSettings(invoke_mode="response_stream")


def chunky_app(
    chunks: list[tuple[float, bytes]], status: int = 200, answer_headers: list[tuple[bytes, bytes]] | None = None
):
    """An ASGI app that writes each chunk after its pause, and tells what it received."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = (await receive()).get("body", b"")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        start_headers = [(b"content-type", b"text/plain")] if answer_headers is None else answer_headers
        await send({"type": "http.response.start", "status": status, "headers": start_headers})
        seen = json.dumps({"body": body.decode(), "context": json.loads(headers["x-amzn-request-context"])})
        await send({"type": "http.response.body", "body": seen.encode() + b"\n", "more_body": True})
        for pause, chunk in chunks:
            await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def relay(
    chunks: list[tuple[float, bytes]], idle_limit: float, app: Any = None, adapter: AdapterSettings = STREAMING
) -> tuple[list[tuple[float, bytes]], Any]:
    integrations = StreamedIntegrations(ROOT, idle_limit)
    function = StreamedFunction("TestFunction", "functions/test/", "app:app", False, 60, 128, adapter)
    integrations.idle[function.name] = [_AppServer(app or chunky_app(chunks))]
    event = {
        "httpMethod": "POST",
        "path": "/v1/images/generations",
        "multiValueHeaders": {"Content-Type": ["application/json"]},
        "requestContext": {
            "requestId": "r-1",
            "extendedRequestId": "x-1",
            "authorizer": {"keyId": "key_1"},
            "identity": {"sourceIp": "203.0.113.9", "clientCert": {"clientCertPem": "..."}},
        },
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
    assert first["body"] == '{"prompt": "p"}'
    context = first["context"]  # what the adapter's typed request context keeps, nulls included
    assert (context["requestId"], context["authorizer"], context["httpMethod"]) == ("r-1", {"keyId": "key_1"}, None)
    assert context["identity"]["sourceIp"] == "203.0.113.9" and context["identity"]["userAgent"] is None
    assert "extendedRequestId" not in context and "clientCert" not in context["identity"]
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


def test_the_template_streams_exactly_the_image_routes_with_their_apps():
    template = load_template(ROOT / "template.yaml")
    api = read_api(template)

    streamed = {(route.method, route.path): route for route in api.routes if route.streamed}
    assert set(streamed) == {
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/responses"),
    }
    for route in streamed.values():
        assert route.integration_timeout_ms == 900_000
        assert route.timeout_s == 360
        assert asgi_target(ROOT / route.code_uri / route.handler) == ("app:streamed_app", True)
    assert idle_limit_of(template) == 300  # a Regional endpoint


def test_the_answer_goes_through_the_prelude_status_headers_and_cookies_included():
    headers = [(b"x-part", b"one"), (b"x-part", b"two"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    received, response = relay([(0, b"rest")], idle_limit=5, app=chunky_app([(0, b"rest")], 201, headers))

    assert response.status_code == 201
    assert response.headers.getlist("x-part") == ["one", "two"]
    assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    # lambda_http's default when the app names no content type
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert b"".join(chunk for _, chunk in received).endswith(b"rest")
    assert b"\x00" * 8 not in b"".join(chunk for _, chunk in received)


def test_a_buffered_adapter_on_a_streamed_route_is_refused():
    with pytest.raises(PreludeError, match="AWS_LWA_INVOKE_MODE"):
        relay([], idle_limit=5, adapter=AdapterSettings(invoke_mode="buffered"))


def readiness_app(ready_after: int, path: str = "/_ready"):
    """503 on the readiness path for the first ``ready_after`` checks, then 200; 404 elsewhere."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["path"])
        checks = seen.count(path)
        status = 404 if scope["path"] != path else 503 if checks <= ready_after else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app, seen


def test_readiness_is_polled_until_the_healthy_status():
    app, seen = readiness_app(ready_after=5)
    server = _AppServer(app)
    try:
        settings = AdapterSettings(readiness_path="/_ready", healthy_status=frozenset({200}))
        waited = wait_until_ready(f"http://127.0.0.1:{server.port}", settings, timeout_s=5)
    finally:
        server.stop()

    assert seen == ["/_ready"] * 6
    assert 0.04 < waited < 2  # every 10 ms


def test_an_unhealthy_readiness_status_never_lets_the_first_request_in():
    app, seen = readiness_app(ready_after=10_000)
    server = _AppServer(app)
    try:
        settings = AdapterSettings(readiness_path="/_ready", healthy_status=frozenset({200}))
        with pytest.raises(TimeoutError, match="not ready"):
            wait_until_ready(f"http://127.0.0.1:{server.port}", settings, timeout_s=0.3)
    finally:
        server.stop()

    assert len(seen) > 5 and set(seen) == {"/_ready"}
