"""What an API Gateway proxy event says about its body: the content type, whether the route takes it, and
the raw bytes."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from imagecore.errors import InvalidRequest, UnsupportedMediaType

JSON = "application/json"
MULTIPART = "multipart/form-data"


def headers_of(event: dict[str, Any]) -> dict[str, Any]:
    """The request headers with lower-case names (API Gateway keeps the client's case)."""
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}


def content_type_of(event: dict[str, Any]) -> str:
    return str(headers_of(event).get("content-type") or "")


def require_content_type(event: dict[str, Any], accepted: tuple[str, ...]) -> None:
    """Refuse a body of a type the route does not take, before validation reads it."""
    if (event.get("httpMethod") or "").upper() not in ("POST", "PUT", "PATCH"):
        return
    content_type = content_type_of(event).split(";", 1)[0].strip().lower()
    if not content_type and not event.get("body"):
        return  # empty body: validation says what is missing
    if content_type not in accepted:
        shown = content_type or "none"
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{shown}': this route takes {' or '.join(accepted)}.",
            param="Content-Type",
        )


def body_bytes(event: dict[str, Any]) -> bytes:
    """The request body as bytes (API Gateway base64-encodes the binary media types, multipart among them)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("The request body is not valid base64.", code="invalid_body") from None
    return str(body).encode("utf-8")
