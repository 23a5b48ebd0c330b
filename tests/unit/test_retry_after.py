"""Every 429 and 503 the service can answer says when to try again (Retry-After): the functions' errors (every
error class of the core, as the one error map turns it into HTTP), API Gateway's own answers (the template's
gateway responses) and the local stack's emulation of them."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from pathlib import Path

import pytest

import imagecore
from imagecore.domain.errors import RETRY_LATER_STATUSES, ImageServiceError, TokenBudgetExceeded
from imagecore.edge.http_errors import error_answer, internal_error
from local.gateway import LocalApiGateway, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# API Gateway's default status of each gateway response type (its developer guide, "Gateway response types").
DEFAULT_STATUS = {
    "ACCESS_DENIED": 403,
    "API_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_FAILURE": 500,
    "BAD_REQUEST_PARAMETERS": 400,
    "BAD_REQUEST_BODY": 400,
    "EXPIRED_TOKEN": 403,
    "INTEGRATION_FAILURE": 504,
    "INTEGRATION_TIMEOUT": 504,
    "INVALID_API_KEY": 403,
    "INVALID_SIGNATURE": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "QUOTA_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413,
    "RESOURCE_NOT_FOUND": 404,
    "THROTTLED": 429,
    "UNAUTHORIZED": 401,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "WAF_FILTERED": 403,
}


def every_error_class() -> list[type[ImageServiceError]]:
    for module in pkgutil.walk_packages(imagecore.__path__, "imagecore."):
        importlib.import_module(module.name)
    found, todo = [], [ImageServiceError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def retry_after(headers: dict[str, str]) -> str | None:
    return next((value for name, value in headers.items() if name.lower() == "retry-after"), None)


ERROR_CLASSES = every_error_class()


def test_the_walk_finds_the_errors_of_every_layer():
    names = {cls.__name__ for cls in ERROR_CLASSES}
    # domain, accounts, usecases: the 429s and 503s live in several layers
    assert {"TokenBudgetExceeded", "StorageUnavailable", "TasksUnavailable"} <= names
    assert {"BudgetExceeded", "UsageUnavailable", "TokenUsageUnavailable", "IdempotencyUnavailable"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_429_and_503_error_carries_retry_after(cls):
    answers = [error_answer(cls("m")), error_answer(cls("m", status=429)), error_answer(cls("m", status=503))]
    for answer in answers:
        if answer.status in RETRY_LATER_STATUSES:
            seconds = retry_after(answer.headers)
            assert seconds is not None and int(seconds) > 0, (cls.__name__, answer.status)
        else:
            assert retry_after(answer.headers) is None, (cls.__name__, answer.status)


def test_a_retry_after_given_is_kept_whatever_its_case():
    assert error_answer(ImageServiceError("m", status=429, headers={"retry-after": "42"})).headers == {
        "retry-after": "42"
    }
    assert error_answer(ImageServiceError("m", status=503, headers={"Retry-After": "7"})).headers["Retry-After"] == "7"
    assert retry_after(error_answer(internal_error()).headers) is None  # a 500 says nothing of later


def test_a_spent_client_token_is_told_how_long_it_still_lives():
    from imagecore.accounts.token_usage import TokenImageCounter

    counter = TokenImageCounter("t", region="us-east-1", client=object())
    with pytest.raises(TokenBudgetExceeded) as refused:
        counter.reserve("ctk_1", 3, limit=2, expires_at=int(time.time()) + 600)
    answer = error_answer(refused.value)
    assert answer.status == 429 and 595 <= int(answer.headers["Retry-After"]) <= 600
    assert "new token" in answer.body["error"]["message"]


def gateway_responses() -> dict[str, dict]:
    api = load_template(TEMPLATE)["Resources"]["ImageApi"]["Properties"]
    return api["GatewayResponses"]


def test_every_gateway_response_that_is_a_429_or_503_carries_retry_after():
    responses = gateway_responses()
    checked = []
    for kind, spec in responses.items():
        status = int(spec.get("StatusCode") or DEFAULT_STATUS.get(kind, 0))
        if status in RETRY_LATER_STATUSES:
            headers = (spec.get("ResponseParameters") or {}).get("Headers") or {}
            value = headers.get("Retry-After", "")
            assert re.fullmatch(r"'[1-9][0-9]*'", value), (kind, value)
            checked.append(kind)
    assert {"THROTTLED", "QUOTA_EXCEEDED"} <= set(checked)


def test_the_local_gateway_answers_its_429s_and_503s_with_retry_after():
    """Each gateway answer the emulation can give (as its code raises them), with the template's responses."""
    source = (ROOT / "local" / "gateway.py").read_text()
    raised = set(re.findall(r'GatewayError\(\s*"([A-Z_0-9]+)",\s*(\d{3})', source))
    raised |= {("THROTTLED", 429), ("QUOTA_EXCEEDED", 429)}  # _admit raises the plan's refusal by name
    assert len(raised) >= 6, raised
    app = LocalApiGateway(ROOT, TEMPLATE, load=lambda code_uri, handler: None)
    kinds = set(gateway_responses()) | {kind for kind, _ in raised}
    statuses = {kind: int(status) for kind, status in raised}
    seen = []
    for kind in sorted(kinds):
        response = app.gateway_response(kind, "req-1", statuses.get(kind, DEFAULT_STATUS.get(kind, 500)), "m")
        if response.status_code in RETRY_LATER_STATUSES:
            assert int(response.headers.get("Retry-After", "0")) > 0, (kind, response.status_code)
            seen.append(kind)
    assert {"THROTTLED", "QUOTA_EXCEEDED"} <= set(seen)
