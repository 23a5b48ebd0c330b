"""What the Lambda Web Adapter forwards, turned back into what a Lambda handler takes: the REST API proxy event
(from the HTTP request and its x-amzn-request-context header) and the Lambda context (from x-amzn-lambda-
context)."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"


_BINARY_TYPES = ("multipart/form-data",)


@dataclass
class AdapterLambdaContext:
    """The Lambda context the adapter forwards (``x-amzn-lambda-context``), with what Powertools reads."""

    aws_request_id: str
    deadline_ms: int
    invoked_function_arn: str = ""
    function_name: str = ""
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 0
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))

    @classmethod
    def from_header(cls, value: str | None) -> AdapterLambdaContext:
        try:
            parsed = json.loads(value) if value else {}
        except ValueError:
            parsed = {}
        data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        config = data.get("env_config")
        env: dict[str, Any] = config if isinstance(config, dict) else {}
        deadline = data.get("deadline")
        return cls(
            aws_request_id=str(data.get("request_id") or uuid.uuid4()),
            # No deadline forwarded: the function's own Timeout is not known here, 15 minutes is the most.
            deadline_ms=int(deadline) if isinstance(deadline, int | float) else int(time.time() * 1000) + 900_000,
            invoked_function_arn=str(data.get("invoked_function_arn") or ""),
            function_name=str(env.get("function_name") or os.getenv("AWS_LAMBDA_FUNCTION_NAME", "")),
            function_version=str(env.get("version") or "$LATEST"),
            memory_limit_in_mb=int(env.get("memory") or 0),
            log_group_name=str(env.get("log_group") or ""),
            log_stream_name=str(env.get("log_stream") or ""),
        )


def proxy_event(
    method: str, path: str, query: Iterable[tuple[str, str]], headers: Iterable[tuple[str, str]], body: bytes
) -> dict[str, Any]:
    """The REST API proxy event API Gateway sent the adapter, rebuilt from the HTTP request it made of it."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    request_context: dict[str, Any] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered == REQUEST_CONTEXT_HEADER:
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = {}
            request_context = parsed if isinstance(parsed, dict) else {}
            continue
        if lowered == LAMBDA_CONTEXT_HEADER:
            continue
        single[name] = value
        multi.setdefault(name, []).append(value)
    query_pairs = list(query)
    content_type = next((v for k, v in single.items() if k.lower() == "content-type"), "")
    binary = content_type.split(";", 1)[0].strip().lower() in _BINARY_TYPES
    text_body: str | None = None
    if body:
        text_body = base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8", "replace")
    request_context.setdefault("httpMethod", method)
    request_context.setdefault("path", path)
    return {
        "resource": request_context.get("resourcePath") or path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": dict(query_pairs) or None,
        "multiValueQueryStringParameters": _multi(query_pairs) or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": text_body,
        "isBase64Encoded": bool(body) and binary,
    }


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped
