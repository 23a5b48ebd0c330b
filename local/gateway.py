"""API Gateway (REST, Lambda proxy) emulation for the local stack.

Routes, authorizers, binary media types, integration and function timeouts and gateway responses are read from
``template.yaml`` (``local.api_definition``), so the local stack serves what would be deployed. Each HTTP
request becomes the proxy event API Gateway would send (``local.proxy_event``), goes through the REQUEST
authorizer, then to the
function's real ``lambda_handler``. API Gateway's own answers are the template's gateway responses, and the
limits that matter are enforced the same way: the 10 MB request cap, Lambda's 6 MB payloads, the integration
timeout, and a route that does not exist for the method (403 MISSING_AUTHENTICATION_TOKEN). Each request can
write the stage's access log line (``local.access_log``, in the template's format).

A request goes through ``respond``: match the route, build the event, authorize, then ``integrate`` (invoke
the function under the route's timeout) and ``proxy_response`` (turn its result into HTTP). A route with
another integration (a streamed one) gets its own branch in ``respond`` next to those two.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from imagecore.platform.observability import logger
from local.access_log import AccessLog, access_log_format
from local.api_definition import REQUEST_HEADER, ApiDefinition, Route, policy_allows, read_api
from local.context import ACCOUNT_ID, LambdaContext
from local.lambda_concurrency import THROTTLED_INTEGRATION, THROTTLED_STATUS, ReservedConcurrency
from local.lambda_runtime import ExecutionEnvironments, Handler, invoke, load_handler, new_context
from local.plans import UsagePlans
from local.proxy_event import API_ID, STAGE, Call, proxy_event
from local.template import load_template

__all__ = ["ApiDefinition", "Handler", "LambdaContext", "LocalApiGateway", "load_handler", "load_template"]

API_REQUEST_LIMIT_BYTES = 10 * 1024 * 1024
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024

HandlerLoader = Callable[[str, str], Handler]


def _nothing() -> None:
    pass


# --- the gateway --------------------------------------------------------------------------------------------
class TokenBucket:
    """API Gateway's stage throttle: ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class GatewayError(Exception):
    """API Gateway answers itself (a gateway response of ``kind``) instead of the integration."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.kind, self.status, self.message = kind, status, message


class LocalApiGateway:
    """A WSGI app: HTTP in, proxy event to the function, proxy result back to HTTP."""

    def __init__(
        self,
        root: Path,
        template_path: Path,
        *,
        parameters: dict[str, Any] | None = None,
        load: HandlerLoader | None = None,
        throttling: bool = False,
        stream_idle_limit_s: float | None = None,
        plans: UsagePlans | None = None,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        """``parameters`` override the template's parameter defaults; ``load`` imports a handler (code_uri,
        handler); ``throttling`` applies the stage's rate and burst limits (off by default: local tests and
        benchmarks would otherwise be paced like one deployed stage); ``stream_idle_limit_s`` replaces the idle
        limit of streamed responses (API Gateway's for the template's endpoint type); ``plans``: the usage plans
        and the keys on them (None: no per-key throttle or quota); ``access_log``: where the access log lines
        go, in the template's ``AccessLogSetting`` format (None: none written)."""
        from local.streaming import StreamedIntegrations, idle_limit_of

        self.plans = plans
        self.root = root
        template = load_template(template_path)
        self.api = read_api(template, parameters)
        log_format = access_log_format(template)
        self.access_log = AccessLog(log_format, access_log) if access_log and log_format else None
        self.streams = StreamedIntegrations(root, stream_idle_limit_s or idle_limit_of(template))
        limits = self.api.throttle if throttling else None
        self._throttle = TokenBucket(*limits) if limits else None
        self._load = load
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda")
        self.concurrency = ReservedConcurrency()
        # The functions' own processes, one invocation at a time each, as Lambda runs them (unless ``load``
        # hands the handlers in as functions of this process).
        self.environments = ExecutionEnvironments()

    def run(
        self, code_uri: str, handler: str, event: Any, context: LambdaContext, on_start: Callable[[], None] = _nothing
    ) -> Any:
        """One invocation of the function (``code_uri``, ``handler``): in an execution environment of its own;
        ``on_start`` is called when the function starts on it (after the environment's init, if it needed one)."""
        if self._load is None:
            return self.environments.invoke(code_uri, handler, event, context, on_start)
        key = f"{code_uri}:{handler}"
        with self._lock:
            if key not in self._handlers:
                self._handlers[key] = self._load(code_uri, handler)
        on_start()
        return invoke(self._handlers[key], event, context)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.respond(Request(environ))(environ, start_response)

    def respond(self, request: Request) -> Response:
        call = Call(request)
        response = self._respond(call)
        if self.access_log is not None:
            self._log_access(call, response, self.access_log)
        return response

    @staticmethod
    def _log_access(call: Call, response: Response, log: AccessLog) -> None:
        """The request's access log line: when its answer is known, or for a streamed one when it has ended."""
        if not response.is_streamed:
            log.record(call.access_values(response.status_code, len(response.get_data())))
            return

        # A streamed answer is passed through as it is (no close callbacks): the line is written when the
        # server has read it to its end, or closed it.
        def counted(chunks: Iterable[bytes | str]) -> Iterator[bytes]:
            sent = 0
            try:
                for chunk in chunks:
                    data = chunk.encode() if isinstance(chunk, str) else chunk
                    sent += len(data)
                    yield data
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                log.record(call.access_values(response.status_code, sent))

        response.response = counted(response.response)

    def _respond(self, call: Call) -> Response:
        request = call.request
        try:
            if (request.content_length or 0) > API_REQUEST_LIMIT_BYTES:
                raise GatewayError("REQUEST_TOO_LARGE", 413, "Request Too Long")
            route, params = self._route(request)
            call.route = route
            if self._throttle is not None and not self._throttle.take():
                raise GatewayError("THROTTLED", 429, "Too Many Requests")
            event = proxy_event(call, route, params, self.api.binary_media_types)
            if route.authorized and self.api.authorizer:
                self._authorize(event, route)
                call.key_id = event["requestContext"]["authorizer"].get("keyId")
                self._admit(event)
            if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT_BYTES:
                raise GatewayError("REQUEST_TOO_LARGE", 413, "Request Too Long")
            if not self.concurrency.enter(route.function, route.reserved):
                # Lambda throttles the invocation: API Gateway answers its integration failure.
                raise GatewayError(THROTTLED_INTEGRATION, THROTTLED_STATUS, "Internal server error")
            if route.streamed:
                return self._relayed(route, event, call)
            result = self.integrate(route, event, call)
            return self.proxy_response(result, call)
        except GatewayError as error:
            call.error_kind = error.kind
            return self.gateway_response(error.kind, call.request_id, error.status, error.message, request)

    def _route(self, request: Request) -> tuple[Route, dict[str, str]]:
        for route in self.api.routes:
            params = route.match(request.method, request.path)
            if params is not None:
                return route, params
        # API Gateway answers the same for an unknown path and for a method the path does not have.
        raise GatewayError("MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token")

    def _authorize(self, event: dict[str, Any], route: Route) -> None:
        """Run the REQUEST authorizer; on Allow its context goes into the event, else a gateway response."""
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
        try:
            result = self.run(code_uri, handler, authorizer_event, new_context("AuthorizerFunction", 10))
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise GatewayError("UNAUTHORIZED", 401, "Unauthorized") from exc
            logger.exception("authorizer failed")
            raise GatewayError("AUTHORIZER_FAILURE", 500, "Authorizer error") from exc
        statements = (result.get("policyDocument") or {}).get("Statement", [])
        if not policy_allows(statements, authorizer_event["methodArn"]):
            raise GatewayError("ACCESS_DENIED", 403, "User is not authorized to access this resource")
        if result.get("usageIdentifierKey"):  # ApiKeySourceType AUTHORIZER: the key the usage plan counts
            event["requestContext"]["identity"]["apiKey"] = str(result["usageIdentifierKey"])
        event["requestContext"]["authorizer"] = {
            "principalId": result.get("principalId"),
            "integrationLatency": 0,
            **{k: str(v) for k, v in (result.get("context") or {}).items()},
        }

    def _admit(self, event: dict[str, Any]) -> None:
        """The usage plan of the key the authorizer named: its throttle, then its request quota."""
        refused = self.plans.admit(event["requestContext"]["identity"].get("apiKey")) if self.plans else None
        if refused is not None:
            raise GatewayError(refused, 429, "Too Many Requests" if refused == "THROTTLED" else "Limit Exceeded")

    def integrate(self, route: Route, event: dict[str, Any], call: Call) -> dict[str, Any]:
        """Invoke the route's function and wait for it as long as API Gateway would (its integration timeout,
        counted from the request's arrival, or the function's own timeout if that is shorter)."""
        context = new_context(route.function, route.timeout_s)
        called = time.monotonic()
        started = threading.Event()
        try:
            future = self._pool.submit(self.run, route.code_uri, route.handler, event, context, started.set)
        except BaseException:
            self.concurrency.leave(route.function)
            raise
        # The invocation holds its slot until the function is done, even when API Gateway stops waiting.
        future.add_done_callback(lambda _: self.concurrency.leave(route.function))
        integration_ends = call.started_ms / 1000 + route.integration_timeout_ms / 1000
        try:
            # The function's timeout counts once it runs (after its environment's init, as in Lambda); API
            # Gateway's from the request's arrival.
            while not started.wait(timeout=0.05) and not future.done():
                if time.time() > integration_ends:
                    raise FutureTimeout
            limit = min(integration_ends, time.time() + route.timeout_s)
            result = future.result(timeout=max(0.0, limit - time.time()))
            call.integration_ms = round((time.monotonic() - called) * 1000)
        except FutureTimeout as exc:
            # The function goes on (as in AWS); the caller gets API Gateway's timeout answer.
            raise GatewayError("INTEGRATION_TIMEOUT", 504, "Endpoint request timed out") from exc
        except Exception as exc:
            logger.exception("function failed", extra={"function": route.function})
            raise GatewayError("DEFAULT_5XX", 502, "Internal server error") from exc
        if not isinstance(result, dict) or len(json.dumps(result)) > LAMBDA_PAYLOAD_LIMIT_BYTES:
            logger.error("function response not a proxy result within 6 MB", extra={"function": route.function})
            raise GatewayError("DEFAULT_5XX", 502, "Internal server error")
        return result

    def _streamed_function(self, route: Route) -> Any:
        from local.streaming import StreamedFunction, asgi_target
        from local.web_adapter import AdapterSettings

        target, factory = asgi_target(self.root / route.code_uri / route.handler)
        adapter = AdapterSettings.from_environment(dict(route.adapter_variables))
        return StreamedFunction(
            route.function, route.code_uri, target, factory, route.timeout_s, route.memory_mb, adapter
        )

    def stream(self, route: Route, event: dict[str, Any], call: Call) -> Response:
        """A streamed integration: the function's run.sh app behind the adapter, its answer relayed as written."""
        from local.web_adapter import PreludeError

        function = self._streamed_function(route)
        called = time.monotonic()
        try:
            response = self.streams.invoke(
                function,
                event,
                call.request.get_data(),
                integration_timeout_s=route.integration_timeout_ms / 1000,
                request_id=call.request_id,
                on_timeout=lambda: self.gateway_response(
                    "INTEGRATION_TIMEOUT", call.request_id, 504, "Endpoint request timed out"
                ),
            )
        except PreludeError as exc:  # what API Gateway cannot read is its 502
            logger.error("streamed answer without a readable prelude", extra={"reason": str(exc)})
            raise GatewayError("DEFAULT_5XX", 502, "Internal server error") from exc
        call.integration_ms = round((time.monotonic() - called) * 1000)  # until the function's answer began
        return response

    def _relayed(self, route: Route, event: dict[str, Any], call: Call) -> Response:
        """A streamed invocation, holding its slot until its answer has been relayed."""
        try:
            response = self.stream(route, event, call)
        except BaseException:
            self.concurrency.leave(route.function)
            raise
        if response.is_streamed:
            response.response = self.concurrency.until_relayed(route.function, response.response)
        else:
            self.concurrency.leave(route.function)
        return response

    def close(self) -> None:
        self.streams.close()
        self.environments.close()

    def proxy_response(self, result: dict[str, Any], call: Call) -> Response:
        """A Lambda proxy result as the HTTP response API Gateway sends."""
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        response = Response(data, status=int(result.get("statusCode", 200)))
        for name, value in (result.get("headers") or {}).items():
            response.headers[name] = str(value)
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response.headers.remove(name)
            for value in values:
                response.headers.add(name, str(value))
        response.headers["x-amzn-RequestId"] = call.request_id
        return response

    def gateway_response(
        self, kind: str, request_id: str, status: int, message: str, request: Request | None = None
    ) -> Response:
        """API Gateway's own answer: the template's response of that kind, else its DEFAULT_4XX/5XX one
        (whose body is used with the error's own status), else API Gateway's plain ``{"message": ...}``. Its
        headers are static values or taken from the ``request`` (``method.request.header.<name>``)."""
        fallback = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        template = self.api.gateway_responses.get(kind) or self.api.gateway_responses.get(fallback)
        if template is not None and template.status is not None:
            status = template.status
        body = template.body if template else json.dumps({"message": message})
        body = (
            body.replace("$context.error.messageString", json.dumps(message))
            .replace("$context.error.message", message)
            .replace("$context.requestId", request_id)
        )
        response = Response(body, status=status, content_type="application/json")
        for name, value in (template.headers if template else {}).items():
            resolved = _header_value(value, request)
            if resolved is not None:
                response.headers[name] = resolved
        response.headers["x-amzn-RequestId"] = request_id
        response.headers["x-amzn-ErrorType"] = _error_type(kind)
        return response


_ERROR_TYPES = {
    "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
    "UNAUTHORIZED": "UnauthorizedException",
    "ACCESS_DENIED": "AccessDeniedException",
    "REQUEST_TOO_LARGE": "RequestTooLargeException",
    "INTEGRATION_TIMEOUT": "InternalServerErrorException",
    "THROTTLED": "TooManyRequestsException",
    "QUOTA_EXCEEDED": "LimitExceededException",
    "INVALID_API_KEY": "ForbiddenException",
}


def _header_value(source: str, request: Request | None) -> str | None:
    """A gateway response header's value: the literal, or the named request header (absent: no header)."""
    if source.startswith(REQUEST_HEADER):
        return request.headers.get(source[len(REQUEST_HEADER) :]) if request is not None else None
    return source


def _error_type(kind: str) -> str:
    return _ERROR_TYPES.get(kind, "InternalServerErrorException")
