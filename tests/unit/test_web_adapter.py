"""The local Lambda Web Adapter (``local.web_adapter``) against what the adapter's 1.x source and API Gateway's
streaming format say: settings under their 1.x names, the request context re-serialized to the fields the
adapter models, the prelude framed and read back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from local.api_definition import read_api
from local.template import project_template
from local.web_adapter import (
    DELIMITER,
    IDENTITY_FIELDS,
    REST_CONTEXT_FIELDS,
    AdapterSettings,
    PreludeError,
    adapter_request_context,
    parse_status_codes,
    read_prelude,
    stream_prelude,
)

# A REST requestContext as API Gateway sends it, with what the adapter's struct does not model.
API_GATEWAY_CONTEXT = {
    "resourceId": "abc123",
    "resourcePath": "/v1/images/generations",
    "httpMethod": "POST",
    "extendedRequestId": "Xyz=",
    "requestTime": "06/Dec/2026:04:00:00 +0000",
    "path": "/prod/v1/images/generations",
    "accountId": "123456789012",
    "protocol": "HTTP/1.1",
    "stage": "prod",
    "domainPrefix": "api",
    "requestTimeEpoch": 1796529600000,
    "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
    "identity": {
        "sourceIp": "203.0.113.9",
        "userAgent": "openai-python/2.0",
        "clientCert": {"clientCertPem": "-----BEGIN CERTIFICATE-----"},
        "vpcId": "vpc-1",
    },
    "domainName": "api.execute-api.us-east-1.amazonaws.com",
    "apiId": "api",
    "authorizer": {"principalId": "key_1", "keyId": "key_1", "integrationLatency": 12},
}


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def test_settings_are_read_under_their_1x_names_with_the_adapters_defaults():
    defaults = AdapterSettings.from_environment({})
    ours = AdapterSettings.from_environment(
        {
            "AWS_LWA_PORT": 9000,
            "PORT": 8080,
            "AWS_LWA_READINESS_CHECK_PATH": "/_ready",
            "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS": "200-204,304",
            "AWS_LWA_INVOKE_MODE": "RESPONSE_STREAM",
        }
    )

    assert (defaults.port, defaults.readiness_path, defaults.invoke_mode) == (8080, "/", "buffered")
    assert defaults.healthy_status == frozenset(range(100, 500))
    assert AdapterSettings.from_environment({"PORT": 7000}).port == 7000  # PORT stays the fallback
    assert (ours.port, ours.readiness_path, ours.invoke_mode) == (9000, "/_ready", "response_stream")
    assert ours.healthy_status == frozenset({200, 201, 202, 203, 204, 304})


def test_status_codes_skip_what_is_not_a_code_or_a_range():
    assert parse_status_codes("200, oops, 404,500-501") == frozenset({200, 404, 500, 501})


def test_every_streamed_route_of_the_template_runs_a_streaming_adapter_checked_on_its_ready_path():
    from imagecore.edge.streaming import READINESS_PATH

    streamed = [route for route in read_api(project_template()).routes if route.streamed]

    assert streamed
    for route in streamed:
        settings = AdapterSettings.from_environment(dict(route.adapter_variables))
        assert settings.invoke_mode == "response_stream", route.function
        assert settings.readiness_path == READINESS_PATH, route.function
        assert settings.healthy_status == frozenset({200}), route.function


def test_the_request_context_keeps_exactly_the_fields_the_adapter_models():
    context = adapter_request_context(API_GATEWAY_CONTEXT)

    assert list(context) == [name for name in REST_CONTEXT_FIELDS if name != "operationName"]
    assert list(context["identity"]) == list(IDENTITY_FIELDS)
    assert "extendedRequestId" not in context
    assert context["identity"]["sourceIp"] == "203.0.113.9"
    assert context["identity"]["accessKey"] is None  # absent: null, as serde writes an empty Option
    assert context["authorizer"] == API_GATEWAY_CONTEXT["authorizer"]  # passed whole
    assert (context["requestId"], context["path"], context["requestTimeEpoch"]) == (
        API_GATEWAY_CONTEXT["requestId"],
        "/prod/v1/images/generations",
        1796529600000,
    )
    json.dumps(context)  # what goes into the header


def test_an_empty_authorizer_and_a_missing_operation_name_are_left_out():
    context = adapter_request_context({"requestId": "r", "authorizer": {}})

    assert "authorizer" not in context and "operationName" not in context
    assert context["requestTimeEpoch"] == 0
    assert adapter_request_context({"operationName": "op"})["operationName"] == "op"


def test_the_prelude_is_json_then_eight_nul_bytes():
    framed = stream_prelude(
        201,
        [
            ("Content-Type", "application/json"),
            ("X-Part", "one"),
            ("X-Part", "two"),
            ("Set-Cookie", "a=1"),
            ("Transfer-Encoding", "chunked"),
        ],
    )

    prelude, delimiter, rest = framed.partition(DELIMITER)
    assert delimiter == b"\x00" * 8 and rest == b""
    assert json.loads(prelude) == {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-part": ["one", "two"]},
        "cookies": ["a=1"],
    }


def test_a_prelude_without_a_content_type_gets_octet_stream():
    prelude = json.loads(stream_prelude(200, []).partition(DELIMITER)[0])

    assert prelude == {"statusCode": 200, "headers": {"content-type": "application/octet-stream"}, "cookies": []}


def test_api_gateway_reads_the_prelude_back_even_split_across_chunks():
    framed = stream_prelude(202, [("x-a", "1"), ("x-a", "2"), ("set-cookie", "c=3")]) + b"first"
    middle = len(framed) // 2

    answer = read_prelude(chunks(framed[:middle], framed[middle:], b"second"))

    assert answer.status == 202
    assert answer.headers == [
        ("x-a", "1"),
        ("x-a", "2"),
        ("content-type", "application/octet-stream"),
        ("Set-Cookie", "c=3"),
    ]
    assert b"".join(answer.body) == b"firstsecond"


def test_multi_value_headers_of_the_documented_format_are_read_too():
    prelude = {"statusCode": 200, "headers": {"x-a": "dropped"}, "multiValueHeaders": {"x-a": ["1", "2"]}}
    answer = read_prelude(chunks(json.dumps(prelude).encode() + DELIMITER))

    assert answer.headers == [("x-a", "1"), ("x-a", "2")]


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ([b'{"statusCode": 200}'], "ended before"),
        ([b"x" * (17 * 1024)], "16 KB"),
        ([b"[1, 2]" + DELIMITER], "statusCode"),
        ([b"not json" + DELIMITER], "statusCode"),
    ],
)
def test_what_api_gateway_cannot_read_is_refused(stream: list[bytes], reason: str):
    with pytest.raises(PreludeError, match=reason):
        read_prelude(iter(stream))
