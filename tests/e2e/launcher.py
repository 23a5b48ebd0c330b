"""Starts ``python -m local`` (the local stack exactly as ``make run`` starts it) in a process of its own, on free
ports, as soon as the session knows end-to-end tests will run; ``wait_until_ready`` blocks until it serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 50  # within the per-test timeout of the first test that waits for it

_state: dict[str, Any] = {}


def start() -> None:
    """Launch the stack (once); its output goes to a log file the tests read."""
    if "process" in _state:
        return
    from tests.e2e.conftest import API_KEY, SIGNING_KEY, free_port

    log_path = Path(tempfile.mkdtemp(prefix="image-service-e2e-")) / "stack.log"
    port, aws_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "AWS_PORT": str(aws_port),
        "API_KEYS": f"{API_KEY},isk-e2e-second-key",
        "CLIENT_TOKEN_SIGNING_KEY": SIGNING_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    # make run's defaults (any web origin may call it), whatever the test process's own environment says.
    for name in ("UPSTREAM_BASE_URL", "UPSTREAM_API_KEY", "IMAGES_BUCKET", "S3_ENDPOINT_URL", "CORS_ALLOW_ORIGINS"):
        env.pop(name, None)
    log: IO[str] = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "local"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    _state.update(process=process, log=log, log_path=log_path, port=port, aws_port=aws_port)


def wait_until_ready() -> Any:
    """The running stack (a ``RunningStack``), once its banner is out and its API answers."""
    from tests.e2e.conftest import RunningStack

    start()
    if "running" in _state:
        return _state["running"]
    process, log_path = _state["process"], _state["log_path"]
    banner = ""
    deadline = time.monotonic() + START_SECONDS
    while "upstream" not in banner or "API key" not in banner:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the local stack did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
        banner = log_path.read_text()
    simulator = re.search(r"simulator at (\S+)", banner)
    assert simulator, banner
    running = RunningStack(
        api_url=f"http://127.0.0.1:{_state['port']}/v1",
        aws_url=f"http://127.0.0.1:{_state['aws_port']}",
        simulator_url=simulator.group(1),
        log_path=log_path,
    )
    httpx.get(running.api_url + "/health", timeout=10).raise_for_status()
    _state["running"] = running
    return running


def stop() -> None:
    process = _state.pop("process", None)
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log = _state.pop("log", None)
    if log is not None:
        log.close()
    _state.clear()
