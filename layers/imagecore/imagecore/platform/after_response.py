"""Work an answer does not wait for: run once the response has gone, before the execution environment takes its
next invocation.

Lambda freezes an execution environment when its runtime has posted the answer *and* every extension registered
for the invocation has asked for its next event. An internal extension, a thread of the function's own process
registered through the Extensions API during init, can therefore keep the environment running while the answer
is already on its way to the client; the time counts in the invocation's billed duration, not in the caller's
wait. (This is the Lambda Web Adapter's background-task pattern, with its known pitfall avoided: each
invocation's work is matched to the invocation by request id, not by order, so a readiness check or a request
that was not an invocation cannot shift every later invocation's work by one.)

What a request defers here must not change its answer: in this service, the settlement of its usage (the
reservation made before the upstream call already holds the most it can cost against its budgets, so a
settlement that runs a few milliseconds after the answer never lets a budget be passed). ``defer`` collects
such work for the invocation that is running; ``invocation`` hands it to the extension when the invocation's
answer is complete. Outside Lambda (the local stack, the tests), in a function that did not start the extension,
or after the extension failed, nothing is deferred: ``defer`` runs the work at once, in the order a caller sees.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagecore.platform.observability import logger

if TYPE_CHECKING:  # the extension's own modules are imported when one is started (in Lambda only)
    import queue

API_VERSION = "2020-01-01"
NAME_HEADER = "Lambda-Extension-Name"
ID_HEADER = "Lambda-Extension-Identifier"
# Stop waiting for an invocation's hand-over this long before its deadline, so that the environment is let go
# (and the invocation's own timeout reported) rather than held by a hand-over that never comes.
DEADLINE_MARGIN_S = 1.0
REGISTER_TIMEOUT_S = 2.0
EXTENSION_NAME = "image-service-after-response"

Work = Callable[[], None]


class ExtensionsApiError(Exception):
    """The Extensions API refused a call or answered outside its contract."""


class InternalExtension:
    """An internal extension registered for INVOKE events. For each invocation it waits for the function's
    hand-over of that invocation's work (``hand_over``), runs it, and only then asks for the next event."""

    def __init__(self, runtime_api: str, name: str, *, clock: Callable[[], float] = time.time) -> None:
        import queue

        self.runtime_api = runtime_api
        self.name = name
        self.clock = clock
        self.identifier: str | None = None
        self._handovers: queue.Queue[tuple[str, list[Work]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stopping = threading.Lock()  # a hand-over and the thread's stop cannot cross

    # lifecycle -----------------------------------------------------------------------------------------------
    def register(self) -> None:
        """Register for INVOKE events (internal extensions get no others). Must happen during init, before the
        runtime asks for its first invocation; afterwards Lambda refuses it."""
        status, headers, body = self._request(
            "POST",
            "register",
            body=b'{"events": ["INVOKE"]}',
            headers={NAME_HEADER: self.name, "Content-Type": "application/json"},
            timeout=REGISTER_TIMEOUT_S,
        )
        identifier = headers.get(ID_HEADER.lower())
        if status != 200 or not identifier:
            raise ExtensionsApiError(f"registration answered {status}: {_error_type(body)}")
        self.identifier = identifier

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"extension-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (it does when the Extensions API goes away)."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopped.is_set()

    def hand_over(self, request_id: str, work: list[Work]) -> None:
        """The invocation ``request_id`` has answered: run ``work``, then let the environment go. If the extension
        has stopped, the work runs here and now (it is never dropped)."""
        with self._stopping:
            if self.alive:
                self._handovers.put((request_id, work))
                return
        run_all(work)

    # the extension's thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                event = self._next_event()
            except Exception as exc:  # the Extensions API is gone or broke its contract
                self._stop("after-response extension stopped", error=type(exc).__name__)
                return
            if event.get("eventType") != "INVOKE":
                continue
            request_id = str(event.get("requestId") or "")
            if self.alive and not self._serve(request_id, event.get("deadlineMs")):
                # Without hand-overs every invocation would be held to its deadline: stop deferring instead.
                self._stop("no after-response hand-over before the deadline; deferring stops", invocation=request_id)

    def _stop(self, message: str, **extra: str) -> None:
        with self._stopping:
            self._stopped.set()
        logger.error(message, extra=extra)
        while not self._handovers.empty():  # what was handed over before still runs
            run_all(self._handovers.get_nowait()[1])

    def _next_event(self) -> dict[str, Any]:
        status, _headers, body = self._request(
            "GET", "event/next", headers={ID_HEADER: self.identifier or ""}, timeout=None
        )
        if status != 200:
            raise ExtensionsApiError(f"event/next answered {status}: {_error_type(body)}")
        import json

        event: dict[str, Any] = json.loads(body)
        return event

    def _serve(self, request_id: str, deadline_ms: Any) -> bool:
        """Run hand-overs until this invocation's own has run (True), or its deadline is near (False)."""
        import queue

        deadline = float(deadline_ms) / 1000 - DEADLINE_MARGIN_S if isinstance(deadline_ms, int | float) else None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                handed, work = self._handovers.get(timeout=timeout)
            except queue.Empty:
                return False
            run_all(work)
            if handed == request_id:
                return True
            # An earlier request's (one that was not this invocation): its work has run all the same.

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None,
    ) -> tuple[int, dict[str, str], bytes]:
        import http.client

        connection = http.client.HTTPConnection(self.runtime_api, timeout=timeout)
        try:
            connection.request(method, f"/{API_VERSION}/extension/{path}", body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


_extension: InternalExtension | None = None


def start_extension(name: str = EXTENSION_NAME) -> InternalExtension | None:
    """Register and start the extension, once per process, when running in Lambda (``AWS_LAMBDA_RUNTIME_API``);
    call it during init. None (nothing will be deferred) outside Lambda or when registration fails."""
    global _extension
    if _extension is not None:
        return _extension
    runtime_api = os.getenv("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        return None
    import http.client

    extension = InternalExtension(runtime_api, name)
    try:
        extension.register()
    except (OSError, ExtensionsApiError, http.client.HTTPException) as exc:
        logger.warning(
            "after-response extension not registered; work runs before the answer", extra={"error": str(exc)}
        )
        return None
    extension.start()
    _extension = extension
    return extension


def stop_extension() -> None:
    """Forget the extension (the tests and the benchmark start and stop theirs)."""
    global _extension
    _extension = None


@dataclass
class _Invocation:
    request_id: str
    work: list[Work] = field(default_factory=list)
    deferring: bool = False  # False: deferred work runs at once


_current: contextvars.ContextVar[_Invocation | None] = contextvars.ContextVar("after_response", default=None)


def defer(work: Work) -> None:
    """Run ``work`` after the running invocation's answer (in its context: its log keys), or now when it cannot
    be deferred. ``work`` must not raise for a reason the answer should know about: failures are logged."""
    running = _current.get()
    if running is None or not running.deferring:
        run_all([work])
        return
    context = contextvars.copy_context()
    running.work.append(lambda: context.run(work))


@contextlib.contextmanager
def invocation(request_id: str | None) -> Iterator[None]:
    """One invocation: collect what it defers, and when it ends hand that to the extension, which runs it after
    the answer and then lets the environment go. ``request_id`` is Lambda's id of the invocation; None (a request
    that cannot name its invocation) defers nothing. Within another ``invocation`` (the streamed edge around a
    function's handler) this does nothing: the outermost hands over, once its answer is complete."""
    if _current.get() is not None:
        yield
        return
    extension = _extension
    running = _Invocation(request_id or "", deferring=bool(request_id) and extension is not None and extension.alive)
    token = _current.set(running)
    try:
        yield
    finally:
        _current.reset(token)
        if running.deferring and extension is not None:
            # even with nothing to run: the extension is waiting to hear that this invocation is done
            extension.hand_over(running.request_id, running.work)


def run_all(work: list[Work]) -> None:
    for item in work:
        try:
            item()
        except Exception as exc:
            logger.error("after-response work failed", extra={"error": type(exc).__name__})


def _error_type(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("errorType") or "unknown error")
    except (ValueError, AttributeError):
        return "unreadable answer"
