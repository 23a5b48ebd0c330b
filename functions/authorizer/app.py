"""REQUEST authorizer: the bearer key must hash to one of the stored key hashes.

A missing or wrong key raises ``Unauthorized``, which API Gateway turns into its UNAUTHORIZED gateway response
(a 401 in the OpenAI error shape, see template.yaml). A known key is allowed on every route, so the cached
policy (keyed by the Authorization header) holds whichever route the next request goes to; the key id travels
to the functions in the authorizer context.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.auth import Keyring, bearer_token, keyring_loader
from imagecore.errors import Unauthorized
from imagecore.observability import logger
from imagecore.settings import AuthorizerSettings


@cache
def keyring() -> Callable[[], Keyring]:
    return keyring_loader(AuthorizerSettings.from_environment())


def current_keyring() -> Keyring:
    return keyring()()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = APIGatewayAuthorizerRequestEvent(event)
    record = current_keyring().identify(bearer_token(request.headers))
    if record is None:
        logger.info("api key refused", extra={"reason": "missing" if not bearer_token(request.headers) else "unknown"})
        # API Gateway maps an authorizer failure whose message is exactly 'Unauthorized' to a 401.
        raise Unauthorized("Unauthorized")
    arn = request.parsed_arn
    policy = APIGatewayAuthorizerResponse(
        principal_id=record.id,
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context={"keyId": record.id},
    )
    policy.allow_all_routes()
    return policy.asdict()
