"""Nothing secret reaches a trace, a log line or a metric: the handlers run with the real Tracer (the X-Ray SDK
enabled, botocore and httpx patched as Powertools does in Lambda) and every segment the SDK would send to the
daemon is captured by an emitter of ours, then searched, with every log and metrics line, for the bearer key,
the upstream key, the prompt, its revised prompt and presigned signatures."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import patch, xray_recorder
from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter

from tests.conftest import UPSTREAM_KEY
from tests.integration.stack import Stack, png, submit_generation

BEARER_KEY = "isk-example-not-a-real-key"
PROMPT = "a violet heron on a frozen canal at dawn, secret-prompt-7f3a"
# Whatever spelling a signature takes: a presigned URL's query (X-Amz-Signature=), a POST policy's field
# (x-amz-signature), or the encoded policy itself.
SIGNATURE = re.compile(r"x-amz-signature|x-amz-credential|\"policy\"", re.IGNORECASE)


class CapturingEmitter(UDPEmitter):
    """Keeps every entity the recorder would send to the X-Ray daemon, serialized as it would be sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity.serialize())


@pytest.fixture
def xray(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturingEmitter]:
    """The X-Ray SDK on, as in Lambda with active tracing (no daemon: the emitter keeps what it would send);
    off again afterwards, so the other tests run untraced."""
    monkeypatch.delenv("AWS_XRAY_SDK_ENABLED", raising=False)
    emitter = CapturingEmitter()
    saved = (xray_recorder.emitter, xray_recorder.sampling, xray_recorder.streaming_threshold)
    global_sdk_config.set_sdk_enabled(True)
    patch(["botocore", "httpx"])  # what Powertools' auto_patch does at a cold start in Lambda
    xray_recorder.configure(emitter=emitter, sampling=False, context_missing="LOG_ERROR", streaming_threshold=0)
    try:
        yield emitter
    finally:
        xray_recorder.clear_trace_entities()
        xray_recorder.configure(emitter=saved[0], sampling=saved[1], streaming_threshold=saved[2])
        global_sdk_config.set_sdk_enabled(False)


def traced(emitter: CapturingEmitter, call: Any) -> Any:
    """Run one invocation inside a segment, as Lambda's facade segment would hold it."""
    xray_recorder.begin_segment("image-service")
    try:
        return call()
    finally:
        xray_recorder.end_segment()


def test_no_trace_log_or_metric_holds_a_key_the_prompt_or_a_signature(stack: Stack, xray, log_tap, capsys):
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
    assert len(xray.sent) >= 7  # each invocation sent its segment
    assert "## lambda_handler" in segments
    assert '"namespace": "aws"' in segments or '"aws":' in segments  # the patched S3/DynamoDB/SQS calls are there
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
