"""How a ``POST /v1/responses`` answer is remembered for its Idempotency-Key and answered again.

The record keeps the S3 key of the answer, written beside its images with each image's own key; a replay reads it
back, gives each image a fresh link (the first ones may have expired) and, for a stream, sends the finished items
and ``response.completed`` again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagecore.domain.errors import NotFound, StorageUnavailable
from imagecore.platform.observability import logger
from imagecore.storage.store import ImageStore, StorageError

EventSink = Callable[[str, dict[str, Any]], None]


def is_image_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "image_generation_call"


@dataclass
class ResponseCodec:
    store: ImageStore
    links_only: bool
    events: EventSink | None
    stored: dict[str, str] = field(default_factory=dict)  # call id -> S3 key, filled in by the first run

    def remember(self, answer: dict[str, Any]) -> dict[str, Any] | None:
        key = f"images/responses/answers/{answer['id']}.json"
        output = [
            {**item, "key": self.stored[item["id"]]} if is_image_call(item) and item.get("id") in self.stored else item
            for item in answer.get("output", [])
        ]
        try:
            self.store.write_json(key, {**answer, "output": output})
        except StorageError:
            logger.warning("responses answer not remembered: a retry runs again")
            return None
        return {"response": key}

    def recall(self, remembered: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self.store.read_json(str(remembered.get("response")))
        except StorageError:
            raise StorageUnavailable(
                "The answer of this Idempotency-Key cannot be read right now; try again."
            ) from None
        if answer is None:
            raise NotFound("The answer of this Idempotency-Key is gone.", param="Idempotency-Key")
        answer = self._relinked(answer)
        if self.events is not None:
            output = answer.get("output", [])
            for index, item in enumerate(output):
                event = {"type": "response.output_item.done", "output_index": index, "item": item}
                self.events(event["type"], {**event, "sequence_number": index})
            completed = {"type": "response.completed", "response": answer, "sequence_number": len(output)}
            self.events("response.completed", completed)
        return answer

    def _relinked(self, answer: dict[str, Any]) -> dict[str, Any]:
        output = []
        for item in answer.get("output", []):
            key = item.pop("key", None) if isinstance(item, dict) else None
            if is_image_call(item) and isinstance(key, str):
                item = {**item, "url": self.store.presign(key)}
                if self.links_only:
                    item["result"] = None
            output.append(item)
        return {**answer, "output": output}
