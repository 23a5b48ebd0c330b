"""Images stored as they are read: each one the upstream client hands over is stored at once, with a record
beside it in a folder a caller comes back to, and reported to whoever listens."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagecore.domain.images import ImageInfo
from imagecore.domain.models import ImageRequest
from imagecore.platform.observability import RequestRecord, logger
from imagecore.storage.manifest import StoredImageRef, StoredResult, image_record_key
from imagecore.storage.store import ImageToStore, StorageError
from imagecore.upstream.client import GeneratedImage, PartialImage, UpstreamResult
from imagecore.usecases.delivery import Delivery, ImageEvent, ImageEvents, summarise

if TYPE_CHECKING:
    from imagecore.usecases.service import ImageService


@dataclass
class StoreAsRead:
    """The sink the upstream client hands each image to: stores it at once (in a background thread, so the S3
    PUT overlaps reading the next image), keeps its bytes only when the answer is inline (or S3 refused it),
    and tells the caller once it is stored. Images are stored and announced in order."""

    service: ImageService
    record: RequestRecord
    folder: str
    metadata: dict[str, str]
    keep_bytes: bool
    events: ImageEvents
    # A folder the caller comes back to (a job's, an Idempotency-Key's) gets a record beside each image, so a run
    # that dies before its result.json still leaves what the answer needs (see ``manifest.read_stored``).
    asked: dict[str, Any] | None = None
    refs: list[StoredImageRef] = field(default_factory=list)
    kept: list[GeneratedImage] = field(default_factory=list)
    first: ImageInfo | None = None
    failed: bool = False
    pending: tuple[GeneratedImage, Future[str]] | None = None
    pool: ThreadPoolExecutor | None = None

    def image(self, image: GeneratedImage) -> None:
        """Start storing ``image`` in the background while the next one is read (``settle`` has already waited
        for the one before, so at most one image is held besides the one being decoded)."""
        self.settle()
        self.first = self.first or image.info
        if self.failed:  # S3 is not asked again for this answer: the rest is kept in memory
            self._stored(image, None)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.pending = (image, self.pool.submit(self._store, image))

    def _store(self, image: GeneratedImage) -> str:
        key = self.service.put_image(self.folder, str(image.index), image.data, image.info.format, self.metadata)
        if self.asked is not None:
            record = {
                "index": image.index,
                "key": key,
                "revised_prompt": image.revised_prompt,
                "size": image.info.size,
                "output_format": image.info.format,
                "created": int(time.time()),
                **self.asked,
            }
            try:
                self.service.store.write_json(image_record_key(key), record)
            except StorageError:  # the image is stored; a recovery then answers it without its revised prompt
                logger.warning("image record not written", extra={"key": key})
        return key

    def settle(self) -> None:
        """Wait for the image being stored, then announce it."""
        if self.pending is None:
            return
        (image, put), self.pending = self.pending, None
        try:
            key: str | None = put.result()
        except StorageError:
            key, self.failed = None, True
        self._stored(image, key)

    def close(self) -> None:
        try:
            self.settle()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def _stored(self, image: GeneratedImage, key: str | None) -> None:
        if key is not None:
            self.refs.append(StoredImageRef(key, image.revised_prompt))
        if key is None or self.keep_bytes:
            self.kept.append(image)
        fields = {"revised_prompt": image.revised_prompt} if image.revised_prompt else {}
        self.events.stored(ImageEvent("image", image.index, key, image.data, image.info, fields))

    def partial(self, partial: PartialImage) -> None:
        """A preview: stored once (not retried: the next one supersedes it), never fatal."""
        key: str | None = None
        try:
            image = ImageToStore(partial.data, partial.info.format)
            key = self.service.store.save_one(self.folder, f"partial-{partial.index}", image, self.metadata).key
        except StorageError:
            logger.exception("partial image not stored", extra={"bucket": self.service.store.bucket})
        fields = {k: v for k, v in partial.fields.items() if k != "b64_json"}
        self.events.partial(ImageEvent("partial", partial.index, key, partial.data, partial.info, fields))

    def delivery(self, request: ImageRequest, result: UpstreamResult) -> Delivery:
        """Stored first, always: an image that was paid for is never lost, whatever the answer looks like."""
        self.close()
        summary = summarise(request, result, self.first)
        if self.failed:
            self.record.storage = "failed"
            return Delivery(stored=None, images=self._recovered(), summary=summary)
        self.record.storage = "s3"
        stored = StoredResult(bucket=self.service.store.bucket, images=list(self.refs), **summary)
        return Delivery(stored=stored, images=list(self.kept), summary=summary)

    def _recovered(self) -> list[GeneratedImage]:
        """S3 refused an image after others were stored: read those back so the answer can carry them all."""
        images: list[GeneratedImage] = []
        for ref in [] if self.keep_bytes else self.refs:
            try:
                data = self.service.store.read(ref.key)
            except StorageError:
                logger.exception("stored image could not be read back", extra={"key": ref.key})
                continue
            assert self.first is not None
            images.append(GeneratedImage(data, self.first, ref.revised_prompt))
        return images + self.kept


def metadata_of(request: ImageRequest, record: RequestRecord) -> dict[str, str]:
    """What each stored image says about itself. It is written before the rest of the answer has been read,
    so it holds what was asked; what the upstream reported (usage, revised prompt) is in the log line and in
    the stored result."""
    return {
        "model": request.model,
        "size": request.size,
        "quality": request.quality,
        "output-format": request.output_format,
        "api-request-id": record.api_request_id or "",
        "api-key-id": record.api_key_id or "",
    }


def asked_of(request: ImageRequest) -> dict[str, Any]:
    """What a stored image's record says of the request, for an answer rebuilt from the folder."""
    return {"model": request.model, "quality": request.quality, "background": request.background}
