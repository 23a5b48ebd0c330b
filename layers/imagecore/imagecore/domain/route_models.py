"""Bodies of the routes beside the image routes: uploads, usage, client tokens and health (the image routes' own,
and the contract's rules, are in ``imagecore.domain.models``). Apart so that an image function's cold start does not
define models it never reads."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagecore.domain.models import FILENAME_MAX_CHARS


class UploadRequest(BaseModel):
    """Body of ``POST /v1/uploads``: what the caller is about to upload."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    content_type: Annotated[
        Literal["image/png", "image/jpeg", "image/webp"], Field(description="The file's type; S3 enforces it.")
    ]
    bytes: Annotated[int, Field(ge=1, le=50 * 1024 * 1024, description="The file's size in bytes (at most 50 MB).")]
    filename: Annotated[
        str | None, Field(max_length=FILENAME_MAX_CHARS, description="Kept for the upstream request (255 characters).")
    ] = None
    purpose: Annotated[Literal["image", "mask"], Field(description="A reference image or a mask.")] = "image"


class UploadResponse(BaseModel):
    """A presigned S3 POST: send ``fields`` plus the file (as the last part, named ``file``) to ``url``."""

    model_config = ConfigDict(defer_build=True)

    id: str
    object: Literal["upload"] = "upload"
    url: str
    fields: dict[str, str]
    expires_at: int
    max_bytes: int
    content_type: str


class HealthResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)

    status: Literal["ok"] = "ok"
    version: str
    upstream: Annotated[
        Literal["sub2api", "simulator"],
        Field(description="simulator: a test deployment, whose images come from the upstream simulator (free)."),
    ] = "sub2api"


class ServiceIndex(BaseModel):
    """What ``GET /`` and ``GET /v1`` answer: where to read about the API and where to try it."""

    model_config = ConfigDict(defer_build=True)

    object: Literal["service"] = "service"
    name: Literal["image-service"] = "image-service"
    version: str
    message: str
    base_url: Annotated[str, Field(description="The OpenAI base_url of this API.")]
    docs: Annotated[str, Field(description="The API reference (Swagger UI, try any route).")]
    playground: Annotated[str, Field(description="A page to generate and edit images from a browser.")]
    openapi: Annotated[str, Field(description="The OpenAPI 3.1 document.")]


class UsageDay(BaseModel):
    """One UTC day of a key's usage (its client tokens' included)."""

    model_config = ConfigDict(defer_build=True)

    date: Annotated[str, Field(description="The UTC day, YYYY-MM-DD.")]
    requests: int
    images: Annotated[int, Field(description="Images made (and billed) by the upstream.")]
    input_tokens: int
    output_tokens: int
    upstream_seconds: Annotated[float, Field(description="Time spent waiting for the upstream.")]
    failures: Annotated[dict[str, int], Field(description="Failed requests by error code.")]


class UsageTotals(BaseModel):
    model_config = ConfigDict(defer_build=True)

    requests: int
    images: int
    input_tokens: int
    output_tokens: int
    upstream_seconds: float
    failures: dict[str, int]


class BudgetLeft(BaseModel):
    model_config = ConfigDict(defer_build=True)

    limit: int
    used: Annotated[int, Field(description="Spent so far in the period, including requests still running.")]
    remaining: int
    resets_in_seconds: int


class UsageResponse(BaseModel):
    """GET /v1/usage: the caller's usage per day, newest first, and what is left of each of its budgets."""

    model_config = ConfigDict(defer_build=True)

    object: Literal["usage"] = "usage"
    days: list[UsageDay]
    totals: UsageTotals
    budgets: Annotated[
        dict[str, BudgetLeft],
        Field(
            description="Each budget of the key (images_per_day, images_per_month, tokens_per_day, tokens_per_month)."
        ),
    ]


ClientTokenScope = Literal["generations", "edits", "uploads", "tasks", "responses"]

# A client token is a credential in a browser or a phone: it never spends without a limit. One minted without
# max_images may create this many images; none may ask for more than the maximum.
TOKEN_DEFAULT_MAX_IMAGES = 20
TOKEN_MAX_IMAGES = 1000
TOKEN_MAX_CONCURRENT = 100


class ClientTokenRequest(BaseModel):
    """Body of ``POST /v1/client_tokens`` (every field optional: ``{}`` asks for the defaults)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    expires_in: Annotated[
        int, Field(ge=60, le=3600, description="Lifetime in seconds: 60 to 3600 (one hour); 900 by default.")
    ] = 900
    scope: Annotated[
        list[ClientTokenScope] | None,
        Field(
            min_length=1,
            max_length=5,
            description="The routes the token may call; by default generations, edits, uploads, tasks and responses. "
            "A client token can never mint client tokens.",
        ),
    ] = None
    max_images: Annotated[
        int | None,
        Field(
            ge=1,
            le=TOKEN_MAX_IMAGES,
            description=f"At most this many images in all over the token's life: {TOKEN_DEFAULT_MAX_IMAGES} when "
            f"not given, {TOKEN_MAX_IMAGES} at most.",
        ),
    ] = None
    max_concurrent: Annotated[
        int | None,
        Field(
            ge=1,
            le=TOKEN_MAX_CONCURRENT,
            description="At most this many image requests of the token in flight at once (never more than its "
            "key's own limit, which applies when not given).",
        ),
    ] = None


class ClientTokenResponse(BaseModel):
    """A client token: send it as ``Authorization: Bearer <token>`` from a browser or a phone."""

    model_config = ConfigDict(defer_build=True)

    token: Annotated[str, Field(description="The signed token (a JWT); shown only now.")]
    expires_at: Annotated[int, Field(description="Unix time after which the token is refused.")]
    scope: list[ClientTokenScope]
    max_images: int | None = None
    max_concurrent: int | None = None


class WebhookSecretResponse(BaseModel):
    """The caller's Standard Webhooks signing secret (``GET /v1/webhooks/secret`` and its rotation)."""

    model_config = ConfigDict(defer_build=True)

    object: Literal["webhook.secret"] = "webhook.secret"
    secret: Annotated[str, Field(description="whsec_ + base64 of the key: give it to Webhook(secret) as it is.")]
    previous_valid_until: Annotated[
        int | None,
        Field(
            description=(
                "After a rotation: until when (Unix seconds) deliveries also carry a signature under the previous "
                "secret (24 hours)."
            )
        ),
    ] = None
