"""The package carries Python 3.13 bytecode for what the functions import, and only for that: Lambda's ``/opt``
and ``/var/task`` are read-only, so a module without it is compiled again at every cold start. The pycs are
unchecked-hash (PEP 552: the package never changes; a timestamp would not survive the zip) and record the path
Lambda shows (``/opt/python/...``, ``/var/task/...``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.package import DISCOVERY_ENVIRONMENT, write_bytecode
from scripts.package_tools import Interpreter, PackageError, find_python313
from tests.package.test_packaged_layout import functions_of

ROOT = Path(__file__).resolve().parents[2]

# Run by the 3.13 interpreter: what each pyc of [source, shown path] holds.
READ_PYCS = """
import importlib.util, json, marshal, os, sys
answer = {"magic": importlib.util.MAGIC_NUMBER.hex(), "pycs": {}}
for source, shown in json.load(sys.stdin):
    cached = importlib.util.cache_from_source(source)
    if not os.path.exists(cached):
        answer["pycs"][source] = None
        continue
    with open(cached, "rb") as pyc, open(source, "rb") as text:
        data, raw = pyc.read(), text.read()
    answer["pycs"][source] = {
        "magic": data[:4].hex(),
        "flags": int.from_bytes(data[4:8], "little"),
        "hash_matches": data[8:16] == importlib.util.source_hash(raw),
        "filename": marshal.loads(data[16:]).co_filename,
    }
print(json.dumps(answer))
"""

# Run by the 3.13 interpreter with -I -S -B (nothing written): a cold start of the generations function, buffered
# (import, then build its runtime) and streamed (uvicorn loading the app factory, as run.sh has it), counting
# the sources the import system compiled from the function's code or the layer (a library parsing its own
# text, as anyio's lazy importer does with its __init__, compiles it too, but no bytecode would save that).
COLD_START = """
import importlib.machinery, json, os, sys
code_dir, layer_dir, sdk_dir = sys.argv[1:4]
sys.path[:0] = [code_dir, layer_dir, sdk_dir]
compiled = []
def by_the_import_system():
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name != "source_to_code":
        frame = frame.f_back
    return frame is not None
def count(event, args):
    if event == "compile" and str(args[1]).startswith((code_dir, layer_dir)) and by_the_import_system():
        compiled.append(args[1])
sys.addaudithook(count)
canary = os.path.join(code_dir, "canary.py")  # proves the hook counts
importlib.machinery.SourceFileLoader("canary", canary).source_to_code(b"canary = 1", canary)
import app
app.deps()
import uvicorn.__main__
from uvicorn.config import Config
Config("app:streamed_app", factory=True, loop="asyncio", http="h11").load()
loaded = [m for m in list(sys.modules.values()) if str(getattr(m, "__file__", None)).startswith(layer_dir)]
print(json.dumps({
    "compiled": compiled,
    "from_layer": len(loaded),
    "uncached": sorted(m.__file__ for m in loaded if m.__file__.endswith(".py")
                       and not os.path.exists(m.__cached__)),
}))
"""


def read_pycs(python: Interpreter, sources: dict[Path, str]) -> dict[str, Any]:
    listing = json.dumps([[str(source), shown] for source, shown in sources.items()])
    done = subprocess.run(  # noqa: S603
        [python.path, "-I", "-c", READ_PYCS], input=listing, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_what_the_functions_import_carries_unchecked_hash_python_3_13_bytecode(
    packaged: Path, python313: Interpreter
) -> None:
    layer = packaged / "CoreLayer" / "python"
    modules = [path.relative_to(layer) for path in (layer / "imagecore").rglob("*.py")]
    assert len(modules) > 30
    modules += [
        Path("pydantic/main.py"),
        Path("aws_lambda_powertools/event_handler/api_gateway.py"),
        Path("httpx/__init__.py"),
        Path("httpx/_client.py"),
        Path("httpcore/_sync/http11.py"),  # imported when the client is built, used by the first upstream call
        Path("werkzeug/formparser.py"),  # imported when an edit's multipart body is parsed
        Path("aws_lambda_powertools/utilities/idempotency/idempotency.py"),  # imported by the first idempotent call
        Path("jwt/api_jwt.py"),
        Path("PIL/PngImagePlugin.py"),
        Path("PIL/WebPImagePlugin.py"),  # Image.open imports it when the five common formats did not match
        Path("aws_xray_sdk/core/recorder.py"),  # tracing is on in Lambda
        Path("uvicorn/protocols/http/h11_impl.py"),  # the streamed functions' server (run.sh)
    ]
    sources = {layer / module: f"/opt/python/{module.as_posix()}" for module in modules}
    for function in functions_of(ROOT / "template.yaml"):
        # a function is its handler module, or (the upstream simulator) the package its run.sh runs
        entry = next(path for path in ("app.py", "simulator/server.py") if (packaged / function / path).is_file())
        sources[packaged / function / entry] = f"/var/task/{entry}"
    answer = read_pycs(python313, sources)
    assert len(answer["magic"]) == 8
    for source, pyc in answer["pycs"].items():
        assert pyc is not None, f"no bytecode for {source}"
        assert pyc["magic"] == answer["magic"], f"{source}: not Python 3.13's bytecode"
        assert pyc["flags"] == 0b01, f"{source}: flags {pyc['flags']:#04b}, not unchecked-hash"
        assert pyc["hash_matches"], f"{source}: compiled from another text"
        assert pyc["filename"] == sources[Path(source)]
        assert Path(source).is_file()  # the source stays, for tracebacks


def test_a_module_nothing_imports_gets_no_bytecode(packaged: Path, python313: Interpreter) -> None:
    layer = packaged / "CoreLayer" / "python"
    unused = {
        layer / "aws_lambda_powertools/utilities/feature_flags/feature_flags.py": "",
        layer / "anyio/_backends/_trio.py": "",
        layer / "PIL/ImageFilter.py": "",
    }
    assert all(source.is_file() for source in unused)
    assert all(pyc is None for pyc in read_pycs(python313, unused)["pycs"].values())
    # nor for most of what the layer holds: the bytecode is what the functions import, not every package
    sources = [path for path in layer.rglob("*.py") if not path.is_relative_to(layer / "imagecore")]
    compiled = [path for path in sources if (path.parent / "__pycache__" / f"{path.stem}.cpython-313.pyc").exists()]
    assert 200 < len(compiled) < 0.7 * len(sources)


@pytest.fixture(scope="module")
def host_layer(packaged: Path, discovery_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged layer (sources and bytecode) with this machine's cp313 extension modules in place of the
    packaged ones, which are for another Python, so that Python 3.13 can import it here."""
    layer = tmp_path_factory.mktemp("host-layer") / "python"
    shutil.copytree(packaged / "CoreLayer" / "python", layer, ignore=shutil.ignore_patterns("*.so", "*.libs"))
    for extension in discovery_site.rglob("*.so"):
        relative = extension.relative_to(discovery_site)
        if (layer / relative.parent).is_dir():
            shutil.copy2(extension, layer / relative)
    for libs in discovery_site.glob("*.libs"):
        shutil.copytree(libs, layer / libs.name)
    return layer


def test_a_cold_start_of_the_generations_function_compiles_nothing(
    packaged: Path, python313: Interpreter, discovery_site: Path, host_layer: Path
) -> None:
    code_dir = packaged / "GenerationsStreamFunction"
    command = [python313.path, "-I", "-S", "-B", "-c", COLD_START, str(code_dir), str(host_layer), str(discovery_site)]
    done = subprocess.run(  # noqa: S603
        command, env=dict(DISCOVERY_ENVIRONMENT), capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["compiled"] == [str(code_dir / "canary.py")], "\n".join(answer["compiled"])
    assert answer["from_layer"] > 300
    assert answer["uncached"] == []


def test_the_python_3_13_is_found_on_path_or_named_and_its_absence_is_said(
    python313: Interpreter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no pyenv, no uv-managed Pythons
    monkeypatch.delenv("PACKAGE_PYTHON313", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("UV_PYTHON_INSTALL_DIR", raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    shim = bin_dir / "python3.13"  # like pyenv's shim when 3.13 is not the selected version: on PATH, failing
    shim.write_text("#!/bin/sh\nexit 127\n")
    shim.chmod(0o755)
    assert find_python313() is None
    assert write_bytecode(tmp_path, {}, None).startswith("bytecode not written: no Python 3.13 found")

    shim.unlink()
    shim.symlink_to(python313.path)
    found = find_python313()
    assert found is not None and found.path == str(shim) and found.version.startswith("3.13.")

    monkeypatch.setenv("PACKAGE_PYTHON313", sys.executable)  # named, and not 3.13 (the tests' own Python)
    if not sys.version.startswith("3.13."):
        with pytest.raises(PackageError, match=r"not a Python 3\.13"):
            find_python313()
    assert find_python313(python313.path) == python313
