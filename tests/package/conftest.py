"""The packaged artifact, built once for the tests that import from it or measure it."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.package_tools import Interpreter, discovery_venv, find_python313

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scripts" / "package.py"


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact built with this machine's wheels, once a run: pytest-xdist's workers share it through their
    common temporary folder, the first one to need it builds it while the others wait on a lock."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent
    out = shared / "package" / "build"
    with (shared / "package.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "package" / "built").exists():
            shutil.rmtree(out, ignore_errors=True)
            done = subprocess.run(  # noqa: S603
                [sys.executable, str(PACKAGE), "--platform", "host", "--out", str(out)],
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr
            # every function's builders ran in the discovery environment, so what they import has its bytecode
            assert "refused to run" not in done.stderr, done.stderr
            (shared / "package" / "built").touch()
    return out


@pytest.fixture(scope="session")
def python313() -> Interpreter:
    """The Python 3.13 that scripts/package.py writes the bytecode with (found the same way)."""
    found = find_python313()
    if found is None:
        pytest.skip("no Python 3.13 on this machine: the package carries no bytecode to check")
    return found


@pytest.fixture(scope="session")
def discovery_site(python313: Interpreter) -> Path:
    """site-packages of the venv scripts/package.py found the imported modules in (this machine's cp313 wheels)."""
    (site,) = (discovery_venv(python313) / "lib").glob("python3.13/site-packages")
    return site


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Building the artifact and the quick bench take longer than a unit test: a wider per-test timeout, where
    the timeout plugin runs."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(300))
