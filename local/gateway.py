"""API Gateway (REST, Lambda proxy) emulation for the local stack.

Routes, authorizers, binary media types, function timeouts and gateway responses are read from
``template.yaml``, so the local stack serves what would be deployed. Each HTTP request becomes the proxy
event API Gateway would send (multipart bodies base64-encoded), goes through the REQUEST authorizer, then
to the function's real ``lambda_handler``; the limits that matter are enforced the same way: the 10 MB
request cap, Lambda's 6 MB payloads and the integration timeout.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from werkzeug.wrappers import Request, Response

from imagecore.observability import logger

API_REQUEST_LIMIT_BYTES = 10 * 1024 * 1024
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
ACCOUNT_ID = "123456789012"
API_ID = "local"
STAGE = "local"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


# --- template -----------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, !GetAtt ...) kept as {"Ref": ...} etc."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    code_uri: str
    handler: str
    timeout_s: float
    authorized: bool
    pattern: re.Pattern[str]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in (method, "ANY"):
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    body: str


@dataclass(frozen=True)
class ApiDefinition:
    routes: list[Route]
    authorizer: tuple[str, str] | None  # (code_uri, handler) of the default REQUEST authorizer
    binary_media_types: tuple[str, ...]
    gateway_responses: dict[str, GatewayResponse]


def _path_pattern(path: str) -> re.Pattern[str]:
    """``/v1/images/tasks/{task_id}`` -> a regex with a named group per path parameter."""
    parts = re.split(r"\{(\w+)\+?\}", path)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(regex)


def _default(value: Any, parameters: dict[str, Any]) -> Any:
    """Resolve a parameter reference to its default (enough for the values the emulation needs)."""
    if isinstance(value, dict) and "Ref" in value:
        return parameters.get(value["Ref"], {}).get("Default")
    return value


def read_api(template: dict[str, Any]) -> ApiDefinition:
    resources = template.get("Resources", {})
    parameters = template.get("Parameters", {})
    globals_fn = template.get("Globals", {}).get("Function", {})
    routes: list[Route] = []
    authorizer = None
    binary: tuple[str, ...] = ()
    responses: dict[str, GatewayResponse] = {}
    for name, resource in resources.items():
        props = resource.get("Properties", {}) or {}
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Api":
            binary = tuple(t.replace("~1", "/") for t in props.get("BinaryMediaTypes", []))
            auth = props.get("Auth", {}) or {}
            default = auth.get("DefaultAuthorizer")
            if default:
                arn = auth["Authorizers"][default]["FunctionArn"]
                authorizer_name = arn["Fn::GetAtt"][0]
                fn = resources[authorizer_name]["Properties"]
                authorizer = (fn["CodeUri"], fn.get("Handler", globals_fn.get("Handler")))
            for kind_name, response in (props.get("GatewayResponses") or {}).items():
                responses[kind_name] = _gateway_response(response, parameters)
        elif kind == "AWS::ApiGateway::GatewayResponse":
            responses[props["ResponseType"]] = _gateway_response(props, parameters)
        elif kind == "AWS::Serverless::Function":
            timeout = float(_default(props.get("Timeout", globals_fn.get("Timeout", 3)), parameters))
            for event in (props.get("Events") or {}).values():
                if event.get("Type") != "Api":
                    continue
                ev = event["Properties"]
                auth = (ev.get("Auth") or {}).get("Authorizer")
                routes.append(
                    Route(
                        method=ev["Method"].upper(),
                        path=ev["Path"],
                        function=name,
                        code_uri=props["CodeUri"],
                        handler=props.get("Handler", globals_fn.get("Handler")),
                        timeout_s=timeout,
                        authorized=auth != "NONE",
                        pattern=_path_pattern(ev["Path"]),
                    )
                )
    return ApiDefinition(routes, authorizer, binary, responses)


def _gateway_response(response: dict[str, Any], parameters: dict[str, Any]) -> GatewayResponse:
    templates = response.get("ResponseTemplates") or {}
    body = templates.get("application/json") or next(iter(templates.values()), "")
    return GatewayResponse(int(_default(response.get("StatusCode", 500), parameters)), body)


# --- functions ----------------------------------------------------------------------------------------------
def load_handler(root: Path, code_uri: str, handler: str) -> Handler:
    """Import ``functions/<name>/app.py`` as ``functions.<name>.app`` and return its handler."""
    module_file, _, attribute = handler.rpartition(".")
    package = ".".join(Path(code_uri.strip("/")).parts)
    module = importlib.import_module(f"{package}.{module_file}")
    return getattr(module, attribute)


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int
    timeout_s: float
    aws_request_id: str
    started: float

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def _context(function_name: str, timeout_s: float) -> LambdaContext:
    return LambdaContext(function_name, 1024, timeout_s, str(uuid.uuid4()), time.monotonic())


# --- authorizer policies -----------------------------------------------------------------------------------
def policy_allows(statements: list[dict[str, Any]], method_arn: str) -> bool:
    """IAM's rule for an authorizer's policy: some Allow statement names the method ARN (``*`` and ``?`` are
    wildcards) and no Deny statement does."""

    def names(statement: dict[str, Any]) -> bool:
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        return any(fnmatch.fnmatchcase(method_arn, str(resource)) for resource in resources)

    if any(s.get("Effect") == "Deny" and names(s) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and names(s) for s in statements)


# --- the gateway --------------------------------------------------------------------------------------------
class LocalApiGateway:
    """A WSGI app: HTTP in, proxy event to the function, proxy result back to HTTP."""

    def __init__(self, root: Path, template_path: Path, *, integration_timeout_ms: int) -> None:
        self.root = root
        self.api = read_api(load_template(template_path))
        self.integration_timeout_s = integration_timeout_ms / 1000
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda")

    def handler(self, code_uri: str, handler: str) -> Handler:
        key = f"{code_uri}:{handler}"
        with self._lock:
            if key not in self._handlers:
                self._handlers[key] = load_handler(self.root, code_uri, handler)
            return self._handlers[key]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self.respond(request)(environ, start_response)

    def respond(self, request: Request) -> Response:
        started_ms = int(time.time() * 1000)
        request_id = str(uuid.uuid4())
        content_length = request.content_length or 0
        if content_length > API_REQUEST_LIMIT_BYTES:
            return self._gateway("REQUEST_TOO_LARGE", request_id, 413, "Request Too Long")
        path = request.path
        for route in self.api.routes:
            params = route.match(request.method, path)
            if params is not None:
                break
        else:
            known = any(r.pattern.fullmatch(path) for r in self.api.routes)
            # API Gateway answers an unknown route with 403 MISSING_AUTHENTICATION_TOKEN.
            return self._gateway(
                "MISSING_AUTHENTICATION_TOKEN" if not known else "DEFAULT_4XX",
                request_id,
                403 if not known else 405,
                "Missing Authentication Token",
            )
        body = request.get_data()
        event = self._event(request, route, params, body, request_id, started_ms)
        if route.authorized and self.api.authorizer:
            denied = self._authorize(event, route)
            if denied is not None:
                return denied
        if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT_BYTES:
            return self._gateway("REQUEST_TOO_LARGE", request_id, 413, "Request Too Long")
        return self._invoke(route, event, request_id, started_ms)

    def _event(
        self,
        request: Request,
        route: Route,
        params: dict[str, str],
        body: bytes,
        request_id: str,
        started_ms: int,
    ) -> dict[str, Any]:
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
        content_type = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        binary = content_type in self.api.binary_media_types
        query = {k: v for k, v in request.args.items()}
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
            "requestContext": {
                "resourceId": secrets.token_hex(3),
                "resourcePath": route.path,
                "httpMethod": request.method,
                "extendedRequestId": secrets.token_urlsafe(12),
                "requestTime": datetime.fromtimestamp(started_ms / 1000, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                # Locally the stage is not part of the URL, so the full path is the request's own.
                "path": request.path,
                "accountId": ACCOUNT_ID,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "stage": STAGE,
                "domainPrefix": "localhost",
                "requestTimeEpoch": started_ms,
                "requestId": request_id,
                "identity": {"sourceIp": request.remote_addr, "userAgent": request.user_agent.string},
                "domainName": request.host,
                "apiId": API_ID,
            },
            "body": (base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8", "replace"))
            if body
            else None,
            "isBase64Encoded": bool(body) and binary,
        }

    def _authorize(self, event: dict[str, Any], route: Route) -> Response | None:
        assert self.api.authorizer is not None
        code_uri, handler = self.api.authorizer
        authorizer_event = {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:us-east-1:{ACCOUNT_ID}:{API_ID}/{STAGE}/{route.method}{event['path']}",
            **{k: event[k] for k in ("resource", "path", "httpMethod", "headers", "multiValueHeaders")},
            **{k: event[k] for k in ("queryStringParameters", "multiValueQueryStringParameters", "pathParameters")},
            "stageVariables": None,
            "requestContext": event["requestContext"],
        }
        request_id = event["requestContext"]["requestId"]
        try:
            result = self.handler(code_uri, handler)(authorizer_event, _context("AuthorizerFunction", 10))
        except Exception as exc:
            if str(exc) == "Unauthorized":
                return self._gateway("UNAUTHORIZED", request_id, 401, "Unauthorized")
            logger.exception("authorizer failed")
            return self._gateway("AUTHORIZER_FAILURE", request_id, 500, "Authorizer error")
        statements = result.get("policyDocument", {}).get("Statement", [])
        if not policy_allows(statements, authorizer_event["methodArn"]):
            return self._gateway("ACCESS_DENIED", request_id, 403, "Access denied")
        event["requestContext"]["authorizer"] = {
            "principalId": result.get("principalId"),
            "integrationLatency": 0,
            **{k: str(v) for k, v in (result.get("context") or {}).items()},
        }
        return None

    def _invoke(self, route: Route, event: dict[str, Any], request_id: str, started_ms: int) -> Response:
        handler = self.handler(route.code_uri, route.handler)
        context = _context(route.function, route.timeout_s)
        future = self._pool.submit(handler, event, context)
        waited = time.time() - started_ms / 1000
        try:
            result = future.result(timeout=max(0.0, min(self.integration_timeout_s, route.timeout_s) - waited))
        except FutureTimeout:
            # The function goes on (as in AWS); the caller gets API Gateway's timeout answer.
            return self._gateway("INTEGRATION_TIMEOUT", request_id, 504, "Endpoint request timed out")
        except Exception:
            logger.exception("function failed", extra={"function": route.function})
            return self._gateway("DEFAULT_5XX", request_id, 502, "Internal server error")
        if len(json.dumps(result)) > LAMBDA_PAYLOAD_LIMIT_BYTES:
            logger.error("function response over the 6 MB Lambda limit", extra={"function": route.function})
            return self._gateway("DEFAULT_5XX", request_id, 502, "Internal server error")
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        response = Response(data, status=int(result.get("statusCode", 200)))
        for name, value in (result.get("headers") or {}).items():
            response.headers[name] = str(value)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response.headers.remove(name)
            for value in values:
                response.headers.add(name, str(value))
        response.headers["x-amzn-RequestId"] = request_id
        return response

    def _gateway(self, kind: str, request_id: str, status: int, message: str) -> Response:
        """API Gateway's own answer, with the template's customised body when it has one."""
        template = self.api.gateway_responses.get(kind)
        fallback_kind = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        template = template or self.api.gateway_responses.get(fallback_kind)
        status = template.status if template and kind in self.api.gateway_responses else status
        body = template.body if template else json.dumps({"message": message})
        body = (
            body.replace("$context.error.messageString", json.dumps(message))
            .replace("$context.error.message", message)
            .replace("$context.requestId", request_id)
        )
        response = Response(body, status=status, content_type="application/json")
        response.headers["x-amzn-RequestId"] = request_id
        response.headers["x-amzn-ErrorType"] = kind
        return response
