"""The API a template deploys, as the local gateway serves it: its routes (each with its function, timeouts,
streaming mode, memory and reserved concurrency), the default REQUEST authorizer, binary media types, gateway
responses and the stage's throttle, read from ``template.yaml`` with parameters at their defaults unless
overridden (as ``sam deploy --parameter-overrides`` would). Also IAM's rule for an authorizer's policy."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from local.context import ACCOUNT_ID
from local.intrinsics import Intrinsics

# What API Gateway waits for an integration when the route sets no TimeoutInMillis.
DEFAULT_INTEGRATION_TIMEOUT_MS = 29_000
DEFAULT_FUNCTION_TIMEOUT_S = 3.0
# A gateway response header taken from the request (``method.request.header.Origin``).
REQUEST_HEADER = "method.request.header."


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    code_uri: str
    handler: str
    timeout_s: float  # the function's own timeout
    integration_timeout_ms: int  # how long API Gateway waits for it
    authorized: bool
    pattern: re.Pattern[str]
    # ResponseTransferMode RESPONSE_STREAM: relayed by local.streaming (the function runs its run.sh app).
    streamed: bool = False
    memory_mb: int = 128
    reserved: int | None = None  # the function's ReservedConcurrentExecutions (None: unreserved)
    # The function's Lambda Web Adapter settings (AWS_LWA_*, PORT), as the template gives them.
    adapter_variables: tuple[tuple[str, str], ...] = ()

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in (method, "ANY"):
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None  # None: the status of the error itself (DEFAULT_4XX/5XX usually set none)
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiDefinition:
    routes: list[Route]
    authorizer: tuple[str, str] | None  # (code_uri, handler) of the default REQUEST authorizer
    binary_media_types: tuple[str, ...]
    gateway_responses: dict[str, GatewayResponse]
    throttle: tuple[float, int] | None = None  # the stage's (rate per second, burst), from MethodSettings


class _Template:
    """The parts of a template the emulation resolves: resources, parameter values, function globals."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, Any] | None) -> None:
        self.resources: dict[str, Any] = template.get("Resources", {})
        parameters = template.get("Parameters", {}) or {}
        self.parameters = {name: spec.get("Default") for name, spec in parameters.items()}
        self.parameters.update(overrides or {})
        pseudo = {"AWS::StackName": "local", "AWS::Region": "us-east-1", "AWS::AccountId": ACCOUNT_ID}
        self.intrinsics = Intrinsics(template, {**pseudo, **self.parameters})
        self.function_globals: dict[str, Any] = (template.get("Globals", {}) or {}).get("Function", {}) or {}

    def value(self, value: Any) -> Any:
        """Resolve a parameter reference, condition or substitution to its value (enough for the settings the
        emulation reads)."""
        if isinstance(value, dict) and "Ref" in value:
            return self.parameters.get(value["Ref"])
        return self.intrinsics.resolve(value)

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (name, resource.get("Properties", {}) or {})
            for name, resource in self.resources.items()
            if resource.get("Type") == kind
        ]

    def function_setting(self, props: dict[str, Any], name: str, default: Any = None) -> Any:
        return self.value(props.get(name, self.function_globals.get(name, default)))


def read_api(template: dict[str, Any], overrides: dict[str, Any] | None = None) -> ApiDefinition:
    """The API a template deploys, with ``overrides`` replacing parameter defaults."""
    tpl = _Template(template, overrides)
    apis = tpl.of_type("AWS::Serverless::Api")
    api_props = apis[0][1] if apis else {}
    responses = _gateway_responses(tpl, api_props)
    routes = [route for name, props in tpl.of_type("AWS::Serverless::Function") for route in _routes(tpl, name, props)]
    return ApiDefinition(
        routes=routes,
        authorizer=_default_authorizer(tpl, api_props),
        binary_media_types=tuple(t.replace("~1", "/") for t in api_props.get("BinaryMediaTypes", [])),
        gateway_responses=responses,
        throttle=_throttle(tpl, api_props),
    )


def _throttle(tpl: _Template, api_props: dict[str, Any]) -> tuple[float, int] | None:
    for setting in api_props.get("MethodSettings") or []:
        if setting.get("ResourcePath") == "/*" and setting.get("HttpMethod") == "*":
            rate, burst = tpl.value(setting.get("ThrottlingRateLimit")), tpl.value(setting.get("ThrottlingBurstLimit"))
            if rate is not None and burst is not None:
                return float(rate), int(burst)
    return None


def _default_authorizer(tpl: _Template, api_props: dict[str, Any]) -> tuple[str, str] | None:
    auth = api_props.get("Auth", {}) or {}
    default = auth.get("DefaultAuthorizer")
    if not default:
        return None
    arn = auth["Authorizers"][default]["FunctionArn"]
    props = tpl.resources[arn["Fn::GetAtt"][0]]["Properties"]
    return props["CodeUri"], tpl.function_setting(props, "Handler")


def _gateway_responses(tpl: _Template, api_props: dict[str, Any]) -> dict[str, GatewayResponse]:
    responses = {kind: _gateway_response(tpl, spec) for kind, spec in (api_props.get("GatewayResponses") or {}).items()}
    for _, props in tpl.of_type("AWS::ApiGateway::GatewayResponse"):
        responses[props["ResponseType"]] = _gateway_response(tpl, props)
    return responses


def _gateway_response(tpl: _Template, spec: dict[str, Any]) -> GatewayResponse:
    templates = spec.get("ResponseTemplates") or {}
    body = templates.get("application/json") or next(iter(templates.values()), "")
    status = tpl.value(spec.get("StatusCode"))
    # SAM writes static header values as quoted literals ("'Bearer'"); an unquoted one names where the value
    # comes from (method.request.header.Origin), resolved per request.
    headers = {
        name: _static(str(tpl.value(value)))
        for name, value in ((spec.get("ResponseParameters") or {}).get("Headers") or {}).items()
    }
    return GatewayResponse(int(status) if status is not None else None, body, headers)


def _routes(tpl: _Template, name: str, props: dict[str, Any]) -> list[Route]:
    timeout_s = float(tpl.function_setting(props, "Timeout", DEFAULT_FUNCTION_TIMEOUT_S))
    routes = []
    for event in (props.get("Events") or {}).values():
        if event.get("Type") != "Api":
            continue
        spec = event["Properties"]
        integration_ms = tpl.value(spec.get("TimeoutInMillis", DEFAULT_INTEGRATION_TIMEOUT_MS))
        routes.append(
            Route(
                method=spec["Method"].upper(),
                path=spec["Path"],
                function=name,
                code_uri=props["CodeUri"],
                handler=tpl.function_setting(props, "Handler"),
                timeout_s=timeout_s,
                integration_timeout_ms=int(integration_ms),
                authorized=(spec.get("Auth") or {}).get("Authorizer") != "NONE",
                pattern=_path_pattern(spec["Path"]),
                streamed=spec.get("ResponseTransferMode") == "RESPONSE_STREAM",
                memory_mb=int(tpl.function_setting(props, "MemorySize", 128)),
                reserved=_reserved(tpl.value(props.get("ReservedConcurrentExecutions"))),
                adapter_variables=tuple(
                    (variable, str(value))
                    for variable, value in ((props.get("Environment") or {}).get("Variables") or {}).items()
                    if variable.startswith("AWS_LWA_") or variable == "PORT"
                ),
            )
        )
    return routes


def _reserved(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _path_pattern(path: str) -> re.Pattern[str]:
    """``/v1/images/tasks/{task_id}`` -> a regex with a named group per path parameter."""
    parts = re.split(r"\{(\w+)\+?\}", path)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
    return re.compile(regex)


# --- authorizer policies -----------------------------------------------------------------------------------
def policy_allows(statements: list[dict[str, Any]], method_arn: str) -> bool:
    """IAM's rule for an authorizer's policy: some Allow statement names the method ARN (``*`` and ``?`` are
    wildcards) and no Deny statement does. A client token's policy names only the routes of its scope."""

    def names(statement: dict[str, Any]) -> bool:
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        return any(fnmatch.fnmatchcase(method_arn, str(resource)) for resource in resources)

    if any(s.get("Effect") == "Deny" and names(s) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and names(s) for s in statements)


def _static(source: str) -> str:
    """A quoted literal loses its quotes; a request header source stays as it is, for the gateway's ``header_value``."""
    if source.startswith(REQUEST_HEADER):
        return source
    if len(source) >= 2 and source[0] == source[-1] == "'":
        return source[1:-1]
    raise ValueError(f"gateway response header source not emulated: {source}")
