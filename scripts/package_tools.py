"""What packaging needs from this machine: uv, Lambda's Python (3.13, to write the bytecode with) and a venv of
the layer's pinned requirements under it (this machine's wheels of the same pins: scripts/cold_imports.py finds
there which modules the functions load)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "layers" / "imagecore" / "requirements.txt"


class PackageError(Exception):
    """The artifact cannot be built, or breaks one of Lambda's limits."""


def uv() -> str:
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise PackageError("uv is needed (make install puts it in .tools/bin)")
    return found


class Interpreter(NamedTuple):
    path: str
    version: str  # sys.version: the discovery venv is built for this one


_VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.version)"


def _python_version(path: str) -> Interpreter | None:
    """``path`` if it runs and is a CPython 3.13 (3.13's bytecode is the same for every 3.13.x)."""
    try:
        done = subprocess.run(  # noqa: S603
            [path, "-I", "-c", _VERSION_PROBE], capture_output=True, text=True, check=False, timeout=60
        )
    except OSError:
        return None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) < 2 or lines[0] != "3.13":
        return None
    return Interpreter(path, lines[1])


def _pyenv_pythons() -> list[str]:
    """``~/.pyenv/versions/3.13*/bin/python3.13``, the newest first."""
    found = (Path.home() / ".pyenv" / "versions").glob("3.13*/bin/python3.13")
    newest_first = sorted(found, key=lambda path: [int(n) for n in re.findall(r"\d+", path.parts[-3])], reverse=True)
    return [str(path) for path in newest_first]


def _uv_python() -> list[str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    try:
        done = subprocess.run(  # noqa: S603
            [uv(), "python", "find", "3.13"], env=env, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, PackageError):
        return []
    return [done.stdout.strip()] if done.returncode == 0 and done.stdout.strip() else []


def find_python313(explicit: str | None = None) -> Interpreter | None:
    """The interpreter that writes the bytecode: ``explicit`` (``--python313``) or ``PACKAGE_PYTHON313`` (a
    PackageError when it is no Python 3.13), else the first that runs of ``python3.13`` on PATH, pyenv's newest
    3.13, ``uv python find 3.13``; None when there is none."""
    chosen = explicit or os.environ.get("PACKAGE_PYTHON313")
    if chosen:
        found = _python_version(chosen)
        if found is None:
            raise PackageError(f"{chosen} is not a Python 3.13 that runs")
        return found
    on_path = shutil.which("python3.13")
    for candidate in [*([on_path] if on_path else []), *_pyenv_pythons(), *_uv_python()]:
        found = _python_version(candidate)
        if found is not None:
            return found
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "image-service-package"


def discovery_venv(python: Interpreter) -> Path:
    """A venv of ``python`` with this machine's wheels of the layer's pins, kept under the cache directory and
    keyed by the requirements' text and the interpreter's version."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + python.version.encode()).hexdigest()[:12]
    venv = _cache_dir() / f"discovery-venv-{digest}"
    if (venv / "bin" / "python").exists():
        return venv
    building = venv.with_name(f"{venv.name}.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    commands = (
        [uv(), "venv", "--quiet", "--python", python.path, str(building)],
        [uv(), "pip", "install", "--quiet", "--python", str(building / "bin" / "python"), "-r", str(REQUIREMENTS)],
    )
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise PackageError(f"building the discovery venv failed: {done.stderr.strip()[-800:]}")
    try:
        building.rename(venv)
    except OSError:  # built meanwhile by another run
        shutil.rmtree(building, ignore_errors=True)
    return venv
