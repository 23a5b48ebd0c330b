"""The upstream client's POST /responses against the simulator on a real port: the JSON answer, the event
stream relayed event by event, and the failure semantics (a committed 200 is never asked again)."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from imagecore.domain.deadline import Deadline
from imagecore.domain.errors import UpstreamFailed, UpstreamRejected
from imagecore.upstream.client import CallTrace, RetryPolicy, UpstreamClient
from tests.conftest import UPSTREAM_KEY

TOOL = {"type": "image_generation", "size": "1024x1536", "output_format": "jpeg", "partial_images": 2}


def client(simulator: Any) -> UpstreamClient:
    return UpstreamClient(
        simulator.url,
        lambda: UPSTREAM_KEY,
        http=httpx.Client(),
        retry=RetryPolicy(base_delay=0.01),
        sleep=lambda _: None,
    )


def body(**more: Any) -> dict[str, Any]:
    return {"model": "gpt-5", "input": "draw a cat", "tools": [TOOL], **more}


def test_json_answer_holds_the_image_of_the_asked_size(simulator: Any) -> None:
    result = client(simulator).respond(body(), timeout=30, deadline=Deadline.after(60))
    call, message = result.body["output"]
    image = Image.open(io.BytesIO(base64.b64decode(call["result"])))
    assert (image.format, image.size) == ("JPEG", (1024, 1536))
    assert message["content"][0]["text"].startswith("Here is the image")
    assert result.usage is not None and result.usage["total_tokens"] > 0
    assert simulator.calls == 1


def test_stream_events_are_handed_on_in_order(simulator: Any) -> None:
    events: list[dict[str, Any]] = []
    result = client(simulator).respond(
        body(stream=True), timeout=30, deadline=Deadline.after(60), on_event=events.append
    )
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.image_generation_call.partial_image") == 2
    assert kinds[-1] == "response.completed"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert result.body["output"][0]["type"] == "image_generation_call"


def test_previous_response_id_is_refused_by_the_stateless_upstream(simulator: Any) -> None:
    with pytest.raises(UpstreamRejected) as refused:
        client(simulator).respond(body(previous_response_id="resp_x"), timeout=30, deadline=Deadline.after(60))
    assert refused.value.code == "previous_response_not_found"


def test_a_5xx_is_retried_and_a_cut_200_is_not(simulator: Any) -> None:
    simulator.queue_faults({"status": 503}, {"mode": "cut"})
    trace = CallTrace()
    with pytest.raises(UpstreamFailed) as failed:
        client(simulator).respond(body(), timeout=30, deadline=Deadline.after(60), trace=trace)
    assert failed.value.code == "upstream_incomplete"
    assert simulator.calls == 2 and trace.attempts == 2


@pytest.mark.parametrize("mode", ["sse_error", "sse_cut"])
def test_a_stream_that_fails_after_a_200_is_final(simulator: Any, mode: str) -> None:
    simulator.queue_faults({"mode": mode, "after_partials": 1})
    events: list[dict[str, Any]] = []
    with pytest.raises(UpstreamFailed):
        client(simulator).respond(body(stream=True), timeout=30, deadline=Deadline.after(60), on_event=events.append)
    assert simulator.calls == 1
    assert [e["type"] for e in events].count("response.image_generation_call.partial_image") == 1
