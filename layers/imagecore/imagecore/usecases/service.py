"""The use cases, generation and edit: validated request in, stored images and presigned URLs out."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import InvalidRequest, StorageUnavailable
from imagecore.domain.images import ImageInfo
from imagecore.domain.models import GenerationRequest, GenerationResponse, ImageData, ImageRequest, Usage
from imagecore.platform.observability import RequestRecord, configure_prompt_digest, logger, tracer
from imagecore.platform.settings import GenerationSettings
from imagecore.storage.manifest import StoredImageRef, StoredResult, image_record_key
from imagecore.storage.store import ImageStore, ImageToStore, StorageError, image_folder, make_s3_client, new_image_id
from imagecore.upstream.client import (
    CallTrace,
    GeneratedImage,
    PartialImage,
    RetryPolicy,
    UpstreamClient,
    UpstreamResult,
)

if TYPE_CHECKING:  # the generations function never reads an edit: it does not import that module
    from imagecore.usecases.edits import EditInput

# JSON around the base64 images in an inline answer (keys, usage, API Gateway's envelope).
_INLINE_OVERHEAD_BYTES = 2048


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


ImageEventCallback = Callable[[ImageEvent], None]


@dataclass
class _StoreAsRead:
    """The sink the upstream client hands each image to: stores it at once (in a background thread, so the S3
    PUT overlaps reading the next image), keeps its bytes only when the answer is inline (or S3 refused it),
    and tells the caller once it is stored. Images are stored and announced in order."""

    service: ImageService
    record: RequestRecord
    folder: str
    metadata: dict[str, str]
    keep_bytes: bool
    on_partial: ImageEventCallback | None
    on_stored: ImageEventCallback | None
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
        if self.on_stored is not None:
            fields = {"revised_prompt": image.revised_prompt} if image.revised_prompt else {}
            self.on_stored(ImageEvent("image", image.index, key, image.data, image.info, fields))

    def partial(self, partial: PartialImage) -> None:
        """A preview: stored once (not retried: the next one supersedes it), never fatal."""
        key: str | None = None
        try:
            image = ImageToStore(partial.data, partial.info.format)
            key = self.service.store.save_one(self.folder, f"partial-{partial.index}", image, self.metadata).key
        except StorageError:
            logger.exception("partial image not stored", extra={"bucket": self.service.store.bucket})
        if self.on_partial is not None:
            fields = {k: v for k, v in partial.fields.items() if k != "b64_json"}
            self.on_partial(ImageEvent("partial", partial.index, key, partial.data, partial.info, fields))

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


@dataclass
class ImageService:
    """Generates or edits through the upstream, stores what comes back, answers presigned URLs."""

    upstream: UpstreamClient
    store: ImageStore
    settings: GenerationSettings
    store_attempts: int = 1  # beyond botocore's own retries; the worker, which has time, tries harder
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageService:
        upstream = UpstreamClient(
            settings.upstream_url,
            upstream_key_reader(settings),
            http=httpx.Client(limits=httpx.Limits(max_connections=20, keepalive_expiry=60)),
            retry=RetryPolicy(max_attempts=settings.upstream_max_attempts),
            account_id_header=settings.upstream_account_id_header,
        )
        store = ImageStore(
            make_s3_client(settings.aws_region, settings.s3_endpoint_url),
            settings.images_bucket,
            settings.presign_expiry_seconds,
        )
        digest_key = prompt_digest_key_reader(settings)
        if digest_key is not None:
            configure_prompt_digest(digest_key)
        return cls(upstream=upstream, store=store, settings=settings)

    def timeout_for(self, request: ImageRequest) -> float:
        if request.is_large:
            return self.settings.upstream_large_timeout_seconds
        return self.settings.upstream_timeout_seconds

    @tracer.capture_method(capture_response=False, capture_error=False)
    def generate(
        self,
        request: GenerationRequest,
        deadline: Deadline,
        record: RequestRecord,
        folder: str | None = None,
        *,
        on_partial: ImageEventCallback | None = None,
        on_stored: ImageEventCallback | None = None,
    ) -> Delivery:
        """Generate and store. ``folder``: where the images go (a task's, an event's or an Idempotency-Key's own,
        so a second run finds them, each image with its record beside it); a new random one by default.

        Each image is stored as soon as it has been read from the upstream, before the next one is read, and
        ``on_stored(event)`` is then called with it (``event.key`` is None when S3 refused it: it is kept in
        memory for an inline answer instead). With ``stream`` in the upstream body, each partial image is stored
        as ``<folder>/partial-<index>.<ext>`` and given to ``on_partial(event)``. A streamed edge relays these
        events as they come; the returned ``Delivery`` is the whole outcome either way. Callbacks should not
        raise: an exception ends the request as it is (the images stored so far stay stored)."""
        describe_request(record, request, include_prompt=self.settings.log_prompts)
        storing = self._storing(request, record, folder, on_partial, on_stored)
        trace = CallTrace()
        try:
            result = self.upstream.generate(
                _upstream_body(request),
                timeout=self.timeout_for(request),
                deadline=deadline,
                trace=trace,
                on_image=storing.image,
                on_partial=storing.partial,
                before_image=storing.settle,
            )
        finally:
            storing.close()
            _describe_call(record, trace)
        _describe_result(record, result)
        return storing.delivery(request, result)

    @tracer.capture_method(capture_response=False, capture_error=False)
    def edit(
        self,
        edit: EditInput,
        deadline: Deadline,
        record: RequestRecord,
        folder: str | None = None,
        *,
        on_partial: ImageEventCallback | None = None,
        on_stored: ImageEventCallback | None = None,
    ) -> Delivery:
        """Edit and store, as ``generate`` does (same callbacks)."""
        request = edit.parameters
        describe_request(record, request, include_prompt=self.settings.log_prompts)
        record.images_in = len(edit.images)
        record.input_bytes = edit.input_bytes
        record.mask = edit.mask is not None
        if request.input_fidelity is not None:
            record.dropped_params = ["input_fidelity"]
        files = [("image[]", (image.filename, image.data, image.content_type)) for image in edit.images]
        if edit.mask is not None:
            files.append(("mask", (edit.mask.filename, edit.mask.data, edit.mask.content_type)))
        storing = self._storing(request, record, folder, on_partial, on_stored)
        trace = CallTrace()
        try:
            result = self.upstream.edit(
                _upstream_body(request),
                files,
                timeout=self.timeout_for(request),
                deadline=deadline,
                trace=trace,
                on_image=storing.image,
                on_partial=storing.partial,
                before_image=storing.settle,
            )
        finally:
            storing.close()
            _describe_call(record, trace)
        _describe_result(record, result)
        return storing.delivery(request, result)

    def _storing(
        self,
        request: ImageRequest,
        record: RequestRecord,
        folder: str | None,
        on_partial: ImageEventCallback | None,
        on_stored: ImageEventCallback | None,
    ) -> _StoreAsRead:
        return _StoreAsRead(
            service=self,
            record=record,
            folder=folder or image_folder(datetime.now(UTC), new_image_id()),
            metadata=_metadata(request, record),
            keep_bytes=request.response_format == "b64_json",
            on_partial=on_partial,
            on_stored=on_stored,
            asked=None if folder is None else _asked(request),
        )

    def put_image(self, folder: str, name: str, data: bytes, output_format: str, metadata: dict[str, str]) -> str:
        """Store one image, retried ``store_attempts`` times; raises ``StorageError`` when S3 keeps refusing."""
        attempt = 1
        while True:
            try:
                return self.store.save_one(folder, name, ImageToStore(data, output_format), metadata).key
            except StorageError:
                logger.exception("image not stored", extra={"bucket": self.store.bucket, "attempt": attempt})
                if attempt >= self.store_attempts:
                    raise
            self.sleep(min(8.0, 0.5 * 2**attempt))
            attempt += 1

    def respond(self, delivery: Delivery, response_format: str) -> GenerationResponse:
        """The OpenAI-shaped answer: fresh presigned URLs, or the images inline when asked (or when S3 refused
        them and they fit)."""
        stored = delivery.stored
        if stored is None:
            if _inline_bytes([len(image.data) for image in delivery.images]) > self.settings.max_inline_response_bytes:
                raise StorageUnavailable("The images were generated but could not be stored; try again later.")
            response_format = "b64_json"  # the images still reach the caller
        if response_format == "b64_json":
            data = self._inline(delivery)
        else:
            assert stored is not None
            data = [
                ImageData(url=self.store.presign(ref.key), revised_prompt=ref.revised_prompt) for ref in stored.images
            ]
        summary = delivery.summary
        return GenerationResponse(
            created=summary["created"],
            data=data,
            model=summary["model"],
            size=summary["size"],
            quality=summary["quality"],
            output_format=summary["output_format"],
            background=summary["background"],
            usage=Usage.model_validate(summary["usage"]) if summary["usage"] else None,
        )

    def _inline(self, delivery: Delivery) -> list[ImageData]:
        if delivery.images:
            blobs = [(image.data, image.revised_prompt) for image in delivery.images]
        else:  # a replay: the images are read back from S3
            assert delivery.stored is not None
            blobs = [(self.store.read(ref.key), ref.revised_prompt) for ref in delivery.stored.images]
        inline = _inline_bytes([len(data) for data, _ in blobs])
        if inline > self.settings.max_inline_response_bytes:
            raise InvalidRequest(
                f"The images are {inline / 1_000_000:.1f} MB as base64, over the "
                f"{self.settings.max_inline_response_bytes / 1_000_000:.1f} MB an inline answer can carry. "
                "Ask with response_format 'url' (the default) and download them from data[].url.",
                param="response_format",
                code="response_too_large",
            )
        return [
            ImageData(b64_json=base64.b64encode(data).decode("ascii"), revised_prompt=revised)
            for data, revised in blobs
        ]


def upstream_key_reader(settings: GenerationSettings) -> Callable[[], str]:
    """The upstream key: from Secrets Manager in AWS (Powertools caches it for 5 minutes, so a rotated key
    is picked up without a redeploy), from the environment locally."""
    if settings.upstream_api_key is not None:
        key = settings.upstream_api_key.get_secret_value()
        return lambda: key
    secret_id = settings.upstream_api_key_secret_id
    assert secret_id is not None

    def read() -> str:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_secret(secret_id, max_age=300)).strip()

    return read


def prompt_digest_key_reader(settings: GenerationSettings) -> Callable[[], bytes] | None:
    """The key of the logged prompt digest: from Secrets Manager in AWS (cached for an hour), from the
    environment locally; None leaves the process's own key (see ``observability``)."""
    if settings.prompt_digest_key is not None:
        key = settings.prompt_digest_key.get_secret_value().encode("utf-8")
        return lambda: key
    secret_id = settings.prompt_digest_key_secret_id
    if not secret_id:
        return None

    def read() -> bytes:
        from aws_lambda_powertools.utilities import parameters

        return str(parameters.get_secret(secret_id, max_age=3600)).strip().encode("utf-8")

    return read


def _upstream_body(request: ImageRequest) -> dict[str, Any]:
    """The upstream body; a streamed request asks the upstream for its events (and so for partial images)."""
    body = request.upstream_body()
    if request.stream:
        body["stream"] = True
    return body


def _describe_call(record: RequestRecord, trace: CallTrace) -> None:
    record.attempts = trace.attempts
    record.attempt_errors = trace.errors
    record.upstream_request_id = trace.request_id
    record.account_id = trace.account_id
    record.upstream_latency_ms = trace.latency_ms


def describe_request(record: RequestRecord, request: ImageRequest, *, include_prompt: bool) -> None:
    record.model = request.model
    record.size = request.size
    record.quality = request.quality
    record.output_format = request.output_format
    record.n = request.n
    record.response_format = request.response_format
    record.describe_prompt(request.prompt, include_text=include_prompt)


def _describe_result(record: RequestRecord, result: UpstreamResult) -> None:
    """What came back, so a mismatch with what was asked (n cut to 1, a degraded 4K) shows in the log."""
    record.images_returned = len(result.summaries)
    record.sizes_returned = [image.info.size for image in result.summaries]
    record.formats_returned = [image.info.format for image in result.summaries]
    record.bytes_returned = sum(image.size_bytes for image in result.summaries)
    record.usage = result.usage


def _metadata(request: ImageRequest, record: RequestRecord) -> dict[str, str]:
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


def _asked(request: ImageRequest) -> dict[str, Any]:
    """What a stored image's record says of the request, for an answer rebuilt from the folder."""
    return {"model": request.model, "quality": request.quality, "background": request.background}


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


def _inline_bytes(sizes: list[int]) -> int:
    return sum(4 * ((size + 2) // 3) for size in sizes) + _INLINE_OVERHEAD_BYTES
