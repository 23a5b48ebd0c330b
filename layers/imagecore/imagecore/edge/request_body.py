"""What an API Gateway proxy event says about its body: the content type, whether the route takes it, and
the raw bytes; and whether its query names only parameters the route takes."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from imagecore.domain.errors import InvalidRequest, UnsupportedMediaType

JSON = "application/json"
MULTIPART = "multipart/form-data"


def headers_of(event: dict[str, Any]) -> dict[str, Any]:
    """The request headers with lower-case names (API Gateway keeps the client's case)."""
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}


def content_type_of(event: dict[str, Any]) -> str:
    return str(headers_of(event).get("content-type") or "")


def require_content_type(event: dict[str, Any], accepted: tuple[str, ...]) -> None:
    """Refuse a body of a type the route does not take, before validation reads it. Media types are
    case-insensitive (RFC 9110), so the header is rewritten in lower case for the parsers that compare it as
    written; a JSON body that arrived base64-encoded is decoded here, once (it must be UTF-8)."""
    if (event.get("httpMethod") or "").upper() not in ("POST", "PUT", "PATCH"):
        return
    media_type, _, parameters = content_type_of(event).partition(";")
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
        headers = event.get(field)
        if headers is None:
            continue
        for name in [name for name in headers if name.lower() == "content-type"]:
            del headers[name]
        headers["Content-Type"] = value if field == "headers" else [value]


def body_bytes(event: dict[str, Any]) -> bytes:
    """The request body as bytes (API Gateway base64-encodes the binary media types, multipart among them)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("The request body is not valid base64.", code="invalid_body") from None
    return str(body).encode("utf-8")


def refuse_unknown_query_parameters(event: dict[str, Any], *, known: tuple[str, ...]) -> None:
    """A query parameter the route does not take is a 400, as an unknown body field is (OpenAI's wording)."""
    for name in event.get("multiValueQueryStringParameters") or event.get("queryStringParameters") or {}:
        if name not in known:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {name[:64]}", param=name[:64], code="unknown_parameter"
            )
