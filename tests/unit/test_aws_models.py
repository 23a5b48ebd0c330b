"""The core's AWS clients: boto3's own, from one session per execution environment, signing as boto3 does."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import boto3
import pytest
from botocore.config import Config

from imagecore.platform import aws


@pytest.fixture(autouse=True)
def _fresh_session(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws.session.cache_clear()
    yield
    aws.session.cache_clear()


def test_a_client_presigns_as_boto3s_own_with_sigv4_in_its_region() -> None:
    options: dict[str, Any] = {"region_name": "eu-west-1", "config": Config(signature_version="s3v4")}
    params = {"Bucket": "images-bucket", "Key": "k"}
    ours = aws.client("s3", **options).generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    theirs = boto3.Session().client("s3", **options).generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert ours.split("?")[0] == theirs.split("?")[0] == "https://images-bucket.s3.amazonaws.com/k"
    query = dict(part.split("=", 1) for part in ours.split("?")[1].split("&"))
    assert set(query) == {p.split("=")[0] for p in theirs.split("?")[1].split("&")}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].split("%2F")[2:5] == ["eu-west-1", "s3", "aws4_request"]
    assert query["X-Amz-Expires"] == "60"


def test_clients_and_resources_share_the_one_session_of_the_environment() -> None:
    sqs, dynamodb = aws.client("sqs", region_name="us-east-1"), aws.resource("dynamodb", region_name="us-east-1")
    assert sqs.meta.region_name == dynamodb.meta.client.meta.region_name == "us-east-1"
    assert aws.session() is aws.session()
    # The session's credentials are both clients': what each would sign with.
    assert aws.session().get_credentials().access_key == "testing"


def test_a_session_made_anew_replaces_the_old_one_which_is_freed_with_its_models() -> None:
    aws.client("s3", region_name="us-east-1")
    old = weakref.ref(aws.session())
    aws.session.cache_clear()  # as a test does to sign with other credentials
    aws.client("s3", region_name="us-east-1")
    gc.collect()  # a botocore session holds cycles (its event hooks): only the collector frees it
    assert old() is None
