"""The service's small read-only routes. Public, no key needed: GET /v1/health (liveness), /v1/openapi.json, the
/v1/docs and /v1/playground pages with their /v1/assets, the index at / and /v1 (where the docs and the playground
are), and the CORS preflight (OPTIONS) of every API route. Behind the authorizer, as at OpenAI: GET /v1/models and
/v1/models/{model} (a client that lists models with a wrong key learns it there, as it would from OpenAI)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

import imagecore
from imagecore.domain.catalog import ModelList, ModelObject, find_model, list_models, parse_model_names
from imagecore.domain.errors import NotFound
from imagecore.domain.route_models import HealthResponse, ServiceIndex
from imagecore.edge.cors import configured_policy, origin_of, with_cors
from imagecore.edge.openapi import packaged_document
from imagecore.edge.pages import HTML, StaticFiles, page_headers
from imagecore.edge.resolver import ERROR_CONTENT, create_resolver, error_response
from imagecore.edge.urls import api_url
from imagecore.platform.route_settings import PublicPageSettings

app = create_resolver()
static = StaticFiles(Path(__file__).resolve().parent / "static")
ASSET_CACHE = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
HTML_PAGE: dict[int, Any] = {
    200: {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
}


@app.get("/v1/health", summary="Liveness")
def health() -> HealthResponse:
    return HealthResponse(
        version=imagecore.__version__, upstream="simulator" if _settings().upstream_simulator else "sub2api"
    )


@app.get(
    "/v1/openapi.json",
    summary="The OpenAPI 3.1 document of the whole API",
    responses={200: {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
)
def openapi_document():
    return Response(200, content_types.APPLICATION_JSON, packaged_document(), {"Cache-Control": "max-age=300"})


@app.get("/v1/docs", summary="Swagger UI (served with the service, no CDN)", responses=HTML_PAGE)
def docs():
    return Response(200, HTML, static.page("docs"), page_headers(_s3_endpoint()))


@app.get("/v1/playground", summary="A page to try generations and edits from a browser", responses=HTML_PAGE)
def playground():
    return Response(200, HTML, static.page("playground"), page_headers(_s3_endpoint()))


@app.get("/", summary="Where the docs, the playground and the API are", include_in_schema=False)
@app.get("/v1", summary="Where the docs, the playground and the API are")
def index() -> ServiceIndex:
    event, scheme = app.current_event.raw_event, _settings().public_url_scheme
    return ServiceIndex(
        version=imagecore.__version__,
        message="OpenAI-compatible image API: read the reference at /v1/docs, try it at /v1/playground.",
        base_url=api_url(event, "/v1", scheme=scheme),
        docs=api_url(event, "/v1/docs", scheme=scheme),
        playground=api_url(event, "/v1/playground", scheme=scheme),
        openapi=api_url(event, "/v1/openapi.json", scheme=scheme),
    )


@app.get("/v1/models", summary="The models this service accepts (OpenAI's list shape)")
def models() -> ModelList:
    return list_models(_responses_models())


@app.get(
    "/v1/models/<model>",
    summary="One model this service accepts",
    responses={404: {"description": "No such model (code model_not_found)", "content": ERROR_CONTENT}},
)
def model(model: str) -> ModelObject:
    return find_model(model, _responses_models())


@app.get("/v1/assets/<name>", include_in_schema=False)
def asset(name: str):
    found = static.asset(name)
    if found is None:
        return error_response(NotFound(f"No asset named {name!r}.", code="unknown_asset"))
    text, content_type = found
    return Response(200, content_type, text, ASSET_CACHE)


@cache
def _settings() -> PublicPageSettings:
    return PublicPageSettings.from_environment()


def _s3_endpoint() -> str | None:
    settings = _settings()
    return str(settings.s3_endpoint_url) if settings.s3_endpoint_url else None


def _responses_models() -> tuple[str, ...]:
    return parse_model_names(_settings().responses_allowed_models)


def preflight(event: dict[str, Any]) -> dict[str, Any]:
    """The answer to a browser's CORS preflight: 204, with the CORS headers when the origin is allowed."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    allowed = configured_policy().preflight(origin_of(headers), headers.get("access-control-request-method"))
    return {
        "statusCode": 204,
        "multiValueHeaders": {name: [value] for name, value in allowed.items()},
        "body": "",
        "isBase64Encoded": False,
    }


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("httpMethod") == "OPTIONS":
        return preflight(event)
    response = app.resolve(event, context)
    with_cors(response.setdefault("multiValueHeaders", {}), event.get("headers"))
    return response
