"""What Lambda's DynamoDB stream event source mapping does, for the local stack: read a table's stream (moto's)
from its start, hand the function each batch of records as a DynamoDB stream event, and hand a batch again (from
the first record the function reported in ``batchItemFailures``, or all of it when it raised) until it passes.
The template's filter is not applied here: the webhook function checks each record itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3

from imagecore.platform.observability import logger
from local.context import LambdaContext
from local.lambda_runtime import Handler, invoke

RETRY_PAUSE_SECONDS = 1.0
# With nothing new, the poller waits for the next DynamoDB write (``written``), or this long at most.
IDLE_PAUSE_SECONDS = 5.0


class StreamPoller:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        table_name: str,
        written: threading.Event,
        handler: Handler,
        function_name: str,
        function_timeout_s: float,
        batch_size: int = 25,
        memory_mb: int = 128,
    ) -> None:
        self._memory_mb = memory_mb  # the context's memory_limit_in_mb (the template's MemorySize)
        self._streams = boto3.client("dynamodbstreams", endpoint_url=endpoint, region_name=region)
        table = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region).describe_table(TableName=table_name)
        self._arn = table["Table"]["LatestStreamArn"]
        self._region = region
        self._handler = handler
        self._function_name = function_name
        self._timeout = function_timeout_s
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._written = written  # set by every DynamoDB write of the local stack
        self._thread = threading.Thread(target=self._run, name=f"{function_name}-stream", daemon=True)

    def start(self) -> StreamPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._written.set()  # ends an idle wait
        self._thread.join(timeout=5)

    def _run(self) -> None:
        shard = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = self._iterator(shard, "TRIM_HORIZON")
        while not self._stop.is_set():
            self._written.clear()  # a write from here on is read by the next call, or ends the wait below
            try:
                answer = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)
            except Exception:
                logger.exception("local stream poller could not read the tasks stream")
                self._stop.wait(RETRY_PAUSE_SECONDS)
                continue
            records = answer.get("Records", [])
            if not records:
                iterator = answer.get("NextShardIterator") or iterator
                self._written.wait(IDLE_PAUSE_SECONDS)
                continue
            failed_at = self._invoke(records)
            if failed_at is None:
                iterator = answer.get("NextShardIterator") or iterator
                continue
            # As Lambda does: the batch comes again from the first record that failed.
            self._stop.wait(RETRY_PAUSE_SECONDS)
            iterator = self._iterator(shard, "AT_SEQUENCE_NUMBER", failed_at)

    def _iterator(self, shard: str, kind: str, sequence: str | None = None) -> str:
        extra = {"SequenceNumber": sequence} if sequence else {}
        return str(
            self._streams.get_shard_iterator(StreamArn=self._arn, ShardId=shard, ShardIteratorType=kind, **extra)[
                "ShardIterator"
            ]
        )

    def _invoke(self, records: list[dict[str, Any]]) -> str | None:
        """None when the batch passed, else the sequence number to read it again from."""
        event = {"Records": [stream_record(record, self._arn, self._region) for record in records]}
        request_id = f"local-{time.time_ns()}"
        context = LambdaContext(self._function_name, self._memory_mb, self._timeout, request_id, time.monotonic())
        try:
            answer = invoke(self._handler, event, context) or {}
        except Exception:
            logger.exception("webhook function failed on the whole stream batch")
            return str(records[0]["dynamodb"]["SequenceNumber"])
        failures = [item["itemIdentifier"] for item in answer.get("batchItemFailures", [])]
        return str(failures[0]) if failures else None


def stream_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A record read from a DynamoDB stream as a record of the Lambda event the event source mapping sends."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if created is not None and not isinstance(created, int | float):
        change["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        **record,
        "eventSource": "aws:dynamodb",
        "eventSourceARN": stream_arn,
        "awsRegion": region,
        "dynamodb": change,
    }
