"""The AWS resources of template.yaml, made on the embedded moto server: the bucket, the tasks, idempotency, usage,
client-token usage and conversations tables (with their TTL attributes), the jobs queue with its dead-letter
queue, the event bus and the ImageGenerationRequested rule (its pattern read from the template) targeting the
jobs queue; for webhooks, the tasks table's stream, the webhook secrets table and its KMS key, the webhooks
queue with its dead-letter queue.

One addition for local work: a rule that copies every event the service publishes (source image-service) to a
``completions`` queue, so a developer can read ImageGenerationCompleted/Failed with boto3 or the AWS CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

PREFIX = "image-service-local"
# Locally a failed job comes back after the poller's short pause, not after this (the template's 3600 s);
# it only has to outlast one worker run.
LOCAL_VISIBILITY_TIMEOUT = 660


@dataclass(frozen=True)
class LocalResources:
    bucket: str
    tasks_table: str
    idempotency_table: str
    usage_table: str
    token_usage_table: str
    jobs_queue_url: str
    dead_letter_queue_url: str
    completions_queue_url: str
    event_bus_name: str
    conversations_table: str = ""
    webhook_secrets_table: str = ""
    webhook_secrets_key_id: str = ""
    webhooks_queue_url: str = ""
    webhooks_dead_letter_queue_url: str = ""


def _resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    return template["Resources"][name]["Properties"]


def create_resources(
    endpoint: str | None, region: str, template: dict[str, Any], *, prefix: str = PREFIX
) -> LocalResources:
    """Make the resources on the AWS at ``endpoint`` (None: boto3's default, as under moto's in-process mock)."""

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=endpoint, region_name=region)  # type: ignore[call-overload]

    bucket = prefix
    client("s3").create_bucket(Bucket=bucket)

    dynamodb = client("dynamodb")
    tables = {}
    for logical in (
        "TasksTable",
        "IdempotencyTable",
        "UsageTable",
        "TokenUsageTable",
        "ConversationsTable",
        "WebhookSecretsTable",
    ):
        props = _resource(template, logical)
        name = f"{prefix}-{logical.removesuffix('Table').lower()}"
        stream = props.get("StreamSpecification")
        dynamodb.create_table(
            TableName=name,
            BillingMode=props["BillingMode"],
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            **({"StreamSpecification": {"StreamEnabled": True, **stream}} if stream else {}),
        )
        if "TimeToLiveSpecification" in props:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={
                    "AttributeName": props["TimeToLiveSpecification"]["AttributeName"],
                    "Enabled": True,
                },
            )
        tables[logical] = name
    key_id = client("kms").create_key(Description=_resource(template, "WebhookSecretsKey")["Description"])[
        "KeyMetadata"
    ]["KeyId"]

    sqs = client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = _resource(template, "JobsQueue")["RedrivePolicy"]
    jobs_url = sqs.create_queue(
        QueueName=f"{prefix}-jobs",
        Attributes={
            "VisibilityTimeout": str(LOCAL_VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(redrive["maxReceiveCount"])}
            ),
        },
    )["QueueUrl"]
    jobs_arn = sqs.get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    webhooks_dlq_url = sqs.create_queue(QueueName=f"{prefix}-webhooks-dlq")["QueueUrl"]
    webhooks_dlq_arn = sqs.get_queue_attributes(QueueUrl=webhooks_dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    webhooks = _resource(template, "WebhooksQueue")
    webhooks_url = sqs.create_queue(
        QueueName=f"{prefix}-webhooks",
        Attributes={
            "VisibilityTimeout": str(webhooks["VisibilityTimeout"]),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": webhooks_dlq_arn,
                    "maxReceiveCount": str(webhooks["RedrivePolicy"]["maxReceiveCount"]),
                }
            ),
        },
    )["QueueUrl"]
    completions_url = sqs.create_queue(QueueName=f"{prefix}-completions")["QueueUrl"]
    completions_arn = sqs.get_queue_attributes(QueueUrl=completions_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]

    events = client("events")
    bus = f"{prefix}-images"
    events.create_event_bus(Name=bus)
    rule = _resource(template, "ImageGenerationRequestedRule")
    events.put_rule(Name="ImageGenerationRequested", EventBusName=bus, EventPattern=json.dumps(rule["EventPattern"]))
    events.put_targets(Rule="ImageGenerationRequested", EventBusName=bus, Targets=[{"Id": "jobs", "Arn": jobs_arn}])
    events.put_rule(Name="LocalCompletions", EventBusName=bus, EventPattern=json.dumps({"source": ["image-service"]}))
    events.put_targets(Rule="LocalCompletions", EventBusName=bus, Targets=[{"Id": "copy", "Arn": completions_arn}])

    return LocalResources(
        bucket=bucket,
        tasks_table=tables["TasksTable"],
        idempotency_table=tables["IdempotencyTable"],
        usage_table=tables["UsageTable"],
        token_usage_table=tables["TokenUsageTable"],
        jobs_queue_url=jobs_url,
        dead_letter_queue_url=dlq_url,
        completions_queue_url=completions_url,
        event_bus_name=bus,
        conversations_table=tables["ConversationsTable"],
        webhook_secrets_table=tables["WebhookSecretsTable"],
        webhook_secrets_key_id=key_id,
        webhooks_queue_url=webhooks_url,
        webhooks_dead_letter_queue_url=webhooks_dlq_url,
    )
