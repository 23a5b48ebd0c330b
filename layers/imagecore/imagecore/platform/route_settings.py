"""Settings of the functions beside the image routes: tasks, usage, uploads, client tokens, the public pages and
the authorizer (the image functions' are in ``imagecore.platform.settings``, with the rules they all share)."""

from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, HttpUrl, SecretStr, model_validator

from imagecore.platform.settings import MAX_INPUT_IMAGE_BYTES, MAX_PRESIGN_EXPIRY_SECONDS, EnvironmentSettings


class TaskReadSettings(EnvironmentSettings):
    """Settings of the tasks function (GET /v1/images/tasks/{id})."""

    images_bucket: Annotated[str, Field(min_length=3)]
    s3_endpoint_url: HttpUrl | None = None
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=MAX_PRESIGN_EXPIRY_SECONDS)] = 3600
    tasks_table: Annotated[str, Field(min_length=3)]


class UsageSettings(EnvironmentSettings):
    """Settings of the usage function (GET /v1/usage)."""

    usage_table: Annotated[str, Field(min_length=3, description="DynamoDB table of per-key usage counters.")]


class UploadSettings(EnvironmentSettings):
    """Settings of the uploads function (presigned S3 POSTs for large edit inputs)."""

    images_bucket: Annotated[str, Field(min_length=3)]
    s3_endpoint_url: HttpUrl | None = None
    idempotency_table: str | None = None
    upload_expiry_seconds: Annotated[int, Field(ge=60, le=3600, description="Lifetime of an upload's POST.")] = 900
    max_input_image_bytes: Annotated[int, Field(gt=0, le=MAX_INPUT_IMAGE_BYTES)] = MAX_INPUT_IMAGE_BYTES


class SigningKeySettings(EnvironmentSettings):
    """Where the key that signs client tokens comes from: a Secrets Manager secret in AWS (read through
    Powertools Parameters, cached briefly so a rotation takes effect soon), an environment variable locally."""

    client_token_signing_secret_id: Annotated[
        str | None, Field(description="In AWS: the Secrets Manager secret holding the client-token signing key.")
    ] = None
    client_token_signing_key: Annotated[
        SecretStr | None, Field(description="Local only: the signing key itself (make run generates one).")
    ] = None
    signing_key_cache_seconds: Annotated[int, Field(ge=0, le=900)] = 60

    @property
    def signs_tokens(self) -> bool:
        return self.client_token_signing_key is not None or bool(self.client_token_signing_secret_id)


class ClientTokenSettings(SigningKeySettings):
    """Settings of the client-tokens function (POST /v1/client_tokens)."""

    @model_validator(mode="after")
    def _one_signing_key_source(self) -> Self:
        if not self.signs_tokens:
            raise ValueError("set CLIENT_TOKEN_SIGNING_SECRET_ID (AWS) or CLIENT_TOKEN_SIGNING_KEY (local)")
        return self


class PublicPageSettings(EnvironmentSettings):
    """Settings of the health function: health, the OpenAPI document, the docs and playground pages, the index
    and the model list."""

    s3_endpoint_url: Annotated[
        HttpUrl | None,
        Field(description="Only for the local stack: where the pages may load the images from (else S3 itself)."),
    ] = None
    responses_allowed_models: Annotated[
        str,
        Field(description="The text models POST /v1/responses takes, comma separated (empty: any, none listed)."),
    ] = ""
    public_url_scheme: Annotated[
        Literal["https", "http"],
        Field(description="Scheme of the URLs the API gives for itself: https; the local stack's http."),
    ] = "https"
    upstream_simulator: Annotated[
        bool, Field(description="The stack calls the upstream simulator (a test deployment): health says so.")
    ] = False


# A revoked key stops working once both caches have forgotten it: the authorizer's result cache
# (ReauthorizeEvery in template.yaml) and the keyring cache below. Together they stay within this.
REVOCATION_SECONDS = 60


class AuthorizerSettings(SigningKeySettings):
    """Settings of the bearer-key authorizer (client tokens are accepted when a signing key is configured)."""

    api_keys_secret_id: Annotated[
        str | None,
        Field(description='Secrets Manager secret: {"keys": [{"id": ..., "sha256": ...}]} (hashes only).'),
    ] = None
    api_keys: Annotated[
        SecretStr | None,
        Field(description="Local only: comma-separated plain keys.", validation_alias=AliasChoices("API_KEYS")),
    ] = None
    keys_cache_seconds: Annotated[
        int, Field(ge=0, le=REVOCATION_SECONDS, description="How long the key list is cached (revocation delay).")
    ] = 30
    plan_max_concurrent: Annotated[
        str,
        Field(
            description="Image requests in flight at once per key, by usage plan: 'free=1 trial=2 standard=4 "
            "none=2' (none: keys on no plan; 0: no limit). A key's own max_concurrent setting wins."
        ),
    ] = "free=1 trial=2 standard=4 none=2"
    default_images_per_day: Annotated[
        int, Field(ge=0, description="Daily image budget of a key whose settings name none (0: no default).")
    ] = 0

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.api_keys is None and not self.api_keys_secret_id:
            raise ValueError("set API_KEYS_SECRET_ID (AWS) or API_KEYS (local)")
        return self


class WebhookSecretSettings(EnvironmentSettings):
    """Settings of the webhook secret routes (GET /v1/webhooks/secret, POST /v1/webhooks/secret/rotate)."""

    webhook_secrets_table: Annotated[str, Field(min_length=3, description="DynamoDB table of the secrets.")]
    webhook_secrets_key_id: Annotated[str, Field(min_length=1, description="KMS key that encrypts them.")]


class WebhookSettings(WebhookSecretSettings):
    """Settings of the webhook function: announces ended tasks to their webhook_url."""

    images_bucket: Annotated[str, Field(min_length=3)]
    s3_endpoint_url: HttpUrl | None = None
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=MAX_PRESIGN_EXPIRY_SECONDS)] = 3600
    tasks_table: Annotated[str, Field(min_length=3)]
    webhook_queue_url: Annotated[str, Field(min_length=1, description="SQS queue of delivery attempts.")]
    webhook_retry_schedule: Annotated[
        str,
        Field(
            pattern=r"^[0-9]{1,6}(,[0-9]{1,6}){0,19}$",
            description="Seconds to wait before each attempt, the first included (the specification's by default).",
        ),
    ] = "0,5,300,1800,7200,18000,36000,36000"
    webhook_allow_loopback: Annotated[
        bool, Field(description="Local stack only: http:// receivers on loopback. Always off in AWS.")
    ] = False
