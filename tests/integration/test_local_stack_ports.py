"""``make run`` (``python -m local``) refuses to start on a taken port: exit status 1 and one line saying which
variable to change, before anything is served (neither port may hang the start)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts python -m local

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("variable", ["PORT", "AWS_PORT"])
def test_a_taken_port_exits_1_with_one_line_naming_it(variable, taken_port):
    ports = {"PORT": str(free_port()), "AWS_PORT": str(free_port()), variable: str(taken_port)}
    env = {**os.environ, **ports, "API_KEYS": "isk-port-test-key"}
    env.pop("UPSTREAM_BASE_URL", None)

    done = subprocess.run(
        [sys.executable, "-m", "local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 1
    assert done.stdout == ""  # no banner: nothing was served
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"cannot start the local stack: {variable} {taken_port} ")
    assert f"set {variable}" in done.stderr


def test_a_real_upstream_without_its_key_exits_1_with_one_line():
    env = {**os.environ, "PORT": "0", "AWS_PORT": "0", "UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1"}
    env.pop("UPSTREAM_API_KEY", None)

    done = subprocess.run(
        [sys.executable, "-m", "local"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "cannot start the local stack: UPSTREAM_BASE_URL is set: set UPSTREAM_API_KEY too\n"
