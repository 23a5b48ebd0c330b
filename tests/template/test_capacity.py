"""Capacity in the template: memory sized from the last measured peaks (bench/peaks.json, written by make bench),
a throttled function answered as a clean 503, reserved concurrency that leaves the account room, per-plan
concurrency and the default budget reaching the authorizer, and no function's answers in traces."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import COST_CASES, PRICES, cost_per_1k, memory_sizes
from imagecore.domain.route_models import TOKEN_DEFAULT_MAX_IMAGES, TOKEN_MAX_IMAGES, ClientTokenRequest
from imagecore.platform.settings import MAX_INPUT_IMAGE_BYTES
from imagecore.usecases.edits import MAX_IMAGES
from local.template import project_template

ROOT = Path(__file__).resolve().parents[2]
PEAKS = json.loads((ROOT / "bench" / "peaks.json").read_text())
HEADROOM = 1.4
MIB = 1024 * 1024
# The ceilings the design asks for: the functions that only wait for the upstream and store its answer stay
# small; the edit paths carry up to 16 inputs.
CEILINGS_MB = {"GenerationsFunction": 512, "GenerationsStreamFunction": 512, "ResponsesFunction": 512}
# Which measured peak sizes which function (the async submit shares the sync route's code and worst case).
MEASURED_BY = {
    "GenerationsFunction": "GenerationsStreamFunction",
    "GenerationsStreamFunction": "GenerationsStreamFunction",
    "EditsFunction": "EditsStreamFunction",
    "EditsStreamFunction": "EditsStreamFunction",
    "WorkerFunction": "WorkerFunction",
    "ResponsesFunction": "ResponsesFunction",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return project_template()


@pytest.mark.parametrize("function", sorted(MEASURED_BY))
def test_memory_is_at_least_1_4_times_the_measured_peak(template: dict[str, Any], function: str) -> None:
    memory = template["Resources"][function]["Properties"]["MemorySize"]
    peak = PEAKS[MEASURED_BY[function]]["peak_mib"]

    assert memory >= math.ceil(HEADROOM * peak), (function, memory, peak)
    assert memory <= CEILINGS_MB.get(function, 10240)


@pytest.mark.parametrize("function", ["EditsStreamFunction", "WorkerFunction"])
def test_edit_paths_fit_1024_mb(template: dict[str, Any], function: str) -> None:
    """The inputs from uploads go from S3 to the upstream through /tmp, never all in memory at once."""
    assert template["Resources"][function]["Properties"]["MemorySize"] <= 1024


@pytest.mark.parametrize("function", ["EditsStreamFunction", "WorkerFunction"])
def test_the_edit_paths_tmp_holds_the_largest_edit_twice(template: dict[str, Any], function: str) -> None:
    """16 inputs and a mask at the largest size taken, with as much again as margin."""
    largest_edit_mib = (MAX_IMAGES + 1) * MAX_INPUT_IMAGE_BYTES / MIB
    size = template["Resources"][function]["Properties"]["EphemeralStorage"]["Size"]

    assert 2 * largest_edit_mib <= size <= 10240


def test_the_peaks_cover_the_contracts_worst_cases() -> None:
    assert PEAKS["GenerationsStreamFunction"]["case"] == "n10-3840x2160"
    assert PEAKS["EditsStreamFunction"]["case"].startswith("16x4096x4096")
    assert all(entry["peak_mib"] > 50 for entry in PEAKS.values())  # a whole interpreter, not a delta


def test_a_medium_image_costs_at_most_half_a_dollar_per_thousand() -> None:
    medium = next(case for case in COST_CASES if case.size == "1024x1024")
    usd = cost_per_1k(medium, handler_seconds=0.5, image_bytes=2 * 1024 * 1024, memory=memory_sizes())

    assert 0.2 < usd <= 0.50
    # the Lambda wait is most of it: GB-s at the template's memory size
    lambda_part = memory_sizes()["GenerationsStreamFunction"] / 1024 * 60.5 * PRICES["lambda_arm64_gb_second"] * 1000
    assert lambda_part / usd > 0.8


def _api(template: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"]["ImageApi"]["Properties"]
    return props


def test_a_throttled_function_is_a_503_overloaded_with_retry_after_and_cors(template: dict[str, Any]) -> None:
    response = _api(template)["GatewayResponses"]["INTEGRATION_FAILURE"]
    headers = response["ResponseParameters"]["Headers"]
    body = json.loads(response["ResponseTemplates"]["application/json"])

    assert response["StatusCode"] == "503"
    assert body["error"]["code"] == "overloaded" and body["error"]["type"] == "server_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert headers["Retry-After"] == "'5'"
    assert "Access-Control-Allow-Origin" in headers and "Retry-After" in headers["Access-Control-Expose-Headers"]


def test_no_gateway_response_echoes_the_callers_origin(template: dict[str, Any]) -> None:
    for kind, response in _api(template)["GatewayResponses"].items():
        value = response["ResponseParameters"]["Headers"]["Access-Control-Allow-Origin"]
        assert "method.request.header" not in json.dumps(value), kind


def test_reserved_concurrency_leaves_the_account_room(template: dict[str, Any]) -> None:
    reserved = int(template["Parameters"]["GenerationsReservedConcurrency"]["Default"])
    functions = [
        name
        for name, spec in template["Resources"].items()
        if "GenerationsReservedConcurrency"
        in json.dumps(spec.get("Properties", {}).get("ReservedConcurrentExecutions"))
    ]
    assert len(functions) == 5  # generations and edits (sync, async), responses
    # AWS keeps 100 of the default 1,000 unreserved; the authorizer and the short routes need room beyond that
    assert 1000 - reserved * len(functions) >= 300
    assert "docs/capacity.md" in template["Parameters"]["GenerationsReservedConcurrency"]["Description"]


def test_plans_and_the_default_budget_reach_the_authorizer(template: dict[str, Any]) -> None:
    from imagecore.accounts.authorizer import KeyDefaults
    from local.environment import function_environment

    env = function_environment(
        template, "AuthorizerFunction", refs={"ApiKeysSecret": "keys", "ClientTokenSigningSecret": "signing"}
    )
    defaults = KeyDefaults.parse(env["PLAN_MAX_CONCURRENT"], int(env["DEFAULT_IMAGES_PER_DAY"]))
    parameters = template["Parameters"]
    assert defaults.max_concurrent == {
        "free": parameters["FreePlanMaxConcurrent"]["Default"],
        "trial": parameters["TrialPlanMaxConcurrent"]["Default"],
        "standard": parameters["StandardPlanMaxConcurrent"]["Default"],
        "": parameters["KeyMaxConcurrent"]["Default"],
    }
    assert defaults.images_per_day == parameters["KeyDailyImageBudget"]["Default"] > 0
    assert "0 turns" in parameters["KeyDailyImageBudget"]["Description"]


def test_only_the_usage_function_records_its_answers_in_traces(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert variables["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    for name, spec in template["Resources"].items():
        if spec.get("Type") != "AWS::Serverless::Function":
            continue
        own = (spec["Properties"].get("Environment") or {}).get("Variables") or {}
        expected = "true" if name == "UsageFunction" else None
        assert own.get("POWERTOOLS_TRACER_CAPTURE_RESPONSE") == expected, name


def test_a_client_token_always_has_an_image_limit() -> None:
    field = ClientTokenRequest.model_fields["max_images"]
    assert TOKEN_DEFAULT_MAX_IMAGES == 20 and TOKEN_MAX_IMAGES == 1000
    assert str(TOKEN_DEFAULT_MAX_IMAGES) in str(field.description) and str(TOKEN_MAX_IMAGES) in str(field.description)
    with pytest.raises(ValueError):
        ClientTokenRequest.model_validate({"max_images": TOKEN_MAX_IMAGES + 1})
