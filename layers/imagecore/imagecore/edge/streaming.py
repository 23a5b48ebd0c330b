"""The streamed HTTP edge of the image routes: an ASGI app behind AWS's Lambda Web Adapter.

API Gateway streams these routes (``responseTransferMode: STREAM``): the adapter (1.x, ``AWS_LWA_INVOKE_MODE:
response_stream``) waits until ``GET /_ready`` (``AWS_LWA_READINESS_CHECK_PATH``) answers 200
(``AWS_LWA_READINESS_CHECK_HEALTHY_STATUS``) on ``AWS_LWA_PORT``, then turns each event back into an HTTP request
to this app (the request context, re-serialized to the fields the adapter models, in ``x-amzn-request-context``;
the Lambda context in ``x-amzn-lambda-context``) and relays what the app writes as it writes it, after a JSON
prelude of its status and headers. The app rebuilds the proxy event and
runs the function's own Powertools handler on it in a worker thread, so validation, the error-to-HTTP map,
idempotency, the request line and the service are the very ones of ``imagecore.api``; this module only decides
*when* bytes go out:

- an answer known within the hold time (the idle limit minus a margin) goes out exactly as the handler made
  it: status, headers, JSON;
- a request that would sit silent past it commits a 200 and writes JSON-safe whitespace until the answer is
  known (sub2api's own contract); a failure after that is the ``{"error": ...}`` body under the 200;
- with ``stream: true`` the handler sends server-sent events through ``current_events()``; the first one
  commits a 200 ``text/event-stream``; a failure after it is an ``event: error`` carrying the same error JSON,
  then the end of the stream; a refusal before it is an ordinary HTTP error.

If the client goes away, the handler runs to its end (every image is stored) and the request line says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from imagecore.edge.adapter_event import LAMBDA_CONTEXT_HEADER, AdapterLambdaContext, proxy_event
from imagecore.edge.cors import configured_policy, origin_of
from imagecore.edge.http_errors import error_answer, internal_error
from imagecore.platform.observability import RequestRecord, hold_records, logger, metrics, write_record

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READINESS_PATH = "/_ready"  # the template's AWS_LWA_READINESS_CHECK_PATH (tests/template checks they agree)
# JSON allows whitespace before a value: a client's JSON parser reads " \n \n{...}" as the object.
JSON_KEEPALIVE = b" \n"
SSE_KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True)
class StreamLimits:
    """How long the edge may stay silent: API Gateway closes a streamed response idle for ``idle_limit``
    seconds (5 minutes on Regional endpoints); the edge speaks ``margin`` seconds before that, then every
    ``keepalive_interval`` seconds."""

    idle_limit: float = 300.0
    margin: float = 30.0
    keepalive_interval: float = 15.0

    @property
    def hold(self) -> float:
        return max(0.0, self.idle_limit - self.margin)

    @classmethod
    def for_idle_limit(cls, idle_limit: float) -> StreamLimits:
        """A margin of a quarter of the limit, 30 s at most; a keep-alive every 15 s at most."""
        margin = min(cls.margin, idle_limit / 4)
        return cls(idle_limit, margin, min(cls.keepalive_interval, max(idle_limit - margin, 0.1)))


# --- what a route uses to send events ----------------------------------------------------------------------


class EventChannel:
    """Server-sent events from the handler's thread to the edge; ``send`` never blocks on the client."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self._loop = loop
        self._queue = queue
        self.is_event_stream = False

    def expect_events(self) -> None:
        """The answer will be events: should the wait outlast the hold time, the edge commits an event stream
        (and keeps it alive with comments) rather than JSON."""
        self.is_event_stream = True

    def send(self, event: str, data: dict[str, Any]) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (event, data))


_channel: contextvars.ContextVar[EventChannel | None] = contextvars.ContextVar("event_channel", default=None)


def current_events() -> EventChannel | None:
    """The event channel of the streamed request being handled; None outside the streamed edge."""
    return _channel.get()


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# --- adapter headers -> proxy event and Lambda context -----------------------------------------------------


# --- the ASGI app ------------------------------------------------------------------------------------------


@dataclass
class _Relay:
    """What one request's answer looked like on the wire; it goes into the request line."""

    mode: str | None = None  # None until committed: "buffered", "json-keepalive" or "sse"
    events: int = 0
    first_partial_ms: float | None = None
    bytes_sent: int = 0
    keepalives: int = 0
    client_left: bool = False
    started: float = field(default_factory=time.monotonic)
    # The CORS headers for the request's origin: on every start, whether the answer is SSE, keep-alive or whole.
    cors: list[tuple[bytes, bytes]] = field(default_factory=list)


def function_edge(handler: Handler, idle_limit_seconds: float) -> StreamedEdge:
    """A streamed function's ASGI app (its ``streamed_app``), made during init."""
    return StreamedEdge(handler, StreamLimits.for_idle_limit(idle_limit_seconds))


class StreamedEdge:
    """ASGI app: ``GET /_ready`` for the adapter's readiness check, every other request to ``handler``."""

    def __init__(self, handler: Handler, limits: StreamLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or StreamLimits()
        # The handler's own metrics flush finds nothing while the edge holds its request line (the request's
        # metrics go out with that line, after the answer); Powertools warns about every empty flush.
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == READINESS_PATH:
            await _send_whole(send, 200, [(b"content-type", b"text/plain")], b"ready")
            return
        await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        context = AdapterLambdaContext.from_header(dict(headers_lower(headers)).get(LAMBDA_CONTEXT_HEADER))
        await self._answer(scope, receive, send, headers, context)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, headers: list[tuple[str, str]], context: AdapterLambdaContext
    ) -> None:
        relay = _Relay()
        body = await _read_body(receive)
        query = _query_pairs(scope.get("query_string", b""))
        event = proxy_event(scope["method"], scope["path"], query, headers, body)
        cors = configured_policy().headers(origin_of(dict(headers)))
        relay.cors = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in cors.items()]
        trace = dict(headers_lower(headers)).get("x-amzn-trace-id")
        if trace:
            # What the Python runtime does for each invocation: X-Ray reads the trace header from here.
            os.environ["_X_AMZN_TRACE_ID"] = trace

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        channel = EventChannel(loop, queue)
        watcher = asyncio.create_task(_watch_disconnect(receive, relay))
        with hold_records() as held:
            token = _channel.set(channel)
            try:
                # The invocation's own context: what the handler sets in it (the Logger's keys among them) is
                # there again when its request line is written, after the answer has gone out.
                invocation = contextvars.copy_context()
            finally:
                _channel.reset(token)
            work = loop.run_in_executor(None, invocation.run, self.handler, event, context)
            try:
                await self._relay(work, channel, queue, send, relay)
            finally:
                watcher.cancel()
            invocation.run(self._write_records, held, relay)

    async def _relay(
        self,
        work: asyncio.Future[dict[str, Any]],
        channel: EventChannel,
        queue: asyncio.Queue[tuple[str, dict[str, Any]]],
        send: Send,
        relay: _Relay,
    ) -> None:
        hold_until = relay.started + self.limits.hold
        while True:
            # Silent until the hold time is up; once committed, a keep-alive after each quiet interval.
            wait = self.limits.keepalive_interval if relay.mode else max(0.0, hold_until - time.monotonic())
            getter = asyncio.ensure_future(queue.get())
            waiting: set[asyncio.Future[Any]] = {getter, work}
            done, _ = await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await self._send_event(send, relay, *getter.result())
                continue
            getter.cancel()
            if work in done:
                while not queue.empty():  # events sent just before the handler returned
                    await self._send_event(send, relay, *queue.get_nowait())
                await self._finish(send, relay, _result_of(work))
                return
            await self._keepalive(send, relay, channel.is_event_stream)

    async def _send_event(self, send: Send, relay: _Relay, event: str, data: dict[str, Any]) -> None:
        if relay.mode is None:
            relay.mode = "sse"
            await self._start(send, relay, 200, _sse_headers())
        elif relay.mode != "sse":  # events after a JSON keep-alive cannot be framed: the JSON answer follows
            return
        if not await self._write(send, relay, sse_frame(event, data)):
            return
        relay.events += 1
        if relay.first_partial_ms is None and event.endswith(".partial_image"):
            relay.first_partial_ms = round((time.monotonic() - relay.started) * 1000, 1)

    async def _keepalive(self, send: Send, relay: _Relay, events: bool) -> None:
        if relay.mode is None and events:
            relay.mode = "sse"
            await self._start(send, relay, 200, _sse_headers())
        elif relay.mode is None:
            relay.mode = "json-keepalive"
            await self._start(send, relay, 200, [(b"content-type", b"application/json"), *_no_store()])
        if await self._write(send, relay, SSE_KEEPALIVE if relay.mode == "sse" else JSON_KEEPALIVE):
            relay.keepalives += 1

    async def _finish(self, send: Send, relay: _Relay, result: dict[str, Any]) -> None:
        status = int(result.get("statusCode") or 500)
        body = _body_of(result)
        if relay.mode is None:
            relay.mode = "buffered"
            await self._start(send, relay, status, _headers_of(result))
            await self._write(send, relay, body, more=False)
            return
        if relay.mode == "sse":
            if status >= 400:
                # The error JSON of the error map, framed: the SDK raises it as an APIError.
                if await self._write(send, relay, sse_frame("error", _error_object(body)), more=False):
                    relay.events += 1
            else:
                await self._write(send, relay, b"", more=False)
            return
        # Committed with keep-alives: the answer (or its error object) is the JSON after the whitespace.
        await self._write(send, relay, body, more=False)

    async def _start(self, send: Send, relay: _Relay, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if relay.client_left:
            return
        present = {name for name, _ in headers}
        headers = [*headers, *((name, value) for name, value in relay.cors if name not in present)]
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
        except OSError:
            relay.client_left = True

    async def _write(self, send: Send, relay: _Relay, data: bytes, *, more: bool = True) -> bool:
        """Write to the client unless it has left; whether it was written."""
        if relay.client_left:
            return False
        try:
            await send({"type": "http.response.body", "body": data, "more_body": more})
        except OSError:
            relay.client_left = True
            return False
        relay.bytes_sent += len(data)
        return True

    @staticmethod
    def _write_records(held: list[tuple[RequestRecord, str]], relay: _Relay) -> None:
        for record, message in held:
            record.streamed = relay.mode == "sse"
            record.delivery = relay.mode
            record.events_relayed = relay.events
            record.first_partial_ms = relay.first_partial_ms
            record.bytes_sent = relay.bytes_sent
            record.keepalives_sent = relay.keepalives
            record.client_disconnected = relay.client_left
            write_record(record, message)
        if held:  # the handler's own flush ran before the line was written: these metrics go out now
            metrics.flush_metrics()


def headers_lower(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in headers]


def _query_pairs(raw: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


def _sse_headers() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/event-stream; charset=utf-8"), *_no_store(), (b"x-accel-buffering", b"no")]


def _no_store() -> list[tuple[bytes, bytes]]:
    return [(b"cache-control", b"no-store")]


def _headers_of(result: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[str, str]] = []
    multi = result.get("multiValueHeaders") or {}
    for name, value in (result.get("headers") or {}).items():
        if name not in multi:
            pairs.append((name, str(value)))
    for name, values in multi.items():
        pairs.extend((name, str(value)) for value in values)
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def _body_of(result: dict[str, Any]) -> bytes:
    body = result.get("body") or ""
    return base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")


def _error_object(body: bytes) -> dict[str, Any]:
    """The data of the ``event: error`` that ends a stream whose 200 is committed: the error object as the Images
    stream has it (``{"error": {...}}``, which the OpenAI SDKs raise as ``APIError``) and, beside it, the flat
    fields of the Responses API's ``error`` event (``type``, ``code``, ``message``, ``param``)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)):
        parsed = error_answer(internal_error()).body
    error = parsed["error"]
    return {
        "type": "error",
        "code": error.get("code"),
        "message": error.get("message"),
        "param": error.get("param"),
        "error": error,
    }


def _result_of(work: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    try:
        return work.result()
    except Exception:
        # The handler's own resolver turns every error into a response: this is a crash below it.
        logger.exception("streamed handler failed")
        answer = error_answer(internal_error())
        return {
            "statusCode": answer.status,
            "headers": {"Content-Type": "application/json", **answer.headers},
            "body": json.dumps(answer.body),
        }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive, relay: _Relay) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            relay.client_left = True
            return


async def _send_whole(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
