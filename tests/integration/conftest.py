"""The handlers in-process: moto for S3, DynamoDB, SQS and EventBridge (the template's resources, made by
``local/resources.py``), the upstream simulator on a real HTTP port."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from werkzeug.serving import make_server

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


@dataclass
class _Moto:
    resources: LocalResources
    s3: Any
    dynamodb: Any
    sqs: Any
    events: Any
    tables: Any  # boto3's DynamoDB resource


@pytest.fixture(scope="module")
def _moto() -> Iterator[_Moto]:
    """moto in-process, with the template's resources made once for a test module (``aws_resources`` empties them
    before each test): making tables, queues and rules for every test would cost more than the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            patch.setenv(name, value)
        with mock_aws(config=MOTO_CONFIG):
            resources = create_resources(None, REGION, project_template(), prefix=PREFIX)
            yield _Moto(
                resources,
                boto3.client("s3", region_name=REGION),
                boto3.client("dynamodb", region_name=REGION),
                boto3.client("sqs", region_name=REGION),
                boto3.client("events", region_name=REGION),
                boto3.resource("dynamodb", region_name=REGION),
            )


def _empty(moto: _Moto) -> None:
    """Back to as made: no objects, no items, no messages (a bucket a test removed is made again)."""
    resources, s3, dynamodb, sqs = moto.resources, moto.s3, moto.dynamodb, moto.sqs
    try:
        while listed := s3.list_objects_v2(Bucket=resources.bucket).get("Contents"):
            s3.delete_objects(Bucket=resources.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})
    except s3.exceptions.NoSuchBucket:
        s3.create_bucket(Bucket=resources.bucket)
    tables = (resources.tasks_table, resources.idempotency_table, resources.token_usage_table)
    for table in (*tables, resources.conversations_table):
        for item in dynamodb.scan(TableName=table, ProjectionExpression="id", ConsistentRead=True)["Items"]:
            dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
    usage_key = "account, period"  # the usage table's key (imagecore.accounts.budgets)
    for item in dynamodb.scan(TableName=resources.usage_table, ProjectionExpression=usage_key)["Items"]:
        dynamodb.delete_item(TableName=resources.usage_table, Key=item)
    # PurgeQueue may run once a minute: receive and delete instead (every message is visible again at once).
    for queue in (resources.jobs_queue_url, resources.dead_letter_queue_url, resources.completions_queue_url):
        while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0).get(
            "Messages"
        ):
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


@pytest.fixture
def aws_resources(monkeypatch: pytest.MonkeyPatch, _moto: _Moto) -> Iterator[LocalResources]:
    """moto in-process with the template's resources (bucket, tables, queues, bus and rules), empty for each test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    _empty(_moto)
    _made["resources"] = _moto.resources
    try:
        yield _moto.resources
    finally:
        _made.pop("resources", None)


@dataclass(frozen=True)
class ServedAws:
    """The local stack's moto app (``local.aws_endpoint.aws_app``) over HTTP, the template's resources made there."""

    endpoint: str
    app: Any  # local.aws_endpoint.AtomicDynamoDB: ``written`` is set by every DynamoDB write
    resources: LocalResources

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)  # type: ignore[call-overload]


@pytest.fixture
def served_aws(aws_resources: LocalResources) -> Iterator[ServedAws]:
    from local.aws_endpoint import aws_app

    app = aws_app()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # moto's backends are the process's (the in-process mock's too): names of this test's own
        prefix = f"served-{uuid.uuid4().hex[:8]}"
        yield ServedAws(endpoint, app, create_resources(endpoint, REGION, project_template(), prefix=prefix))
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def upstream_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The upstream client's waits between attempts (backoff, Retry-After), recorded instead of slept: every
    UpstreamClient the functions build gets this list's ``append`` as its ``sleep``."""
    from imagecore.upstream.client import UpstreamClient
    from imagecore.usecases import service

    pauses: list[float] = []

    class RecordingUpstreamClient(UpstreamClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("sleep", pauses.append)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(service, "UpstreamClient", RecordingUpstreamClient)
    return pauses


@pytest.fixture
def aws(aws_resources: LocalResources, _moto: _Moto) -> Any:
    """An S3 client on moto, where the images bucket (``BUCKET``) and the rest of the template's resources are."""
    return _moto.s3


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, simulator: Any, aws: Any):
    """Set the generations function's environment (as the template does) and start it cold."""
    from functions.generations import app as generations

    def apply(**overrides: str) -> Any:
        set_function_env(monkeypatch, simulator.url, function="GenerationsStreamFunction", **overrides)
        generations.deps.cache_clear()
        return generations

    yield apply
    generations.deps.cache_clear()


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
def stack(aws: Any, _moto: _Moto, simulator: Any, monkeypatch: pytest.MonkeyPatch, api_event: Any) -> Iterator[Any]:
    """Every function in-process on the template's resources (``tests/integration/stack.py``), started cold; the
    test's own clients are the module's (the functions make theirs anew)."""
    from tests.integration.stack import Stack

    made = Stack(aws, simulator, monkeypatch, api_event, clients=_moto)
    yield made
    made.clear()
