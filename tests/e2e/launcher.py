"""Starts ``python -m local`` (the local stack exactly as ``make run`` starts it) in a process of its own, on free
ports, as soon as the session knows end-to-end tests will run; ``wait_until_ready`` blocks until it serves.

Under pytest-xdist the controller starts the one stack before its workers exist and hands them its ports and log
file through the environment (``E2E_STACK``); the end-to-end tests run on one worker (their ``xdist_group``), so
no two tests share the stack at once, as in a run without workers."""

from __future__ import annotations

import json
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
ENVIRONMENT = "E2E_STACK"  # the started stack's ports and log file, for the processes that did not start it

_state: dict[str, Any] = {}


def start() -> None:
    """Launch the stack (once per run: not when a parent process already did); its output goes to a log file the
    tests read."""
    if "process" in _state or ENVIRONMENT in os.environ:
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
    _state.update(process=process, log=log)
    # The workers pytest-xdist starts after this inherit it.
    os.environ[ENVIRONMENT] = json.dumps({"log_path": str(log_path), "port": port, "aws_port": aws_port})


def wait_until_ready() -> Any:
    """The running stack (a ``RunningStack``), once its banner is out and its API answers."""
    from tests.e2e.conftest import RunningStack

    start()
    if "running" in _state:
        return _state["running"]
    started = json.loads(os.environ[ENVIRONMENT])
    log_path = Path(started["log_path"])
    process = _state.get("process")
    banner = ""
    deadline = time.monotonic() + START_SECONDS
    while "upstream" not in banner or "API key" not in banner:
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"the local stack did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
        banner = log_path.read_text()
    simulator = re.search(r"simulator at (\S+)", banner)
    assert simulator, banner
    running = RunningStack(
        api_url=f"http://127.0.0.1:{started['port']}/v1",
        aws_url=f"http://127.0.0.1:{started['aws_port']}",
        simulator_url=simulator.group(1),
        log_path=log_path,
    )
    httpx.get(running.api_url + "/health", timeout=10).raise_for_status()
    _state["running"] = running
    return running


def stop() -> None:
    """Stop the stack if this process started it (a worker leaves the controller's alone)."""
    process = _state.pop("process", None)
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.environ.pop(ENVIRONMENT, None)
    log = _state.pop("log", None)
    if log is not None:
        log.close()
    _state.clear()
