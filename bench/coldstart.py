"""Cold start of both handlers in fresh processes (import + build dependencies), run in turn, in a venv holding
only the layer's requirements (built once under the cache dir from the exported requirements), with tracing as the
template deploys it: ``Tracing: Active`` in its Globals turns Powertools' Tracer on (the X-Ray SDK imported and the
libraries it traces patched, as in Lambda), with no X-Ray daemon here to send to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.cases import ROOT, BenchError
from scripts.package_tools import PackageError, uv

REQUIREMENTS = ROOT / "layers" / "imagecore" / "requirements.txt"
HANDLERS = ("naive", "generations", "streamed", "libraries")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "image-service-bench"


def _uv() -> str:
    try:
        return uv()
    except PackageError as exc:
        raise BenchError(f"{exc}: the layer's venv is built with it") from None


def layer_venv() -> Path:
    """A venv with exactly the layer's pinned requirements, keyed by their text and this Python's version."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    venv = _cache_dir() / f"layer-venv-{digest}"
    python = venv / "bin" / "python"
    if python.exists():
        return venv
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    commands = (
        [_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [_uv(), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python), "-r", str(REQUIREMENTS)],
    )
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise BenchError(f"building the layer venv failed: {done.stderr.strip()[-800:]}")
    return venv


def compile_bytecode(python: Path) -> None:
    """Both sides start from cached bytecode, as in Lambda (where it comes in the package): the venv's packages
    and the project's sources are compiled first, since a probe may not write any (PYTHONDONTWRITEBYTECODE)."""
    site = next((python.parent.parent / "lib").glob("python3.*/site-packages"))
    compile_all = [str(python), "-m", "compileall", "-q", "-j", "0"]
    # a package may ship a file this Python cannot compile (it is never imported then): not an error here
    subprocess.run([*compile_all, str(site)], capture_output=True, check=False)  # noqa: S603
    sources = [ROOT / "layers" / "imagecore" / "imagecore", ROOT / "functions", ROOT / "bench"]
    done = subprocess.run([*compile_all, *map(str, sources)], capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BenchError(f"compiling the project's bytecode failed: {(done.stdout + done.stderr).strip()[-800:]}")


def deployed_tracing() -> dict[str, str]:
    """What Lambda sets for the template's tracing: with ``Tracing: Active`` a task root (Powertools' Tracer is on
    only in Lambda) and the Tracer's own switch on; no daemon listens locally, and a trace context missing (no
    invocation yet) is logged by the X-Ray SDK rather than raised, as its ``AWS_XRAY_CONTEXT_MISSING`` lets it."""
    from local.template import project_template

    function_globals = (project_template().get("Globals") or {}).get("Function") or {}
    if str(function_globals.get("Tracing", "PassThrough")) != "Active":
        return {"POWERTOOLS_TRACE_DISABLED": "true"}
    return {
        "LAMBDA_TASK_ROOT": str(ROOT),
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    }


def _probe(python: Path, which: str, environment: dict[str, str], modules: Path) -> dict[str, Any]:
    """One fresh process's answer (``ms``, ``cpu_ms``; ``generations`` adds ``library_modules``); ``libraries``
    imports the modules listed in the file ``modules``."""
    env = {**environment, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'imagecore'}"}
    command = [str(python), "-m", "bench.coldprobe", which, str(modules)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
    if done.returncode != 0:
        raise BenchError(f"cold start of {which} failed: {done.stderr.strip()[-800:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def cold_starts(environment: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Wall-clock ms (``naive``, ``generations``, ``streamed``, ``libraries``) and CPU ms (``naive cpu``, ...) per
    fresh process, the handlers taking turns (forwards, then backwards) so that load from elsewhere on the machine
    hits all alike."""
    python = layer_venv() / "bin" / "python"
    compile_bytecode(python)
    environment = {**environment, **deployed_tracing()}
    samples: dict[str, list[float]] = {key: [] for name in HANDLERS for key in (name, f"{name} cpu")}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as folder:
        modules = Path(folder) / "library-modules.json"
        # the libraries the generations function loads, listed once for the ``libraries`` probe
        modules.write_text(json.dumps(_probe(python, "generations", environment, modules)["library_modules"]))
        for run in range(runs + 1):  # the first round only warms the OS file cache
            for name in HANDLERS if run % 2 == 0 else HANDLERS[::-1]:
                figures = _probe(python, name, environment, modules)
                if run:
                    samples[name].append(float(figures["ms"]))
                    samples[f"{name} cpu"].append(float(figures["cpu_ms"]))
    return samples
