"""Nothing secret reaches a trace, a log line or a metric: the handlers run with the real Tracer (the X-Ray SDK
enabled and the AWS SDK and httpx patched, as the Tracer does at a cold start in Lambda) and every segment the
SDK would send to the daemon is captured by an emitter of ours, then searched, with every log and metrics line,
for the bearer key, the upstream key, the prompt, its revised prompt and presigned signatures.

Powertools' Tracer decides when ``imagecore.platform.observability`` makes it (off outside Lambda, as in the other
tests' process): the traced run happens in a fresh interpreter that looks like Lambda with active tracing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import UPSTREAM_KEY
from tests.integration.stack import Stack, png, submit_generation

ROOT = Path(__file__).resolve().parents[2]
TRACED = "IMAGE_SERVICE_TRACED_TEST"  # set in the fresh interpreter only
# What Lambda sets for a function with active tracing: the task root and the trace header of the invocation.
LAMBDA_TRACING = {
    "LAMBDA_TASK_ROOT": str(ROOT),
    "POWERTOOLS_TRACE_DISABLED": "false",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
}
BEARER_KEY = "isk-example-not-a-real-key"
PROMPT = "a violet heron on a frozen canal at dawn, secret-prompt-7f3a"
# Whatever spelling a signature takes: a presigned URL's query (X-Amz-Signature=), a POST policy's field
# (x-amz-signature), or the encoded policy itself.
SIGNATURE = re.compile(r"x-amz-signature|x-amz-credential|\"policy\"", re.IGNORECASE)


@pytest.mark.slow
@pytest.mark.timeout(300)  # a fresh interpreter imports and runs seven invocations
def test_no_trace_log_or_metric_holds_a_key_the_prompt_or_a_signature() -> None:
    """Runs ``test_traced_invocations`` below in a fresh interpreter that looks like Lambda with active tracing."""
    environment = {**os.environ, **LAMBDA_TRACING, TRACED: "1"}
    environment.pop("AWS_XRAY_SDK_ENABLED", None)

    done = subprocess.run(  # noqa: S603 - our own interpreter and test file
        [sys.executable, "-m", "pytest", f"{__file__}::test_traced_invocations", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


class CapturingEmitter:
    """Keeps every entity the recorder would send to the X-Ray daemon, serialized as it would be sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity.serialize())

    def set_daemon_address(self, address: str | None) -> None:  # the recorder's emitter interface
        pass


@pytest.fixture
def xray() -> Iterator[CapturingEmitter]:
    """The recorder Powertools' Tracer uses, sending to us instead of a daemon."""
    from aws_xray_sdk.core import xray_recorder

    emitter = CapturingEmitter()
    xray_recorder.configure(emitter=emitter, streaming_threshold=0)
    yield emitter


def traced(emitter: CapturingEmitter, call: Any) -> Any:
    """One invocation, as Lambda runs it under its facade segment (a new trace header each time)."""
    os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-5759e988-{os.urandom(12).hex()};Parent=53995c3f42cd8ad8;Sampled=1"
    return call()


@pytest.mark.skipif(os.getenv(TRACED) != "1", reason="run by the test above, in an interpreter traced as in Lambda")
def test_traced_invocations(stack: Stack, xray, log_tap, capsys):
    from aws_xray_sdk import global_sdk_config

    from imagecore.platform.observability import tracer

    assert type(tracer).__name__ == "Tracer" and not tracer.disabled  # the real one, on
    assert global_sdk_config.sdk_enabled()
    body = {"prompt": PROMPT, "size": "1024x1024", "n": 2}

    sync = traced(xray, lambda: stack.post("/v1/images/generations", body))
    submitted = traced(xray, lambda: submit_generation(stack, body))
    traced(xray, stack.run_worker)
    polled = traced(xray, lambda: stack.get_task(submitted.body["id"]))
    upload = traced(
        xray, lambda: stack.post("/v1/uploads", {"filename": "in.png", "content_type": "image/png", "bytes": 9000})
    )
    edit = traced(
        xray,
        lambda: stack.post_multipart(
            "/v1/images/edits", {"prompt": PROMPT}, [("image[]", ("in.png", png(), "image/png"))]
        ),
    )
    inline = traced(xray, lambda: stack.post("/v1/images/generations", {**body, "response_format": "b64_json"}))

    # The answers do carry what must not be traced: the test would find it if it were.
    assert sync.status == 200 and "X-Amz-Signature=" in sync.body["data"][0]["url"]
    assert PROMPT in sync.body["data"][0]["revised_prompt"]
    assert polled.status == 200 and polled.body["status"] == "completed"
    assert "X-Amz-Signature=" in json.dumps(polled.body)
    assert upload.status == 200 and "x-amz-signature" in upload.body["fields"]
    assert edit.status == 200 and inline.status == 200
    image = base64.b64decode(inline.body["data"][0]["b64_json"])

    segments = "\n".join(xray.sent)
    assert "## lambda_handler" in segments
    assert segments.count('"name": "## lambda_handler"') >= 7  # each invocation's handler subsegment was sent
    assert '"namespace": "aws"' in segments  # the patched S3/DynamoDB/SQS calls are there
    assert '"namespace": "remote"' in segments  # and the upstream calls (httpx)
    output = capsys.readouterr()
    everything = {"segments": segments, "logs": log_tap.text, "stdout": output.out, "stderr": output.err}
    assert '"_aws"' in output.out  # the metrics lines are among what is searched
    for where, text in everything.items():
        assert BEARER_KEY not in text, where
        assert UPSTREAM_KEY not in text, where
        assert PROMPT not in text, where
        assert SIGNATURE.search(text) is None, (where, SIGNATURE.search(text))
        assert base64.b64encode(image[:48]).decode()[:40] not in text, where
    lines = [line["request"] for line in log_tap.records() + log_tap.records("image job")]
    assert len(lines) == 7
    # every function (the worker too) logs the same prompt under the same keyed digest
    digests = [line["prompt_hmac"] for line in lines if line["prompt_chars"] == len(PROMPT)]
    assert len(digests) == 5 and len(set(digests)) == 1 and re.fullmatch(r"[0-9a-f]{16}", digests[0])
