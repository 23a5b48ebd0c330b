"""template.yaml for a first deployment: the current Lambda Web Adapter under its 1.x settings, and the
``UpstreamSimulator`` parameter (a test deployment's own upstream, never together with a real one)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.template.test_template import (
    REF_VALUES,
    REGION,
    TEMPLATE,
    UPSTREAM_BASE_URL,
    function_env,
    resolve,
    resources_of_type,
)

ROOT = Path(__file__).resolve().parents[2]
# Adapter v1.0.0 (the newest 1.x): LambdaAdapterLayerArm64:27 / LambdaAdapterLayerX86:27 in the README of
# aws/aws-lambda-web-adapter at 291256509c1328ef5a985b92f26533d9bd5327bc.
ADAPTER_LAYER_VERSION = 27
ADAPTER_COMMIT = "291256509c1328ef5a985b92f26533d9bd5327bc"
# The names 1.x deprecates (removed in 2.0), and the one it removed.
DEPRECATED_ADAPTER_NAMES = {
    "HOST",
    "READINESS_CHECK_PORT",
    "READINESS_CHECK_PATH",
    "READINESS_CHECK_PROTOCOL",
    "REMOVE_BASE_PATH",
    "ASYNC_INIT",
    "AWS_LWA_READINESS_CHECK_MIN_UNHEALTHY_STATUS",
}
# The functions that call the upstream (they read its URL and key).
# The functions that call the upstream (the async routes' do not: the worker runs their tasks).
UPSTREAM_CALLERS = {
    "GenerationsStreamFunction",
    "EditsStreamFunction",
    "WorkerFunction",
    "ResponsesFunction",
}
SIMULATOR_RESOURCES = {
    "UpstreamSimulatorFunction",
    "UpstreamSimulatorKeySecret",
    "UpstreamSimulatorKeySecretPolicy",
    "UpstreamSimulatorLogGroup",
    "UpstreamSimulatorRole",
}


@pytest.fixture(scope="module", autouse=True)
def _offline_aws() -> Iterator[None]:
    """A region and fake credentials for the SAM transform, as in test_template."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing"}.items():
            mp.setenv(name, value)
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module", name="sam")
def sam_template() -> dict[str, Any]:
    """template.yaml as a plain dict (short-form intrinsics expanded), as test_template reads it."""
    from cfnlint.decode import decode_str

    template, errors = decode_str(TEMPLATE.read_text())
    assert not errors, errors
    return json.loads(json.dumps(template))


def transform(sam: dict[str, Any], **parameters: str) -> dict[str, Any]:
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.public.translator import Translator

    template = copy.deepcopy(sam)
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://artifacts/{props[key].strip('/')}"
    translator = Translator({}, Parser(), boto_session=boto3.Session(region_name=REGION))
    return translator.translate(template, parameter_values=parameters)


def adapter_functions(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every function the Lambda Web Adapter starts (its handler is a run.sh)."""
    functions = resources_of_type(sam, "AWS::Serverless::Function")
    return {name: res["Properties"] for name, res in functions.items() if res["Properties"]["Handler"] == "run.sh"}


def holds(expression: Any, parameters: dict[str, str], sam: dict[str, Any]) -> bool:
    """A rule's or condition's expression, with these parameter values (the others at their defaults)."""
    (function, arguments), *_ = expression.items()
    if function == "Fn::Equals":
        left, right = (
            parameters.get(a["Ref"], sam["Parameters"][a["Ref"]].get("Default"))
            if isinstance(a, dict) and "Ref" in a
            else a
            for a in arguments
        )
        return str(left) == str(right)
    if function == "Fn::Not":
        return not holds(arguments[0], parameters, sam)
    raise AssertionError(f"{function} is not expected in a rule")


def refused_by(sam: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """The rules whose assertions fail for these parameters: CloudFormation refuses the deploy then."""
    refused = []
    for name, rule in sam["Rules"].items():
        if "RuleCondition" in rule and not holds(rule["RuleCondition"], parameters, sam):
            continue
        if not all(holds(a["Assert"], parameters, sam) for a in rule["Assertions"]):
            refused.append(name)
    return refused


# --- the adapter -----------------------------------------------------------------------------------------------


def test_the_adapter_layer_defaults_to_v1_0_0_and_says_where_that_was_read(sam: dict[str, Any]) -> None:
    text = TEMPLATE.read_text()
    block = text[: text.index("  WebAdapterLayerVersion:")].rsplit("\n\n", 1)[-1]

    assert sam["Parameters"]["WebAdapterLayerVersion"]["Default"] == ADAPTER_LAYER_VERSION
    assert "aws/aws-lambda-web-adapter" in block and ADAPTER_COMMIT in block
    assert "v1.0.0" in block


def test_every_adapter_function_uses_the_1x_settings_only(sam: dict[str, Any]) -> None:
    functions = adapter_functions(sam)

    assert set(functions) >= {"GenerationsStreamFunction", "EditsStreamFunction", "UpstreamSimulatorFunction"}
    for name, props in functions.items():
        env = props["Environment"]["Variables"]
        assert not DEPRECATED_ADAPTER_NAMES & set(env), name
        assert "PORT" not in env, f"{name}: AWS_LWA_PORT is the 1.x name of the port"
        assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap", name
        assert env["AWS_LWA_INVOKE_MODE"] == "response_stream", name
        assert (env["AWS_LWA_READINESS_CHECK_PATH"], env["AWS_LWA_READINESS_CHECK_HEALTHY_STATUS"]) == (
            "/_ready",
            "200",
        )
        assert int(env["AWS_LWA_PORT"]) == 8080, name
        layer = props["Layers"][0]["Fn::Sub"]
        assert layer.endswith(":layer:LambdaAdapterLayerArm64:${WebAdapterLayerVersion}"), name


def test_every_run_script_serves_on_the_adapters_port(sam: dict[str, Any]) -> None:
    for name, props in adapter_functions(sam).items():
        run = ROOT / props["CodeUri"] / "run.sh"
        text = run.read_text()
        assert run.stat().st_mode & 0o111, f"{name}: run.sh must be executable"
        assert "AWS_LWA_PORT" in text, name
        assert not re.search(r"\bREADINESS_CHECK_(PATH|PORT)\b", text.replace("AWS_LWA_READINESS_CHECK", "")), name


def test_the_streamed_edge_answers_the_readiness_path_the_template_names(sam: dict[str, Any]) -> None:
    from functions.upstream_simulator.simulator.server import READY_PATH
    from imagecore.edge.streaming import READINESS_PATH

    for props in adapter_functions(sam).values():
        assert props["Environment"]["Variables"]["AWS_LWA_READINESS_CHECK_PATH"] in (READINESS_PATH, READY_PATH)
    assert READINESS_PATH == READY_PATH == "/_ready"


# --- the simulator ---------------------------------------------------------------------------------------------


def test_the_simulator_is_off_by_default_and_only_true_or_false(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["UpstreamSimulator"]

    assert parameter["Default"] == "false"
    assert parameter["AllowedValues"] == ["false", "true"]
    assert sam["Conditions"]["UsesUpstreamSimulator"] == {"Fn::Equals": [{"Ref": "UpstreamSimulator"}, "true"]}
    assert sam["Parameters"]["UpstreamBaseUrl"]["Default"] == ""


@pytest.mark.parametrize(
    ("simulator", "url", "refused"),
    [
        ("true", "", []),
        ("true", UPSTREAM_BASE_URL, ["SimulatorReplacesTheRealUpstream"]),
        ("false", UPSTREAM_BASE_URL, []),
        ("false", "", ["RealUpstreamNeedsItsUrl"]),
    ],
)
def test_the_simulator_cannot_be_deployed_with_a_real_upstream(
    sam: dict[str, Any], simulator: str, url: str, refused: list[str]
) -> None:
    assert refused_by(sam, {"UpstreamSimulator": simulator, "UpstreamBaseUrl": url}) == refused


def test_only_a_test_deployment_has_the_simulator(sam: dict[str, Any]) -> None:
    conditional = {name for name, res in sam["Resources"].items() if res.get("Condition") == "UsesUpstreamSimulator"}

    assert conditional == SIMULATOR_RESOURCES


def test_the_simulator_runs_behind_the_adapter_and_a_streamed_function_url(sam: dict[str, Any]) -> None:
    cfn = transform(sam, UpstreamSimulator="true")
    (url_name,) = resources_of_type(cfn, "AWS::Lambda::Url")
    url = cfn["Resources"][url_name]
    props = sam["Resources"]["UpstreamSimulatorFunction"]["Properties"]

    assert url_name == "UpstreamSimulatorFunctionUrl"  # what the upstream URL names
    assert url["Condition"] == "UsesUpstreamSimulator"
    assert url["Properties"]["InvokeMode"] == "RESPONSE_STREAM"
    # The stack's functions call it with a bearer key, as they call sub2api (they sign nothing).
    assert url["Properties"]["AuthType"] == "NONE"
    # A public URL needs both grants (InvokeFunctionUrl, and InvokeFunction through the URL), each conditional.
    grants = {
        (res["Properties"]["Action"], res.get("Condition"))
        for res in resources_of_type(cfn, "AWS::Lambda::Permission").values()
        if res["Properties"]["FunctionName"] == {"Ref": "UpstreamSimulatorFunction"}
    }
    assert grants == {
        ("lambda:InvokeFunctionUrl", "UsesUpstreamSimulator"),
        ("lambda:InvokeFunction", "UsesUpstreamSimulator"),
    }
    assert props["CodeUri"] == "functions/upstream_simulator/"
    assert props["Handler"] == "run.sh"
    assert props["Environment"]["Variables"]["SIMULATOR_API_KEY_SECRET_ID"] == {"Ref": "UpstreamSimulatorKeySecret"}
    # A delayed generation (minutes) still ends within the function.
    assert props["Timeout"] >= 360
    run = (ROOT / props["CodeUri"] / "run.sh").read_text()
    assert "python -m simulator" in run


def test_the_simulator_is_the_one_the_local_stack_runs() -> None:
    text = (ROOT / "local" / "server.py").read_text()

    assert "from functions.upstream_simulator.simulator import" in text
    assert not (ROOT / "local" / "simulator.py").exists()


@pytest.mark.parametrize("simulated", [True, False])
def test_upstream_callers_call_the_simulator_only_in_a_test_deployment(sam: dict[str, Any], simulated: bool) -> None:
    cfn = transform(sam, UpstreamSimulator="true" if simulated else "false", UpstreamBaseUrl=UPSTREAM_BASE_URL)
    overrides = {"UpstreamSimulator": "true" if simulated else "false"}

    callers = {
        name
        for name in resources_of_type(cfn, "AWS::Lambda::Function")
        if "UPSTREAM_BASE_URL" in function_env(cfn, name)
    }
    assert callers == UPSTREAM_CALLERS
    for function in callers:
        env = function_env(cfn, function)
        base_url = resolve(env["UPSTREAM_BASE_URL"], sam, overrides)
        key_secret = resolve(env["UPSTREAM_API_KEY_SECRET_ID"], sam, overrides)
        if simulated:
            assert base_url == REF_VALUES["UpstreamSimulatorFunctionUrl.FunctionUrl"] + "v1", function
            assert key_secret == REF_VALUES["UpstreamSimulatorKeySecret"], function  # never the real key
        else:
            assert (base_url, key_secret) == (UPSTREAM_BASE_URL, REF_VALUES["UpstreamApiKeySecret"]), function


def test_exactly_the_upstream_callers_and_the_simulator_read_the_simulator_key(sam: dict[str, Any]) -> None:
    policy = sam["Resources"]["UpstreamSimulatorKeySecretPolicy"]["Properties"]
    (statement,) = policy["ResourcePolicy"]["Statement"]
    roles = {principal["Fn::GetAtt"][0] for principal in statement["Principal"]["AWS"]}
    caller_roles = {
        sam["Resources"][name]["Properties"]["Role"]["Fn::GetAtt"][0]
        for name in UPSTREAM_CALLERS | {"UpstreamSimulatorFunction"}
    }

    assert policy["SecretId"] == {"Ref": "UpstreamSimulatorKeySecret"}
    assert policy["BlockPublicPolicy"] is True
    assert statement["Action"] == "secretsmanager:GetSecretValue" and statement["Effect"] == "Allow"
    assert roles == caller_roles


def test_a_test_deployment_says_so_in_its_outputs_and_its_health(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    health = sam["Resources"]["HealthFunction"]["Properties"]["Environment"]["Variables"]

    assert outputs["TestDeployment"]["Condition"] == "UsesUpstreamSimulator"
    assert outputs["TestDeployment"]["Value"] == "true"
    assert outputs["UpstreamSimulatorUrl"]["Condition"] == "UsesUpstreamSimulator"
    assert outputs["UpstreamSimulatorUrl"]["Value"] == {"Fn::GetAtt": ["UpstreamSimulatorFunctionUrl", "FunctionUrl"]}
    assert health["UPSTREAM_SIMULATOR"] == {"Ref": "UpstreamSimulator"}


@pytest.mark.slow  # cfn-lint, as the default template's own run (make test runs it, make check does not)
@pytest.mark.timeout(180)  # cfn-lint takes its time on a busy machine
def test_a_test_deployment_passes_cfn_lint() -> None:
    """cfn-lint with the simulator on (the default run checks the template with it off)."""
    from cfnlint.api import ManualArgs, lint

    text = TEMPLATE.read_text()
    findings = lint(text, config=ManualArgs(regions=[REGION], parameters=[{"UpstreamSimulator": "true"}]))

    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in findings if m.rule.id != "I4010"] == []
