"""Conversations of ``POST /v1/responses``, kept by the service for their owner (the upstream keeps none: sub2api
sends ``store: false`` and may answer a follow-up from another account).

One DynamoDB item per answered response (``resp#<id>``) holds its owner, its expiry (the table's TTL attribute
``expires_at``) and the whole conversation up to and including that turn, as turns of text and image references
(S3 keys of stored images, or the https URLs the caller gave). A follow-up reads one item. One more item per
generated image (``ig#<owner digest>#<call id>``) lets a later input item name that image by its call id; the
owner is part of its key, so one caller can never reach another's image.

A conversation is bounded: at most ``MAX_IMAGES`` images (the oldest dropped first) and ``MAX_TEXT_BYTES`` of
text (the oldest turns dropped first), so an item stays far under DynamoDB's 400 KB.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imagecore.domain.errors import ImageServiceError
from imagecore.platform import aws

DEFAULT_TTL_SECONDS = 30 * 24 * 3600
MAX_IMAGES = 8
MAX_TEXT_BYTES = 256 * 1024


class ConversationsUnavailable(ImageServiceError):
    status = 503
    type = "server_error"
    code = "conversations_unavailable"


@dataclass
class Turn:
    """One message of a conversation: who said it, its text, its images (S3 keys or https URLs)."""

    role: str
    text: str
    images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "images": list(self.images)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Turn:
        return cls(
            str(value.get("role", "user")), str(value.get("text", "")), [str(i) for i in value.get("images", [])]
        )


def bounded(turns: list[Turn]) -> tuple[list[Turn], int]:
    """The conversation within its bounds, and how many images were dropped to get there (oldest first)."""
    turns = [Turn(t.role, t.text, list(t.images)) for t in turns]
    dropped = 0
    while sum(len(t.images) for t in turns) > MAX_IMAGES:
        oldest = next(t for t in turns if t.images)
        oldest.images.pop(0)
        dropped += 1
    while len(turns) > 2 and len(json.dumps([t.to_dict() for t in turns])) > MAX_TEXT_BYTES:
        dropped += len(turns[0].images)
        turns.pop(0)
    return turns, dropped


def _owner_digest(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


class ConversationStore:
    def __init__(
        self, table_name: str, *, region: str, ttl_seconds: int = DEFAULT_TTL_SECONDS, client: Any = None
    ) -> None:
        self._table = table_name
        self._region = region
        self._ttl = ttl_seconds
        self._client = client

    @cached_property
    def _dynamodb(self) -> Any:
        return self._client or aws.client("dynamodb", region_name=self._region)

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    def load(self, owner: str, response_id: str, *, now: float | None = None) -> list[Turn] | None:
        """The conversation up to ``response_id``; None when there is none for this owner (or it has expired:
        DynamoDB deletes expired items late, so the expiry is checked here too)."""
        item = self._get(f"resp#{response_id}")
        if item is None or item.get("owner", {}).get("S") != owner:
            return None
        if int(item.get("expires_at", {}).get("N", "0")) <= (now if now is not None else time.time()):
            return None
        return [Turn.from_dict(t) for t in json.loads(item["turns"]["S"])]

    def image(self, owner: str, call_id: str, *, now: float | None = None) -> str | None:
        """The S3 key of the image this owner's ``image_generation_call`` made; None when there is none."""
        item = self._get(f"ig#{_owner_digest(owner)}#{call_id}")
        if item is None or item.get("owner", {}).get("S") != owner:
            return None
        if int(item.get("expires_at", {}).get("N", "0")) <= (now if now is not None else time.time()):
            return None
        return str(item["key"]["S"])

    def save(self, owner: str, response_id: str, turns: list[Turn], calls: dict[str, str]) -> None:
        """Keep the conversation as it stands after ``response_id``, and each of its new images by call id."""
        expires = str(int(time.time()) + self._ttl)
        items = [
            {
                "id": {"S": f"resp#{response_id}"},
                "owner": {"S": owner},
                "expires_at": {"N": expires},
                "turns": {"S": json.dumps([t.to_dict() for t in turns])},
            }
        ]
        items += [
            {
                "id": {"S": f"ig#{_owner_digest(owner)}#{call_id}"},
                "owner": {"S": owner},
                "expires_at": {"N": expires},
                "key": {"S": key},
            }
            for call_id, key in calls.items()
        ]
        try:
            for item in items:
                self._dynamodb.put_item(TableName=self._table, Item=item)
        except (BotoCoreError, ClientError) as exc:
            raise ConversationsUnavailable(
                f"The conversation could not be kept ({type(exc).__name__}); the images are stored."
            ) from exc

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            answer = self._dynamodb.get_item(TableName=self._table, Key={"id": {"S": key}}, ConsistentRead=True)
        except (BotoCoreError, ClientError) as exc:
            raise ConversationsUnavailable(
                "Conversations cannot be read right now; nothing was run. Try again."
            ) from exc
        item: dict[str, Any] | None = answer.get("Item")
        return item
