"""The generations handler in-process: moto for S3, the upstream simulator on a real HTTP port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import UPSTREAM_KEY

BUCKET = "images-test-bucket"
# Variables a test sets only when it means to; otherwise they must not leak in from the environment.
UNSET_UNLESS_GIVEN = (
    "S3_ENDPOINT_URL",
    "UPSTREAM_API_KEY_SECRET_ID",
    "STORE_ATTEMPTS",
    "MAX_REQUEST_BYTES",
    "MAX_INPUT_IMAGE_BYTES",
    "AWS_LAMBDA_FUNCTION_NAME",
)


def set_function_env(monkeypatch: pytest.MonkeyPatch, simulator_url: str, **extra: str) -> None:
    """The environment the template gives the image functions, pointed at moto and the simulator."""
    env = {
        "IMAGES_BUCKET": BUCKET,
        "UPSTREAM_BASE_URL": simulator_url,
        "UPSTREAM_API_KEY": UPSTREAM_KEY,
        "ALLOW_HTTP_UPSTREAM": "true",  # the simulator
        "INTEGRATION_TIMEOUT_MS": "300000",
        "POWERTOOLS_METRICS_NAMESPACE": "ImageServiceTests",
        "POWERTOOLS_SERVICE_NAME": "image-service",
        **extra,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in UNSET_UNLESS_GIVEN:
        if name not in extra:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, simulator: Any, aws: Any):
    """Set the generations function's environment (as the template does) and start it cold."""
    from functions.generations import app as generations

    def apply(**overrides: str) -> Any:
        set_function_env(monkeypatch, simulator.url, **overrides)
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
