"""The image service: a validated generation or edit in, asked of the upstream, its images stored in S3 as they
are read, and the OpenAI-shaped answer (presigned URLs, or the images inline)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import InvalidRequest, StorageUnavailable
from imagecore.domain.models import GenerationRequest, GenerationResponse, ImageData, ImageRequest, Usage
from imagecore.platform.observability import RequestRecord, logger, tracer
from imagecore.platform.settings import GenerationSettings, use_prompt_digest_key
from imagecore.platform.tls import tls_context
from imagecore.storage.store import ImageStore, ImageToStore, StorageError, image_folder, new_image_id
from imagecore.upstream.client import CallTrace, RetryPolicy, UpstreamClient, UpstreamResult
from imagecore.usecases.delivery import Delivery, ImageEvents, NoEvents
from imagecore.usecases.storing import StoreAsRead, asked_of, metadata_of

if TYPE_CHECKING:  # the generations function never reads an edit: it does not import that module
    from imagecore.usecases.edits import EditInput

# The upstream's multipart part of each input role.
_PARTS = {"image": "image[]", "mask": "mask"}
# JSON around the base64 images in an inline answer (keys, usage, API Gateway's envelope).
_INLINE_OVERHEAD_BYTES = 2048


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
            http=httpx.Client(verify=tls_context(), limits=httpx.Limits(max_connections=20, keepalive_expiry=60)),
            retry=RetryPolicy(max_attempts=settings.upstream_max_attempts),
            account_id_header=settings.upstream_account_id_header,
        )
        store = ImageStore.from_settings(settings)
        use_prompt_digest_key(settings)
        return cls(upstream=upstream, store=store, settings=settings)

    def timeout_for(self, request: ImageRequest) -> float:
        if request.is_large:
            return self.settings.upstream_large_timeout_seconds
        return self.settings.upstream_timeout_seconds

    @contextmanager
    @tracer.capture_method(capture_response=False, capture_error=False)
    def generation(
        self,
        request: GenerationRequest,
        deadline: Deadline,
        record: RequestRecord,
        folder: str | None = None,
        *,
        events: ImageEvents | None = None,
    ) -> Iterator[Answer]:
        """Generate and store. ``folder``: where the images go (a task's, an event's or an Idempotency-Key's own,
        so a second run finds them, each image with its record beside it); a new random one by default.

        The block runs once the upstream has answered in full (what it made and used is on ``record``), while
        its last image may still be on its way to S3: what the caller does there (the usage write) overlaps that
        PUT. ``answer.delivery``, the whole outcome whoever listened, is there once the block is left: every
        image is stored first, so one that was paid for is never lost.

        Each image is stored as soon as it has been read from the upstream, before the next one is read, and
        ``events.stored(event)`` is then told of it (``event.key`` is None when S3 refused it: it is kept in
        memory for an inline answer instead). With ``stream`` in the upstream body, each partial image is stored
        as ``<folder>/partial-<index>.<ext>`` and given to ``events.partial(event)``."""
        with self._upstream_call(request, record, folder, events) as call:
            result = self.upstream.generate(
                _upstream_body(request),
                timeout=self.timeout_for(request),
                deadline=deadline,
                **call.listeners(),
            )
            yield call.answered(request, result)

    @contextmanager
    @tracer.capture_method(capture_response=False, capture_error=False)
    def editing(
        self,
        edit: EditInput,
        deadline: Deadline,
        record: RequestRecord,
        folder: str | None = None,
        *,
        events: ImageEvents | None = None,
    ) -> Iterator[Answer]:
        """Edit and store, as ``generation`` does (the same block, the same events)."""
        request = edit.parameters
        record.images_in = len(edit.images)
        record.input_bytes = edit.input_bytes
        record.mask = edit.mask is not None
        if request.input_fidelity is not None:
            record.dropped_params = ["input_fidelity"]
        with self._upstream_call(request, record, folder, events) as call:
            # Each input is sent from its file a block at a time (httpx reads an open file in 64 KiB chunks and
            # seeks back to its start on a retry); every file is closed when the upstream has answered.
            with ExitStack() as opened:
                files = [
                    (_PARTS[role], (image.filename, opened.enter_context(image.open()), image.content_type))
                    for role, image in edit.files()
                ]
                result = self.upstream.edit(
                    _upstream_body(request),
                    files,
                    timeout=self.timeout_for(request),
                    deadline=deadline,
                    **call.listeners(),
                )
            yield call.answered(request, result)

    @contextmanager
    def _upstream_call(
        self, request: ImageRequest, record: RequestRecord, folder: str | None, events: ImageEvents | None
    ) -> Iterator[Answer]:
        """Around one upstream image call: the request described on its record, a sink storing each image as it
        is read, and the call's trace; however the call ends, its attempts are written on the record and the
        sink is closed (the last image's PUT finished); when the upstream answered, its delivery is made."""
        request.describe(record, include_prompt=self.settings.log_prompts)
        call = Answer(self._storing(request, record, folder, NoEvents() if events is None else events), record)
        try:
            yield call
        finally:
            call.close()
        call.deliver()

    def _storing(
        self,
        request: ImageRequest,
        record: RequestRecord,
        folder: str | None,
        events: ImageEvents,
    ) -> StoreAsRead:
        return StoreAsRead(
            service=self,
            record=record,
            folder=folder or image_folder(datetime.now(UTC), new_image_id()),
            metadata=metadata_of(request, record),
            keep_bytes=request.response_format == "b64_json",
            events=events,
            asked=None if folder is None else asked_of(request),
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


@dataclass
class Answer:
    """One upstream image call: its sink (storing each image as it is read) and its trace; once the upstream has
    answered in full, what it made and used is on the record, and ``delivery`` is there once every image is
    stored."""

    storing: StoreAsRead
    record: RequestRecord
    trace: CallTrace = field(default_factory=CallTrace)
    read: tuple[ImageRequest, UpstreamResult] | None = None
    outcome: Delivery | None = None  # the delivery, once every image is stored

    def listeners(self) -> dict[str, Any]:
        """What the upstream client tells as it reads: its attempts, and each image and preview to the sink."""
        return {
            "trace": self.trace,
            "on_image": self.storing.image,
            "on_partial": self.storing.partial,
            "before_image": self.storing.settle,
        }

    def answered(self, request: ImageRequest, result: UpstreamResult) -> Answer:
        """The upstream has answered in full: its attempts and its answer go on the record."""
        _describe_call(self.record, self.trace)
        _describe_result(self.record, result)
        self.read = (request, result)
        return self

    def close(self) -> None:
        """However the call ended: its attempts on the record (if no answer put them there) and the sink closed."""
        if self.read is None:
            _describe_call(self.record, self.trace)
        self.storing.close()

    def deliver(self) -> None:
        """Every image stored: the delivery of what the upstream answered."""
        if self.read is not None:
            self.outcome = self.storing.delivery(*self.read)

    @property
    def delivery(self) -> Delivery:
        if self.outcome is None:
            raise RuntimeError("the images are still being stored: read the delivery once the block is left")
        return self.outcome


def delivered(call: AbstractContextManager[Answer]) -> Delivery:
    """What a ``generation`` or ``editing`` delivers, with nothing done while its last image is stored (a task's
    or an event's run, which settles nothing there)."""
    with call as answer:
        pass
    return answer.delivery


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


def _describe_result(record: RequestRecord, result: UpstreamResult) -> None:
    """What came back, so a mismatch with what was asked (n cut to 1, a degraded 4K) shows in the log."""
    record.images_returned = len(result.summaries)
    record.sizes_returned = [image.info.size for image in result.summaries]
    record.formats_returned = [image.info.format for image in result.summaries]
    record.bytes_returned = sum(image.size_bytes for image in result.summaries)
    record.usage = result.usage


def _inline_bytes(sizes: list[int]) -> int:
    return sum(4 * ((size + 2) // 3) for size in sizes) + _INLINE_OVERHEAD_BYTES
