"""The part of Lambda's Extensions API (``2020-01-01``) that an internal extension uses, with the platform's side
of it, for the tests and the benchmark: Lambda itself is not available here.

An extension registers during init (``POST /2020-01-01/extension/register``, answered with its
``Lambda-Extension-Identifier``) and then asks for its next event (``GET /2020-01-01/extension/event/next``),
which blocks until there is one. The platform side is what Lambda does with an execution environment:

- ``finish_init`` ends init once every registered extension has asked for its next event; registering after that
  is refused (403), as in Lambda, where the runtime's first ``next`` closes registration;
- ``invoke`` delivers an ``INVOKE`` event (request id, deadline, function ARN, tracing header) to every extension
  registered for INVOKE;
- ``wait_idle`` returns when every one of them has asked for its next event again: the moment Lambda would
  freeze the environment or hand it its next invocation. Until then ``invoke`` refuses to start another one.

Not modelled: SHUTDOWN, the Telemetry API, external extensions' processes, ``init/error`` and ``exit/error``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.context import ACCOUNT_ID, REGION

PREFIX = "/2020-01-01/extension/"


class EnvironmentBusy(RuntimeError):
    """An invocation was started while an extension still held the environment."""


@dataclass
class _Registered:
    name: str
    events: list[str]
    waiting: bool = False  # has asked for its next event and not been given one
    pending: list[dict[str, Any]] = field(default_factory=list)


class LocalExtensionsApi:
    """The Extensions API on a loopback port; ``address`` is what ``AWS_LAMBDA_RUNTIME_API`` holds."""

    def __init__(self, function_name: str = "GenerationsStreamFunction") -> None:
        self.function_name = function_name
        self._extensions: dict[str, _Registered] = {}
        self._changed = threading.Condition()
        self._init_done = False
        self._closed = False
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if self.path != PREFIX + "register":
                    self._answer(404, {"errorMessage": f"no route {self.path}", "errorType": "InvalidRequest"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b"{}"
                status, headers, answer = api._register(self.headers.get("Lambda-Extension-Name"), body)
                self._answer(status, answer, headers)

            def do_GET(self) -> None:
                if self.path != PREFIX + "event/next":
                    self._answer(404, {"errorMessage": f"no route {self.path}", "errorType": "InvalidRequest"})
                    return
                status, headers, answer = api._next(self.headers.get("Lambda-Extension-Identifier"))
                self._answer(status, answer, headers)

            def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="extensions-api", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    # the extension's side --------------------------------------------------------------------------------------
    def _register(self, name: str | None, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            events = json.loads(body).get("events", [])
        except (ValueError, AttributeError):
            return 400, {}, {"errorMessage": "the body is not JSON", "errorType": "InvalidRequest"}
        if not name:
            return 400, {}, {"errorMessage": "no Lambda-Extension-Name", "errorType": "InvalidRequest"}
        with self._changed:
            if self._init_done:
                return 403, {}, {"errorMessage": "registration after init", "errorType": "ForbiddenRegistration"}
            identifier = str(uuid.uuid4())
            self._extensions[identifier] = _Registered(name, [str(event) for event in events])
        answer = {"functionName": self.function_name, "functionVersion": "$LATEST", "handler": "run.sh"}
        return 200, {"Lambda-Extension-Identifier": identifier}, answer

    def _next(self, identifier: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._changed:
            extension = self._extensions.get(identifier or "")
            if extension is None:
                return 403, {}, {"errorMessage": "unknown extension identifier", "errorType": "InvalidExtensionId"}
            extension.waiting = True
            self._changed.notify_all()
            while not extension.pending and not self._closed:
                self._changed.wait()
            if self._closed:
                return 500, {}, {"errorMessage": "the environment is shutting down", "errorType": "Shutdown"}
            extension.waiting = False
            event = extension.pending.pop(0)
        return 200, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())}, event

    # the platform's side ---------------------------------------------------------------------------------------
    def finish_init(self, timeout: float = 10.0) -> None:
        """End init: wait until every registered extension has asked for its next event, then close
        registration."""
        with self._changed:
            if not self._changed.wait_for(self._all_waiting, timeout=timeout):
                raise TimeoutError("an extension did not ask for its next event during init")
            self._init_done = True

    def invoke(self, request_id: str | None = None, *, timeout_s: float = 330.0, trace: str | None = None) -> str:
        """Start an invocation: its INVOKE event goes to every extension registered for INVOKE. The request id."""
        request_id = request_id or str(uuid.uuid4())
        event = {
            "eventType": "INVOKE",
            "deadlineMs": int((time.time() + timeout_s) * 1000),
            "requestId": request_id,
            "invokedFunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}",
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace or ""},
        }
        with self._changed:
            if not self._init_done:
                raise EnvironmentBusy("init has not finished")
            if not self._all_waiting():
                raise EnvironmentBusy("an extension still holds the environment")
            for extension in self._extensions.values():
                if "INVOKE" in extension.events:
                    extension.pending.append(event)
            self._changed.notify_all()
        return request_id

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every extension has asked for its next event (and none is left undelivered)."""
        with self._changed:
            if not self._changed.wait_for(self._all_waiting, timeout=timeout):
                raise TimeoutError(f"the environment was still held after {timeout} s")

    def _all_waiting(self) -> bool:
        return all(extension.waiting and not extension.pending for extension in self._extensions.values())

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
