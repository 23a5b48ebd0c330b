"""GET /v1/webhooks/secret and POST /v1/webhooks/secret/rotate: the caller's Standard Webhooks signing secret
(``imagecore.accounts.webhook_secrets``), made on first use. Server keys only: a client token's tasks are signed
with its parent key's secret, which the token may not read. The secret is in the answer only, never logged."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.accounts.webhook_secrets import WebhookSecrets
from imagecore.domain.route_models import WebhookSecretResponse
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.edge.task_answers import NO_STORE
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.route_settings import WebhookSecretSettings
from imagecore.usecases.idempotency import idempotency_key

app = create_resolver()

_RESPONSES: dict[int, Any] = {
    200: {"description": "The secret", "content": {"application/json": {"model": WebhookSecretResponse}}},
    403: {"description": "Called with a client token", "content": ERROR_CONTENT},
    503: {"description": "The secrets cannot be read right now", "content": ERROR_CONTENT},
}


@cache
def secrets() -> WebhookSecrets:
    settings = WebhookSecretSettings.from_environment()
    return WebhookSecrets(settings.webhook_secrets_table, settings.webhook_secrets_key_id, region=settings.aws_region)


@app.get(
    "/v1/webhooks/secret",
    summary="Read your webhook signing secret",
    description="Made on first use. Verify deliveries with a Standard Webhooks library: Webhook(secret).verify().",
    responses=_RESPONSES,
)
def get_secret() -> Response[str]:
    owner = _server_owner()
    return _answer(secrets().signing_secrets(owner, create=True))


@app.post(
    "/v1/webhooks/secret/rotate",
    summary="Replace your webhook signing secret",
    description="For 24 hours deliveries carry signatures under both the new and the previous secret.",
    responses=_RESPONSES,
)
def rotate_secret() -> Response[str]:
    owner = _server_owner()
    # An Idempotency-Key is checked like on every POST, but never remembered: the answer is a credential.
    idempotency_key(app.current_event.raw_event)
    secrets().rotate(owner)
    return _answer(secrets().signing_secrets(owner))


def _server_owner() -> str:
    caller = caller_of(app.current_event.raw_event)
    caller.require_server_key()
    return caller.owner_id


def _answer(found: Any) -> Response[str]:
    body = WebhookSecretResponse(secret=found.current, previous_valid_until=found.previous_valid_until)
    return Response(200, "application/json", body.model_dump_json(), headers=dict(NO_STORE))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="webhook_secrets")
