"""The webhook function: the tasks table's stream (a task with a webhook_url ended: its first attempt is queued)
and the webhooks queue (one delivery attempt each), with partial batch failures for both
(``imagecore.usecases.webhooks``)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.route_settings import WebhookSettings
from imagecore.usecases.webhooks import WebhookDeliveries

attempts = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
task_ends = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


@cache
def deliveries() -> WebhookDeliveries:
    """Built once per execution environment (cold start)."""
    return WebhookDeliveries.from_settings(WebhookSettings.from_environment())


def attempt_handler(record: SQSRecord) -> None:
    deliveries().deliver(record.body, record.message_id)


def task_end_handler(record: DynamoDBRecord) -> None:
    deliveries().relay(record.raw_event)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = event.get("Records") or [{}]
    if records[0].get("eventSource") == "aws:dynamodb":
        return process_partial_response(
            event=event, record_handler=task_end_handler, processor=task_ends, context=context
        )
    return process_partial_response(event=event, record_handler=attempt_handler, processor=attempts, context=context)
