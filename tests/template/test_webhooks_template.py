"""The webhooks' resources: the tasks table's stream as the outbox (filtered as the code filters), the attempts'
queue, the loopback allowance that AWS cannot turn on, the schedule, the encrypted secrets."""

# ruff: noqa: F811 - the template fixtures (sam, cfn) are imported from test_template by name, as pytest needs

from __future__ import annotations

import json
from typing import Any

from imagecore.jobs.webhook_outbox import MAX_QUEUE_DELAY_SECONDS, ended_task_id, parse_schedule
from imagecore.platform.route_settings import WebhookSettings
from tests.template.test_template import (  # noqa: F401 - fixtures
    cfn,
    parameter,
    resources_of_type,
    sam,
)


def webhook_events(sam: dict[str, Any]) -> dict[str, Any]:
    return sam["Resources"]["WebhookFunction"]["Properties"]["Events"]


def test_the_tasks_table_streams_both_images_of_each_change(sam: dict[str, Any]) -> None:
    stream = sam["Resources"]["TasksTable"]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    source = webhook_events(sam)["TaskEnds"]["Properties"]
    assert source["Stream"] == {"Fn::GetAtt": ["TasksTable", "StreamArn"]}
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # A record that cannot be queued is retried for the stream's whole retention, then kept, never dropped.
    assert source["MaximumRecordAgeInSeconds"] == 86400
    assert source["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["WebhooksDeadLetterQueue", "Arn"]}


def test_the_streams_filter_lets_through_what_the_code_takes_as_an_end(sam: dict[str, Any]) -> None:
    (only,) = webhook_events(sam)["TaskEnds"]["Properties"]["FilterCriteria"]["Filters"]
    pattern = json.loads(only["Pattern"])

    def passes(record: dict[str, Any]) -> bool:
        change = record["dynamodb"]
        return (
            record["eventName"] in pattern["eventName"]
            and change.get("OldImage", {}).get("status", {}).get("S") in pattern["dynamodb"]["OldImage"]["status"]["S"]
            and change["NewImage"]["status"]["S"] in pattern["dynamodb"]["NewImage"]["status"]["S"]
            and "webhook_url" in change["NewImage"]
        )

    for old, new, webhook in [
        ("processing", "completed", True),
        ("processing", "failed", True),
        ("processing", "processing", True),
        ("completed", "completed", True),
        ("processing", "completed", False),
    ]:
        image = {"id": {"S": "task_1"}, "status": {"S": new}}
        if webhook:
            image["webhook_url"] = {"S": "https://hooks.example.com/"}
        record = {"eventName": "MODIFY", "dynamodb": {"OldImage": {**image, "status": {"S": old}}, "NewImage": image}}
        assert passes(record) == (ended_task_id(record) is not None), (old, new, webhook)


def test_attempts_come_one_at_a_time_and_outwait_the_function(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    attempts = webhook_events(sam)["Attempts"]["Properties"]
    function = cfn["Resources"]["WebhookFunction"]["Properties"]
    queue = cfn["Resources"]["WebhooksQueue"]["Properties"]
    assert attempts["Queue"] == {"Fn::GetAtt": ["WebhooksQueue", "Arn"]}
    assert attempts["BatchSize"] == 1 and attempts["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # an attempt waits 10 s for its receiver; the queue hides a message six times the function's timeout
    assert function["Timeout"] >= 20
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhooksDeadLetterQueue", "Arn"]}
    assert MAX_QUEUE_DELAY_SECONDS == 900  # SQS's longest DelaySeconds


def test_aws_cannot_let_webhooks_reach_loopback(sam: dict[str, Any]) -> None:
    allowance = parameter(sam, "WebhookAllowLoopback")
    assert allowance["AllowedValues"] == ["false"] and allowance["Default"] == "false"
    for name in ("GenerationsFunction", "EditsFunction", "WebhookFunction"):
        variables = sam["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert variables["WEBHOOK_ALLOW_LOOPBACK"] == {"Ref": "WebhookAllowLoopback"}, name


def test_the_default_schedule_is_the_specifications_and_the_settings(sam: dict[str, Any]) -> None:
    default = parameter(sam, "WebhookRetrySchedule")["Default"]
    assert parse_schedule(default) == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert default == WebhookSettings.model_fields["webhook_retry_schedule"].default


def test_secrets_are_kept_under_a_rotating_customer_key(cfn: dict[str, Any]) -> None:
    key = cfn["Resources"]["WebhookSecretsKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"  # the secrets table is kept: so is what decrypts it
    table = cfn["Resources"]["WebhookSecretsTable"]
    assert table["DeletionPolicy"] == "Retain" and table["Properties"]["SSESpecification"]["SSEEnabled"] is True
    assert set(resources_of_type(cfn, "AWS::KMS::Key")) == {"WebhookSecretsKey"}
