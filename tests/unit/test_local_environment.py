"""The functions' environment outside AWS (local/environment.py), read from template.yaml, the Lambda context
fake (local/context.py), and the suite's own guard against hanging tests."""

from __future__ import annotations

import pytest

from local.context import LambdaContext
from local.environment import function_environment, globals_environment
from local.resources import LocalResources
from local.template import project_template

RESOURCES = LocalResources(
    bucket="bucket-x",
    tasks_table="tasks-x",
    idempotency_table="idempotency-x",
    usage_table="usage-x",
    token_usage_table="token-usage-x",
    jobs_queue_url="http://sqs/jobs-x",
    dead_letter_queue_url="http://sqs/dlq-x",
    completions_queue_url="http://sqs/completions-x",
    event_bus_name="bus-x",
)


def refs(**extra: str) -> dict[str, str]:
    from local.environment import resource_refs

    return {**resource_refs(RESOURCES), "UpstreamBaseUrl": "http://upstream/v1", **extra}


def test_a_function_gets_the_globals_and_its_own_variables_resolved():
    env = function_environment(
        project_template(), "GenerationsStreamFunction", refs=refs(), secrets={"UPSTREAM_API_KEY": "k"}
    )

    assert env["POWERTOOLS_SERVICE_NAME"] == "image-service"  # Globals
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"  # a parameter at its default
    assert (env["IMAGES_BUCKET"], env["IDEMPOTENCY_TABLE"]) == ("bucket-x", "idempotency-x")
    assert env["UPSTREAM_BASE_URL"] == "http://upstream/v1"
    # The secret's id becomes its local stand-in, holding the value itself.
    assert "UPSTREAM_API_KEY_SECRET_ID" not in env
    assert env["UPSTREAM_API_KEY"] == "k"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert "EVENT_BUS_NAME" not in env  # the worker's, not this function's
    assert env["USAGE_TABLE"] == "usage-x"  # the budgets' counters


def test_every_function_at_once_and_parameters_overridden():
    env = function_environment(
        project_template(),
        refs=refs(PresignExpirySeconds="600", LogLevel="DEBUG"),
        secrets={"UPSTREAM_API_KEY": "k", "API_KEYS": "a,b"},
    )

    assert (env["EVENT_BUS_NAME"], env["DEAD_LETTER_QUEUE_URL"]) == ("bus-x", "http://sqs/dlq-x")
    assert (env["PRESIGN_EXPIRY_SECONDS"], env["POWERTOOLS_LOG_LEVEL"]) == ("600", "DEBUG")
    assert env["INTEGRATION_TIMEOUT_MS"] == "900000"  # the streamed image functions' own, not a parameter
    assert env["API_KEYS"] == "a,b"
    assert not [name for name in env if name.endswith("_SECRET_ID")]


def test_a_reference_with_nothing_local_is_named():
    without_bucket = {name: value for name, value in refs().items() if name != "ImagesBucket"}

    with pytest.raises(KeyError, match="IMAGES_BUCKET: nothing local for ImagesBucket"):
        function_environment(project_template(), "GenerationsFunction", refs=without_bucket)


def test_a_test_deployment_points_the_upstream_at_the_simulators_url():
    simulated = {
        **refs(),
        "UpstreamSimulator": "true",
        "UpstreamSimulatorFunctionUrl.FunctionUrl": "https://abc.lambda-url.us-east-1.on.aws/",
    }

    generations = function_environment(project_template(), "GenerationsStreamFunction", refs=simulated)
    real = function_environment(project_template(), "GenerationsStreamFunction", refs=refs())
    health = function_environment(project_template(), "HealthFunction", refs=simulated)

    assert generations["UPSTREAM_BASE_URL"] == "https://abc.lambda-url.us-east-1.on.aws/v1"
    assert real["UPSTREAM_BASE_URL"] == refs()["UpstreamBaseUrl"]
    assert health["UPSTREAM_SIMULATOR"] == "true"


def test_globals_alone():
    assert globals_environment(project_template())["LOG_PROMPTS"] == "false"


def test_the_context_counts_down_unless_pinned():
    now = {"t": 1000.0}
    context = LambdaContext("WorkerFunction", 3008, 900.0, "req-1", started=1000.0, clock=lambda: now["t"])
    now["t"] = 1010.5

    assert context.get_remaining_time_in_millis() == 889_500
    assert context.invoked_function_arn == "arn:aws:lambda:us-east-1:123456789012:function:WorkerFunction"
    assert context.log_group_name == "/aws/lambda/WorkerFunction"
    now["t"] = 5000.0
    assert context.get_remaining_time_in_millis() == 0
    assert LambdaContext(remaining_ms=1234).get_remaining_time_in_millis() == 1234


def test_every_test_has_a_timeout(request):
    assert float(request.config.getini("timeout")) > 0
    assert request.config.pluginmanager.hasplugin("timeout")
