"""What the edit routes, synchronous and async, share at the HTTP edge: their documented errors, and a
multipart body refused when it is over what API Gateway and Lambda carry."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from imagecore.domain.errors import PayloadTooLarge
from imagecore.edge.request_body import body_bytes
from imagecore.edge.resolver import ERROR_CONTENT, OVER_LIMITS
from imagecore.platform.settings import EditLimits

EDIT_ERRORS: dict[int, OpenAPIResponse] = {
    400: {"description": "Invalid request or images, or refused by the upstream's policy", "content": ERROR_CONTENT},
    404: {"description": "An upload id this key does not own", "content": ERROR_CONTENT},
    413: {"description": "Body too large for API Gateway + Lambda: use /v1/uploads", "content": ERROR_CONTENT},
    415: {"description": "Neither multipart/form-data nor application/json", "content": ERROR_CONTENT},
    429: OVER_LIMITS,
}


def multipart_body(event: dict[str, Any], settings: EditLimits) -> bytes:
    """The request's multipart body (413 past what API Gateway and Lambda take: the uploads route is the way)."""
    body = body_bytes(event)
    if len(body) > settings.max_request_bytes:
        raise PayloadTooLarge(
            f"The request body is {len(body) / 1_000_000:.1f} MB; API Gateway and Lambda take about "
            f"{settings.max_request_bytes / 1_000_000:.1f} MB of multipart. Upload each image with POST /v1/uploads "
            'and send {"images": [{"upload_id": ...}], "prompt": ...} as JSON to /v1/images/edits instead.',
        )
    return body
