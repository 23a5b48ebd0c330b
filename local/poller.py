"""What Lambda's SQS event source mapping does, for the local stack: receive from the jobs queue, hand the
worker an SQS event (batch size as in the template), delete what succeeded, and let the records the worker
reported in ``batchItemFailures`` come back (after a short pause here, instead of the visibility timeout).
After maxReceiveCount receives SQS itself moves a message to the dead-letter queue, as in AWS."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3

from imagecore.platform.observability import logger
from local.context import LambdaContext
from local.lambda_runtime import Handler

RETRY_PAUSE_SECONDS = 2


class JobPoller:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        queue_url: str,
        handler: Handler,  # the worker's invocation (in an execution environment of its own, locally)
        function_timeout_s: float,
        batch_size: int = 1,
        concurrency: int = 4,
        function_name: str = "WorkerFunction",
        memory_mb: int = 128,
    ) -> None:
        self._function_name = function_name
        self._memory_mb = memory_mb  # the context's memory_limit_in_mb (the template's MemorySize)
        self._sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
        self._queue_url = queue_url
        self._queue_arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self._region = region
        self._handler = handler
        self._timeout = function_timeout_s
        self._batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="worker")
        self._slots = threading.Semaphore(concurrency)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{function_name}-poller", daemon=True)

    def start(self) -> JobPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=self._batch_size,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                logger.exception("local poller could not read the jobs queue")
                self._slots.release()
                time.sleep(1)
                continue
            if not messages:
                self._slots.release()
                continue
            self._pool.submit(self._invoke, messages)

    def _invoke(self, messages: Sequence[Mapping[str, Any]]) -> None:
        try:
            event = {"Records": [sqs_record(message, self._queue_arn, self._region) for message in messages]}
            context = LambdaContext(
                self._function_name, self._memory_mb, self._timeout, f"local-{time.time_ns()}", time.monotonic()
            )
            try:
                answer = self._handler(event, context) or {}
                failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
            except Exception:
                logger.exception("worker failed on the whole batch")
                failed = {message["MessageId"] for message in messages}
            for message in messages:
                if message["MessageId"] in failed:
                    self._sqs.change_message_visibility(
                        QueueUrl=self._queue_url,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=RETRY_PAUSE_SECONDS,
                    )
                else:
                    self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        finally:
            self._slots.release()


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """A received SQS message as a record of the Lambda SQS event (what the event source mapping sends)."""
    attributes = message.get("Attributes", {})
    now = str(int(time.time() * 1000))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attributes.get("SentTimestamp", now),
            "SenderId": attributes.get("SenderId", "local"),
            "ApproximateFirstReceiveTimestamp": attributes.get("ApproximateFirstReceiveTimestamp", now),
        },
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "dataType": value.get("DataType", "String"),
                "stringListValues": [],
                "binaryListValues": [],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
