"""The core's botocore data loader: the same models as botocore's own, found without listing every service."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import UnknownServiceError
from botocore.loaders import Loader

from imagecore.platform import aws
from imagecore.platform.aws import ServiceModelLoader

SERVICES = ("s3", "dynamodb", "sqs", "events", "secretsmanager")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("type_name", ["service-2", "endpoint-rule-set-1"])
def test_each_model_is_botocores_own_with_its_extras(service: str, type_name: str) -> None:
    assert ServiceModelLoader().load_service_model(service, type_name) == Loader().load_service_model(
        service, type_name
    )


def test_s3_keeps_the_extras_botocore_adds_to_its_model() -> None:
    # s3's service-2.sdk-extras.json exists: without it the model would differ from botocore's.
    plain = ServiceModelLoader().load_data("s3/2006-03-01/service-2")
    loaded = ServiceModelLoader().load_service_model("s3", "service-2")
    assert loaded != plain
    assert loaded["metadata"] == Loader().load_service_model("s3", "service-2")["metadata"]


def test_finding_a_model_looks_in_one_service_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    real_listdir = os.listdir

    def listdir(path: Any = ".") -> list[str]:
        listed.append(str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    ServiceModelLoader().load_service_model("s3", "service-2")
    ours = len(listed)
    listed.clear()
    Loader().load_service_model("s3", "service-2")
    assert ours <= 3
    assert len(listed) > 100  # botocore lists every service directory it ships


def test_a_name_that_is_no_service_gets_botocores_error_listing_them_all() -> None:
    with pytest.raises(UnknownServiceError) as raised:
        ServiceModelLoader().load_service_model("no-such-service", "service-2")
    assert "s3" in str(raised.value)
    assert "dynamodb" in str(raised.value)


def test_models_are_loaded_once() -> None:
    loader = ServiceModelLoader()
    assert loader.load_service_model("sqs", "service-2") is loader.load_service_model("sqs", "service-2")


def test_the_session_reads_models_from_aws_data_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Loader().load_service_model("sqs", "service-2")
    model["metadata"] = {**model["metadata"], "serviceId": "Custom SQS", "endpointPrefix": "customsqs"}
    folder = tmp_path / "customsqs" / "2012-11-05"
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    aws.session.cache_clear()
    try:
        loader = aws.session().get_component("data_loader")
        assert isinstance(loader, ServiceModelLoader)
        assert loader.load_service_model("customsqs", "service-2")["metadata"]["serviceId"] == "Custom SQS"
    finally:
        aws.session.cache_clear()


def test_a_client_from_the_session_presigns_as_botocores_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    options: dict[str, Any] = {"region_name": "eu-west-1", "config": Config(signature_version="s3v4")}
    params = {"Bucket": "b", "Key": "k"}
    aws.session.cache_clear()
    try:
        ours = aws.client("s3", **options).generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    finally:
        aws.session.cache_clear()
    theirs = botocore.session.get_session().create_client("s3", **options)
    expected = theirs.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert ours.split("?")[0] == expected.split("?")[0]
    assert sorted(p.split("=")[0] for p in ours.split("?")[1].split("&")) == sorted(
        p.split("=")[0] for p in expected.split("?")[1].split("&")
    )
    assert "X-Amz-Signature=" in ours
