"""What API Gateway hands a Lambda proxy integration for one request: the event (headers, query, path
parameters, the ``requestContext``, the body, base64-encoded for a binary media type), and the ``$context``
values of the stage's access log line."""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request

from local.api_definition import Route
from local.context import ACCOUNT_ID

API_ID = "local"
STAGE = "local"


@dataclass
class Call:
    """One request on its way through the gateway, and what its access log line says of it."""

    request: Request
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    started: float = field(default_factory=time.monotonic)
    route: Route | None = None
    key_id: str | None = None
    error_kind: str | None = None
    integration_ms: int | None = None

    def access_values(self, status: int, length: int) -> dict[str, Any]:
        """The ``$context`` variables of the template's access log format."""
        request = self.request
        return {
            "requestId": self.request_id,
            "authorizer.keyId": self.key_id,
            "identity.sourceIp": request.remote_addr,
            "identity.userAgent": request.user_agent.string,
            "requestTime": request_time(self.started_ms),
            "httpMethod": request.method,
            "resourcePath": self.route.path if self.route else None,
            "status": status,
            "responseLatency": round((time.monotonic() - self.started) * 1000),
            "integrationLatency": self.integration_ms,
            "responseLength": length,
            "error.responseType": self.error_kind,
        }


def proxy_event(
    call: Call, route: Route, params: dict[str, str], binary_media_types: tuple[str, ...]
) -> dict[str, Any]:
    """The Lambda proxy event API Gateway sends for the request (a binary media type's body base64-encoded)."""
    request = call.request
    body = request.get_data()
    headers, multi_headers = _headers(request)
    content_type = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    binary = content_type in binary_media_types
    query = dict(request.args.items())
    multi_query = {k: request.args.getlist(k) for k in request.args}
    return {
        "resource": route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": _request_context(call, route),
        "body": (base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8", "replace"))
        if body
        else None,
        "isBase64Encoded": bool(body) and binary,
    }


def _headers(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    # API Gateway adds these; the functions build absolute URLs (a task's poll_url) from them.
    for name, value in (("X-Forwarded-Proto", request.scheme), ("X-Forwarded-For", request.remote_addr or "")):
        if name not in headers:
            headers[name] = value
            multi_headers[name] = [value]
    return headers, multi_headers


def _request_context(call: Call, route: Route) -> dict[str, Any]:
    request = call.request
    return {
        "resourceId": secrets.token_hex(3),
        "resourcePath": route.path,
        "httpMethod": request.method,
        "extendedRequestId": secrets.token_urlsafe(12),
        "requestTime": request_time(call.started_ms),
        # Locally the stage is not part of the URL, so the full path is the request's own.
        "path": request.path,
        "accountId": ACCOUNT_ID,
        "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "stage": STAGE,
        "domainPrefix": "localhost",
        "requestTimeEpoch": call.started_ms,
        "requestId": call.request_id,
        "identity": {"sourceIp": request.remote_addr, "userAgent": request.user_agent.string},
        "domainName": request.host,
        "apiId": API_ID,
    }


def request_time(epoch_ms: int) -> str:
    """API Gateway's ``requestTime``: CLF, UTC."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
