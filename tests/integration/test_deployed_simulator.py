"""The upstream simulator as a test deployment runs it: ``run.sh`` (``python -m simulator`` in the function's
code directory, the layer's packages on the path) behind the Lambda Web Adapter: ready on ``GET /_ready``, every
call keyed, the control endpoints off, real images of the asked size, and a delay asked for in the prompt."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from local.web_adapter import AdapterSettings, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "upstream_simulator"
KEY = "sim-deployed-test-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    """run.sh as the adapter's bootstrap runs it, LAMBDA_TASK_ROOT being the function's code."""
    port = free_port()
    env = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(FUNCTION),
        "AWS_LWA_PORT": str(port),
        "SIMULATOR_API_KEY": KEY,
        # the layer's packages: here the project's own environment and imagecore
        "PYTHONPATH": str(ROOT / "layers" / "imagecore"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(["/bin/bash", str(FUNCTION / "run.sh")], env=env, cwd="/")  # noqa: S603
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, AdapterSettings(readiness_path="/_ready", healthy_status=frozenset({200})), 20)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def generate(url: str, prompt: str, size: str = "1024x768", key: str = KEY, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/images/generations",
        json={"model": "gpt-image-2", "prompt": prompt, "size": size, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_it_draws_real_images_of_the_asked_size(simulator: str) -> None:
    answer = generate(simulator, "a lighthouse", size="1024x768", output_format="jpeg")

    assert answer.status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"])))
    assert (image.size, image.format) == ((1024, 768), "JPEG")
    assert answer.json()["usage"]["output_tokens"] > 0


def test_every_call_needs_its_key(simulator: str) -> None:
    answer = generate(simulator, "a lighthouse", key="wrong")

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_the_control_endpoints_are_off(simulator: str) -> None:
    assert httpx.get(f"{simulator}/_simulator/stats").status_code == 404
    assert httpx.post(f"{simulator}/_simulator/faults", json={"responses": [{"status": 500}]}).status_code == 404
    assert generate(simulator, "still fine").status_code == 200


def test_a_delay_asked_for_in_the_prompt_is_honoured(simulator: str) -> None:
    started = time.monotonic()
    answer = generate(simulator, "a slow one [simulate delay=1500ms]")
    took = time.monotonic() - started

    assert answer.status_code == 200
    assert 1.5 <= took < 10


def test_a_streamed_answer_sends_its_partial_images_first(simulator: str) -> None:
    with httpx.stream(
        "POST",
        f"{simulator}/v1/images/generations",
        json={"model": "gpt-image-2", "prompt": "p", "size": "1024x1024", "stream": True, "partial_images": 2},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as answer:
        events = [line.removeprefix("event: ") for line in answer.iter_lines() if line.startswith("event: ")]

    assert events == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
