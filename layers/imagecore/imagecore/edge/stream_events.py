"""``stream: true``: a generation or edit answered as OpenAI's image stream (server-sent events).

``image_generation.partial_image`` / ``image_edit.partial_image`` carry each preview as soon as the upstream
sends it, ``*.completed`` each finished image with the usage; every event also carries a presigned ``url`` of
the stored image (previews are stored too, beside the images), so a client that cannot hold base64 downloads it
instead. The events go out through the streamed edge (``imagecore.edge.streaming``); a failure after the first one
becomes its ``event: error``. An idempotent replay streams the stored images again as completed events.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

from imagecore.domain.errors import InvalidRequest
from imagecore.domain.models import GenerationResponse, ImageData, ImageRequest, Usage
from imagecore.edge.streaming import EventChannel, current_events
from imagecore.platform.observability import current_record
from imagecore.usecases.delivery import Delivery, ImageEvent
from imagecore.usecases.service import ImageService

StreamKind = Literal["image_generation", "image_edit"]
# The fields of OpenAI's image events besides the image itself.
EVENT_FIELDS = ("size", "quality", "background", "output_format")


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


@dataclass(frozen=True)
class _Final:
    key: str | None
    data: bytes
    revised_prompt: str | None


class ImageEventWriter:
    """Turns the events of a generation or edit (``ImageEvents``: ``partial``, ``stored``) into OpenAI's stream
    events on one channel: previews at once, the finished images with the usage once the upstream has said it."""

    def __init__(self, channel: EventChannel, kind: StreamKind, service: ImageService, request: ImageRequest) -> None:
        self.channel = channel
        self.kind = kind
        self.service = service
        self.request = request
        self.partials = 0
        self.finals: list[_Final] = []

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        defaults = {
            "size": self.request.size,
            "quality": self.request.quality,
            "background": self.request.background or "auto",
            "output_format": self.request.output_format,
        }
        return {name: fields.get(name) or defaults[name] for name in EVENT_FIELDS}

    def _url(self, key: str | None) -> dict[str, str]:
        return {"url": self.service.store.presign(key)} if key is not None else {}

    def partial(self, event: ImageEvent) -> None:
        """A preview, stored (``event.key``) and relayed as soon as the upstream sent it."""
        self.partials += 1
        current_record().partial_images_stored = self.partials
        payload = {
            "type": f"{self.kind}.partial_image",
            "b64_json": base64.b64encode(event.data).decode("ascii"),
            "partial_image_index": event.index,
            **self._fields(event.fields),
            "created_at": event.fields.get("created_at") or event.fields.get("created"),
            **self._url(event.key),
        }
        self.channel.send(payload["type"], payload)

    def stored(self, event: ImageEvent) -> None:
        """A finished image, stored: announced with the usage, which the upstream sends with the last one."""
        self.finals.append(_Final(event.key, event.data, event.fields.get("revised_prompt")))

    def completed(self, delivery: Delivery) -> GenerationResponse:
        """A completed event per image; returns the ordinary answer (URLs), which the edge does not send."""
        summary = delivery.summary
        finals = self.finals or self._replayed(delivery)
        for final in finals:
            payload: dict[str, Any] = {
                "type": f"{self.kind}.completed",
                "b64_json": base64.b64encode(final.data).decode("ascii"),
                **self._fields(summary),
                "created_at": summary["created"],
                "usage": summary.get("usage"),
                **self._url(final.key),
            }
            self.channel.send(payload["type"], payload)
        return GenerationResponse(
            created=summary["created"],
            data=[
                ImageData(url=self._url(final.key).get("url"), revised_prompt=final.revised_prompt) for final in finals
            ],
            model=summary["model"],
            size=summary["size"],
            quality=summary["quality"],
            output_format=summary["output_format"],
            background=summary["background"],
            usage=Usage.model_validate(summary["usage"]) if summary.get("usage") else None,
        )

    def _replayed(self, delivery: Delivery) -> list[_Final]:
        """An idempotent replay: the images the first request stored."""
        stored = delivery.stored
        assert stored is not None
        return [_Final(ref.key, self.service.store.read(ref.key), ref.revised_prompt) for ref in stored.images]


def open_image_stream(kind: StreamKind, service: ImageService, request: ImageRequest) -> ImageEventWriter:
    """The events of one generation or edit, to hand to its use case (``events=``); ``writer.completed(delivery)``
    then ends the stream. A ``stream: true`` request that reached a buffered integration is refused here."""
    channel = stream_channel()
    channel.expect_events()
    return ImageEventWriter(channel, kind, service, request)
