"""scripts/api_key.py pointed at no deployment (no region, no credentials, no project environment): one sentence
saying what it needs, never a traceback. Apart from test_api_key_script.py, whose moto answers every call."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "api_key.py"
NO_DEPLOYMENT = "scripts/api_key.py manages the keys of a deployed stack and could not reach one"


def without_aws(monkeypatch: pytest.MonkeyPatch, *, region: str | None) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if region is not None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)


@pytest.mark.parametrize(
    ("region", "reason"), [(None, "no AWS region is set"), ("us-east-1", "no AWS credentials were found")]
)
def test_without_a_deployment_the_script_says_so_in_one_sentence(capsys, monkeypatch, region, reason):
    without_aws(monkeypatch, region=region)

    main = runpy.run_path(str(SCRIPT), run_name="api_key")["main"]
    fresh = boto3.Session()  # as a new process has: not the default session, which earlier tests' credentials fill

    assert main(["list"], client=fresh.client) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.startswith(f"{NO_DEPLOYMENT} ({reason}): ")
    assert "API_KEYS" in printed.err and printed.err.count("\n") == 1


def test_outside_the_project_environment_the_script_says_how_to_run_it():
    done = subprocess.run(  # noqa: S603 - this interpreter, isolated from site-packages: no boto3, no imagecore
        [sys.executable, "-I", "-S", str(SCRIPT), "list"], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 1
    assert done.stderr.startswith("scripts/api_key.py needs the project's environment (No module named ")
    assert done.stderr.strip().endswith("run it as .venv/bin/python scripts/api_key.py")
    assert "Traceback" not in done.stderr
