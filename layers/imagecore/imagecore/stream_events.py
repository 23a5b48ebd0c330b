"""``stream: true``: a generation or edit answered as OpenAI's image stream (server-sent events).

``image_generation.partial_image`` / ``image_edit.partial_image`` carry a preview as it is drawn,
``*.completed`` each finished image with the usage; every event also carries a presigned ``url`` of the stored
image (previews are stored too), so a client that cannot hold base64 downloads it instead. The events go out
through the streamed edge (``imagecore.streaming``); a failure after the first one becomes its ``event:
error``. Idempotent replays stream the stored images again as completed events.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

from imagecore.errors import InvalidRequest
from imagecore.models import GenerationResponse, ImageData, Usage
from imagecore.observability import current_record
from imagecore.service import Delivery, ImageService
from imagecore.streaming import EventChannel, current_events

StreamKind = Literal["image_generation", "image_edit"]


def stream_channel() -> EventChannel:
    """The edge's event channel; a ``stream: true`` request that reached a buffered integration is refused."""
    channel = current_events()
    if channel is None:
        raise InvalidRequest(
            "stream: true is answered only through the streamed image routes; send the request without stream.",
            param="stream",
            code="stream_unsupported",
        )
    return channel


class ImageEventWriter:
    """Turns what the service produces into OpenAI's stream events, in order, on one channel."""

    def __init__(self, channel: EventChannel, kind: StreamKind, service: ImageService, request: Any) -> None:
        self.channel = channel
        self.kind = kind
        self.service = service
        self.request = request
        self.partials = 0

    def _fields(self, summary: dict[str, Any] | None) -> dict[str, Any]:
        summary = summary or {}
        return {
            "size": summary.get("size") or self.request.size,
            "quality": summary.get("quality") or self.request.quality,
            "background": summary.get("background") or self.request.background or "auto",
            "output_format": summary.get("output_format") or self.request.output_format,
            "created_at": summary.get("created"),
        }

    def partial(self, index: int, data: bytes, key: str | None, fields: dict[str, Any], created_at: int) -> None:
        """One preview, as soon as it is read (and stored, when ``key`` is given)."""
        self.partials += 1
        payload = {
            "type": f"{self.kind}.partial_image",
            "b64_json": base64.b64encode(data).decode("ascii"),
            "partial_image_index": index,
            **self._fields({**fields, "created": fields.get("created") or created_at}),
        }
        if key is not None:
            payload["url"] = self.service.store.presign(key)
        self.channel.send(payload["type"], payload)
        current_record().partial_images_stored = self.partials

    def completed(self, delivery: Delivery) -> GenerationResponse:
        """A completed event per image; returns the ordinary answer (URLs), which the edge does not send."""
        summary = delivery.summary
        stored = delivery.stored
        if delivery.images:
            blobs = [image.data for image in delivery.images]
        else:  # an idempotent replay: the stored images
            assert stored is not None
            blobs = [self.service.store.read(ref.key) for ref in stored.images]
        refs = stored.images if stored is not None else []  # S3 refused them: the events still carry the bytes
        urls: list[str | None] = [self.service.store.presign(ref.key) for ref in refs] or [None] * len(blobs)
        revised = [ref.revised_prompt for ref in refs] or [None] * len(blobs)
        for data, url in zip(blobs, urls, strict=True):
            payload: dict[str, Any] = {
                "type": f"{self.kind}.completed",
                "b64_json": base64.b64encode(data).decode("ascii"),
                **self._fields(summary),
                "usage": summary.get("usage"),
            }
            if url is not None:
                payload["url"] = url
            self.channel.send(payload["type"], payload)
        return GenerationResponse(
            created=summary["created"],
            data=[ImageData(url=url, revised_prompt=text) for url, text in zip(urls, revised, strict=True)],
            model=summary["model"],
            size=summary["size"],
            quality=summary["quality"],
            output_format=summary["output_format"],
            background=summary["background"],
            usage=Usage.model_validate(summary["usage"]) if summary.get("usage") else None,
        )


def stream_answer(
    kind: StreamKind,
    service: ImageService,
    request: Any,
    deliver: Callable[[ImageEventWriter], Delivery],
) -> GenerationResponse:
    """Run ``deliver`` (which hands ``writer.partial`` to the service) and stream its outcome."""
    channel = stream_channel()
    channel.expect_events()
    writer = ImageEventWriter(channel, kind, service, request)
    delivery = deliver(writer)
    return writer.completed(delivery)
