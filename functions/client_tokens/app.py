"""POST /v1/client_tokens: a server key mints a short-lived client token for a browser or a phone
(``imagecore.accounts.client_tokens``). The token is in the answer only: it is never logged, stored or traced."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.caller import caller_of
from imagecore.accounts.client_tokens import DEFAULT_SCOPE, mint, signing_key_reader
from imagecore.domain.errors import ServiceMisconfigured
from imagecore.domain.route_models import ClientTokenRequest, ClientTokenResponse
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.platform.observability import current_record, logger, metrics, tracer
from imagecore.platform.route_settings import ClientTokenSettings
from imagecore.usecases.idempotency import idempotency_key

app = create_resolver()


@cache
def signing_key() -> Callable[[], str]:
    reader = signing_key_reader(ClientTokenSettings.from_environment())
    if reader is None:  # the settings refuse this already; kept for the type checker
        raise ServiceMisconfigured("Client tokens are not configured.")
    return reader


@app.post(
    "/v1/client_tokens",
    summary="Mint a short-lived client token for a browser or a phone",
    description=(
        "Server keys only. The token is valid for expires_in seconds (at most one hour), calls only the routes in "
        "scope and creates at most max_images images in all (20 when not given, 1000 at most). What it creates "
        "belongs to the key that minted it; revoking that key revokes its tokens."
    ),
    responses={
        200: {"description": "The client token", "content": {"application/json": {"model": ClientTokenResponse}}},
        400: {"description": "Invalid request", "content": ERROR_CONTENT},
        403: {"description": "Called with a client token", "content": ERROR_CONTENT},
    },
)
def create_client_token(request: Annotated[ClientTokenRequest, Body()]) -> ClientTokenResponse:
    event = app.current_event.raw_event
    caller = caller_of(event)
    caller.require_server_key()

    # An Idempotency-Key is checked like on every POST, but never remembered: the answer is a credential, and
    # a retry that mints another short-lived token costs nothing.
    idempotency_key(event)
    signed, token = mint(
        caller.owner_id,
        signing_key=signing_key()(),
        now=int(time.time()),
        lifetime_seconds=request.expires_in,
        scope=request.scope or DEFAULT_SCOPE,
        max_images=request.max_images,
        max_concurrent=request.max_concurrent,
    )
    current_record().client_token_id = token.id
    return ClientTokenResponse(
        token=signed,
        expires_at=token.expires_at,
        scope=list(token.scope),
        max_images=token.max_images,
        max_concurrent=token.max_concurrent,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)  # the answer is a credential
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="client_tokens")
