"""The use cases, generation and edit: validated request in, stored images and presigned URLs out."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from imagecore.deadline import Deadline
from imagecore.errors import InvalidRequest, StorageUnavailable
from imagecore.models import GenerationRequest, GenerationResponse, ImageData, ImageRequest, Usage
from imagecore.observability import RequestRecord, logger, tracer
from imagecore.settings import GenerationSettings
from imagecore.storage import ImageStore, ImageToStore, StorageError, make_s3_client
from imagecore.upstream import CallTrace, GeneratedImage, RetryPolicy, UpstreamClient, UpstreamResult

if TYPE_CHECKING:  # the generations function never reads an edit: it does not import that module
    from imagecore.edits import EditInput

# JSON around the base64 images in an inline answer (keys, usage, API Gateway's envelope).
_INLINE_OVERHEAD_BYTES = 2048


@dataclass(frozen=True)
class StoredImageRef:
    key: str
    revised_prompt: str | None = None


@dataclass(frozen=True)
class StoredResult:
    """What a finished generation or edit left in S3: enough to answer again later (an idempotent replay, a task
    poll, a completion event) without the upstream. Plain data, so it is kept as JSON."""

    bucket: str
    images: list[StoredImageRef]
    created: int
    model: str
    size: str
    quality: str
    output_format: str
    background: str | None = None
    usage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredResult:
        fields = dict(data)
        fields["images"] = [StoredImageRef(**ref) for ref in fields["images"]]
        return cls(**fields)

    @property
    def keys(self) -> list[str]:
        return [ref.key for ref in self.images]

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in ("bucket", "images")}


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
        return cls(upstream=upstream, store=store, settings=settings)

    def timeout_for(self, request: ImageRequest) -> float:
        if request.is_large:
            return self.settings.upstream_large_timeout_seconds
        return self.settings.upstream_timeout_seconds

    @tracer.capture_method(capture_response=False)
    def generate(
        self, request: GenerationRequest, deadline: Deadline, record: RequestRecord, folder: str | None = None
    ) -> Delivery:
        """Generate and store. ``folder``: where the images go (a task's or an event's own, so a second run
        finds them); a new random one by default."""
        describe_request(record, request, include_prompt=self.settings.log_prompts)
        trace = CallTrace()
        try:
            result = self.upstream.generate(
                request.upstream_body(), timeout=self.timeout_for(request), deadline=deadline, trace=trace
            )
        finally:
            _describe_call(record, trace)
        _describe_result(record, result)
        return self._store(request, result, record, folder)

    @tracer.capture_method(capture_response=False)
    def edit(self, edit: EditInput, deadline: Deadline, record: RequestRecord, folder: str | None = None) -> Delivery:
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
        trace = CallTrace()
        try:
            result = self.upstream.edit(
                request.upstream_body(), files, timeout=self.timeout_for(request), deadline=deadline, trace=trace
            )
        finally:
            _describe_call(record, trace)
        _describe_result(record, result)
        return self._store(request, result, record, folder)

    def _store(
        self, request: ImageRequest, result: UpstreamResult, record: RequestRecord, folder: str | None
    ) -> Delivery:
        """Store first, always: an image that was paid for is never lost, whatever the answer looks like."""
        body = result.body
        raw_created = body.get("created")
        created = raw_created if isinstance(raw_created, int) else int(time.time())
        first = result.images[0].info
        summary: dict[str, Any] = {
            "created": created,
            "model": str(body.get("model") or request.model),
            "size": str(body.get("size") or first.size),
            "quality": str(body.get("quality") or request.quality),
            "output_format": str(body.get("output_format") or first.format),
            "background": body.get("background") if isinstance(body.get("background"), str) else None,
            "usage": result.usage,
        }
        images = [ImageToStore(image.data, image.info.format) for image in result.images]
        stored = None
        for attempt in range(1, self.store_attempts + 1):
            try:
                items = self.store.save(
                    images,
                    created=datetime.fromtimestamp(created, UTC),
                    metadata=_metadata(request, result, record),
                    folder=folder,
                )
            except StorageError:
                logger.exception("images not stored", extra={"bucket": self.store.bucket, "attempt": attempt})
                if attempt < self.store_attempts:
                    self.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            stored = StoredResult(
                bucket=self.store.bucket,
                images=[
                    StoredImageRef(item.key, image.revised_prompt)
                    for item, image in zip(items, result.images, strict=True)
                ],
                **summary,
            )
            break
        record.storage = "s3" if stored is not None else "failed"
        return Delivery(stored=stored, images=result.images, summary=summary)

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
    record.images_returned = len(result.images)
    record.sizes_returned = [image.info.size for image in result.images]
    record.formats_returned = [image.info.format for image in result.images]
    record.bytes_returned = sum(len(image.data) for image in result.images)
    record.usage = result.usage


def _metadata(request: ImageRequest, result: UpstreamResult, record: RequestRecord) -> dict[str, str]:
    usage = result.usage or {}
    return {
        "model": str(result.body.get("model") or request.model),
        "size": request.size,
        "quality": str(result.body.get("quality") or request.quality),
        "output-format": request.output_format,
        "total-tokens": str(usage.get("total_tokens", "")),
        "api-request-id": record.api_request_id or "",
        "api-key-id": record.api_key_id or "",
    }


def _inline_bytes(sizes: list[int]) -> int:
    return sum(4 * ((size + 2) // 3) for size in sizes) + _INLINE_OVERHEAD_BYTES
