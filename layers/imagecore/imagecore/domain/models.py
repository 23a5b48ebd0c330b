"""Request and response models: the upstream contract's rules live here, so the OpenAPI spec shows
exactly what the code enforces."""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from imagecore.domain.errors import InvalidRequest

if TYPE_CHECKING:
    from imagecore.platform.observability import RequestRecord

MODELS = ("gpt-image-2", "gpt-image-2-2026-04-21")
PROMPT_MAX_CHARS = 32_000
MAX_EDGE = 3840
EDGE_MULTIPLE = 16
MAX_ASPECT_RATIO = 3
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
# The contract calls outputs larger than 2560x1440 high-latency: they get the long upstream timeout.
LARGE_IMAGE_PIXELS = 2560 * 1440

ImageModel = Literal["gpt-image-2", "gpt-image-2-2026-04-21"]
Quality = Literal["low", "medium", "high", "auto"]
OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["auto", "opaque"]
Moderation = Literal["auto", "low"]
ResponseFormat = Literal["url", "b64_json"]

CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}

# Upper bounds of the free-text fields, chosen so that a request at every bound still fits each store it
# reaches: a task item in DynamoDB (400 KB, strings counted in UTF-8), an SQS/EventBridge message (1 MB), S3
# user metadata (2 KB, where only short ASCII derivatives are kept). At most: a prompt of 32,000 characters is
# 128,000 UTF-8 bytes; a user id 1,024; 17 multipart filenames 17 x 1,020.
USER_MAX_CHARS = 256
FILENAME_MAX_CHARS = 255
SIZE_MAX_CHARS = 16
WEBHOOK_URL_MAX_CHARS = 2048

_SIZE_RE = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})\Z")


def identifier_field(body: str, *, max_length: int, description: str) -> Any:
    """The schema side of an identifier: its length bound, and ``body`` as the ECMA pattern the OpenAPI
    document shows (there ``$`` is the end of the input)."""
    return Field(max_length=max_length, description=description, json_schema_extra={"pattern": f"^(?:{body})$"})


def anchored(body: str, what: str) -> AfterValidator:
    """The check side of an identifier: exactly ``body``, anchored with ``\\Z`` so a trailing newline fails."""
    regex = re.compile(rf"(?:{body})\Z")

    def check(value: str) -> str:
        if not regex.match(value):
            raise PydanticCustomError("invalid_identifier", "not a valid {what}", {"what": what})
        return value

    return AfterValidator(check)


def matches(body: str, value: object) -> bool:
    """Whether ``value`` is a string that is exactly ``body`` (anchored with ``\\Z``, not ``$``)."""
    return isinstance(value, str) and re.match(rf"(?:{body})\Z", value) is not None


@dataclass(frozen=True)
class ImageSize:
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _size_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_size", message)


def parse_size(value: str) -> ImageSize:
    """Parse ``WxH`` and apply every gpt-image-2 size rule, each with its own message."""
    match = _SIZE_RE.fullmatch(value)
    if not match:
        raise _size_error("size must be 'auto' or WIDTHxHEIGHT in pixels, for example '1536x1024'")
    size = ImageSize(int(match.group(1)), int(match.group(2)))
    long_edge, short_edge = max(size.width, size.height), min(size.width, size.height)
    if long_edge > MAX_EDGE:
        raise _size_error(f"size {value}: the longest edge must be at most {MAX_EDGE} pixels")
    if size.width % EDGE_MULTIPLE or size.height % EDGE_MULTIPLE:
        raise _size_error(f"size {value}: both edges must be multiples of {EDGE_MULTIPLE} pixels")
    if long_edge > MAX_ASPECT_RATIO * short_edge:
        raise _size_error(f"size {value}: the long edge may be at most {MAX_ASPECT_RATIO} times the short edge")
    if not MIN_PIXELS <= size.pixels <= MAX_PIXELS:
        raise _size_error(
            f"size {value}: the image must have between {MIN_PIXELS:,} and {MAX_PIXELS:,} pixels "
            f"(it has {size.pixels:,})"
        )
    return size


class ImageRequest(BaseModel):
    """The parameters generations and edits share: the OpenAI Images API, restricted to what gpt-image-2 takes."""

    # Models are built (their validators compiled) when first used, except the generations request's: each
    # function pays at cold start only for the models it validates.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    prompt: Annotated[
        str,
        Field(min_length=1, max_length=PROMPT_MAX_CHARS, description="What to draw. At most 32,000 characters."),
    ]
    model: Annotated[ImageModel, Field(description="The image model.")] = "gpt-image-2"
    n: Annotated[int, Field(ge=1, le=10, description="How many images, 1 to 10.")] = 1
    size: Annotated[
        str,
        Field(
            max_length=SIZE_MAX_CHARS,
            description=(
                "'auto' or WIDTHxHEIGHT: longest edge at most 3840, both edges multiples of 16, long/short ratio "
                "at most 3, total pixels between 655,360 and 8,294,400."
            ),
            examples=["1024x1024", "1536x1024", "1024x1536", "3840x2160", "auto"],
        ),
    ] = "auto"
    quality: Quality = "auto"
    output_format: OutputFormat = "png"
    output_compression: Annotated[
        int | None, Field(ge=0, le=100, description="0-100, only with output_format jpeg or webp.")
    ] = None
    background: Annotated[
        Background | None,
        Field(description="'auto' or 'opaque'; gpt-image-2 cannot make transparent images."),
    ] = None
    moderation: Moderation | None = None
    stream: Annotated[
        bool,
        Field(
            description=(
                "Synchronous routes: answer as server-sent events (image_generation.partial_image / .completed, "
                "image_edit.* for edits) like OpenAI's. Refused on the async routes."
            )
        ),
    ] = False
    partial_images: Annotated[
        int | None,
        Field(
            ge=0,
            le=3,
            description="0-3 previews while the image is drawn: with stream (as events) or on an async task (polled).",
        ),
    ] = None
    user: Annotated[
        str | None,
        Field(max_length=USER_MAX_CHARS, description="End-user id for abuse monitoring, at most 256 characters."),
    ] = None
    response_format: Annotated[
        ResponseFormat,
        Field(description="'url' (default): presigned download links. 'b64_json': the images inline (base64)."),
    ] = "url"
    webhook_url: Annotated[
        str | None,
        Field(
            max_length=WEBHOOK_URL_MAX_CHARS,
            description=(
                "Async routes only: an https URL (at most 2,048 characters, public addresses only) that is POSTed "
                "the task when it ends, signed per the Standard Webhooks specification (see GET /v1/webhooks/secret)."
            ),
        ),
    ] = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("blank_prompt", "prompt must not be empty or only whitespace")
        return value

    @field_validator("size")
    @classmethod
    def _size_rules(cls, value: str) -> str:
        if value != "auto":
            parse_size(value)
        return value

    @field_validator("output_compression")
    @classmethod
    def _compression_needs_lossy_format(cls, value: int | None, info: ValidationInfo) -> int | None:
        output_format = info.data.get("output_format", "png")
        if value is not None and output_format not in ("jpeg", "webp"):
            raise PydanticCustomError(
                "compression_needs_lossy_format",
                "output_compression applies only to output_format 'jpeg' or 'webp', not '{output_format}'",
                {"output_format": output_format},
            )
        return value

    @field_validator("background", mode="before")
    @classmethod
    def _no_transparency(cls, value: Any) -> Any:
        if value == "transparent":
            raise PydanticCustomError(
                "transparent_unsupported",
                "gpt-image-2 does not support transparent backgrounds; use 'auto' or 'opaque'",
            )
        return value

    def check_synchronous(self) -> None:
        """A synchronous answer shows previews only as stream events: partial_images needs stream. A webhook
        announces the end of a task: only the async routes make one."""
        if self.webhook_url is not None:
            raise InvalidRequest(
                "Invalid value for 'webhook_url': webhooks announce async tasks; send it to the /async route.",
                param="webhook_url",
                code="webhook_needs_task",
            )
        if self.partial_images is not None and not self.stream:
            raise InvalidRequest(
                "Invalid value for 'partial_images': partial_images applies only with stream: true (or on the "
                "async routes, where the task shows its previews while it runs).",
                param="partial_images",
                code="partial_images_need_stream",
            )

    def check_task(self) -> None:
        """An async task is polled, not streamed."""
        if self.stream:
            raise InvalidRequest(
                "Invalid value for 'stream': async tasks are polled, not streamed. Send stream: true to the "
                "synchronous route, or ask for partial_images here and read them from the task while it runs.",
                param="stream",
                code="stream_unsupported",
            )

    @property
    def image_size(self) -> ImageSize | None:
        return None if self.size == "auto" else parse_size(self.size)

    @property
    def is_large(self) -> bool:
        size = self.image_size
        return size is not None and size.pixels > LARGE_IMAGE_PIXELS

    def upstream_body(self) -> dict[str, Any]:
        """What goes to the upstream: the same fields, without ours (response_format: we always take b64).
        Previews only come as server-sent events, so asking for ``partial_images`` (a stream, or a task that
        shows its progress) asks the upstream to stream; otherwise it answers plain JSON."""
        body = self.model_dump(
            exclude_none=True, exclude={"response_format", "stream", "webhook_url", *self._not_forwarded}
        )
        if self.stream or self.partial_images is not None:
            body["stream"] = True
        return body

    def describe(self, record: "RequestRecord", *, include_prompt: bool) -> None:
        """What the request's log line says of it: the parameters, and the prompt's length and keyed digest (its
        text only when ``include_prompt``)."""
        record.model = self.model
        record.size = self.size
        record.quality = self.quality
        record.output_format = self.output_format
        record.n = self.n
        record.response_format = self.response_format
        record.describe_prompt(self.prompt, include_text=include_prompt)

    _not_forwarded: ClassVar[frozenset[str]] = frozenset()


class GenerationRequest(ImageRequest):
    """Body of ``POST /v1/images/generations``."""

    model_config = ConfigDict(defer_build=False)


UPLOAD_ID = r"upl_[A-Za-z0-9]{20,64}"
TASK_ID = r"task_[0-9a-f]{32}"


class EditParameters(ImageRequest):
    """The non-file fields of ``POST /v1/images/edits`` (multipart form fields, or the JSON body's)."""

    input_fidelity: Annotated[
        Literal["low", "high"] | None,
        Field(description="Accepted for compatibility and not forwarded: gpt-image-2 does not take it."),
    ] = None

    _not_forwarded: ClassVar[frozenset[str]] = frozenset({"input_fidelity"})


def _one_of_two_sources(schema: dict[str, Any]) -> None:
    """The schema says what the validator checks: exactly one of the two fields is a string."""
    schema["oneOf"] = [
        {"required": [name], "properties": {name: {"type": "string"}}} for name in ("upload_id", "image_url")
    ]


IMAGE_DATA_URL = r"data:image/(?:png|jpeg|webp);base64,[A-Za-z0-9+/]+={0,2}"
# An inline image travels in the JSON body, which API Gateway and Lambda cap at 6 MB: larger ones are uploaded.
IMAGE_DATA_URL_MAX_CHARS = 4_500_000


class UploadRef(BaseModel):
    """One input image of a JSON edit: an upload's id, or (as OpenAI's ``image_url``) a small image itself as a
    base64 ``data:`` URL."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, defer_build=True, json_schema_extra=_one_of_two_sources
    )

    upload_id: (
        Annotated[
            str,
            identifier_field(UPLOAD_ID, max_length=68, description="An id from POST /v1/uploads."),
            anchored(UPLOAD_ID, "upload id"),
        ]
        | None
    ) = None
    image_url: (
        Annotated[
            str,
            identifier_field(
                IMAGE_DATA_URL,
                max_length=IMAGE_DATA_URL_MAX_CHARS,
                description="Instead of upload_id: the image as data:image/<png|jpeg|webp>;base64,... (a small "
                "image; larger ones go through POST /v1/uploads).",
            ),
            anchored(IMAGE_DATA_URL, "base64 data URL of a PNG, JPEG or WebP image"),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_source(self) -> "UploadRef":
        if (self.upload_id is None) == (self.image_url is None):
            raise PydanticCustomError("one_image_source", "give exactly one of upload_id and image_url")
        return self


class EditUploadRequest(EditParameters):
    """JSON body of ``POST /v1/images/edits`` for inputs uploaded first through ``POST /v1/uploads``."""

    images: Annotated[
        list[UploadRef], Field(min_length=1, max_length=16, description="1 to 16 uploaded reference images.")
    ]
    mask: Annotated[UploadRef | None, Field(description="An uploaded mask (same format and size as images[0]).")] = None

    _not_forwarded: ClassVar[frozenset[str]] = frozenset({"input_fidelity", "images", "mask"})


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ImageData(BaseModel):
    url: Annotated[str | None, Field(description="Presigned S3 GET URL of the image.")] = None
    b64_json: Annotated[str | None, Field(description="The image, base64, when response_format is b64_json.")] = None
    revised_prompt: str | None = None


class GenerationResponse(BaseModel):
    """What OpenAI's Images API answers, with presigned S3 URLs in ``data[].url``."""

    created: int
    data: list[ImageData]
    model: str
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None
    usage: Usage | None = None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(defer_build=True)

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    error: ErrorDetail


class TaskObject(BaseModel):
    """An async task, as sub2api answers it (submit: 202; poll: GET /v1/images/tasks/{id})."""

    model_config = ConfigDict(defer_build=True)

    id: str
    task_id: str
    object: Literal["image.generation.task"] = "image.generation.task"
    status: Literal["processing", "completed", "failed"]
    created_at: int
    expires_at: int
    poll_url: str | None = None
    http_status: int | None = None
    image_url: str | None = None
    result: GenerationResponse | None = None
    error: dict[str, Any] | None = None
    completed_at: int | None = None
    partial_images: Annotated[
        list[dict[str, Any]] | None,
        Field(description="While processing, when asked: the previews stored so far ({index, url, created_at})."),
    ] = None
    webhook: Annotated[
        dict[str, Any] | None,
        Field(
            description=(
                "A task made with webhook_url: its delivery, {status: pending | delivered | failed, attempts, "
                "last_status: the receiver's HTTP status or the error}."
            )
        ),
    ] = None
