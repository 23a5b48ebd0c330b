"""``sam validate --lint`` on template.yaml, as a subprocess started as soon as the session knows it will be
needed: it takes seconds of its own CPU, which overlap with the other tests' waiting on sockets and queues."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"


@dataclass
class _Run:
    process: subprocess.Popen[bytes]
    output: tempfile._TemporaryFileWrapper[bytes]


_runs: list[_Run] = []


def sam_cli() -> Path:
    return Path(sys.executable).with_name("sam")


def start() -> None:
    """Start the validation (once); ``result()`` waits for it."""
    if _runs or not sam_cli().exists():
        return
    output = tempfile.NamedTemporaryFile(prefix="sam-validate-", suffix=".log")  # noqa: SIM115 - kept open
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}
    process = subprocess.Popen(  # noqa: S603 - fixed argv, our own venv's sam
        [str(sam_cli()), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    _runs.append(_Run(process, output))


def result(timeout: float) -> tuple[int, str]:
    """(exit status, output) of the validation, started now if it was not yet."""
    start()
    run = _runs[0]
    returncode = run.process.wait(timeout=timeout)
    run.output.seek(0)
    return returncode, run.output.read().decode("utf-8", "replace")


def stop() -> None:
    for run in _runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        run.output.close()
    _runs.clear()
