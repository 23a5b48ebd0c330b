"""What a generation or edit delivers: the stored result (and the images in hand), and the events it reports
while it runs (each image as it is stored, each preview) to whoever listens."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagecore.domain.images import ImageInfo
from imagecore.domain.models import ImageRequest
from imagecore.storage.manifest import StoredResult
from imagecore.upstream.client import GeneratedImage, UpstreamResult


@dataclass
class Delivery:
    """The outcome of one generation or edit: what was stored (None if S3 refused it) and, when it was just made,
    the images themselves."""

    stored: StoredResult | None
    images: list[GeneratedImage]
    summary: dict[str, Any]

    @classmethod
    def replay(cls, stored: StoredResult) -> Delivery:
        return cls(stored=stored, images=[], summary=stored.summary())


@dataclass(frozen=True)
class ImageEvent:
    """An image the service has just stored, with what a streamed answer needs to announce it.

    ``kind`` is ``"partial"`` (a preview: ``index`` is its ``partial_image_index``, ``fields`` its event's
    fields: size, quality, background, output_format, created_at...) or ``"image"`` (a final image: ``index``
    is its place in ``data``, ``fields`` holds its ``revised_prompt`` when there is one). ``key`` is where it
    is in the bucket (None when S3 refused it); ``data`` the image bytes and ``info`` what they are."""

    kind: str
    index: int
    key: str | None
    data: bytes
    info: ImageInfo
    fields: dict[str, Any] = field(default_factory=dict)


class ImageEvents(Protocol):
    """Whoever listens to a generation or edit as it runs (a streamed answer, a task's poll previews). It should
    not raise: an exception ends the request as it is (the images stored so far stay stored)."""

    def partial(self, event: ImageEvent) -> None:
        """A preview, stored (``event.key``; None when S3 refused it)."""

    def stored(self, event: ImageEvent) -> None:
        """A finished image, stored (``event.key``; None when S3 refused it: it is kept for an inline answer)."""


class NoEvents:
    """Nobody listens."""

    def partial(self, event: ImageEvent) -> None:
        del event

    def stored(self, event: ImageEvent) -> None:
        del event


def summarise(request: ImageRequest, result: UpstreamResult, first: ImageInfo | None) -> dict[str, Any]:
    """The answer's fields from what the upstream said (already normalised: each is usable or absent), or
    from the request and the image bytes where it said nothing usable."""
    body = result.body
    return {
        "created": body.get("created") or int(time.time()),
        "model": body.get("model") or request.model,
        "size": body.get("size") or (first.size if first else request.size),
        "quality": body.get("quality") or request.quality,
        "output_format": body.get("output_format") or (first.format if first else request.output_format),
        "background": body.get("background"),
        "usage": result.usage,
    }
