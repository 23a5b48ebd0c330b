"""The handlers in-process: moto for S3, DynamoDB, SQS and EventBridge (the template's resources, made by
``local/resources.py``), the upstream simulator on a real HTTP port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.resources import LocalResources, create_resources
from local.template import project_template
from tests.integration.environment import (
    BUCKET,
    MOTO_CONFIG,
    PREFIX,
    REGION,
    _made,
    current_resources,
    set_function_env,
)

__all__ = ["BUCKET", "current_resources", "set_function_env"]


@pytest.fixture
def aws_resources(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalResources]:
    """moto in-process with the template's resources (bucket, tables, queues, bus and rules), fresh per test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws(config=MOTO_CONFIG):
        _made["resources"] = create_resources(None, REGION, project_template(), prefix=PREFIX)
        try:
            yield _made["resources"]
        finally:
            _made.pop("resources", None)


@pytest.fixture(autouse=True)
def upstream_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The upstream client's waits between attempts (backoff, Retry-After), recorded instead of slept: every
    UpstreamClient the functions build gets this list's ``append`` as its ``sleep``."""
    from imagecore import service
    from imagecore.upstream import UpstreamClient

    pauses: list[float] = []

    class RecordingUpstreamClient(UpstreamClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("sleep", pauses.append)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(service, "UpstreamClient", RecordingUpstreamClient)
    return pauses


@pytest.fixture
def aws(aws_resources: LocalResources) -> Any:
    """An S3 client on moto, where the images bucket (``BUCKET``) and the rest of the template's resources are."""
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, simulator: Any, aws: Any):
    """Set the generations function's environment (as the template does) and start it cold."""
    from functions.generations import app as generations

    def apply(**overrides: str) -> Any:
        set_function_env(monkeypatch, simulator.url, function="GenerationsFunction", **overrides)
        generations.runtime.cache_clear()
        return generations

    yield apply
    generations.runtime.cache_clear()


@pytest.fixture
def generations(configure: Any) -> Any:
    return configure()


@pytest.fixture
def invoke(generations: Any, api_event: Any, lambda_context: Any):
    """POST a body to /v1/images/generations through the real lambda_handler; returns (status, json, response)."""

    def call(body: Any = None, **event_options: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
        event = api_event("generations", body=body, **event_options)
        response = generations.lambda_handler(event, lambda_context)
        payload = json.loads(response["body"]) if response.get("body") else {}
        return response["statusCode"], payload, response

    return call


@pytest.fixture
def stack(aws: Any, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any) -> Iterator[Any]:
    """Every function in-process on the template's resources (``tests/integration/stack.py``), started cold."""
    from tests.integration.stack import Stack

    made = Stack(aws, simulator, monkeypatch, api_event)
    yield made
    made.clear()
