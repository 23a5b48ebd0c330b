"""AWS faults at chosen calls, injected through botocore's own event hooks on the real clients (no patching):
``faults.refuse(client, "UpdateItem", times=3, when=...)`` makes the next matching calls fail before they are sent,
as a throttled or unreachable service would; ``faults.crash(...)`` stops the process there (a ``Crash`` is a
BaseException, so nothing in the service catches it: it is the Lambda dying between two steps).

A refusal raised in ``before-call`` is outside botocore's retry loop, so ``times`` is exactly the number of calls
refused."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError


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
