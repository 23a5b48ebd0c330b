"""``sam validate --lint`` on template.yaml, as a subprocess started as soon as the session knows it will be
needed: it takes seconds of its own CPU, which overlap with the other tests' waiting on sockets and queues.

It writes its output and then its exit status to files in a folder named in the environment (``SAM_VALIDATE``),
so that under pytest-xdist the controller starts it once and whichever worker runs the test reads its result."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
ENVIRONMENT = "SAM_VALIDATE"  # the folder of the started validation's output and exit status

_runs: list[subprocess.Popen[bytes]] = []


def sam_cli() -> Path:
    return Path(sys.executable).with_name("sam")


def start() -> None:
    """Start the validation (once per run: not when a parent process already did); ``result()`` waits for it."""
    if _runs or ENVIRONMENT in os.environ or not sam_cli().exists():
        return
    folder = Path(tempfile.mkdtemp(prefix="sam-validate-"))
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}
    # The status is written to a file of its own once the output is complete, then renamed: whoever sees it
    # sees the whole output.
    script = '"$@" > output.log 2>&1; echo $? > status.tmp; mv status.tmp status'
    process = subprocess.Popen(  # noqa: S603 - fixed argv, our own venv's sam
        ["/bin/sh", "-c", script, "sh", str(sam_cli()), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=folder,
        env=env,
        start_new_session=True,  # stopped with its shell
    )
    _runs.append(process)
    os.environ[ENVIRONMENT] = str(folder)


def result(timeout: float) -> tuple[int, str]:
    """(exit status, output) of the validation, started now if it was not yet."""
    start()
    folder = Path(os.environ[ENVIRONMENT])
    deadline = time.monotonic() + timeout
    while not (folder / "status").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"sam validate did not end within {timeout} s")
        time.sleep(0.1)
    returncode = int((folder / "status").read_text())
    return returncode, (folder / "output.log").read_bytes().decode("utf-8", "replace")


def stop() -> None:
    """Stop the validation if this process started it (a worker leaves the controller's alone)."""
    for process in _runs:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        folder = os.environ.pop(ENVIRONMENT, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    _runs.clear()
