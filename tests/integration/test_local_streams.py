"""The local stack's DynamoDB stream poller (what Lambda's event source mapping does for the webhook function):
it reads a change as soon as the write that made it is through the local AWS endpoint, not at its next idle
poll, and it hands a batch that failed again."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from local import streams
from local.streams import StreamPoller


@pytest.fixture
def served_tasks(served_aws: Any) -> tuple[Any, str, threading.Event]:
    """A DynamoDB client of the local stack's moto app over HTTP, the tasks table's name and the app's ``written``
    event."""
    return served_aws.client("dynamodb"), served_aws.resources.tasks_table, served_aws.app.written


def test_the_written_event_is_set_by_writes_and_not_by_reads(served_tasks):
    client, table, written = served_tasks
    written.clear()
    client.get_item(TableName=table, Key={"id": {"S": "task_1"}})
    client.scan(TableName=table)
    assert not written.is_set()
    client.put_item(TableName=table, Item={"id": {"S": "task_1"}, "status": {"S": "queued"}})
    assert written.is_set()


def test_a_change_is_handed_over_at_its_write_not_at_the_next_idle_poll(served_tasks, monkeypatch):
    client, table, written = served_tasks
    # Were the poller to wait out its idle pause, nothing would come within the test's wait.
    monkeypatch.setattr(streams, "IDLE_PAUSE_SECONDS", 120.0)
    batches: queue.Queue[list[dict[str, Any]]] = queue.Queue()
    outcomes = iter([RuntimeError("the first delivery fails"), None, None])

    def handler(event: dict[str, Any], _context: Any) -> None:
        batches.put(event["Records"])
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    poller = StreamPoller(
        endpoint=client.meta.endpoint_url,
        region="us-east-1",
        table_name=table,
        written=written,
        handler=handler,
        function_name="WebhookFunction",
        function_timeout_s=60,
    ).start()
    try:
        with pytest.raises(queue.Empty):
            batches.get(timeout=0.5)  # the stream is empty: the poller waits
        client.put_item(TableName=table, Item={"id": {"S": "task_2"}, "status": {"S": "succeeded"}})
        first = batches.get(timeout=10)
        again = batches.get(timeout=10)  # the failed batch comes again, from its first record
        assert [r["dynamodb"]["Keys"]["id"]["S"] for r in first] == ["task_2"]
        assert [r["dynamodb"]["SequenceNumber"] for r in again] == [r["dynamodb"]["SequenceNumber"] for r in first]
        assert first[0]["eventSource"] == "aws:dynamodb" and first[0]["eventName"] == "INSERT"
        client.put_item(TableName=table, Item={"id": {"S": "task_3"}, "status": {"S": "failed"}})
        third = batches.get(timeout=10)
        assert [r["dynamodb"]["Keys"]["id"]["S"] for r in third] == ["task_3"]
    finally:
        poller.stop()
    assert not poller._thread.is_alive()
