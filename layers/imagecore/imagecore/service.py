"""The use cases, generation and edit: validated request in, stored images and presigned URLs out."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from imagecore.edits import EditInput
from imagecore.errors import InvalidRequest, StorageUnavailable
from imagecore.models import GenerationRequest, GenerationResponse, ImageData, ImageRequest, Usage
from imagecore.observability import RequestRecord, logger, tracer
from imagecore.settings import GenerationSettings
from imagecore.storage import ImageStore, ImageToStore, StorageError, make_s3_client
from imagecore.upstream import CallTrace, Deadline, GeneratedImage, RetryPolicy, UpstreamClient, UpstreamResult

# JSON around the base64 images in an inline answer (keys, usage, API Gateway's envelope).
_INLINE_OVERHEAD_BYTES = 2048


@dataclass
class ImageService:
    """Generates or edits through the upstream, stores what comes back, answers presigned URLs."""

    upstream: UpstreamClient
    store: ImageStore
    settings: GenerationSettings

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> ImageService:
        upstream = UpstreamClient(
            settings.upstream_url,
            upstream_key_reader(settings),
            http=httpx.Client(limits=httpx.Limits(max_connections=20, keepalive_expiry=60)),
            retry=RetryPolicy(max_attempts=settings.upstream_max_attempts),
            account_id_header=settings.upstream_account_id_header,
        )
        endpoint = str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None
        store = ImageStore(
            make_s3_client(settings.aws_region, endpoint), settings.images_bucket, settings.presign_expiry_seconds
        )
        return cls(upstream=upstream, store=store, settings=settings)

    def timeout_for(self, request: ImageRequest) -> float:
        if request.is_large:
            return self.settings.upstream_large_timeout_seconds
        return self.settings.upstream_timeout_seconds

    @tracer.capture_method(capture_response=False)
    def generate(self, request: GenerationRequest, deadline: Deadline, record: RequestRecord) -> GenerationResponse:
        _describe(record, request, include_prompt=self.settings.log_prompts)
        trace = CallTrace()
        try:
            result = self.upstream.generate(
                request.upstream_body(), timeout=self.timeout_for(request), deadline=deadline, trace=trace
            )
        finally:
            _describe_call(record, trace)
        _describe_result(record, result)
        return self._deliver(request, result, record)

    @tracer.capture_method(capture_response=False)
    def edit(self, edit: EditInput, deadline: Deadline, record: RequestRecord) -> GenerationResponse:
        request = edit.parameters
        _describe(record, request, include_prompt=self.settings.log_prompts)
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
        return self._deliver(request, result, record)

    def _deliver(self, request: ImageRequest, result: UpstreamResult, record: RequestRecord) -> GenerationResponse:
        """Store first, always: an image that was paid for is never lost, whatever the answer looks like."""
        body = result.body
        created = body.get("created") if isinstance(body.get("created"), int) else int(time.time())
        usage = Usage.model_validate(result.usage) if result.usage else None
        response_format = request.response_format
        try:
            stored = self.store.save(
                [ImageToStore(image.data, image.info.format) for image in result.images],
                created=datetime.fromtimestamp(created, UTC),
                metadata=_metadata(request, result, record),
            )
        except StorageError:
            logger.exception("images not stored", extra={"bucket": self.store.bucket})
            record.storage = "failed"
            if _inline_bytes(result.images) > self.settings.max_inline_response_bytes:
                raise StorageUnavailable(
                    "The images were generated but could not be stored; try again later."
                ) from None
            response_format = "b64_json"  # the images still reach the caller
            urls: list[str | None] = [None] * len(result.images)
        else:
            record.storage = "s3"
            urls = [self.store.presign(item.key) for item in stored]

        if response_format == "b64_json":
            inline = _inline_bytes(result.images)
            if inline > self.settings.max_inline_response_bytes:
                raise InvalidRequest(
                    f"The images are {inline / 1_000_000:.1f} MB as base64, over the "
                    f"{self.settings.max_inline_response_bytes / 1_000_000:.1f} MB an inline answer can carry. "
                    "Ask with response_format 'url' (the default) and download them from data[].url.",
                    param="response_format",
                    code="response_too_large",
                )
            data = [
                ImageData(b64_json=base64.b64encode(image.data).decode("ascii"), revised_prompt=image.revised_prompt)
                for image in result.images
            ]
        else:
            data = [
                ImageData(url=url, revised_prompt=image.revised_prompt)
                for url, image in zip(urls, result.images, strict=True)
            ]
        first = result.images[0].info
        return GenerationResponse(
            created=created,
            data=data,
            model=str(body.get("model") or request.model),
            size=str(body.get("size") or first.size),
            quality=str(body.get("quality") or request.quality),
            output_format=str(body.get("output_format") or first.format),
            background=body.get("background") if isinstance(body.get("background"), str) else None,
            usage=usage,
        )


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


def _describe(record: RequestRecord, request: ImageRequest, *, include_prompt: bool) -> None:
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


def _inline_bytes(images: list[GeneratedImage]) -> int:
    return sum(4 * ((len(image.data) + 2) // 3) for image in images) + _INLINE_OVERHEAD_BYTES
