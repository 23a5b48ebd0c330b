"""Public routes, no key needed: GET /v1/health (liveness), /v1/openapi.json and /v1/docs."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

import imagecore
from imagecore.models import HealthResponse
from imagecore.openapi import SWAGGER_HTML, packaged_document
from imagecore.resolver import create_resolver

app = create_resolver()


@app.get("/v1/health", summary="Liveness")
def health() -> HealthResponse:
    return HealthResponse(version=imagecore.__version__)


@app.get(
    "/v1/openapi.json",
    summary="The OpenAPI 3.1 document of the whole API",
    responses={200: {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
)
def openapi_document():
    return Response(200, content_types.APPLICATION_JSON, packaged_document(), {"Cache-Control": "max-age=300"})


@app.get(
    "/v1/docs",
    summary="Swagger UI",
    responses={200: {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
)
def docs():
    return Response(200, "text/html; charset=utf-8", SWAGGER_HTML)


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
