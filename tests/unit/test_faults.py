"""The AWS fault injector the tests use (tests/faults.py): real clients on moto, failing exactly the calls a rule
names, as ClientErrors with the rule's code and status; nothing left behind after ``clear()``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from imagecore.platform import aws
from tests.faults import AwsFaults

BUCKET = "faults-test-bucket"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture
def faults(s3: Any) -> Iterator[AwsFaults]:
    made = AwsFaults()
    yield made
    made.clear()


def put(key: str) -> str:
    """PutObject through a client made now, as a function's is (from the core's session); the outcome: "ok" or
    the error code."""
    client = aws.client("s3", region_name="us-east-1")
    try:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    except ClientError as error:
        return f"{error.response['Error']['Code']}/{error.response['ResponseMetadata']['HTTPStatusCode']}"
    return "ok"


def test_skip_then_fail_a_number_of_times_then_pass(faults):
    rule = faults.fail("s3", "PutObject", skip=1, times=2, code="SlowDown", status=503)

    assert [put(f"k{i}") for i in range(5)] == ["ok", "SlowDown/503", "SlowDown/503", "ok", "ok"]
    assert (rule.calls, rule.failed) == (5, 2)
    listed = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["k0", "k3", "k4"]  # the failed calls never reached S3


def test_only_calls_whose_parameters_match(faults):
    rule = faults.fail("s3", "PutObject", when=lambda params: params["Key"].startswith("images/"))

    outcomes = [put("uploads/a"), put("images/a"), put("images/b")]

    assert outcomes == ["ok", "ServiceUnavailable/503", "ServiceUnavailable/503"]
    assert (rule.calls, rule.failed) == (2, 2)


def test_down_until_a_point_in_time(faults):
    now = {"t": 100.0}
    rule = faults.fail("s3", "PutObject", until=105.0, clock=lambda: now["t"])

    first = put("a")
    now["t"] = 105.0
    assert (first, put("b")) == ("ServiceUnavailable/503", "ok")
    assert rule.failed == 1


def test_clear_removes_every_rule(faults):
    faults.fail("s3", "PutObject")
    assert put("a") == "ServiceUnavailable/503"

    faults.clear()

    assert put("b") == "ok"
