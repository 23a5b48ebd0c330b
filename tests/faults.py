"""AWS faults at chosen calls, injected through botocore's own event hooks on the real clients (no patching):
``faults.refuse(client, "UpdateItem", times=3, when=...)`` makes the next matching calls fail before they are sent,
as a throttled or unreachable service would; ``faults.crash(...)`` stops the process there (a ``Crash`` is a
BaseException, so nothing in the service catches it: it is the Lambda dying between two steps).

A refusal raised in ``before-call`` is outside botocore's retry loop, so ``times`` is exactly the number of calls
refused.

``Faults`` hooks a client the test holds (the adapters expose theirs); ``AwsFaults`` hooks the botocore session the
core makes its clients from
(``imagecore.platform.aws``), so every client made afterwards (a function's, at its cold start)
sees the rule, which can also skip the first calls, hold until a point in time, or match the call's own parameters:

    aws_faults.fail("s3", "PutObject", times=2)
    aws_faults.fail("dynamodb", "GetItem", when=lambda params: params["TableName"] == table)
    aws_faults.fail("events", "PutEvents", until=time.monotonic() + 5)
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError

from imagecore.platform import aws


class Crash(BaseException):
    """The process dies here (a timeout, an out-of-memory kill): no handler runs, the message is delivered again."""


@dataclass
class Call:
    """One call as the hook sees it: the operation and its JSON body (DynamoDB, SQS, EventBridge), when it has one."""

    operation: str
    body: dict[str, Any]
    url_path: str


@dataclass
class Injected:
    operation: str
    times: int
    when: Callable[[Call], bool] | None
    error: Callable[[], BaseException]
    hits: int = 0  # calls refused
    seen: int = 0  # matching calls, refused or not
    unique_id: str = field(default="")

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        call = Call(model.name, _json_body(params), str(params.get("url_path", "")))
        if self.when is not None and not self.when(call):
            return
        self.seen += 1
        if self.hits < self.times:
            self.hits += 1
            raise self.error()


_ids = itertools.count()


class Faults:
    def __init__(self) -> None:
        self._registered: list[tuple[Any, str, str]] = []

    def refuse(
        self,
        client: Any,
        operation: str,
        *,
        times: int = 1,
        when: Callable[[Call], bool] | None = None,
        code: str = "ServiceUnavailable",
        unreachable: bool = False,
    ) -> Injected:
        """The next ``times`` matching calls fail: a ClientError with ``code``, or (``unreachable``) a connection
        error, as botocore raises once its own retries are spent."""

        def error() -> BaseException:
            if unreachable:
                return EndpointConnectionError(endpoint_url="https://unreachable.invalid")
            return ClientError({"Error": {"Code": code, "Message": "injected fault"}}, operation)

        return self._register(client, Injected(operation, times, when, error))

    def crash(self, client: Any, operation: str, *, when: Callable[[Call], bool] | None = None) -> Injected:
        """The process dies at the next matching call, before it is sent."""
        return self._register(client, Injected(operation, 1, when, lambda: Crash(f"crash at {operation}")))

    def _register(self, client: Any, injected: Injected) -> Injected:
        service = client.meta.service_model.service_id.hyphenize()
        event = f"before-call.{service}.{injected.operation}"
        injected.unique_id = f"fault-{next(_ids)}"
        client.meta.events.register(event, injected, unique_id=injected.unique_id)
        self._registered.append((client, event, injected.unique_id))
        return injected

    def clear(self) -> None:
        for client, event, unique_id in self._registered:
            client.meta.events.unregister(event, unique_id=unique_id)
        self._registered.clear()


def _json_body(params: dict[str, Any]) -> dict[str, Any]:
    body = params.get("body")
    if isinstance(body, bytes | str) and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return body if isinstance(body, dict) else {}


def dynamodb_status(call: Call) -> str | None:
    """The status an UpdateItem writes (``completed``/``failed``), None for other updates (a claim)."""
    value = (call.body.get("ExpressionAttributeValues") or {}).get(":s")
    return value.get("S") if isinstance(value, dict) else None


@pytest.fixture
def faults() -> Iterator[Faults]:
    injector = Faults()
    yield injector
    injector.clear()


# --- faults for every client made from now on -------------------------------------------------------------
# The name botocore's events give a service (its service id, hyphenized) when it differs from boto3's.
EVENT_SERVICE_NAMES = {"events": "eventbridge"}


@dataclass
class Fault:
    """One rule: which calls fail, and what it saw (``calls``: matching calls, ``failed``: those it failed)."""

    service: str
    operation: str
    times: int | None = None  # fail this many matching calls (after ``skip``); None: every one
    skip: int = 0  # let this many matching calls through first
    until: float | None = None  # stop failing at this time.monotonic() value
    when: Callable[[dict[str, Any]], bool] | None = None  # only calls whose parameters match
    code: str = "ServiceUnavailable"
    status: int = 503
    message: str = "injected fault"
    calls: int = 0
    failed: int = 0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def should_fail(self, params: dict[str, Any]) -> bool:
        if self.when is not None and not self.when(params):
            return False
        self.calls += 1
        if self.calls <= self.skip:
            return False
        if self.until is not None and self.clock() >= self.until:
            return False
        return self.times is None or self.failed < self.times

    def answer(self) -> tuple[AWSResponse, dict[str, Any]]:
        """What botocore takes as the service's answer: the call raises ClientError(code) from it."""
        self.failed += 1
        parsed = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.status, "HTTPHeaders": {}, "RetryAttempts": 0},
        }
        return AWSResponse("https://fault.invalid/", self.status, {}, None), parsed


class AwsFaults:
    """The rules in force; ``clear()`` removes them all (the ``aws_faults`` fixture does at teardown)."""

    def __init__(self, session: botocore.session.Session | None = None) -> None:
        self._events = (session or aws.session()).get_component("event_emitter")
        self._registered: list[tuple[str, str]] = []
        self.rules: list[Fault] = []

    def fail(self, service: str, operation: str, **rule: Any) -> Fault:
        """Fail ``operation`` of ``service`` (boto3's names: "s3", "dynamodb", "sqs", "events") per ``rule``
        (see ``Fault``); returns the rule, to read its counts."""
        fault = Fault(service, operation, **rule)
        name = f"{EVENT_SERVICE_NAMES.get(service, service)}.{operation}"
        unique_id = f"tests-fault-{id(fault)}"

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            # before-call sees the serialized request; the rule is about the call's own parameters.
            context[unique_id] = dict(params)

        def hook(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
            return fault.answer() if fault.should_fail(context.get(unique_id, {})) else None

        for stage, handler in (("before-parameter-build", remember), ("before-call", hook)):
            # botocore keeps one handler per unique id, whatever the event: one id per stage.
            event, handler_id = f"{stage}.{name}", f"{unique_id}-{stage}"
            self._events.register(event, handler, unique_id=handler_id)
            self._registered.append((event, handler_id))
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        for event, unique_id in self._registered:
            self._events.unregister(event, unique_id=unique_id)
        self._registered.clear()
        self.rules.clear()
