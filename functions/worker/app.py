"""The jobs-queue worker: async tasks and event-triggered generations, with SQS partial batch failures."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.settings import WorkerSettings
from imagecore.usecases.worker import Worker

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def worker() -> Worker:
    """Built once per execution environment (cold start)."""
    return Worker.from_settings(WorkerSettings.from_environment())


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    worker().handle(record, lambda_context)


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
