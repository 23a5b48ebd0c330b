"""``make smoke`` against the local stack (the test session's ``make run``), the long check included: the stack
runs the simulator, so health says so, every image is free, and the over-60-s generation asks the simulator for
a 61 s delay through its prompt. It keeps the smoke test from rotting between deployments.

That generation is also this suite's proof that the streamed image route has no 29 s cut (API Gateway's limit
for a buffered integration): its request record says the answer was the ordinary JSON, the status held until
the images were stored, without a keep-alive."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "/usr/bin/make"
CHECKS = [
    "health",
    "generation",
    "streamed generation",
    "edit with a mask",
    "async task",
    "idempotency replay",
    "client token",
    "CORS preflight",
    "usage",
    "over 60 s",
]


@pytest.mark.timeout(240)  # the long check alone is a minute
def test_make_smoke_passes_every_check_against_the_local_stack(stack) -> None:
    env = {**os.environ, "LONG_SECONDS": "61"}
    started = time.monotonic()
    run = subprocess.run(  # noqa: S603 - fixed argv
        [MAKE, "-s", "smoke", f"BASE_URL={stack.api_url}", f"API_KEY={API_KEY}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
    )
    took = time.monotonic() - started
    lines = run.stdout.splitlines()

    assert run.returncode == 0, run.stdout + run.stderr
    assert API_KEY not in run.stdout + run.stderr  # the key is never echoed
    assert [line.split(":", 1)[0] for line in lines if line.startswith(("PASS", "FAIL", "SKIP"))] == [
        f"PASS  {name}" for name in CHECKS
    ]
    assert lines[-1] == "10 passed, 0 failed"
    assert "upstream simulator" in next(line for line in lines if line.startswith("PASS  health"))
    long_line = next(line for line in lines if line.startswith("PASS  over 60 s"))
    assert int(re.search(r"200 after (\d+) s", long_line).group(1)) >= 61
    assert took > 61
    # no 29 s cut: the minute-long upstream call was answered as JSON through the held status
    long_records = [
        line["request"]
        for line in stack.log_lines()
        if line.get("message") == "image request" and (line["request"].get("upstream_latency_ms") or 0) > 60_000
    ]
    assert len(long_records) == 1, long_records
    record = long_records[0]
    assert (record["delivery"], record["keepalives_sent"], record["streamed"]) == ("buffered", 0, False)
    assert (record["status"], record["outcome"]) == (200, "success")


def test_smoke_fails_a_long_check_that_proves_nothing_and_says_so(stack) -> None:
    """A generation quicker than a minute cannot show that no 29 s cut remains: the check fails, exit 1."""
    run = subprocess.run(
        [sys.executable, "scripts/smoke.py", "--long-seconds", "1"],
        cwd=ROOT,
        env={**os.environ, "BASE_URL": stack.api_url, "API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=50,
    )

    assert run.returncode == 1, run.stdout
    assert re.search(r"FAIL  over 60 s: Failed: answered in \d s: not over 60 s", run.stdout), run.stdout
    assert run.stdout.splitlines()[-1] == "9 passed, 1 failed"
