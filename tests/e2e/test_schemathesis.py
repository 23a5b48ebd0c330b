"""The API against its own OpenAPI document, as served at /v1/openapi.json by the local stack: schemathesis
generates requests for every operation, valid ones and invalid ones, sends them with a valid key, and checks
each answer. Zero 5xx; every status, header, content type and body is one the document declares; what the
document calls invalid is refused; what it calls valid is taken, unless it breaks a rule JSON Schema cannot
express (named below, each answered with its own error code).

The number of cases is fixed per operation and the whole run is bounded in time."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import API_KEY, RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.contract]

# Cases per operation and generation mode. A valid generation or edit, at once or as a task, stores up to 10
# images, so it gets fewer cases than the cheap operations; the whole is at least MIN_CASES.
CASES = {
    "POST /v1/images/generations": {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 100},
    "POST /v1/images/generations/async": {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 100},
    "POST /v1/images/edits": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 100},
    "POST /v1/images/edits/async": {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 100},
    "POST /v1/uploads": {GenerationMode.POSITIVE: 80, GenerationMode.NEGATIVE: 80},
    # one query parameter: a few cases find its bounds
    "GET /v1/usage": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 60},
    "POST /v1/client_tokens": {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 50},
    # a valid response draws one image (and the text model's answer)
    "POST /v1/responses": {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 100},
}
DEFAULT_CASES = 120
# About 35 s on an idle 2-core machine; the bound leaves room for a loaded one without letting the run grow.
TIME_BOUND_SECONDS = 150
MIN_CASES = 1000

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


# pytest-timeout must not interrupt Hypothesis mid-run (it would report a data-generation error, not a timeout).
@pytest.mark.timeout(TIME_BOUND_SECONDS + 120)
def test_every_operation_answers_as_documented(stack: RunningStack) -> None:
    document = httpx.get(stack.api_url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    base_url = stack.api_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    statuses: Counter[tuple[str, int]] = Counter()
    timings: dict[str, float] = {}
    tool_limits: Counter[str] = Counter()  # cases the tool could not check (see _TOOL_LIMIT)
    refused: list[str] = []  # valid by the document, refused by the service for no rule the document cannot say

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "POST /v1/images/generations",
        "POST /v1/images/generations/async",
        "POST /v1/images/edits",
        "POST /v1/images/edits/async",
        "POST /v1/uploads",
        "GET /v1/images/tasks/{task_id}",
        "GET /v1/health",
        "GET /v1/openapi.json",
        "GET /v1/docs",
        "GET /v1/usage",
    }

    def explore(operation: Any, mode: GenerationMode) -> str | None:
        """One operation in one mode, on its own HTTP session; the failure, if any, as text."""
        session = requests.Session()

        @settings(
            max_examples=CASES.get(operation.label, {}).get(mode, DEFAULT_CASES),
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            try:
                response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
                statuses[(case.operation.label, response.status_code)] += 1
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                # The tool cannot hold a generated multipart file part (a Binary value) against the schema; such a
                # case is counted aside, and any 5xx it drew is still caught by the status count below.
                if _TOOL_LIMIT not in str(exc):
                    raise
                tool_limits[case.operation.label] += 1
                return
            if mode == GenerationMode.POSITIVE and response.status_code >= 400 and not _unexpressed_rule(response):
                refused.append(f"{case.operation.label}: {response.status_code} {response.text[:300]}")

        began = time.monotonic()
        try:
            run()
        except Unsatisfiable:
            return None  # nothing in this operation can be made invalid (no parameters, no body)
        except (Exception, BaseExceptionGroup) as failure:  # every operation is tried, all failures reported
            return f"{operation.label} [{mode.value}]: {_summary(failure)}"
        finally:
            timings[f"{operation.label} [{mode.value}]"] = round(time.monotonic() - began, 1)
            session.close()
        return None

    # One at a time: Hypothesis runs are not safe to interleave across threads on Python 3.11.
    started = time.monotonic()
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    failures = [failure for operation in operations for mode in modes if (failure := explore(operation, mode))]
    elapsed = time.monotonic() - started

    total = sum(statuses.values())
    print(f"schemathesis: {total} cases in {elapsed:.1f} s", dict(sorted(statuses.items())), timings, dict(tool_limits))
    assert not failures, "\n\n".join(failures)
    assert not refused, "\n".join(refused[:20])
    assert total >= MIN_CASES, statuses
    assert not [key for key in statuses if key[1] >= 500], statuses
    assert elapsed < TIME_BOUND_SECONDS, f"{total} cases took {elapsed:.1f} s"


# Rules JSON Schema cannot state, each refused with its parameter named: the size arithmetic (multiples of 16,
# aspect ratio, pixel range), output_compression only with a lossy format, partial_images only with stream,
# stream not offered yet, a prompt that is only whitespace, a printable Idempotency-Key, an integer written 2.0
# (JSON Schema counts it as an integer; the service, strict like a typed client, does not); and what only the bytes
# or the stores can tell: a file part or inline image that is not a whole image (or not a mask), an upload, task
# or model id that is well formed but unknown, an Idempotency-Key reused for another request; a webhook_url's
# scheme, host and the addresses it resolves to.
_TOOL_LIMIT = "Unsupported type: 'Binary'"
_CROSS_FIELD = re.compile(r"(size|output_compression|partial_images|stream|prompt|Idempotency-Key|webhook_url)\Z")
_IMAGE_PART = re.compile(r"(image|image\[\d+\]|images\[\d+\]|mask)\Z")
_IMAGE_CODES = {"invalid_image_format", "invalid_mask", "image_too_large"}
_INTEGERS = {
    "n",
    "output_compression",
    "partial_images",
    "bytes",
    "expires_in",
    "max_images",
    "max_concurrent",
    "max_output_tokens",
    "max_tool_calls",
}
# POST /v1/responses: what its input items carry (data: URLs decoded and checked, upload and image ids looked up,
# the combinations of roles and parts) and its mask are checked from the bytes and the stores.
_RESPONSES_INPUT = re.compile(r"(input(\[\d+\]\S*)?|input_image_mask\S*)\Z")


def _unexpressed_rule(response: Any) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    param, code = str(error.get("param")), error.get("code")
    if response.status_code == 400:
        return bool(
            _CROSS_FIELD.match(param)
            or (_IMAGE_PART.match(param) and code in _IMAGE_CODES)
            or (param in _INTEGERS and code == "invalid_type")
            or bool(_RESPONSES_INPUT.match(param))
            # the JSON reader's bound on a number's digits (POST /v1/responses has free numbers: temperature...)
            or (code == "invalid_json" and "digits" in str(error.get("message")))
        )
    if response.status_code == 404:
        return code in ("upload_not_found", "task_not_found", "model_not_found", "previous_response_not_found")
    return response.status_code in (409, 422) and str(code).startswith("idempotency_")


def _summary(failure: BaseException) -> str:
    """The failure's checks and one reproduction, without the response bodies."""
    text = str(failure)
    if isinstance(failure, BaseExceptionGroup):
        text += "\n" + "\n".join(f"  - {type(e).__name__}: {str(e)[:600]}" for e in failure.exceptions)
    return text[:3000]
