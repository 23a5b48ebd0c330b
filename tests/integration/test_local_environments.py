"""The local stack runs each function as Lambda does: in execution environments of its own (processes of that
function, each taking one invocation at a time), so concurrent invocations never share Powertools' state. Driven
through the local API Gateway emulation with a small function (tests/integration/local_functions.py)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from local.gateway import LocalApiGateway

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


def test_concurrent_invocations_run_apart_each_with_its_own_log_fields_metrics_and_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Powertools keeps the appended Logger keys, the pending metrics and the event being resolved on objects a
    process shares; two functions, and two invocations of one function, running at once must each log, flush and
    resolve only their own, as in Lambda, where each runs in an execution environment (a process) of its own."""
    per_route, paths = 2, ["/v1/images/tasks/task_{i}", "/v1/health"]
    monkeypatch.setenv("LOCAL_FUNCTIONS_BARRIER", str(tmp_path))
    monkeypatch.setenv("LOCAL_FUNCTIONS_IN_FLIGHT", str(per_route * len(paths)))
    app = LocalApiGateway(ROOT, TEMPLATE)  # the handlers in environments of their own, as the local stack runs them
    # Time enough for four environments to start at once on a small machine, all waiting at the barrier.
    run_here = {"code_uri": "tests/integration/", "handler": "local_functions.lambda_handler", "authorized": False}
    app.api.routes[:] = [
        replace(route, **run_here, timeout_s=120, integration_timeout_ms=120_000)
        for route in app.api.routes
        if route.path in ("/v1/images/tasks/{task_id}", "/v1/health") and route.method == "GET"
    ]
    seen: list[dict[str, Any]] = []

    def call(path: str) -> None:
        response = Client(app).get(path)
        assert response.status_code == 200, response.get_data(as_text=True)
        seen.append({**response.get_json(), "asked": path, "answer_id": response.headers["x-amzn-RequestId"]})

    threads = [threading.Thread(target=call, args=(path.format(i=i),)) for i in range(per_route) for path in paths]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        app.close()

    assert len(seen) == per_route * len(paths)
    assert len({answer["pid"] for answer in seen}) == len(seen)  # all in flight at once: one environment each
    for answer in seen:
        assert answer["path"] == answer["asked"]
        assert answer["request_id"] == answer["answer_id"]
        assert answer["task_id"] == (answer["asked"].rsplit("/", 1)[1] if "tasks" in answer["asked"] else None)
    function_of = {
        answer["answer_id"]: "TasksFunction" if "tasks" in answer["asked"] else "HealthFunction" for answer in seen
    }
    out = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    lines = [line for line in out if line.get("message") in ("started", "finished", "image request")]
    assert len(lines) == 3 * len(seen)
    for line in lines:
        request_id = line.get("correlation_id")
        assert line["function_name"] == function_of[request_id], line
        if line["message"] == "image request":
            assert line["request"]["api_request_id"] == request_id
            assert line["request"]["operation"] == function_of[request_id]
    # One metrics blob per invocation, each with its own operation and one request counted.
    blobs = [line for line in out if "_aws" in line]
    assert sorted(blob["operation"] for blob in blobs) == sorted(function_of.values())
    assert all(blob["Requests"] in (1, 1.0, [1.0]) for blob in blobs)
