"""template.yaml's operations side, checked offline: every role against the grants its code needs
(functions/iam_expectations.py), the alarms and the dashboard against the metrics the code really emits, the
audit trail (API access log, S3 access logs), the optional WAF and the security bounds of the parameters."""

# ruff: noqa: F811 - the template fixtures (sam, cfn) are imported from test_template by name, as pytest needs

from __future__ import annotations

import ast
import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from functions.iam_expectations import LOG_GROUP, PERMISSIONS
from imagecore.platform import observability
from imagecore.platform.observability import RequestRecord, recording
from imagecore.platform.route_settings import TaskReadSettings
from imagecore.platform.settings import MAX_PRESIGN_EXPIRY_SECONDS, GenerationSettings
from tests.template.test_template import (  # noqa: F401 - fixtures
    _offline_aws_env,
    as_list,
    cfn,
    parameter,
    resources_of_type,
    sam,
    sub_string,
)

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "imagecore" / "imagecore"
OWN_NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE_VARIABLE = "POWERTOOLS_SERVICE_NAME"


# --- least privilege: each role == what its code calls --------------------------------------------------------


def role_of(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    role = cfn["Resources"][function]["Properties"]["Role"]
    assert set(role) == {"Fn::GetAtt"} and role["Fn::GetAtt"][1] == "Arn", role
    resource = cfn["Resources"][role["Fn::GetAtt"][0]]
    assert resource["Type"] == "AWS::IAM::Role"
    return resource["Properties"]


def resource_name(resource: Any, own_log_group: str) -> str:
    """A statement's resource as iam_expectations names it."""
    if resource == "*":
        return "*"
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"} and resource["Fn::GetAtt"][1] == "Arn":
        name = resource["Fn::GetAtt"][0]
        return LOG_GROUP if name == own_log_group else name
    if isinstance(resource, dict) and set(resource) == {"Ref"}:
        return resource["Ref"]
    if isinstance(resource, dict) and set(resource) == {"Fn::GetAtt"} and resource["Fn::GetAtt"][1] == "StreamArn":
        return resource["Fn::GetAtt"][0] + "/stream"
    match = re.fullmatch(r"\$\{(\w+)\.Arn\}(/.+)", sub_string(resource))
    assert match, f"a resource iam_expectations cannot name: {resource}"
    return match.group(1) + match.group(2)


def granted(cfn: dict[str, Any], function: str) -> set[tuple[str, str]]:
    """Every (action, resource) a function's role allows, from the transformed template."""
    role = role_of(cfn, function)
    log_group = cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert role.get("ManagedPolicyArns", []) == [], "a managed policy grants more than the code calls"
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    grants = set()
    for policy in role["Policies"]:
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            assert statement["Effect"] == "Allow", statement
            assert not {"NotAction", "NotResource"} & set(statement), statement
            # The one condition allowed: s3:ListBucket on the bucket, under an s3:prefix (named "<bucket>?prefix=")
            suffixes = [""]
            if "Condition" in statement:
                assert as_list(statement["Action"]) == ["s3:ListBucket"], statement
                assert set(statement["Condition"]) == {"StringLike"}, statement
                assert set(statement["Condition"]["StringLike"]) == {"s3:prefix"}, statement
                suffixes = [
                    f"?prefix={prefix}" for prefix in as_list(statement["Condition"]["StringLike"]["s3:prefix"])
                ]
            for action in as_list(statement["Action"]):
                assert "*" not in action, statement
                for resource in as_list(statement["Resource"]):
                    for suffix in suffixes:
                        grants.add((action, resource_name(resource, log_group) + suffix))
    return grants


@pytest.mark.parametrize("function", sorted(PERMISSIONS))
def test_each_role_allows_exactly_the_calls_its_code_makes(cfn: dict[str, Any], function: str) -> None:
    allowed = granted(cfn, function)
    expected = PERMISSIONS[function]

    assert allowed - expected == set(), "granted but not called"
    assert expected - allowed == set(), "called but not granted"


def test_every_function_is_listed() -> None:
    from tests.template.test_template import SETTINGS_OF

    assert set(PERMISSIONS) == set(SETTINGS_OF)


def test_star_only_where_the_service_has_no_resources() -> None:
    stars = {action for grants in PERMISSIONS.values() for action, resource in grants if resource == "*"}
    assert stars == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.mark.parametrize("function", sorted(PERMISSIONS))
def test_each_function_logs_to_its_own_group_with_retention(cfn: dict[str, Any], function: str) -> None:
    group = cfn["Resources"][cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]

    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == 30
    # named without the function: the role names the group, so the group may not name the function
    assert "${AWS::StackName}" in sub_string(group["Properties"]["LogGroupName"])


def aws_calls_in_core() -> dict[str, set[str]]:
    """Every call in imagecore whose method is an operation of the services the roles grant: method -> modules."""
    session = botocore.session.get_session()
    operations = {
        xform_name(name)
        for service in ("s3", "dynamodb", "sqs", "events", "secretsmanager")
        for name in session.get_service_model(service).operation_names
    } | {"generate_presigned_url", "generate_presigned_post", "get_secret", "encrypt", "decrypt"}
    operations.discard("get_secret_value")  # pydantic's SecretStr; the AWS reads go through get_secret
    found: dict[str, set[str]] = {}
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in operations:
                found.setdefault(node.attr, set()).add(path.stem)
    return found


# The IAM action each call needs (a presigned GET is a GetObject made later with this role's credentials).
CALL_ACTIONS = {
    "put_object": "s3:PutObject",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",
    "generate_presigned_url": "s3:GetObject",
    "generate_presigned_post": "s3:PutObject",
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    # a transaction's Update items need the UpdateItem grant (imagecore.accounts.budgets reserves with one)
    "transact_write_items": "dynamodb:UpdateItem",
    "query": "dynamodb:Query",
    "send_message": "sqs:SendMessage",
    "put_events": "events:PutEvents",
    "get_secret": "secretsmanager:GetSecretValue",
    "encrypt": "kms:Encrypt",
    "decrypt": "kms:Decrypt",
}


def test_every_aws_call_in_the_core_is_a_known_grant() -> None:
    calls = aws_calls_in_core()
    granted_actions = {action for grants in PERMISSIONS.values() for action, _ in grants}

    assert set(calls) - set(CALL_ACTIONS) == set(), f"a new AWS call: add it to CALL_ACTIONS and the roles: {calls}"
    assert {CALL_ACTIONS[call] for call in calls} <= granted_actions
    # and the other way: every data-plane action granted is one the code calls (or the runtime needs)
    runtime = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    # the event source mappings (SQS, and the tasks table's stream)
    poller = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    poller |= {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
    idempotency_layer = {"dynamodb:DeleteItem"}  # Powertools' persistence layer deletes a failed record
    assert granted_actions - runtime - poller - idempotency_layer <= {CALL_ACTIONS[call] for call in calls}


# --- alarms and dashboard: every metric is one the code emits -------------------------------------------------


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def emitted(lines: list[dict[str, Any]]) -> set[tuple[str, str, frozenset[tuple[str, str]]]]:
    """(namespace, metric name, dimensions with their values) of every metric in EMF lines, each dimension set."""
    found = set()
    for line in lines:
        for directive in line["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, str(line[name])) for name in dimension_set)
                for metric in directive["Metrics"]:
                    assert metric["Name"] in line
                    found.add((directive["Namespace"], metric["Name"], dimensions))
    return found


@pytest.fixture(scope="module")
def code_metrics() -> Iterator[set[tuple[str, str, frozenset[tuple[str, str]]]]]:
    """What the request and job records of every outcome the alarms watch emit, through the real metrics code."""
    records = []
    success = RequestRecord(operation="generations", status=200, upstream_latency_ms=900.0, attempts=1)
    success.images_returned, success.usage = 2, {"total_tokens": 300}
    records.append(success)
    failed = RequestRecord(operation="generations", status=502, upstream_latency_ms=30_000.0, attempts=3)
    failed.fail(observability.UPSTREAM_FAILED, "upstream_error")
    records.append(failed)
    timed_out = RequestRecord(operation="worker.task", status=504)
    timed_out.outcome = observability.TASK_TIMEOUT
    records.append(timed_out)
    over_budget = RequestRecord(operation="generations", status=429)
    over_budget.fail("rejected", "budget_exceeded")
    records.append(over_budget)
    out = io.StringIO()
    with redirect_stdout(out):
        for record in records:
            with recording(record):
                pass
            observability.metrics.flush_metrics()
        for outcome in observability.WEBHOOK_METRICS:
            observability.count_webhook_attempt(outcome)
            observability.metrics.flush_metrics()
    yield emitted(emf_lines(out.getvalue()))


def globals_env(sam: dict[str, Any]) -> dict[str, str]:
    return sam["Globals"]["Function"]["Environment"]["Variables"]


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, frozenset[tuple[str, str]]]]:
    def one(metric: dict[str, Any]) -> tuple[str, str, frozenset[tuple[str, str]]]:
        dims = frozenset(
            (d["Name"], json.dumps(d["Value"]) if isinstance(d["Value"], dict) else d["Value"])
            for d in metric.get("Dimensions", [])
        )
        return metric["Namespace"], metric["MetricName"], dims

    if "MetricName" in alarm:
        return [one(alarm)]
    return [one(query["MetricStat"]["Metric"]) for query in alarm["Metrics"] if "MetricStat" in query]


def alarms(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: res["Properties"] for name, res in resources_of_type(sam, "AWS::CloudWatch::Alarm").items()}


def test_the_code_emits_under_the_templates_namespace_and_service(sam: dict[str, Any]) -> None:
    env = globals_env(sam)
    source = (CORE / "platform" / "observability.py").read_text()

    assert f'os.getenv("{OWN_NAMESPACE_VARIABLE}", "{env[OWN_NAMESPACE_VARIABLE]}")' in source
    assert f'os.getenv("{SERVICE_VARIABLE}", "{env[SERVICE_VARIABLE]}")' in source


@pytest.mark.parametrize(
    "alarm",
    [
        "UpstreamFailureRateAlarm",
        "UpstreamLatencyAlarm",
        "TasksTimedOutAlarm",
        "BudgetRejectionsAlarm",
        "WebhooksFailedAlarm",
    ],
)
def test_an_alarm_on_our_own_metrics_reads_what_the_code_emits(
    sam: dict[str, Any], code_metrics: Any, alarm: str
) -> None:
    env = globals_env(sam)
    # the tests' process emits under its own namespace; the template's is what Lambda gets
    test_namespace = observability.metrics.namespace
    watched = alarm_metrics(alarms(sam)[alarm])

    assert watched
    for namespace, name, dimensions in watched:
        assert namespace == env[OWN_NAMESPACE_VARIABLE]
        assert ("service", env[SERVICE_VARIABLE]) in dimensions
        assert (test_namespace, name, dimensions) in code_metrics, f"{alarm}: {name} {sorted(dimensions)} not emitted"


def test_every_alarm_on_our_namespace_is_checked_above(sam: dict[str, Any], code_metrics: Any) -> None:
    namespace = globals_env(sam)[OWN_NAMESPACE_VARIABLE]
    test_namespace = observability.metrics.namespace
    for name, alarm in alarms(sam).items():
        for metric_namespace, metric, dimensions in alarm_metrics(alarm):
            if metric_namespace == namespace:
                assert (test_namespace, metric, dimensions) in code_metrics, name


EXPECTED_ALARMS = {
    "ApiServerErrorsAlarm": ("AWS/ApiGateway", "5XXError"),
    "UpstreamFailureRateAlarm": ("ImageService", "UpstreamFailures"),
    "UpstreamLatencyAlarm": ("ImageService", "UpstreamLatency"),
    "FunctionThrottlesAlarm": ("AWS/Lambda", "Throttles"),
    "DeadLettersAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "WorkerErrorsAlarm": ("AWS/Lambda", "Errors"),
    "TasksTimedOutAlarm": ("ImageService", "TasksTimedOut"),
    "BudgetRejectionsAlarm": ("ImageService", "Errors"),
    "WebhooksFailedAlarm": ("ImageService", "WebhooksFailed"),
    "WebhooksDeadLetterAlarm": ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    "GenerationsConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
    "EditsConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
    "GenerationsStreamConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
    "EditsStreamConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
    "ResponsesConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
    "WorkerConcurrencyAlarm": ("AWS/Lambda", "ConcurrentExecutions"),
}


def test_the_alarms_are_the_operators_list_and_notify_the_optional_topic(sam: dict[str, Any]) -> None:
    found = alarms(sam)
    topic = parameter(sam, "AlarmTopicArn")

    assert set(found) == set(EXPECTED_ALARMS)
    assert topic["Default"] == "" and re.fullmatch(topic["AllowedPattern"], "")
    assert re.fullmatch(topic["AllowedPattern"], "arn:aws:sns:us-east-1:123456789012:image-service-alarms")
    for name, alarm in found.items():
        assert (EXPECTED_ALARMS[name][0], EXPECTED_ALARMS[name][1]) in {(n, m) for n, m, _ in alarm_metrics(alarm)}
        expected_actions = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert alarm["AlarmActions"] == expected_actions, name
        assert alarm["OKActions"] == expected_actions, name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert len(alarm["AlarmDescription"]) > 40, name


@pytest.mark.parametrize(
    ("alarm", "function"),
    [("WorkerErrorsAlarm", "WorkerFunction"), ("DeadLettersAlarm", None), ("ApiServerErrorsAlarm", None)],
)
def test_aws_metric_alarms_name_this_stacks_resources(sam: dict[str, Any], alarm: str, function: str | None) -> None:
    dimensions = {d["Name"]: d["Value"] for d in alarms(sam)[alarm]["Dimensions"]}
    if function:
        assert dimensions == {"FunctionName": {"Ref": function}}
    elif alarm == "DeadLettersAlarm":
        assert dimensions == {"QueueName": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}}
    else:  # the API's name as the template sets it, and the stage parameter
        assert dimensions == {"ApiName": {"Fn::Sub": "${AWS::StackName}-api"}, "Stage": {"Ref": "StageName"}}
        assert sam["Resources"]["ImageApi"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-api"}


def test_throttles_cover_every_function(sam: dict[str, Any]) -> None:
    watched = {dict(dims)["FunctionName"] for _, _, dims in alarm_metrics(alarms(sam)["FunctionThrottlesAlarm"])}
    functions = set(resources_of_type(sam, "AWS::Serverless::Function"))
    functions.discard("UpstreamSimulatorFunction")  # only in a test deployment, and no one's answer waits on it
    assert watched == {json.dumps({"Ref": f}) for f in functions}


def test_concurrency_alarms_compare_with_the_limits_they_guard(sam: dict[str, Any]) -> None:
    found = resources_of_type(sam, "AWS::CloudWatch::Alarm")
    for name, limit in (
        ("GenerationsConcurrencyAlarm", "GenerationsReservedConcurrency"),
        ("EditsConcurrencyAlarm", "GenerationsReservedConcurrency"),
        ("GenerationsStreamConcurrencyAlarm", "GenerationsReservedConcurrency"),
        ("EditsStreamConcurrencyAlarm", "GenerationsReservedConcurrency"),
        ("WorkerConcurrencyAlarm", "WorkerMaximumConcurrency"),
    ):
        expression = next(q["Expression"] for q in found[name]["Properties"]["Metrics"] if "Expression" in q)
        assert expression == {"Fn::Sub": f"100 * used / ${{{limit}}}"}
        assert found[name]["Properties"]["Threshold"] == 80
    # a reserved concurrency of 0 means "none": nothing to be near
    assert found["GenerationsConcurrencyAlarm"]["Condition"] == "HasGenerationsReservedConcurrency"


def test_dashboard_shows_requests_images_latency_errors_and_dead_letters(
    sam: dict[str, Any], code_metrics: Any
) -> None:
    (dashboard,) = resources_of_type(sam, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(sub_string(dashboard["Properties"]["DashboardBody"]))
    widgets = {w["properties"]["title"]: w["properties"] for w in body["widgets"]}
    env = globals_env(sam)
    test_namespace = observability.metrics.namespace
    emitted_names = {(name, dims) for _, name, dims in code_metrics}

    assert {"Requests by operation", "Images and tokens", "Latency percentiles (ms)", "Errors by code"} <= set(widgets)
    assert "Jobs and dead-letter queue depth" in widgets
    assert {m[-1].get("stat") for m in widgets["Latency percentiles (ms)"]["metrics"]} == {"p50", "p95", "p99"}
    for widget in widgets.values():
        for metric in widget["metrics"]:
            if isinstance(metric[0], dict):  # a SEARCH over our namespace: its dimensions and name must exist
                search = re.fullmatch(
                    r"SEARCH\('\{(\w+),([\w,]+)\} MetricName=\"(\w+)\"', 'Sum', 300\)", metric[0]["expression"]
                )
                assert search, metric
                assert search.group(1) == env[OWN_NAMESPACE_VARIABLE]
                keys = set(search.group(2).split(","))
                assert any(name == search.group(3) and {k for k, _ in dims} == keys for name, dims in emitted_names)
            elif metric[0] == env[OWN_NAMESPACE_VARIABLE]:
                dims = (
                    frozenset(zip(metric[2:-1:2], metric[3::2], strict=False))
                    if isinstance(metric[-1], dict)
                    else frozenset(zip(metric[2::2], metric[3::2], strict=True))
                )
                assert (test_namespace, metric[1], dims) in code_metrics, metric
    dead_letters = widgets["Jobs and dead-letter queue depth"]["metrics"][0]
    assert dead_letters[:4] == [
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        "${JobsDeadLetterQueue.QueueName}",
    ]


def test_a_handler_emits_the_service_rollup_the_alarms_read(code_metrics: Any) -> None:
    """The rollup that every alarm on our namespace reads: each request metric under the service alone too."""
    names = {name for _, name, dims in code_metrics if dims == frozenset({("service", observability.SERVICE)})}
    assert {"Requests", "UpstreamCalls", "UpstreamFailures", "UpstreamLatency", "TasksTimedOut"} <= names
    codes = {dict(dims).get("code") for _, name, dims in code_metrics if name == "Errors"}
    assert codes == {"upstream_error", "task_timeout", "budget_exceeded"}


# --- the audit trail ------------------------------------------------------------------------------------------


def test_api_access_log_is_json_with_who_what_and_how_it_went(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    (stage,) = resources_of_type(cfn, "AWS::ApiGateway::Stage").values()
    setting = stage["Properties"]["AccessLogSetting"]
    line = json.loads(setting["Format"])
    group = sam["Resources"]["ApiAccessLogGroup"]["Properties"]

    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert line["requestId"] == "$context.requestId"
    assert line["keyId"] == "$context.authorizer.keyId"  # what the authorizer puts in its context
    assert line["sourceIp"] == "$context.identity.sourceIp"
    assert line["route"] == "$context.resourcePath" and line["httpMethod"] == "$context.httpMethod"
    assert line["status"] == "$context.status"
    assert line["latencyMs"] == "$context.responseLatency"
    assert line["responseLength"] == "$context.responseLength"
    assert "Authorization" not in setting["Format"] and "$input" not in setting["Format"]
    assert group["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    # the authorizer's context (imagecore.accounts.authorizer.authorizer_context) carries the key's name as keyId
    from imagecore.accounts.auth import KeyRecord
    from imagecore.accounts.authorizer import Grant, authorizer_context

    assert authorizer_context(Grant(KeyRecord("ios-app", "0" * 64)))["keyId"] == "ios-app"


def test_access_logging_has_its_account_role_unless_told_it_exists(sam: dict[str, Any]) -> None:
    resources = sam["Resources"]
    tag = resources["ApiAccessLogGroup"]["Properties"]["Tags"][0]["Value"]

    assert resources["ApiGatewayAccount"]["Condition"] == "SetsApiGatewayAccountLogging"
    assert tag == {"Fn::If": ["SetsApiGatewayAccountLogging", {"Ref": "ApiGatewayAccount"}, "preconfigured"]}
    assert parameter(sam, "ApiGatewayAccountLogging")["Default"] == "true"


def test_images_bucket_logs_its_accesses_to_a_private_expiring_bucket(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    images = resources["ImagesBucket"]
    logs = resources["AccessLogsBucket"]["Properties"]
    policy = resources["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]

    assert images["Properties"]["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": "AccessLogsBucket"},
        "LogFilePrefix": "images-bucket/",
    }
    assert images["DependsOn"] == "AccessLogsBucketPolicy"
    assert set(logs["PublicAccessBlockConfiguration"].values()) == {True}
    assert logs["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    rules = {rule["Id"]: rule for rule in logs["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireAccessLogs"]["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}
    writers = [s for s in policy if s["Effect"] == "Allow"]
    assert writers == [
        {
            "Sid": "S3ServerAccessLogsOfThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "${AccessLogsBucket.Arn}/images-bucket/*"},
            "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
        }
    ]
    denials = {s["Sid"]: s["Condition"] for s in policy if s["Effect"] == "Deny"}
    assert denials == {
        "DenyInsecureTransport": {"Bool": {"aws:SecureTransport": "false"}},
        "DenyOutdatedTls": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
    }


# --- WAF and the parameters' security bounds ----------------------------------------------------------------


def test_waf_is_optional_and_limits_each_source_ip(sam: dict[str, Any], cfn: dict[str, Any]) -> None:
    resources = sam["Resources"]
    acl = resources["ApiWebAcl"]
    (rule,) = acl["Properties"]["Rules"]
    association = resources["ApiWebAclAssociation"]

    assert parameter(sam, "WafRequestsPerFiveMinutes")["Default"] == 0
    assert sam["Conditions"]["HasWaf"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "WafRequestsPerFiveMinutes"}, "0"]}]}
    assert acl["Condition"] == association["Condition"] == "HasWaf"
    assert acl["Properties"]["Scope"] == "REGIONAL"
    assert rule["Statement"]["RateBasedStatement"] == {
        "AggregateKeyType": "IP",
        "Limit": {"Ref": "WafRequestsPerFiveMinutes"},
        "EvaluationWindowSec": 300,
    }
    block = rule["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    body = json.loads(acl["Properties"]["CustomResponseBodies"][block["CustomResponseBodyKey"]]["Content"])
    assert body["error"]["code"] == "rate_limit_exceeded"
    # the association names the API's stage, which the SAM transform resolves
    arn = sub_string(cfn["Resources"]["ApiWebAclAssociation"]["Properties"]["ResourceArn"])
    assert re.fullmatch(
        r"arn:\$\{AWS::Partition\}:apigateway:\$\{AWS::Region\}::/restapis/\$\{ImageApi\}/stages/"
        r"\$\{ImageApi\w*Stage\}",
        arn,
    ), arn


def test_upstream_must_be_https(sam: dict[str, Any]) -> None:
    pattern = parameter(sam, "UpstreamBaseUrl")["AllowedPattern"]

    assert re.fullmatch(pattern, "https://sub2api.example.com/v1")
    assert not re.fullmatch(pattern, "http://sub2api.example.com/v1")


@pytest.mark.parametrize("model", [GenerationSettings, TaskReadSettings], ids=lambda m: m.__name__)
def test_presigned_urls_live_an_hour_at_most(sam: dict[str, Any], model: type) -> None:
    field = model.model_fields["presign_expiry_seconds"]
    bound = next(m.le for m in field.metadata if hasattr(m, "le"))

    assert parameter(sam, "PresignExpirySeconds")["MaxValue"] == MAX_PRESIGN_EXPIRY_SECONDS == bound == 3600


def test_the_prompt_digest_key_is_a_generated_secret_read_by_the_prompt_loggers(cfn: dict[str, Any]) -> None:
    secret = cfn["Resources"]["PromptDigestKeySecret"]["Properties"]
    readers = {
        name
        for name, res in resources_of_type(cfn, "AWS::Lambda::Function").items()
        if res["Properties"].get("Environment", {}).get("Variables", {}).get("PROMPT_DIGEST_KEY_SECRET_ID")
        == {"Ref": "PromptDigestKeySecret"}
    }

    assert "SecretString" not in secret and secret["GenerateSecretString"]["PasswordLength"] >= 32
    assert readers == {
        "GenerationsFunction",
        "EditsFunction",
        "GenerationsStreamFunction",
        "EditsStreamFunction",
        "ResponsesFunction",
        "WorkerFunction",
    }
