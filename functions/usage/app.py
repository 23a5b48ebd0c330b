"""GET /v1/usage?days=N: the caller's own usage per UTC day (requests, images, tokens, upstream time, failures by
code) and what is left of its budgets, read from the usage table. A client token's usage is its parent key's."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.accounts.budgets import MAX_USAGE_DAYS
from imagecore.accounts.caller import spender_of
from imagecore.accounts.ledger import UsageLedger
from imagecore.domain.route_models import UsageResponse
from imagecore.edge.request_body import refuse_unknown_query_parameters
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, serve
from imagecore.platform.observability import logger, metrics, tracer
from imagecore.platform.route_settings import UsageSettings

app = create_resolver()


@cache
def ledger() -> UsageLedger:
    settings = UsageSettings.from_environment()
    return UsageLedger(settings.usage_table, region=settings.aws_region)


@app.get(
    "/v1/usage",
    summary="Read your own usage and remaining budgets",
    responses={
        200: {"description": "Usage per day, newest first", "content": {"application/json": {"model": UsageResponse}}},
        400: {"description": "days is not a whole number from 1 to 90", "content": ERROR_CONTENT},
        503: {"description": "The usage table cannot be read right now", "content": ERROR_CONTENT},
    },
)
def get_usage(
    days: Annotated[int, Query(ge=1, le=MAX_USAGE_DAYS, description="How many UTC days, today included.")] = 7,
) -> UsageResponse:
    event = app.current_event.raw_event
    refuse_unknown_query_parameters(event, known=("days",))
    spender = spender_of(event)
    return UsageResponse.model_validate(ledger().usage(spender.account, spender.budget, days))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, event, context, operation="usage")
