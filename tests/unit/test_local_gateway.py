"""The local API Gateway emulation, driven directly as a WSGI app with the project's template.yaml: routes,
limits, timeouts, binary media types, the template's gateway responses, the authorizer's context, and whole log
lines under concurrency. The functions are small fakes, so each rule is seen alone (each invocation in a process of
its own: tests/integration/test_local_environments.py)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from local.api_definition import DEFAULT_INTEGRATION_TIMEOUT_MS, read_api
from local.gateway import API_REQUEST_LIMIT_BYTES, LocalApiGateway, TokenBucket, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
# The functions of the routes these tests call (the async ones: ordinary proxy integrations, not streamed).
GENERATIONS, HEALTH, TASKS, UPLOADS, EDITS = (
    "functions/generations_async/",
    "functions/health/",
    "functions/tasks/",
    "functions/uploads/",
    "functions/edits_async/",
)
AUTHORIZER = "functions/authorizer/"
KEY = "Bearer isk-gateway-test"


def allow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A REQUEST authorizer like the project's: a known key is allowed, with its id in the context."""
    if event["headers"].get("Authorization") != KEY:
        raise Exception("Unauthorized")  # API Gateway reads exactly this message
    return {
        "principalId": "key_gateway0001",
        "policyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
        "context": {"keyId": "key_gateway0001", "tier": 2, "trusted": True},
    }


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps({"event": event})}


class Functions:
    """The handlers the gateway loads, by CodeUri; every call is counted."""

    def __init__(self, **handlers: Callable[..., Any]) -> None:
        self.handlers = {AUTHORIZER: allow, **handlers}
        self.calls: list[str] = []

    def load(self, code_uri: str, handler: str) -> Callable[..., Any]:
        assert handler == "app.lambda_handler"
        target = self.handlers.get(code_uri, echo)

        def counted(event: dict[str, Any], context: Any) -> Any:
            self.calls.append(code_uri)
            return target(event, context)

        return counted


def gateway(functions: Functions, **options: Any) -> tuple[LocalApiGateway, Client]:
    app = LocalApiGateway(ROOT, TEMPLATE, load=functions.load, **options)
    return app, Client(app)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-amzn-RequestId"]
    return body["error"]


# --- the API read from the template -------------------------------------------------------------------------
def test_the_routes_and_their_timeouts_come_from_the_template():
    api = read_api(load_template(TEMPLATE))
    routes = {(r.method, r.path): r for r in api.routes}

    generations = routes[("POST", "/v1/images/generations")]
    assert (generations.function, generations.timeout_s) == ("GenerationsStreamFunction", 360.0)
    assert (generations.integration_timeout_ms, generations.streamed) == (900_000, True)  # a streamed integration
    submit = routes[("POST", "/v1/images/generations/async")]
    assert (submit.function, submit.streamed) == ("GenerationsFunction", False)
    assert submit.integration_timeout_ms == DEFAULT_INTEGRATION_TIMEOUT_MS
    assert routes[("GET", "/v1/images/tasks/{task_id}")].integration_timeout_ms == DEFAULT_INTEGRATION_TIMEOUT_MS
    assert not routes[("GET", "/v1/health")].authorized and generations.authorized
    assert api.binary_media_types == ("multipart/form-data",)
    assert api.throttle == (10.0, 20)
    assert api.gateway_responses["UNAUTHORIZED"].headers == {
        "WWW-Authenticate": "Bearer",
        # the allowed origins (CorsAllowOrigins, * by default), never the caller's Origin echoed back
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "Location,Retry-After,x-amzn-RequestId",
        "Vary": "Origin",
    }
    assert api.gateway_responses["DEFAULT_4XX"].status is None

    raised = read_api(load_template(TEMPLATE), {"ApiThrottlingRateLimit": 50})
    assert raised.throttle == (50.0, 20)  # parameters override their defaults
    assert {(r.method, r.path) for r in raised.routes if r.streamed} == {
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/v1/responses"),
    }


# --- routes that do not exist -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/images/generations/async"),  # a real path, a method it does not have
        ("DELETE", "/v1/images/tasks/task_123"),
        ("OPTIONS", "/v1/images/variations"),  # preflights exist only for the real routes
        ("GET", "/v1/images/variations"),
        ("POST", "/v2/images/generations"),
        ("POST", "/"),  # the index answers GET only
        ("GET", "/v2"),
    ],
)
def test_a_missing_route_or_method_is_the_templates_missing_authentication_token_answer(method, path):
    functions = Functions()
    _, client = gateway(functions)

    response = client.open(path, method=method, headers={"Authorization": KEY})

    error = error_of(response, 404)
    assert (error["code"], error["type"]) == ("unknown_route", "invalid_request_error")
    assert "/v1/docs" in error["message"] and "/v1/playground" in error["message"]  # where to look instead
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert functions.calls == []  # neither the authorizer nor a function ran


# --- the authorizer -----------------------------------------------------------------------------------------
def test_the_authorizers_context_reaches_the_function_as_strings():
    functions = Functions()
    _, client = gateway(functions)

    response = client.post("/v1/images/generations/async", json={"prompt": "x"}, headers={"Authorization": KEY})

    assert response.status_code == 200
    event = response.get_json()["event"]
    assert event["requestContext"]["authorizer"] == {
        "principalId": "key_gateway0001",
        "integrationLatency": 0,
        "keyId": "key_gateway0001",
        "tier": "2",
        "trusted": "True",
    }
    assert event["requestContext"]["requestId"] == response.headers["x-amzn-RequestId"]
    assert functions.calls == [AUTHORIZER, GENERATIONS]


def test_a_missing_key_is_the_templates_401_and_the_function_never_runs():
    functions = Functions()
    _, client = gateway(functions)

    response = client.post("/v1/images/generations/async", json={"prompt": "x"})

    assert error_of(response, 401)["code"] == "invalid_api_key"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert functions.calls == [AUTHORIZER]


def test_a_deny_policy_is_the_templates_403():
    def deny(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"principalId": "k", "policyDocument": {"Statement": [{"Effect": "Deny", "Action": "*"}]}}

    functions = Functions()
    functions.handlers[AUTHORIZER] = deny
    _, client = gateway(functions)

    error = error_of(client.post("/v1/uploads", json={}, headers={"Authorization": KEY}), 403)

    assert error["code"] == "access_denied"
    assert functions.calls == [AUTHORIZER]


def test_routes_without_an_authorizer_skip_it():
    functions = Functions()
    _, client = gateway(functions)

    assert client.get("/v1/health").status_code == 200
    assert functions.calls == [HEALTH]


# --- limits -------------------------------------------------------------------------------------------------
def test_the_integration_timeout_is_the_templates_504_and_does_not_wait_for_the_function():
    release = threading.Event()

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        release.wait(5)
        return echo(event, context)

    functions = Functions()
    functions.handlers[GENERATIONS] = slow
    app, client = gateway(functions)
    # A route whose TimeoutInMillis is 200 ms (the template's buffered routes keep API Gateway's 29 s).
    app.api.routes[:] = [
        replace(route, integration_timeout_ms=200) if route.path == "/v1/images/generations/async" else route
        for route in app.api.routes
    ]
    started = time.monotonic()

    response = client.post("/v1/images/generations/async", json={"prompt": "x"}, headers={"Authorization": KEY})

    elapsed = time.monotonic() - started
    release.set()
    error = error_of(response, 504)
    assert (error["code"], error["type"]) == ("upstream_timeout", "upstream_error")
    assert 0.15 < elapsed < 2
    # A route without TimeoutInMillis keeps API Gateway's 29 s: a function as slow answers there.
    functions.handlers[UPLOADS] = lambda event, context: (time.sleep(0.4), echo(event, context))[1]
    assert client.post("/v1/uploads", json={}, headers={"Authorization": KEY}).status_code == 200


def test_a_response_over_lambdas_6_mb_is_a_502_in_the_templates_5xx_shape():
    functions = Functions()
    functions.handlers[GENERATIONS] = lambda event, context: {"statusCode": 200, "body": "x" * (6 * 1024 * 1024)}
    _, client = gateway(functions)

    response = client.post("/v1/images/generations/async", json={"prompt": "x"}, headers={"Authorization": KEY})

    error = error_of(response, 502)
    assert (error["message"], error["type"], error["code"]) == ("Internal server error", "server_error", None)


def test_a_response_just_under_6_mb_goes_through():
    body = "x" * (6 * 1024 * 1024 - 200)
    functions = Functions()
    functions.handlers[GENERATIONS] = lambda event, context: {"statusCode": 200, "body": body}
    _, client = gateway(functions)

    response = client.post("/v1/images/generations/async", json={"prompt": "x"}, headers={"Authorization": KEY})

    assert (response.status_code, len(response.get_data())) == (200, len(body))


def test_a_function_that_raises_is_a_502():
    def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    functions = Functions()
    functions.handlers[TASKS] = crash
    _, client = gateway(functions)

    error = error_of(client.get("/v1/images/tasks/task_1", headers={"Authorization": KEY}), 502)
    assert error["type"] == "server_error"


def test_a_request_over_10_mb_is_the_templates_413_before_anything_runs():
    functions = Functions()
    _, client = gateway(functions)
    body = b"x" * (API_REQUEST_LIMIT_BYTES + 1)

    response = client.post(
        "/v1/images/edits/async", data=body, headers={"Authorization": KEY, "Content-Type": "multipart/form-data; b=x"}
    )

    assert error_of(response, 413)["code"] == "payload_too_large"
    assert functions.calls == []


def test_an_event_over_lambdas_6_mb_is_a_413_and_the_function_never_runs():
    functions = Functions()
    _, client = gateway(functions)
    body = b"x" * (5 * 1024 * 1024)  # base64 makes it ~6.7 MB in the event

    response = client.post(
        "/v1/images/edits/async", data=body, headers={"Authorization": KEY, "Content-Type": "multipart/form-data; b=x"}
    )

    assert error_of(response, 413)["code"] == "payload_too_large"
    assert functions.calls == [AUTHORIZER]


def test_the_stage_throttle_is_the_templates_429_with_retry_after():
    functions = Functions()
    _, client = gateway(functions, throttling=True, parameters={"ApiThrottlingBurstLimit": 2})

    statuses = [client.get("/v1/health").status_code for _ in range(3)]
    assert statuses[:2] == [200, 200]
    response = client.get("/v1/health")
    error = error_of(response, 429)
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    assert response.headers["Retry-After"] == "1"


def test_the_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=2, clock=lambda: now[0])

    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert [bucket.take(), bucket.take()] == [True, False]


# --- bodies -------------------------------------------------------------------------------------------------
def test_binary_media_types_arrive_base64_encoded_and_json_as_text():
    functions = Functions()
    _, client = gateway(functions)
    payload = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n\x89PNG\x00\xff\r\n--b--\r\n'

    multipart = client.post(
        "/v1/images/edits/async",
        data=payload,
        headers={"Authorization": KEY, "Content-Type": "multipart/form-data; boundary=b"},
    ).get_json()["event"]
    text = client.post("/v1/images/edits/async", json={"prompt": "é"}, headers={"Authorization": KEY}).get_json()[
        "event"
    ]

    assert multipart["isBase64Encoded"] is True
    assert base64.b64decode(multipart["body"]) == payload
    assert (text["isBase64Encoded"], json.loads(text["body"])) == (False, {"prompt": "é"})


def test_a_base64_proxy_result_is_sent_as_bytes_with_its_headers():
    image = b"\x89PNG\r\n\x1a\n\x00\x01\xfe\xff"

    def binary(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "statusCode": 201,
            "isBase64Encoded": True,
            "headers": {"Content-Type": "image/png"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(image).decode(),
        }

    functions = Functions()
    functions.handlers[HEALTH] = binary
    _, client = gateway(functions)

    response = client.get("/v1/health")

    assert (response.status_code, response.get_data()) == (201, image)
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_path_and_query_parameters_reach_the_event():
    functions = Functions()
    _, client = gateway(functions)

    event = client.get("/v1/images/tasks/task_abc?x=1&x=2&y=3", headers={"Authorization": KEY}).get_json()["event"]

    assert event["pathParameters"] == {"task_id": "task_abc"}
    assert event["resource"] == "/v1/images/tasks/{task_id}"
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["3"]}
    assert event["headers"]["X-Forwarded-Proto"] == "http"


# --- whole lines from every thread ----------------------------------------------------------------------------
def test_threads_writing_lines_in_pieces_never_split_each_others_lines():
    import io

    from local.lambda_runtime import LineAtomicWriter

    target = io.StringIO()
    writer = LineAtomicWriter(target)
    start = threading.Barrier(8)

    def write(name: str) -> None:
        start.wait()
        for index in range(200):
            line = json.dumps({"thread": name, "index": index})
            for piece in (line[:5], line[5:], "\n"):  # print writes the text and the newline apart
                writer.write(piece)
                time.sleep(0)  # let the other threads write in between

    threads = [threading.Thread(target=write, args=(str(n),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    writer.write("no newline yet")
    writer.flush()

    *lines, last = target.getvalue().split("\n")
    assert sorted((d["thread"], d["index"]) for d in map(json.loads, lines)) == sorted(
        (str(n), i) for n in range(8) for i in range(200)
    )
    assert last == "no newline yet"


# --- CORS on API Gateway's own answers ----------------------------------------------------------------------
def test_gateway_responses_allow_only_the_allowed_origins():
    """A page must see API Gateway's 401 (or 429, 413...), not an opaque CORS failure; but an origin that may not
    call the API is never named back to it."""
    functions = Functions()
    _, client = gateway(functions)

    seen = client.post("/v1/images/generations", json={"prompt": "x"}, headers={"Origin": "https://app.example"})
    assert error_of(seen, 401)["code"] == "invalid_api_key"
    assert seen.headers["Access-Control-Allow-Origin"] == "*"  # CorsAllowOrigins' default: any origin
    assert "Retry-After" in seen.headers["Access-Control-Expose-Headers"]

    restricted = LocalApiGateway(
        ROOT, ROOT / "template.yaml", parameters={"CorsAllowOrigins": "https://app.example,https://admin.example"}
    )
    for kind in ("UNAUTHORIZED", "THROTTLED", "INTEGRATION_FAILURE", "DEFAULT_4XX", "DEFAULT_5XX"):
        headers = restricted.api.gateway_responses[kind].headers
        assert headers["Access-Control-Allow-Origin"] == "https://app.example", kind
    assert functions.calls == [AUTHORIZER]


def test_a_preflight_reaches_the_health_function_without_the_authorizer():
    functions = Functions(**{HEALTH: echo})
    _, client = gateway(functions)

    response = client.open("/v1/images/tasks/task_1", method="OPTIONS", headers={"Origin": "https://app.example"})

    assert response.status_code == 200
    assert response.get_json()["event"]["httpMethod"] == "OPTIONS"
    assert functions.calls == [HEALTH]


# --- the access log -----------------------------------------------------------------------------------------
def test_each_request_writes_one_access_log_line_in_the_templates_format():
    lines: list[str] = []
    _, client = gateway(Functions(), access_log=lines.append)

    ok = client.post(
        "/v1/images/generations/async",
        json={"prompt": "p"},
        headers={"Authorization": KEY, "User-Agent": 'sdk "quoted"/1.0'},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    refused = client.post("/v1/images/generations/async", json={"prompt": "p"})  # no key

    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)  # one JSON object a line, quotes and all
    assert first == {
        "requestId": ok.headers["x-amzn-RequestId"],
        "keyId": "key_gateway0001",
        "sourceIp": "203.0.113.9",
        "userAgent": 'sdk "quoted"/1.0',
        "requestTime": first["requestTime"],
        "httpMethod": "POST",
        "route": "/v1/images/generations/async",
        "status": "200",
        "latencyMs": first["latencyMs"],
        "integrationLatencyMs": first["integrationLatencyMs"],
        "responseLength": str(len(ok.get_data())),
        "errorType": "-",
        "wafStatus": "-",
    }
    assert time.strptime(first["requestTime"], "%d/%b/%Y:%H:%M:%S +0000")
    assert int(first["latencyMs"]) >= int(first["integrationLatencyMs"]) >= 0
    assert (second["status"], second["keyId"], second["errorType"]) == ("401", "-", "UNAUTHORIZED")
    assert (second["integrationLatencyMs"], second["responseLength"]) == ("-", str(len(refused.get_data())))


def test_an_unknown_route_is_logged_without_a_route():
    lines: list[str] = []
    _, client = gateway(Functions(), access_log=lines.append)
    client.get("/v1/nowhere")
    line = json.loads(lines[0])
    assert (line["route"], line["status"], line["errorType"]) == ("-", "404", "MISSING_AUTHENTICATION_TOKEN")


def test_without_a_writer_no_access_log_is_kept():
    app, client = gateway(Functions())
    assert app.access_log is None
    assert client.get("/v1/health").status_code == 200
