"""What the worker announces and refuses: completion events on EventBridge, unrunnable messages to the dead-letter
queue."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.platform import aws

EVENT_SOURCE = "image-service"


class EventPublishError(Exception):
    """EventBridge did not take an event; the job is delivered again and publishes it then."""


class EventPublisher:
    def __init__(self, bus_name: str, *, region: str) -> None:
        self._events = aws.client("events", region_name=region)
        self._bus = bus_name

    @property
    def client(self) -> Any:
        return self._events

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        try:
            answer = self._events.put_events(
                Entries=[
                    {
                        "Source": EVENT_SOURCE,
                        "DetailType": detail_type,
                        "Detail": json.dumps(detail),
                        "EventBusName": self._bus,
                    }
                ]
            )
        except (BotoCoreError, ClientError) as exc:
            raise EventPublishError(f"{detail_type}: {type(exc).__name__}") from exc
        if answer.get("FailedEntryCount"):
            raise EventPublishError(f"EventBridge refused the {detail_type} event: {answer['Entries'][0]}")


class DeadLetters:
    def __init__(self, queue_url: str, *, region: str) -> None:
        self._sqs = aws.client("sqs", region_name=region)
        self._url = queue_url

    def put(self, body: str, reason: str, message_id: str) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
                "original_message_id": {"DataType": "String", "StringValue": message_id},
            },
        )
