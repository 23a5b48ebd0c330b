"""The upstream simulator's routing table and the delay a call asks for (``[simulate delay=...]`` in its prompt,
or the ``X-Simulator-Delay-Ms`` header), through its WSGI app."""

from __future__ import annotations

import time

import pytest
from werkzeug.test import Client

from functions.upstream_simulator.simulator import SimulatorOptions, UpstreamSimulator, requested_delay_ms
from functions.upstream_simulator.simulator.server import MAX_DELAY_MS, RECENT_REQUESTS


@pytest.mark.parametrize(
    ("prompt", "header", "expected"),
    [
        ("a cat [simulate delay=65s]", None, 65_000),
        ("a cat [simulate delay=1.5s]", 99, 1_500),
        ("a cat [simulate delay=250ms]", None, 250),
        ("a cat", 700, 700),
        ("a cat", None, 40),
        ("a cat [simulate delay=9999s]", None, MAX_DELAY_MS),
        ("a cat [simulate delay=soon]", None, 40),
    ],
)
def test_the_delay_a_call_asks_for(prompt: str, header: int | None, expected: int) -> None:
    assert requested_delay_ms(prompt, header, 40) == expected


def test_every_upstream_route_is_one_line_of_the_table() -> None:
    assert set(UpstreamSimulator.ROUTES) >= {("POST", "/images/generations"), ("POST", "/images/edits")}


def test_a_header_delay_holds_the_answer_and_an_unknown_route_is_a_404() -> None:
    client = Client(UpstreamSimulator(SimulatorOptions()))
    body = {"model": "gpt-image-2", "prompt": "p", "size": "1024x1024"}

    started = time.monotonic()
    answer = client.post("/v1/images/generations", json=body, headers={"X-Simulator-Delay-Ms": "300"})
    took = time.monotonic() - started

    assert answer.status_code == 200 and took >= 0.3
    assert client.post("/v1/audio/speech", json={}).status_code == 404
    assert client.get("/_ready").status_code == 200


def test_stats_keep_the_recent_requests_oldest_first_and_a_reset_forgets_them() -> None:
    client = Client(UpstreamSimulator(SimulatorOptions(latency_ms=0)))
    auth = {"Authorization": "Bearer sim-key"}
    for i in range(RECENT_REQUESTS + 2):
        # one prompt, so the picture is drawn once; the calls differ by their user
        body = {"model": "gpt-image-2", "prompt": "a cat", "size": "1024x1024", "quality": "low", "user": f"call {i}"}
        client.post("/v1/images/generations", json=body, headers=auth)

    stats = client.get("/_simulator/stats").json
    assert stats["calls"] == RECENT_REQUESTS + 2
    users = [request["json"]["user"] for request in stats["recent_requests"]]
    assert users == [f"call {i}" for i in range(2, RECENT_REQUESTS + 2)]
    assert stats["last_request"] == stats["recent_requests"][-1]

    client.post("/_simulator/reset")
    assert client.get("/_simulator/stats").json["recent_requests"] == []
