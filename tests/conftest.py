"""Fixtures shared by the test suites: sample events, a Lambda context, the upstream simulator on a real
HTTP port, moto, and a tap on the structured log."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

# What the template's Globals give every function, set before any function module is imported.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "image-service")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ImageServiceTests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"


@dataclass
class FakeLambdaContext:
    function_name: str = "GenerationsFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:GenerationsFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/GenerationsFunction"
    log_stream_name: str = "test"
    remaining_ms: int = 330_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def owner_of_key_id(key_id: str) -> str:
    """The owner id the events of ``api_event`` give a key id (an authorizer derives it from the key's hash)."""
    from imagecore.auth import owner_for_hash

    return owner_for_hash(hashlib.sha256(key_id.encode()).hexdigest())


@pytest.fixture
def api_event():
    """Build an API Gateway proxy event from the sample in events/, as API Gateway would send it now."""

    def build(
        name: str = "generations",
        *,
        body: Any = None,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        key_id: str | None = "key_test0000001",
        owner_id: str | None = None,
        token: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event = copy.deepcopy(load_event(name))
        if raw_body is not None:
            event["body"] = raw_body
        elif body is not None:
            event["body"] = json.dumps(body)
        if headers is not None:
            event["headers"] = headers
            event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
        context = event["requestContext"]
        context["requestTimeEpoch"] = int(time.time() * 1000)
        context["requestId"] = str(uuid.uuid4())
        if key_id is None:
            context.pop("authorizer", None)
        elif "authorizer" in context:
            # What the authorizer puts there (imagecore.authorizer.authorizer_context): by default an owner
            # derived from the key id, so two key ids are two owners.
            context["authorizer"]["keyId"] = key_id
            context["authorizer"]["principalId"] = key_id
            context["authorizer"]["ownerId"] = owner_id or owner_of_key_id(key_id)
            context["authorizer"]["credential"] = "key" if token is None else "client_token"
            context["authorizer"].update(token or {})
        return event

    return build


class ServedApp:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


UPSTREAM_KEY = "sim-upstream-key-for-tests"


@pytest.fixture
def simulator() -> Iterator[Any]:
    """The upstream simulator on a real HTTP port; ``simulator.url`` is its /v1 base URL."""
    from local.simulator import SimulatorOptions, UpstreamSimulator

    sim = UpstreamSimulator(SimulatorOptions(api_key=UPSTREAM_KEY))
    served = ServedApp(sim)
    sim.url = served.url + "/v1"
    yield sim
    served.close()


class LogTap:
    """The JSON lines the Powertools logger writes, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def records(self, message: str = "image request") -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("message") == message]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def log_tap() -> Iterator[LogTap]:
    from imagecore.observability import logger

    tap = LogTap()
    handler = logging.StreamHandler(tap.stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield tap
    logger.removeHandler(handler)
