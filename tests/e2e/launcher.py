"""Starts ``python -m local`` (the local stack exactly as ``make run`` starts it) in a process of its own, on free
ports, as soon as the session knows end-to-end tests will run; ``wait_until_ready`` blocks until it serves.

Under pytest-xdist the controller starts one stack per worker before the workers exist and hands them their ports
and log files through the environment (``E2E_STACKS``): each worker runs its tests on a stack of its own, one
after another, as a run without workers does (``--dist loadfile``: an end-to-end module stays on one worker)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 50  # within the per-test timeout of the first test that waits for it
ENVIRONMENT = "E2E_STACKS"  # the started stacks' ports and log files, for the processes that did not start them

_state: dict[str, Any] = {"processes": []}


def start(count: int = 1) -> None:
    """Launch ``count`` stacks (once per run: not when a parent process already did); their output goes to log
    files the tests read."""
    if _state["processes"] or ENVIRONMENT in os.environ:
        return
    started = [_launch() for _ in range(count)]
    # The workers pytest-xdist starts after this inherit it.
    os.environ[ENVIRONMENT] = json.dumps(started)


def _launch() -> dict[str, Any]:
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
    _state["processes"].append((process, log))
    return {"log_path": str(log_path), "port": port, "aws_port": aws_port, "pid": process.pid}


def _own_stack() -> dict[str, Any]:
    """This process's stack: the one of its xdist worker's number (gw0, gw1, ...), or the only one."""
    stacks = json.loads(os.environ[ENVIRONMENT])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return stacks[int(worker.removeprefix("gw")) % len(stacks)]


def wait_until_ready() -> Any:
    """The running stack (a ``RunningStack``), once its banner is out and its API answers."""
    from tests.e2e.conftest import RunningStack

    start()
    if "running" in _state:
        return _state["running"]
    started = _own_stack()
    log_path = Path(started["log_path"])
    process = _state["processes"][0][0] if len(_state["processes"]) == 1 else None
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
    """Stop the stacks this process started. A worker whose stack the controller started asks it to stop, without
    waiting: the stack stops while the worker exits, and the controller waits for it."""
    if not _state["processes"] and "running" in _state:
        with contextlib.suppress(ProcessLookupError):
            os.kill(_own_stack()["pid"], signal.SIGTERM)
    for process, _ in _state["processes"]:
        process.terminate()
    for process, log in _state["processes"]:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    if _state["processes"]:
        os.environ.pop(ENVIRONMENT, None)
    _state.clear()
    _state["processes"] = []
