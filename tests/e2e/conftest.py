"""The local stack exactly as ``make run`` starts it (``python -m local``, a separate process), on free ports."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "isk-e2e-test-key-0001"
# The key the stack signs client tokens with: known here so a test can make an expired token.
SIGNING_KEY = "e2e-client-token-signing-key-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningStack:
    api_url: str
    aws_url: str
    simulator_url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        return lines

    def request_record(self, api_request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The one "image request" line for an API request id (the x-amzn-RequestId response header)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line["request"]
                for line in self.log_lines()
                if line.get("message") == "image request" and line["request"].get("api_request_id") == api_request_id
            ]
            if found or time.monotonic() > deadline:
                return found[0] if len(found) == 1 else {"found": len(found)}
            time.sleep(0.1)

    def upstream_calls(self) -> int:
        return httpx.get(self.simulator_url.removesuffix("/v1") + "/_simulator/stats").json()["calls"]

    def queue_faults(self, *responses: dict[str, Any]) -> None:
        httpx.post(self.simulator_url.removesuffix("/v1") + "/_simulator/faults", json={"responses": list(responses)})

    def reset_simulator(self) -> None:
        httpx.post(self.simulator_url.removesuffix("/v1") + "/_simulator/reset")

    def slow_simulator(self, latency_ms: int) -> None:
        """The upstream takes ``latency_ms`` per answer until the next reset."""
        httpx.post(self.simulator_url.removesuffix("/v1") + "/_simulator/options", json={"latency_ms": latency_ms})


@contextmanager
def running_stack(log_path: Path, **extra_env: str) -> Iterator[RunningStack]:
    """``python -m local`` on free ports with ``extra_env`` on top of the test keys; stopped on exit."""
    port, aws_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "AWS_PORT": str(aws_port),
        "API_KEYS": f"{API_KEY},isk-e2e-second-key",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "IMAGES_BUCKET", "S3_ENDPOINT_URL"):
        env.pop(name, None)
    env.update(extra_env)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "local"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while "upstream" not in banner or "API key" not in banner:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local stack did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
            banner = log_path.read_text()
        simulator = re.search(r"simulator at (\S+)", banner)
        assert simulator, banner
        running = RunningStack(
            api_url=f"http://127.0.0.1:{port}/v1",
            aws_url=f"http://127.0.0.1:{aws_port}",
            simulator_url=simulator.group(1),
            log_path=log_path,
        )
        httpx.get(running.api_url + "/health", timeout=10).raise_for_status()
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """The local stack, started when the session was collected (``launcher.start``), so that its start-up
    overlaps the suites that run before this one; stopped at the end of the session."""
    from tests.e2e import launcher

    yield launcher.wait_until_ready()
    launcher.stop()


@pytest.fixture
def openai_client(stack: RunningStack) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=stack.api_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(autouse=True)
def _fresh_simulator(stack: RunningStack) -> None:
    stack.reset_simulator()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it plainly when the browser tests could not run on this machine."""
    from tests.e2e.browser import MISSING, find_browser

    if find_browser() is None and any("test_browser.py" in r.nodeid for r in terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(f"BROWSER TESTS NOT RUN: {MISSING}", yellow=True, bold=True)
