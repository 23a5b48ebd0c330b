"""AWS's Lambda Web Adapter 1.x (github.com/aws/aws-lambda-web-adapter, v1.0.0) as its source shows it, for the
local STREAM emulation (``local.streaming``), with the response framing API Gateway documents for a streamed
Lambda proxy integration.

- **Settings** come from the function's environment in template.yaml, under their 1.x names
  (``AWS_LWA_PORT``, else ``PORT``; ``AWS_LWA_READINESS_CHECK_PATH``; ``AWS_LWA_READINESS_CHECK_HEALTHY_STATUS``,
  default 100-499; ``AWS_LWA_INVOKE_MODE``, ``buffered`` unless ``response_stream``).
- **Readiness**: before it takes the first invocation the adapter sends ``GET`` to the readiness path every 10 ms
  until the status is a healthy one (``check_init_health`` / ``is_web_ready``).
- **Request context**: the adapter re-serializes the REST event's ``requestContext`` from a typed struct
  (``ApiGatewayProxyRequestContext`` of aws_lambda_events, without its catch-all fields) into
  ``x-amzn-request-context``: the fields it models, ``null`` where absent, nothing else (``extendedRequestId``,
  ``identity.clientCert`` and the like are dropped); the authorizer object is passed whole, left out when empty.
- **Response**: lambda_http writes a JSON prelude ``{"statusCode", "headers", "cookies"}`` (``Set-Cookie`` moved
  to ``cookies``, ``transfer-encoding`` removed, ``content-type`` defaulting to ``application/octet-stream``;
  a repeated header is an array), then 8 NUL bytes, then the body as the app writes it. API Gateway reads the
  prelude (``statusCode``, ``headers``, ``multiValueHeaders``, ``cookies``; within the first 16 KB) and streams
  the rest to the client: ``read_prelude`` is that side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

DELIMITER = b"\x00" * 8
PRELUDE_LIMIT_BYTES = 16 * 1024  # API Gateway: the metadata must come within the first 16 KB
READINESS_INTERVAL_S = 0.01  # the adapter's FixedInterval::from_millis(10)
DEFAULT_HEALTHY = range(100, 500)

# ApiGatewayProxyRequestContext (aws_lambda_events, camelCase), in its field order; operationName only if present.
REST_CONTEXT_FIELDS = (
    "accountId",
    "resourceId",
    "operationName",
    "stage",
    "domainName",
    "domainPrefix",
    "requestId",
    "protocol",
    "identity",
    "resourcePath",
    "path",
    "authorizer",
    "httpMethod",
    "requestTime",
    "requestTimeEpoch",
    "apiId",
)
# ApiGatewayRequestIdentity
IDENTITY_FIELDS = (
    "cognitoIdentityPoolId",
    "accountId",
    "cognitoIdentityId",
    "caller",
    "apiKey",
    "apiKeyId",
    "accessKey",
    "sourceIp",
    "cognitoAuthenticationType",
    "cognitoAuthenticationProvider",
    "userArn",
    "userAgent",
    "user",
)


@dataclass(frozen=True)
class AdapterSettings:
    port: int = 8080
    readiness_path: str = "/"
    healthy_status: frozenset[int] = frozenset(DEFAULT_HEALTHY)
    invoke_mode: str = "buffered"

    @classmethod
    def from_environment(cls, variables: Mapping[str, Any]) -> AdapterSettings:
        """What the adapter reads from the function's environment (1.x names; ``PORT`` is the port's fallback)."""
        port = variables.get("AWS_LWA_PORT", variables.get("PORT", 8080))
        healthy = variables.get("AWS_LWA_READINESS_CHECK_HEALTHY_STATUS")
        mode = str(variables.get("AWS_LWA_INVOKE_MODE", "buffered")).lower()
        return cls(
            port=int(port),
            readiness_path=str(variables.get("AWS_LWA_READINESS_CHECK_PATH", "/")),
            healthy_status=parse_status_codes(str(healthy)) if healthy is not None else frozenset(DEFAULT_HEALTHY),
            invoke_mode="response_stream" if mode == "response_stream" else "buffered",
        )


def parse_status_codes(text: str) -> frozenset[int]:
    """``"200-399,404"`` -> those codes; a part that is not a code or a range is skipped (the adapter warns)."""
    codes: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            codes.update(range(int(low), int(high or low) + 1))
    return frozenset(codes)


def adapter_request_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The ``x-amzn-request-context`` the adapter sends for a REST event's ``requestContext``."""
    given = context.get("identity")
    identity: Mapping[str, Any] = given if isinstance(given, dict) else {}
    out: dict[str, Any] = {}
    for name in REST_CONTEXT_FIELDS:
        if name == "operationName" and context.get(name) is None:
            continue
        if name == "authorizer":
            if context.get("authorizer"):
                out[name] = dict(context["authorizer"])
            continue
        if name == "identity":
            out[name] = {field: identity.get(field) for field in IDENTITY_FIELDS}
        elif name == "requestTimeEpoch":
            out[name] = int(context.get(name) or 0)
        else:
            out[name] = context.get(name)
    return out


def stream_prelude(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """The prelude and its delimiter, as lambda_http frames an app's response in response_stream mode."""
    folded: dict[str, str | list[str]] = {}
    cookies: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "set-cookie":
            cookies.append(value)
        elif lowered != "transfer-encoding":
            present = folded.get(lowered)
            if present is None:
                folded[lowered] = value
            else:
                folded[lowered] = [*([present] if isinstance(present, str) else present), value]
    folded.setdefault("content-type", "application/octet-stream")
    prelude = {"statusCode": status, "headers": folded, "cookies": cookies}
    return json.dumps(prelude, separators=(",", ":")).encode("utf-8") + DELIMITER


class PreludeError(ValueError):
    """The function's stream did not start with a prelude API Gateway can read."""


@dataclass
class StreamedAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]


def read_prelude(chunks: Iterator[bytes]) -> StreamedAnswer:
    """API Gateway's side: the status and headers from the prelude, and the body that follows the delimiter."""
    buffered = b""
    while DELIMITER not in buffered:
        if len(buffered) > PRELUDE_LIMIT_BYTES:
            raise PreludeError("no prelude delimiter within the first 16 KB")
        try:
            buffered += next(chunks)
        except StopIteration:
            raise PreludeError("the stream ended before the prelude delimiter") from None
    prelude_bytes, _, rest = buffered.partition(DELIMITER)
    try:
        prelude = json.loads(prelude_bytes)
        status = int(prelude.get("statusCode", 200))
    except (ValueError, TypeError, AttributeError) as exc:
        raise PreludeError(f"the prelude is not a JSON object with a statusCode: {exc}") from None
    headers: list[tuple[str, str]] = []
    single = prelude.get("headers") or {}
    multi = prelude.get("multiValueHeaders") or {}
    for name, value in single.items():
        if name not in multi:
            headers.extend((name, str(v)) for v in (value if isinstance(value, list) else [value]))
    for name, values in multi.items():
        headers.extend((name, str(v)) for v in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in prelude.get("cookies") or [])

    def body() -> Iterator[bytes]:
        if rest:
            yield rest
        yield from chunks

    return StreamedAnswer(status, headers, body())


def wait_until_ready(base_url: str, settings: AdapterSettings, timeout_s: float) -> float:
    """GET the readiness path every 10 ms until a healthy status, as the adapter does before its first
    invocation; the seconds it took. ``timeout_s`` stands in for Lambda's init limit (the adapter never gives up)."""
    started = time.monotonic()
    with httpx.Client(timeout=1.0) as client:
        while True:
            try:
                status = client.get(base_url + settings.readiness_path).status_code
            except httpx.HTTPError:
                status = None
            if status in settings.healthy_status:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the app is not ready after {timeout_s:.0f} s (last status {status})")
            time.sleep(READINESS_INTERVAL_S)
