"""REQUEST authorizer: the bearer credential must be a stored key (by hash) or a client token one of them
minted (``imagecore.accounts.authorizer``).

A missing, wrong, expired or revoked credential raises ``Unauthorized``, which API Gateway turns into its
UNAUTHORIZED gateway response (a 401 in the OpenAI error shape, see template.yaml). The policy is cached by
the Authorization header for ReauthorizeEvery seconds, so it must hold for whichever route comes next: a key
is allowed every route, a client token exactly the routes of its scope (any other gets the ACCESS_DENIED
gateway response, a 403). Who is calling, and the key's budgets, travel to the functions in the authorizer
context; the key's usage key (``usageIdentifierKey``) tells API Gateway which usage plan throttles and counts
its requests (a client token's are its parent key's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.auth import KeyRecord, Keyring, bearer_token, keyring_loader
from imagecore.accounts.authorizer import Grant, KeyDefaults, Refused, authorize, authorizer_context
from imagecore.accounts.client_tokens import signing_key_reader
from imagecore.domain.errors import Unauthorized
from imagecore.platform.observability import logger
from imagecore.platform.route_settings import AuthorizerSettings


@cache
def settings() -> AuthorizerSettings:
    return AuthorizerSettings.from_environment()


@cache
def keyring() -> Callable[[], Keyring]:
    return keyring_loader(settings())


@cache
def key_defaults() -> KeyDefaults:
    current = settings()
    return KeyDefaults.parse(current.plan_max_concurrent, current.default_images_per_day)


@cache
def signing_key() -> Callable[[], str] | None:
    return signing_key_reader(settings())


def current_keyring() -> Keyring:
    return keyring()()


def policy_for(grant: Grant, request: APIGatewayAuthorizerRequestEvent) -> dict[str, Any]:
    arn = request.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=grant.key.id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context=authorizer_context(grant, key_defaults()),
    )
    routes = grant.routes()
    if routes is None:
        policy.allow_all_routes()
    else:
        for method, resource in routes:
            policy.allow_route(method, resource)
    return with_usage_key(policy.asdict(), grant.key)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    try:
        grant = authorize(bearer_token(request.headers), current_keyring(), signing_key(), now=int(time.time()))
    except Refused as refused:
        logger.info("api key refused", extra={"reason": refused.reason})
        # API Gateway maps an authorizer failure whose message is exactly 'Unauthorized' to a 401.
        raise Unauthorized("Unauthorized") from None
    if grant.token is not None:
        logger.info("client token accepted", extra={"api_key_id": grant.key.id, "client_token_id": grant.token.id})
    return policy_for(grant, request)


def with_usage_key(response: dict[str, Any], record: KeyRecord) -> dict[str, Any]:
    """The key's usage plan, for API Gateway (the API's ApiKeySourceType is AUTHORIZER). A key on no plan gets
    none, and API Gateway refuses it on every route that requires an API key."""
    if record.usage_key:
        response["usageIdentifierKey"] = record.usage_key
    return response
