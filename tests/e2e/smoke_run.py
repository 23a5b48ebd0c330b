"""``make smoke`` against a local stack of its own, started with the session and run in the background.

Its long check waits out a 61 s generation: run by the test itself, it would hold a pytest worker idle for a
minute. Started with the session (by the process that starts the stacks, see ``launcher``), it runs while the
other suites do, and ``test_smoke_e2e`` reads its outcome. The stack is its own, since every end-to-end test
resets the shared stacks' simulator.

The outcome (argv's output, return code, seconds taken) is written as JSON to a file whose path the workers find
in the environment (``E2E_SMOKE``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from tests.e2e import launcher

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENT = "E2E_SMOKE"
LONG_SECONDS = 61
# The stack's start, the smoke's ten checks (the long one a minute), on a machine busy with the other suites.
RUN_TIMEOUT_SECONDS = 300

_state: dict[str, Any] = {"processes": [], "thread": None}


def start() -> None:
    """Launch the stack and the run (once per session: not when a parent process already did)."""
    if _state["thread"] is not None or ENVIRONMENT in os.environ:
        return
    result = Path(tempfile.mkdtemp(prefix="image-service-smoke-")) / "result.json"
    processes: list[tuple[Any, IO[str]]] = _state["processes"]
    started = launcher.launch(processes)
    thread = threading.Thread(target=_run, args=(started, processes[-1][0], result), name="smoke", daemon=True)
    thread.start()
    _state["thread"] = thread
    os.environ[ENVIRONMENT] = str(result)  # the workers pytest-xdist starts after this inherit it


def _run(started: dict[str, Any], process: Any, result: Path) -> None:
    from tests.e2e.conftest import API_KEY

    outcome: dict[str, Any]
    try:
        stack = launcher.ready(started, process)
        began = time.monotonic()
        run = subprocess.run(  # noqa: S603 - fixed argv
            [shutil.which("make") or "/usr/bin/make", "-s", "smoke", f"BASE_URL={stack.api_url}", f"API_KEY={API_KEY}"],
            cwd=ROOT,
            env={**os.environ, "LONG_SECONDS": str(LONG_SECONDS)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
        )
        outcome = {
            "returncode": run.returncode,
            "stdout": run.stdout,
            "stderr": run.stderr,
            "took": time.monotonic() - began,
        }
    except Exception as exc:  # the test reports it
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    partial = result.with_suffix(".partial")
    partial.write_text(json.dumps(outcome))
    partial.replace(result)


def outcome(timeout: float = RUN_TIMEOUT_SECONDS + 60) -> dict[str, Any]:
    """The run's outcome, once it is over (started now if nothing started it)."""
    start()
    result = Path(os.environ[ENVIRONMENT])
    deadline = time.monotonic() + timeout
    while not result.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"make smoke against its own stack did not finish within {timeout:.0f} s")
        time.sleep(0.5)
    return dict(json.loads(result.read_text()))


def stop() -> None:
    """Stop the stack this process started (a worker leaves the controller's alone)."""
    for process, log in _state["processes"]:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    _state["processes"] = []
