"""CORS rules (imagecore.edge.cors), the preflight the health function answers, the headers every function's answer
carries, and the local S3's bucket rules read from the template."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from imagecore.edge.cors import ALLOW_HEADERS, CorsPolicy, configured_policy, with_cors
from local.s3_cors import BucketCors, bucket_cors_rules
from local.template import project_template

APP = "https://app.example.com"
OTHER = "https://evil.example.net"


def test_a_comma_list_allows_exactly_its_origins():
    policy = CorsPolicy.parse(f" {APP}/ , http://localhost:5173 ")

    assert policy.allows(APP) and policy.allows("http://localhost:5173")
    assert not policy.allows(OTHER) and not policy.allows(None) and not policy.allows("")
    assert policy.headers(APP) == {
        "Access-Control-Allow-Origin": APP,
        "Access-Control-Expose-Headers": "Location, Retry-After, x-amzn-RequestId",
        "Vary": "Origin",
    }
    assert policy.headers(OTHER) == {"Vary": "Origin"}  # no allow header: the browser keeps the answer


def test_any_origin_is_a_star_and_nothing_is_allowed_by_default():
    any_origin = CorsPolicy.parse("*")

    assert any_origin.headers(OTHER)["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in any_origin.headers(OTHER)
    assert "Access-Control-Allow-Credentials" not in any_origin.preflight(OTHER, "POST")
    assert configured_policy({}).headers(APP) == {}
    assert configured_policy({"CORS_ALLOW_ORIGINS": APP}).allows(APP)


def test_a_preflight_names_the_headers_and_methods_a_page_may_use():
    policy = CorsPolicy.parse(APP)

    allowed = policy.preflight(APP, "POST")

    assert allowed["Access-Control-Allow-Origin"] == APP
    assert allowed["Access-Control-Allow-Headers"] == ", ".join(ALLOW_HEADERS)
    assert {"Authorization", "Content-Type", "Idempotency-Key", "X-Image-Result"} == set(ALLOW_HEADERS)
    assert allowed["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert int(allowed["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Methods" not in policy.preflight(OTHER, "POST")
    assert "Access-Control-Allow-Methods" not in policy.preflight(APP, "DELETE")


def test_with_cors_adds_one_vary_to_a_proxy_result(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", APP)
    headers: dict[str, list[str]] = {"Vary": ["Origin"], "Cache-Control": ["no-store"]}

    with_cors(headers, {"origin": APP})

    assert headers["Access-Control-Allow-Origin"] == [APP]
    assert headers["Vary"] == ["Origin"]
    assert headers["Cache-Control"] == ["no-store"]


def preflight_event(origin: str, method: str = "POST") -> dict[str, Any]:
    return {
        "httpMethod": "OPTIONS",
        "path": "/v1/images/generations",
        "resource": "/v1/images/generations",
        "headers": {"Origin": origin, "Access-Control-Request-Method": method},
        "requestContext": {"requestId": "r"},
    }


def test_the_health_function_answers_preflights_for_the_allowed_origins(
    monkeypatch: pytest.MonkeyPatch, lambda_context: Any
):
    from functions.health import app as health

    monkeypatch.setenv("CORS_ALLOW_ORIGINS", APP)

    allowed = health.lambda_handler(preflight_event(APP), lambda_context)
    refused = health.lambda_handler(preflight_event(OTHER), lambda_context)

    assert allowed["statusCode"] == 204
    assert allowed["multiValueHeaders"]["Access-Control-Allow-Origin"] == [APP]
    assert "Authorization" in allowed["multiValueHeaders"]["Access-Control-Allow-Headers"][0]
    assert refused["statusCode"] == 204
    assert "Access-Control-Allow-Origin" not in refused["multiValueHeaders"]


def test_every_function_answer_carries_the_cors_headers(
    monkeypatch: pytest.MonkeyPatch, api_event: Any, lambda_context: Any
):
    """Through ``serve``, the one edge of the keyed functions: an error answer included."""
    from functions.generations import app as generations

    monkeypatch.setenv("CORS_ALLOW_ORIGINS", APP)
    event = api_event("generations")
    event["headers"] = {**(event.get("headers") or {}), "Origin": APP}
    event["body"] = "{not json"

    response = generations.lambda_handler(event, lambda_context)

    assert response["statusCode"] == 400
    assert response["multiValueHeaders"]["Access-Control-Allow-Origin"] == [APP]
    assert "Retry-After" in response["multiValueHeaders"]["Access-Control-Expose-Headers"][0]


# --- the local S3's CORS, from the bucket's CorsConfiguration ---------------------------------------------
def s3_app(environ: dict[str, Any], start_response: Any) -> Any:
    """moto's server answers every origin (flask-cors); the middleware must keep only the bucket's rules."""
    response = Response("image bytes", headers={"Access-Control-Allow-Origin": "*", "ETag": '"e"'})
    return response(environ, start_response)


def test_the_bucket_rules_come_from_the_template_parameter():
    (rule,) = bucket_cors_rules(project_template(), {"CorsAllowOrigins": f"{APP},http://localhost:5173"})

    assert rule.origins == (APP, "http://localhost:5173")
    assert {"GET", "POST"} <= set(rule.methods)
    assert bucket_cors_rules(project_template())[0].origins == ("*",)


def test_the_local_bucket_answers_only_its_origins():
    client = Client(BucketCors(s3_app, bucket_cors_rules(project_template(), {"CorsAllowOrigins": APP})))

    download = client.get("/bucket/images/0.png", headers={"Origin": APP})
    foreign = client.get("/bucket/images/0.png", headers={"Origin": OTHER})
    preflight = client.options("/bucket", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
    refused = client.options("/bucket", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"})

    assert download.headers["Access-Control-Allow-Origin"] == APP
    assert "ETag" in download.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in foreign.headers
    assert foreign.status_code == 200  # S3 answers; the browser keeps it from the page
    assert preflight.status_code == 200 and "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert refused.status_code == 403 and b"AccessForbidden" in refused.data
