"""The Powertools HTTP edge shared by every API function: the resolver whose every error answers in the
OpenAI shape (through ``imagecore.edge.http_errors``), and ``serve``, which runs one API Gateway event and writes
its request record."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError, ResponseValidationError
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from imagecore.domain.errors import ImageServiceError, NotFound
from imagecore.domain.jsonbody import parse_json_body
from imagecore.domain.models import ErrorResponse
from imagecore.domain.validation import validation_error
from imagecore.edge.cors import with_cors
from imagecore.edge.http_errors import error_answer, internal_error, record_error
from imagecore.edge.request_body import JSON, require_content_type
from imagecore.platform.observability import current_record, logger, request_record

# What every error answer looks like in the OpenAPI document (the OpenAI error shape).
ERROR_CONTENT: dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel] = {JSON: {"model": ErrorResponse}}
# The 429 of an image route: a limit of the caller's, checked before anything is generated.
OVER_LIMITS: OpenAPIResponse = {
    "description": (
        "Over the key's (or client token's) image requests in flight (concurrency_exceeded, with "
        "Retry-After), its image or token budget, or the client token's max_images (nothing generated)"
    ),
    "content": ERROR_CONTENT,
}

# A path with a control character (a decoded %0A, %00, ...) names no route. Checked before any route runs: the
# resolver's patterns end in ``$``, which also matches before a final newline, so GET /v1/models/%0A would
# otherwise answer as GET /v1/models.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def answer_content(model: type[BaseModel]) -> dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel]:
    """A 200 that is ``model`` as JSON, or with ``stream: true`` server-sent events (each an event name and the
    JSON of its data)."""
    events: OpenAPIResponseContentSchema = {
        "schema": {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}
    }
    return {JSON: {"model": model}, "text/event-stream": events}


def create_resolver() -> APIGatewayRestResolver:
    """A REST resolver with pydantic validation whose every error answers in the OpenAI shape."""
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json_body)

    @app.exception_handler(RequestValidationError)
    def _validation_error(exc: RequestValidationError) -> Response[str]:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(ImageServiceError)
    def _service_error(exc: ImageServiceError) -> Response[str]:
        return error_response(exc)

    @app.not_found
    def _not_found(_exc: NotFoundError) -> Response[str]:
        return error_response(_unknown_route(app))

    app.use([_printable_path])

    @app.exception_handler(ResponseValidationError)
    def _bad_response(exc: ResponseValidationError) -> Response[str]:
        logger.error("response failed its own schema", extra={"errors": _safe_errors(exc.errors())})
        return error_response(internal_error())

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[str]:
        logger.exception("unhandled error")
        return error_response(internal_error())

    return app


def _printable_path(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    if _CONTROL_CHARACTER.search(app.current_event.path):
        return error_response(_unknown_route(app))
    return next_middleware(app)


def _unknown_route(app: APIGatewayRestResolver) -> NotFound:
    event = app.current_event
    path = json.dumps(event.path, ensure_ascii=False)[1:-1]  # a control character shown escaped
    return NotFound(
        f"Unknown route: {event.http_method} {path}. The routes are under /v1: read them at /v1/docs, try them at "
        "/v1/playground.",
        code="unknown_route",
    )


def error_response(error: ImageServiceError) -> Response[str]:
    """The error's answer as a Powertools response; the request record takes its status and outcome."""
    record_error(current_record(), error)
    answer = error_answer(error)
    return Response(
        status_code=answer.status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(answer.body),
        headers={**answer.headers},
    )


def _safe_errors(errors: Iterable[Any]) -> list[dict[str, Any]]:
    return [{"type": e.get("type"), "loc": e.get("loc")} for e in errors]


def serve(
    app: APIGatewayRestResolver,
    event: dict[str, Any],
    context: LambdaContext,
    *,
    operation: str,
    accepted_content_types: tuple[str, ...] = (JSON,),
) -> dict[str, Any]:
    """Resolve one API Gateway event, writing exactly one request record."""
    request_id = getattr(context, "aws_request_id", None)
    with request_record(operation, event, request_id) as record:
        try:
            require_content_type(event, accepted_content_types)
        except ImageServiceError as exc:
            response = _as_proxy(error_response(exc))
        else:
            response = app.resolve(event, context)
        record.status = response["statusCode"]
        # Answers carry presigned URLs, task states or errors: no shared cache may keep them.
        headers = response.setdefault("multiValueHeaders", {})
        headers.setdefault("Cache-Control", ["no-store"])
        with_cors(headers, event.get("headers"))
        return response


def _as_proxy(response: Response[str]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "multiValueHeaders": {
            "Content-Type": [JSON],
            **{k: [v] for k, v in response.headers.items() if k != "Content-Type"},
        },
        "body": response.body,
        "isBase64Encoded": False,
    }
