"""AWS faults on demand, through botocore's own event hooks: the code under test keeps its real clients (on moto)
and a chosen call fails as AWS would fail it, a ClientError with an error code and HTTP status.

A rule is registered on boto3's default session, whose events every client made afterwards copies: so the rules
go in before the functions build their clients (they do at their first, cold, invocation; ``stack.clear()`` or
a fresh ``configure()`` makes them build new ones).

    faults.fail("s3", "PutObject", times=2)                      # the next two PutObjects fail, then pass
    faults.fail("dynamodb", "GetItem", when=lambda p: p["TableName"] == table)
    faults.fail("events", "PutEvents", until=time.monotonic() + 5)  # down for five seconds
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

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

    def __init__(self, session: boto3.Session | None = None) -> None:
        if session is None:
            if boto3.DEFAULT_SESSION is None:
                boto3.setup_default_session()
            session = boto3.DEFAULT_SESSION
        assert session is not None
        self._events = session.events
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
