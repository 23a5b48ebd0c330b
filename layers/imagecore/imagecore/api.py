"""The HTTP edge shared by every function: the resolver, the one place errors become OpenAI-style
responses, content-type checks, and what a route may know about its caller and its time budget."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError, ResponseValidationError
from aws_lambda_powertools.utilities.typing import LambdaContext

from imagecore.errors import (
    ImageServiceError,
    InvalidRequest,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamFailed,
    UpstreamRejected,
    UpstreamTimeout,
)
from imagecore.jsonbody import parse_json_body
from imagecore.observability import current_record, logger, request_record
from imagecore.upstream import Deadline

JSON = "application/json"
MULTIPART = "multipart/form-data"

# OpenAI's own wording and codes for the common validation failures.
_PYDANTIC_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "literal_error": "invalid_value",
    "enum": "invalid_value",
    "string_type": "invalid_type",
    "int_type": "invalid_type",
    "bool_type": "invalid_type",
    "model_attributes_type": "invalid_type",
    "dict_type": "invalid_type",
}


def create_resolver() -> APIGatewayRestResolver:
    """A REST resolver with pydantic validation whose every error answers in the OpenAI shape."""
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json_body)

    @app.exception_handler(RequestValidationError)
    def _validation_error(exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(ImageServiceError)
    def _service_error(exc: ImageServiceError) -> Response:
        return error_response(exc)

    @app.not_found
    def _not_found(_exc: NotFoundError) -> Response:
        event = app.current_event
        return error_response(NotFound(f"Unknown route: {event.http_method} {event.path}", code="unknown_route"))

    @app.exception_handler(ResponseValidationError)
    def _bad_response(exc: ResponseValidationError) -> Response:
        logger.error("response failed its own schema", extra={"errors": _safe_errors(exc.errors())})
        return _internal_error()

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return _internal_error()

    return app


def error_response(error: ImageServiceError) -> Response:
    record = current_record()
    record.status = error.status
    record.fail(_outcome_of(error), error.code)
    return Response(
        status_code=error.status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(error.to_body()),
        headers={**error.headers},
    )


def _internal_error() -> Response:
    error = ImageServiceError("The image service failed unexpectedly. Try again later.", code="internal_error")
    return error_response(error)


def _outcome_of(error: ImageServiceError) -> str:
    if isinstance(error, UpstreamRejected):
        return "upstream_rejected"
    if isinstance(error, UpstreamFailed | UpstreamTimeout):
        return "upstream_failed"
    return "rejected" if error.status < 500 else "error"


def validation_error(errors: Iterable[dict[str, Any]]) -> ImageServiceError:
    """Turn pydantic/Powertools validation errors into one OpenAI-style error naming the first bad field."""
    errors = list(errors)
    first = errors[0] if errors else {"type": "value_error", "loc": ("body",), "msg": "invalid request"}
    kind = first.get("type", "")
    loc = [part for part in first.get("loc", ()) if part != "body"]
    param = _param_path(loc)
    if kind == "unsupported_content_type":
        return UnsupportedMediaType(
            "Content-Type must be application/json for this route "
            "(for example: curl -H 'Content-Type: application/json').",
        )
    if kind == "json_invalid":
        return InvalidRequest(
            "The request body is not valid JSON. Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        )
    if param is None:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid value')}."
    code = _PYDANTIC_CODES.get(kind, "invalid_value")
    return InvalidRequest(message, param=param, code=code)


def _param_path(loc: list[Any]) -> str | None:
    """('images', 0, 'upload_id') -> 'images[0].upload_id', the way the fields are written in requests."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str):
            path += f".{part}" if path else part
    return path or None


def _safe_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": e.get("type"), "loc": e.get("loc")} for e in errors]


def require_content_type(event: dict[str, Any], accepted: tuple[str, ...]) -> None:
    """Refuse a body of a type the route does not take, before validation reads it; media types are
    case-insensitive (RFC 9110), so the header is rewritten in lower case for the parsers that compare it as
    written, and a JSON body that arrived base64-encoded is decoded here (it must be UTF-8)."""
    if (event.get("httpMethod") or "").upper() not in ("POST", "PUT", "PATCH"):
        return
    media_type, _, parameters = str(content_type_of(event)).partition(";")
    content_type = media_type.strip().lower()
    if not content_type and not event.get("body"):
        return  # empty body: validation says what is missing
    if content_type not in accepted:
        shown = content_type[:100] or "none"
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{shown}': this route takes {' or '.join(accepted)}.",
            param="Content-Type",
        )
    _set_content_type(event, content_type + (f";{parameters}" if parameters else ""))
    if content_type == JSON and event.get("isBase64Encoded"):
        try:
            event["body"] = body_bytes(event).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("The request body is not UTF-8 text.", code="invalid_json") from None
        event["isBase64Encoded"] = False


def _set_content_type(event: dict[str, Any], value: str) -> None:
    for field in ("headers", "multiValueHeaders"):
        headers = event.get(field) or {}
        for name in [name for name in headers if name.lower() == "content-type"]:
            del headers[name]
        if event.get(field) is not None:
            headers["Content-Type"] = value if field == "headers" else [value]


def body_bytes(event: dict[str, Any]) -> bytes:
    """The request body as bytes (API Gateway base64-encodes the binary media types, multipart among them)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("The request body is not valid base64.", code="invalid_body") from None
    return body.encode("utf-8")


def content_type_of(event: dict[str, Any]) -> str:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return str(headers.get("content-type") or "")


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the authorizer established it."""

    key_id: str


def caller_of(event: dict[str, Any]) -> Caller:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    key_id = authorizer.get("keyId")
    if not key_id:
        # Only reachable if a route is deployed without the authorizer: fail closed.
        raise Unauthorized("The request was not authenticated.", code="unauthenticated")
    return Caller(key_id=str(key_id))


def request_deadline(
    event: dict[str, Any],
    context: LambdaContext,
    *,
    integration_timeout_ms: int,
    margin_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Deadline:
    """When the upstream call must be over: before the Lambda times out and before API Gateway gives up
    on the request (its clock started at ``requestTimeEpoch``), minus the time needed to store and answer."""
    remaining = context.get_remaining_time_in_millis() / 1000
    started_ms = (event.get("requestContext") or {}).get("requestTimeEpoch")
    if isinstance(started_ms, int | float) and started_ms > 0:
        api_remaining = (started_ms + integration_timeout_ms) / 1000 - wall_clock()
        remaining = min(remaining, api_remaining)
    return Deadline(clock() + remaining - margin_seconds, clock)


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?\Z")
_BASE_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]{1,128}){0,8}\Z")


def poll_url(event: dict[str, Any], task_id: str, *, scheme: str = "https") -> str:
    """Where the caller polls a task, on the host and base path it called (stage or custom-domain mapping).

    Built from trusted values only: the scheme is the deployment's (API Gateway serves only HTTPS; the local
    stack's configuration says http), never ``X-Forwarded-Proto`` as sent; the host is API Gateway's
    ``domainName`` and the base path its ``requestContext.path``, each used only when it is a plain host or
    path. Otherwise the URL is relative to the host the caller used, which is still where the task is."""
    if scheme not in ("https", "http"):
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    context = event.get("requestContext") or {}
    host = str(context.get("domainName") or "")
    full_path, route_path = str(context.get("path") or ""), str(event.get("path") or "")
    base = full_path[: -len(route_path)] if route_path and full_path.endswith(route_path) else ""
    if not _BASE_PATH.match(base) or ".." in base:
        base = ""
    path = f"{base}/v1/images/tasks/{task_id}"
    return f"{scheme}://{host}{path}" if _HOST.match(host) else path


def serve(
    app: APIGatewayRestResolver,
    event: dict[str, Any],
    context: LambdaContext,
    *,
    operation: str,
    accepted_content_types: tuple[str, ...] = (JSON,),
) -> dict[str, Any]:
    """Resolve one API Gateway event, writing exactly one request record."""
    with request_record(operation, event, getattr(context, "aws_request_id", None)) as record:
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
        return response


def _as_proxy(response: Response) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "multiValueHeaders": {
            "Content-Type": [JSON],
            **{k: [v] for k, v in response.headers.items() if k != "Content-Type"},
        },
        "body": response.body,
        "isBase64Encoded": False,
    }
