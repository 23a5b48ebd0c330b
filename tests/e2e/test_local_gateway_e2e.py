"""The local stack as ``make run`` serves it answers like the deployed API: wrong methods and unknown routes
as API Gateway (the template's 404), concurrent requests each logging their own fields, the stage's access log
line for each request (streamed ones when their stream has ended), and the upload limits enforced by its S3 like
by S3."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import API_KEY

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FUNCTIONS = {
    "/images/generations": "GenerationsStreamFunction",  # a streamed route: the adapter's app serves it
    "/health": "HealthFunction",
    "/uploads": "UploadsFunction",
    "/images/tasks/task_0123456789abcdef0123456789abcdef": "TasksFunction",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/images/generations"), ("PUT", "/uploads"), ("DELETE", "/health"), ("GET", "/nothing/here")],
)
def test_a_wrong_method_or_unknown_route_is_the_templates_404(stack, method, path):
    response = httpx.request(method, stack.api_url + path, headers=AUTH)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_route"
    assert "/v1/docs" in response.json()["error"]["message"] and "/v1/playground" in response.json()["error"]["message"]
    assert response.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    assert stack.upstream_calls() == 0


def test_concurrent_requests_log_their_own_function_and_request_ids(stack):
    def call(index: int) -> tuple[str, str]:
        path = list(FUNCTIONS)[index % len(FUNCTIONS)]
        if path == "/images/generations":
            response = httpx.post(stack.api_url + path, json={"prompt": f"tile {index}"}, headers=AUTH, timeout=60)
        elif path == "/uploads":
            body = {"content_type": "image/png", "bytes": 100, "purpose": "image"}
            response = httpx.post(stack.api_url + path, json=body, headers=AUTH, timeout=60)
        else:
            response = httpx.get(stack.api_url + path, headers=AUTH, timeout=60)
        assert response.status_code in (200, 404), response.text
        return response.headers["x-amzn-requestid"], FUNCTIONS[path]

    with ThreadPoolExecutor(max_workers=16) as pool:
        expected = dict(pool.map(call, range(48)))

    logged = {request_id: function for request_id, function in expected.items() if function != "HealthFunction"}
    records = {request_id: stack.request_record(request_id) for request_id in logged}  # waits for each line
    bad = {rid: (logged[rid], rec) for rid, rec in records.items() if rec.get("api_request_id") != rid}
    assert bad == {}
    lines = [line for line in stack.log_lines() if line.get("correlation_id") in expected]
    assert {line["correlation_id"] for line in lines if line.get("message") == "image request"} == set(logged)
    wrong = [line for line in lines if line.get("function_name") != expected[line["correlation_id"]]]
    assert wrong == []
    mixed = [
        line
        for line in lines
        if line.get("request", {}).get("api_request_id", line["correlation_id"]) != line["correlation_id"]
    ]
    assert mixed == []


def test_the_upload_limits_are_enforced_by_the_local_s3(stack):
    ticket = httpx.post(
        stack.api_url + "/uploads",
        json={"content_type": "image/png", "bytes": 10, "filename": "a.png", "purpose": "image"},
        headers=AUTH,
    ).json()

    def post(data: bytes, content_type: str = "image/png", **fields: str) -> httpx.Response:
        form = {**ticket["fields"], **fields}
        return httpx.post(ticket["url"], data=form, files={"file": ("a.png", data, content_type)}, timeout=30)

    def code(response: httpx.Response) -> tuple[int, str]:
        document = ET.fromstring(response.content)  # noqa: S314 - the local stack's own answer
        return response.status_code, document.findtext("Code") or ""

    assert code(post(b"\x00" * 100_000)) == (400, "EntityTooLarge")
    assert code(post(b"<html></html>", "text/html", **{"Content-Type": "text/html"})) == (403, "AccessDenied")
    assert code(post(b"0123456789", key=ticket["fields"]["key"] + "-other")) == (403, "AccessDenied")
    assert code(post(b"0123456789", **{"x-amz-signature": "0" * 64})) == (403, "SignatureDoesNotMatch")
    assert post(b"0123456789").status_code == 204


def _access_line(stack: Any, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in stack.log_lines() if line.get("requestId") == request_id and "route" in line]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)


def test_a_streamed_generation_gets_its_access_log_line_once_its_stream_has_ended(stack):
    with httpx.stream(
        "POST", stack.api_url + "/images/generations", json={"prompt": "a kite", "stream": True}, headers=AUTH
    ) as response:
        body = b"".join(response.iter_bytes())
    request_id = response.headers["x-amzn-requestid"]

    line = _access_line(stack, request_id)
    assert b"image_generation.completed" in body
    assert (line["route"], line["httpMethod"], line["status"]) == ("/v1/images/generations", "POST", "200")
    assert line["responseLength"] == str(len(body))
    assert line["keyId"].startswith("key_") and line["errorType"] == "-"
    assert int(line["latencyMs"]) >= int(line["integrationLatencyMs"]) >= 0


def test_a_refused_request_gets_its_access_log_line_with_the_gateway_error(stack):
    response = httpx.post(stack.api_url + "/images/generations", json={"prompt": "p"})  # no key

    line = _access_line(stack, response.headers["x-amzn-requestid"])
    assert (line["status"], line["errorType"], line["keyId"]) == ("401", "UNAUTHORIZED", "-")
