"""Configuration: one pydantic model per function, read from the environment once at cold start. This module
holds the image functions' (generations, edits, the worker); ``route_settings`` those of the other routes, so
that an image function's cold start does not define models it never reads.

The field names are the environment variables (case-insensitive); ``tests/template`` checks that every
variable the template sets is a field here, so the two cannot drift apart. A plain model reading
``os.environ`` does what these functions need from pydantic-settings (flat string variables, aliases,
case-insensitive names) without its source machinery (dotenv, CLI, cloud secret providers), whose import
alone cost every cold start some 40 ms.
"""

import os
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator
from pydantic.fields import FieldInfo

from imagecore.platform.observability import configure_prompt_digest

# Lambda's synchronous response limit is 6 MB (6,291,456 bytes) for the whole JSON document.
LAMBDA_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024
# A presigned URL is a bearer credential for its image: it lives an hour at most (the design's bound; the Lambda
# role's temporary credentials end it about then anyway).
MAX_PRESIGN_EXPIRY_SECONDS = 3600
# A streamed response (InvokeWithResponseStream) may carry 200 MB (Lambda's soft limit); API Gateway relays the
# first 10 MB at full speed and the rest at 2 MB/s.
LAMBDA_STREAMED_RESPONSE_LIMIT_BYTES = 200 * 1024 * 1024
# A streamed integration may last 15 minutes.
STREAMED_INTEGRATION_TIMEOUT_MS = 900_000


def _variable_names(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [alias] if isinstance(alias, str) else [name]


class EnvironmentSettings(BaseModel):
    """Built without arguments, a settings model reads its fields from the environment; arguments win. Each
    function builds only its own model's validator (``defer_build``), when it reads its settings."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True, defer_build=True
    )

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        environment = {key.lower(): value for key, value in os.environ.items()}
        found: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            names = _variable_names(name, field)
            if name in data or any(variable in data for variable in names):
                continue
            value = next((environment[v.lower()] for v in names if v.lower() in environment), None)
            if value is not None:
                found[name] = value
        return {**found, **data}

    @classmethod
    def from_environment(cls) -> Self:
        """The settings as the function's environment gives them (what calling the class without arguments
        does, spelled so that type checkers know every field comes from somewhere)."""
        return cls.model_validate({})

    aws_region: Annotated[str, Field(validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))] = "us-east-1"
    cors_allow_origins: Annotated[
        str,
        Field(description="Web origins that may call the API: a comma list, or * for any (see imagecore.edge.cors)."),
    ] = ""


class ImageSettings(EnvironmentSettings):
    """What every image function reads: the images bucket, the tables of tasks, idempotency and usage, how
    prompts are logged, and the scheme of the URLs it gives for itself. The async routes' functions read only
    these: they never call the upstream, so neither its URL nor its key reaches them."""

    images_bucket: Annotated[str, Field(min_length=3, description="Bucket the images are written to.")]
    s3_endpoint_url: Annotated[
        HttpUrl | None,
        Field(description="Only for the local stack: the embedded S3. Unset in AWS (regional endpoint)."),
    ] = None
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=MAX_PRESIGN_EXPIRY_SECONDS)] = 3600

    log_prompts: Annotated[bool, Field(description="Log prompt text (off: only its length and keyed hash).")] = False
    prompt_digest_key: Annotated[
        SecretStr | None, Field(description="Local only: the HMAC key of the logged prompt digest.")
    ] = None
    prompt_digest_key_secret_id: Annotated[
        str | None,
        Field(description="In AWS: Secrets Manager secret holding the HMAC key of the logged prompt digest."),
    ] = None
    public_url_scheme: Annotated[
        Literal["https", "http"],
        Field(description="Scheme of the URLs the API gives for itself (poll_url): https; the local stack's http."),
    ] = "https"
    tasks_table: Annotated[str | None, Field(description="DynamoDB table of async tasks.")] = None
    jobs_queue_url: Annotated[str | None, Field(description="SQS queue the async tasks are sent to.")] = None
    idempotency_table: Annotated[
        str | None, Field(description="DynamoDB table of Idempotency-Key records (unset: keys are ignored).")
    ] = None
    usage_table: Annotated[
        str | None,
        Field(description="DynamoDB table of per-key usage and budget counters (unset: nothing is counted)."),
    ] = None
    token_usage_table: Annotated[
        str | None,
        Field(description="DynamoDB table counting the images of client tokens minted with max_images."),
    ] = None
    webhook_allow_loopback: Annotated[
        bool, Field(description="Local stack only: webhook_url may be http:// to a receiver on loopback.")
    ] = False
    storage_margin_seconds: Annotated[
        float,
        Field(
            ge=0, le=60, description="Time kept back from the upstream call to store and answer (and a lease's margin)."
        ),
    ] = 4.0


class GenerationSettings(ImageSettings):
    """Settings of the image functions that call the upstream (generations, edits, responses, the worker)."""

    upstream_base_url: Annotated[
        HttpUrl, Field(description="sub2api base URL, ending in /v1: https (the upstream key travels with it).")
    ]
    allow_http_upstream: Annotated[
        bool,
        Field(description="Local only (with UPSTREAM_API_KEY): accept an http:// upstream, the simulator."),
    ] = False
    upstream_api_key: Annotated[SecretStr | None, Field(description="Local only: the upstream key itself.")] = None
    upstream_api_key_secret_id: Annotated[
        str | None,
        Field(description="In AWS: Secrets Manager secret holding the upstream key (read cached)."),
    ] = None
    upstream_timeout_seconds: Annotated[float, Field(gt=0, le=900)] = 120.0
    upstream_large_timeout_seconds: Annotated[float, Field(gt=0, le=900)] = 300.0
    upstream_max_attempts: Annotated[int, Field(ge=1, le=3)] = 3
    upstream_account_id_header: Annotated[
        str,
        Field(description="Response header that carries the upstream account id, when the upstream sends one."),
    ] = "x-account-id"

    integration_timeout_ms: Annotated[
        int,
        Field(
            ge=50,
            le=STREAMED_INTEGRATION_TIMEOUT_MS,
            description="API Gateway integration timeout: we never work past it (streamed routes: 15 minutes).",
        ),
    ] = 29_000
    stream_idle_limit_seconds: Annotated[
        float,
        Field(
            gt=0,
            le=900,
            description=(
                "Streamed routes: API Gateway closes a response silent this long (300 s Regional). The answer's "
                "status is held until shortly before it; past that, keep-alives go out."
            ),
        ),
    ] = 300.0
    max_inline_response_bytes: Annotated[
        int,
        Field(
            gt=0,
            le=LAMBDA_STREAMED_RESPONSE_LIMIT_BYTES,
            description="Largest b64_json answer: 6 MB buffered, up to 200 MB on the streamed routes.",
        ),
    ] = LAMBDA_RESPONSE_LIMIT_BYTES - 64 * 1024

    @model_validator(mode="after")
    def _one_upstream_key_source(self) -> Self:
        if self.upstream_api_key is None and not self.upstream_api_key_secret_id:
            raise ValueError("set UPSTREAM_API_KEY_SECRET_ID (AWS) or UPSTREAM_API_KEY (local)")
        return self

    @model_validator(mode="after")
    def _upstream_over_tls(self) -> Self:
        """The upstream key is sent with every call: only over TLS, except to the local simulator."""
        if self.upstream_base_url.scheme == "https":
            return self
        if not self.allow_http_upstream:
            raise ValueError("UPSTREAM_BASE_URL must be https:// (the upstream key travels with every call)")
        if self.upstream_api_key is None:
            raise ValueError("ALLOW_HTTP_UPSTREAM is for the local stack only (with UPSTREAM_API_KEY)")
        return self

    @property
    def upstream_url(self) -> str:
        return str(self.upstream_base_url).rstrip("/")


MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024
# API Gateway + Lambda: a 6 MB event holds about 4.4 MB of multipart once API Gateway has base64-encoded it.
MAX_INLINE_REQUEST_BYTES = 4_400_000


class EditLimits(BaseModel):
    """How large an edit's inputs may be, inline and in all."""

    max_input_image_bytes: Annotated[int, Field(gt=0, le=MAX_INPUT_IMAGE_BYTES)] = MAX_INPUT_IMAGE_BYTES
    max_request_bytes: Annotated[
        int, Field(gt=0, le=6 * 1024 * 1024, description="Largest multipart body taken inline.")
    ] = MAX_INLINE_REQUEST_BYTES


class EditSettings(GenerationSettings, EditLimits):
    """Settings of the edits function: the generation settings plus its input limits."""


class EditTaskSettings(ImageSettings, EditLimits):
    """Settings of the async edits function: what every image function reads, plus the edit input limits."""


class WorkerSettings(EditSettings):
    """Settings of the worker: runs async tasks and event-triggered generations from the jobs queue."""

    event_bus_name: Annotated[str, Field(min_length=1, description="EventBridge bus for completion events.")]
    dead_letter_queue_url: Annotated[str, Field(description="Where jobs that can never run are put, with why.")]
    store_attempts: Annotated[int, Field(ge=1, le=10, description="Attempts to store images after S3 faults.")] = 5
    storage_margin_seconds: Annotated[float, Field(ge=0, le=120)] = 20.0
    job_max_receives: Annotated[
        int,
        Field(
            ge=1,
            le=1000,
            description="The jobs queue's maxReceiveCount: on that delivery a job that still fails ends as failed.",
        ),
    ] = 5


class ResponsesSettings(EditSettings):
    """Settings of the responses function: the edit settings (its input images follow the edit limits) plus the
    conversations it keeps and the text models it allows."""

    conversations_table: Annotated[
        str | None, Field(description="DynamoDB table of conversations (unset: previous_response_id is refused).")
    ] = None
    conversation_ttl_days: Annotated[
        int, Field(ge=1, le=3650, description="How long a conversation can be continued (DynamoDB TTL).")
    ] = 30
    responses_allowed_models: Annotated[
        str, Field(description="Text models allowed on POST /v1/responses: a comma list; empty: any.")
    ] = ""

    @property
    def allowed_models(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.responses_allowed_models.split(",") if name.strip())


def prompt_digest_key_reader(settings: ImageSettings) -> Callable[[], bytes] | None:
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


def use_prompt_digest_key(settings: ImageSettings) -> None:
    """Logged prompt digests are keyed with the deployment's key from now on, when it has one."""
    reader = prompt_digest_key_reader(settings)
    if reader is not None:
        configure_prompt_digest(reader)
