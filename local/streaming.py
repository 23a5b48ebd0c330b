"""Streamed integrations (``ResponseTransferMode: RESPONSE_STREAM`` in template.yaml) for the local gateway.

In AWS such a route is invoked with InvokeWithResponseStream; the function runs AWS's Lambda Web Adapter, which
starts ``run.sh`` (uvicorn serving the function's ASGI app), waits for its readiness path to answer a healthy
status, and relays each event to it as an HTTP request with the request context in ``x-amzn-request-context``
(re-serialized: only the fields the adapter models) and the Lambda context in ``x-amzn-lambda-context``; the
answer goes back framed as a JSON prelude, 8 NUL bytes and the body, and API Gateway turns the prelude back into
the status and headers and passes the body on as it comes. Here the same happens on loopback (``local.web_adapter``
plays the adapter's part, from the function's AWS_LWA_* settings): each execution environment of a streamed
function is a process of its own serving the function's app (the one its ``run.sh`` names) with uvicorn, one
request at a time as in Lambda, checked for readiness before its first request, and the gateway relays its
answer chunk by chunk (chunked HTTP: ``curl -N`` shows each event as it is written)
under API Gateway's streaming rules:

- no 29 s integration cut: the route's ``TimeoutInMillis`` (up to 15 minutes) and the function's ``Timeout``;
- the idle limit: a stream that sends nothing for ``idle_limit`` seconds (5 minutes on a Regional endpoint,
  30 s edge-optimized) is closed;
- no 6 MB / 10 MB payload limit on the answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from werkzeug.wrappers import Response

from imagecore.platform.observability import logger
from local.web_adapter import (
    AdapterSettings,
    PreludeError,
    adapter_request_context,
    read_prelude,
    stream_prelude,
    wait_until_ready,
)

# API Gateway's idle timeout of a streamed response, by endpoint type.
IDLE_LIMIT_SECONDS = {"REGIONAL": 300.0, "PRIVATE": 300.0, "EDGE": 30.0}
STREAM_MAX_SECONDS = 15 * 60
INIT_LIMIT_SECONDS = 10.0  # Lambda's init phase
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
_NOT_RELAYED = _HOP_BY_HOP | {"date", "server"}  # API Gateway writes its own


@dataclass(frozen=True)
class StreamedFunction:
    name: str
    code_uri: str
    app_target: str  # module:attribute, as run.sh hands it to uvicorn
    factory: bool
    timeout_s: float
    memory_mb: int
    adapter: AdapterSettings = field(default_factory=AdapterSettings)


def asgi_target(run_script: Path) -> tuple[str, bool]:
    """The ``module:attribute`` that ``run.sh`` serves with uvicorn, and whether it is a factory."""
    text = run_script.read_text()
    for line in _logical_lines(text):
        words = shlex.split(line, comments=True)
        if "uvicorn" in words:
            rest = words[words.index("uvicorn") + 1 :]
            targets = [w for w in rest if re.fullmatch(r"[\w.]+:[\w.]+", w)]
            if targets:
                return targets[0], "--factory" in rest
    raise ValueError(f"{run_script} starts no uvicorn app")


def _logical_lines(text: str) -> list[str]:
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def idle_limit_of(template: dict[str, Any]) -> float:
    """The idle limit of the template's REST API, from its endpoint type."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Api":
            endpoint = (resource.get("Properties") or {}).get("EndpointConfiguration") or {}
            kind = endpoint.get("Type", "EDGE") if isinstance(endpoint, dict) else str(endpoint)
            return IDLE_LIMIT_SECONDS.get(str(kind).upper(), 30.0)
    return 30.0


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class _AppServer:
    """One function's ASGI app on a loopback port, as the adapter's local web server."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, loop="asyncio", http="h11", lifespan="off", access_log=False, log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="adapter-app")
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the streamed function's app did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def finish(self) -> None:
        """Stop taking requests and end once those in flight have (uvicorn's graceful shutdown), without waiting."""
        self.server.should_exit = True

    def stop(self, timeout: float | None = 5) -> None:
        self.finish()
        self.thread.join(timeout=timeout)


def _serve_app(conn: Connection, code_uri: str, app_target: str, factory: bool, variables: dict[str, str]) -> None:
    """A streamed function's execution environment: its app (its init), served until the parent says stop."""
    import importlib
    import sys

    from local.lambda_runtime import LineAtomicWriter, take_environment

    take_environment(variables)
    sys.stdout = LineAtomicWriter(sys.stdout)  # before the function is imported: its logger keeps this stream
    module_name, _, attribute = app_target.partition(":")
    package = ".".join(Path(code_uri.strip("/")).parts)
    try:
        app = getattr(importlib.import_module(f"{package}.{module_name}"), attribute)
        server = _AppServer(app() if factory else app)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", server.port))
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    server.stop(timeout=None)  # an invocation in flight ends first (the parent terminates one that never does)


class _AppProcess:
    """A streamed function's execution environment in a process of its own, from the parent's side: started,
    then checked for readiness as the adapter checks it (the init phase)."""

    def __init__(self, function: StreamedFunction) -> None:
        from local.lambda_runtime import INIT_TIMEOUT_S, process_context

        context = process_context()
        self.conn, child = context.Pipe()
        arguments = (child, function.code_uri, function.app_target, function.factory, dict(os.environ))
        self.process = context.Process(target=_serve_app, args=arguments, daemon=True)
        self.process.start()
        child.close()
        status, detail = self.conn.recv() if self.conn.poll(INIT_TIMEOUT_S) else ("failed", "no answer")
        if status != "ready":
            self.stop()
            raise RuntimeError(f"the streamed function's app did not start: {detail}")
        self.port = int(detail)
        try:
            waited = wait_until_ready(f"http://127.0.0.1:{self.port}", function.adapter, INIT_LIMIT_SECONDS)
        except Exception:
            self.stop()
            raise
        logger.debug("adapter: app ready", extra={"function": function.name, "ready_after_s": waited})

    def finish(self) -> None:
        """Tell the environment to take no more requests and to end once its invocation in flight has."""
        with contextlib.suppress(OSError):
            self.conn.send("stop")

    def stop(self) -> None:
        self.finish()
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()


class StreamedIntegrations:
    """The adapter and API Gateway's streaming relay for every streamed function of the template."""

    def __init__(self, root: Path, idle_limit: float) -> None:
        self.root = root
        self.idle_limit = idle_limit
        # Each function's idle execution environments (anything with a ``port`` and ``stop()``); one serves one
        # request at a time, and a new one starts when none is idle.
        self.idle: dict[str, list[Any]] = {}
        self._busy: set[Any] = set()
        self._retired: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._http = httpx.Client(follow_redirects=False)

    def _lease(self, function: StreamedFunction) -> Any:
        with self._lock:
            idle = self.idle.get(function.name)
            server = idle.pop() if idle else None
        if server is None:
            server = _AppProcess(function)
        with self._lock:
            self._busy.add(server)
        return server

    def _release(self, name: str, server: Any, *, reusable: bool = True) -> None:
        with self._lock:
            self._busy.discard(server)
            keep = reusable and not self._closed
            if keep:
                self.idle.setdefault(name, []).append(server)
        if not keep:
            server.stop()

    def _retire(self, server: Any) -> None:
        """An environment whose answer was cut (its client left, or API Gateway stopped waiting) goes on with its
        invocation, as a Lambda function does: it takes no other request, ends once that invocation has, and is
        stopped with the stack if it has not."""
        with self._lock:
            self._busy.discard(server)
            self._retired.append(server)
        server.finish()

    def invoke(
        self,
        function: StreamedFunction,
        event: dict[str, Any],
        body: bytes,
        *,
        integration_timeout_s: float,
        request_id: str,
        on_timeout: Any,
    ) -> Response:
        """Relay one request to an execution environment of the function and its answer back as it comes."""
        server = self._lease(function)
        started = time.monotonic()
        lambda_request_id = request_id.replace("-", "")[:8] + "-" + str(int(time.time() * 1000))
        lambda_context = {
            "request_id": lambda_request_id,
            "deadline": int(time.time() * 1000 + function.timeout_s * 1000),
            "invoked_function_arn": f"arn:aws:lambda:us-east-1:123456789012:function:{function.name}",
            "xray_trace_id": None,
            "env_config": {
                "function_name": function.name,
                "memory": function.memory_mb,
                "version": "$LATEST",
                "log_stream": "local",
                "log_group": f"/aws/lambda/{function.name}",
            },
        }
        headers: list[tuple[str, str]] = []
        for name, values in (event.get("multiValueHeaders") or {}).items():
            if name.lower() in _HOP_BY_HOP or name.lower() == "host":
                continue
            headers.extend((name, value) for value in values)
        headers.append(("x-amzn-request-context", json.dumps(adapter_request_context(event["requestContext"]))))
        headers.append(("x-amzn-lambda-context", json.dumps(lambda_context)))
        query = [(k, v) for k, vs in (event.get("multiValueQueryStringParameters") or {}).items() for v in vs]
        first_byte = min(integration_timeout_s, function.timeout_s, self.idle_limit)
        request = self._http.build_request(
            event["httpMethod"],
            f"http://127.0.0.1:{server.port}{event['path']}",
            params=query,
            headers=headers,
            content=body,
            timeout=httpx.Timeout(first_byte, connect=5.0),
        )
        try:
            upstream = self._http.send(request, stream=True)
        except httpx.TimeoutException:
            # Nothing came back before API Gateway gave up; the function goes on, as in AWS.
            self._retire(server)
            return on_timeout()
        except BaseException:
            self._release(function.name, server, reusable=False)
            raise
        ends_at = started + min(STREAM_MAX_SECONDS, function.timeout_s)
        if function.adapter.invoke_mode != "response_stream":
            # A buffered adapter answers a whole proxy response, which a STREAM integration cannot read.
            upstream.close()
            self._release(function.name, server, reusable=False)
            raise PreludeError(f"{function.name}: AWS_LWA_INVOKE_MODE is not response_stream")
        # The adapter frames the app's answer (prelude, delimiter, body); API Gateway reads it back.
        framed = _chain(
            stream_prelude(upstream.status_code, upstream.headers.multi_items()),
            self._relay(upstream, ends_at, request_id, function.name, server),
        )
        answer = read_prelude(framed)
        response = Response(answer.body, status=answer.status, direct_passthrough=True)
        response.headers.remove("Content-Type")
        for name, value in answer.headers:
            if name.lower() not in _NOT_RELAYED:
                response.headers.add(name, value)
        response.headers["x-amzn-RequestId"] = request_id
        return response

    def _relay(
        self, upstream: httpx.Response, ends_at: float, request_id: str, function: str, server: Any
    ) -> Iterator[bytes]:
        """The body as it comes, cut like API Gateway cuts a stream: idle too long, or past the time limits. The
        environment is free again once its answer has ended (a stream cut short: once it has seen that)."""
        complete = False
        try:
            stream = upstream.iter_raw()
            while True:
                # Each read waits at most the idle limit (httpx's read timeout).
                try:
                    chunk = next(stream)
                except StopIteration:
                    complete = True
                    return
                except httpx.ReadTimeout:
                    logger.warning(
                        "streamed response idle past the limit: closed",
                        extra={"request_id": request_id, "function": function, "idle_limit_s": self.idle_limit},
                    )
                    return
                if chunk:
                    yield chunk
                if time.monotonic() > ends_at:
                    logger.warning("streamed response past its time limit: closed", extra={"request_id": request_id})
                    return
        finally:
            upstream.close()
            if complete:
                self._release(function, server)
            else:  # a stream cut here may still be running in its environment
                self._retire(server)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            servers = [server for idle in self.idle.values() for server in idle] + self._retired
            self.idle.clear()
            self._retired.clear()
        for server in servers:
            server.stop()
        self._http.close()
