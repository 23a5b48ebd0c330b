"""The functions' environment for the in-process tests: the template's, pointed at the resources moto holds for the
running test and at the upstream simulator. Kept outside conftest.py so there is one registry of the running
test's resources, however the modules that use it are imported."""

from __future__ import annotations

import pytest

from local.environment import SECRET_STAND_INS, function_environment, resource_refs
from local.resources import LocalResources
from local.template import project_template
from tests.conftest import UPSTREAM_KEY

REGION = "us-east-1"
PREFIX = "image-service-test"
BUCKET = PREFIX  # the images bucket create_resources makes
# What tests give the parameters the template leaves to the deployer (REST APIs may wait 300 s).
PARAMETERS = {"IntegrationTimeoutMs": "300000"}
# Variables a test sets only when it means to; otherwise they must not leak in from the environment.
UNSET_UNLESS_GIVEN = (
    "S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "STORE_ATTEMPTS",
    "MAX_REQUEST_BYTES",
    "MAX_INPUT_IMAGE_BYTES",
    "AWS_LAMBDA_FUNCTION_NAME",
    *SECRET_STAND_INS,
)
# moto keeps boto3's default session: building a client then reuses the service models already loaded.
MOTO_CONFIG = {"core": {"reset_boto3_session": False}}

_made: dict[str, LocalResources] = {}


def current_resources() -> LocalResources:
    """The template's resources of the running test (made by the ``aws`` fixture)."""
    if "resources" not in _made:
        raise RuntimeError("the template's resources exist only under the aws fixture")
    return _made["resources"]


def set_function_env(
    monkeypatch: pytest.MonkeyPatch, simulator_url: str, *, function: str | None = None, **extra: str
) -> None:
    """The environment template.yaml gives ``function`` (None: every function, as one process hosting them all),
    pointed at moto's resources and the simulator; ``extra`` adds or overrides variables."""
    env = function_environment(
        project_template(),
        function,
        refs={**resource_refs(current_resources()), "UpstreamBaseUrl": simulator_url, **PARAMETERS},
        secrets={"UPSTREAM_API_KEY": UPSTREAM_KEY},
    )
    for name in UNSET_UNLESS_GIVEN:
        if name not in extra:
            monkeypatch.delenv(name, raising=False)
    for name, value in {**env, **extra}.items():
        monkeypatch.setenv(name, value)
