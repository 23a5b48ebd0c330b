"""Build what ``sam deploy`` uploads, for Lambda's linux/arm64 Python 3.13, without Docker.

Usage::

    .venv/bin/python scripts/package.py                      # .aws-sam/build for linux/arm64 cp313 (make package)
    .venv/bin/python scripts/package.py --platform host --out DIR
                                                             # the same layout with this machine's own wheels

The layout is ``sam build``'s: ``<out>/CoreLayer/python/`` (imagecore and its pinned requirements, wheels for the
target platform only), ``<out>/<FunctionId>/`` (a copy of each function's ``CodeUri``), and ``<out>/template.yaml``
pointing at them, which ``sam deploy`` picks up as it is. Each directory is also zipped under ``<out>/zips/`` and
checked against Lambda's limits: 250 MB unzipped for a function with its layers, 50 MB zipped for a direct upload.

The layer holds every distribution of ``layers/imagecore/requirements.txt`` (exported from ``uv.lock``), the AWS
SDK (boto3, botocore and their dependencies) among them, exactly as ``sam build`` installs that file: the functions
run on the SDK the tests ran, not on whichever one the runtime happens to carry (the layer's ``/opt/python`` comes
before the runtime's own on ``sys.path``).

Bytecode: Lambda's ``/opt`` and ``/var/task`` are read-only, so Python cannot cache what it compiles there and
compiles every imported module at every cold start. The package therefore carries Python 3.13 bytecode
(unchecked-hash .pyc: the package never changes and a timestamp would not survive the zip; each recording the
``/opt/python/...`` or ``/var/task/...`` path Lambda shows in tracebacks; the sources stay) for all of imagecore
and of each function's code, and for each module of the layer the functions actually load: found by
``scripts/cold_imports.py`` importing them under 3.13 in a cached venv of this machine's wheels of the same pins
(their .py files are the arm64 wheels' too), the SDK's among them. Not every module of every package: the
layer ships them all as sources, and the rest would only add bytecode no function loads. Measured (x86, Python
3.13.0, generations' import and runtime, sources read-only, the SDK compiled, median of 5): 704 ms without
bytecode, 312 ms with. The layer with the SDK: 67.2 MB unzipped (31.2 MB zipped), 9.2 MB of it bytecode
(750 modules; the SDK's 170 of them, 2.6 MB). The interpreter is
``--python313``, else ``PACKAGE_PYTHON313``, else ``python3.13`` on PATH, pyenv's newest 3.13 or ``uv python find
3.13``; without one the package is built as before and says that no bytecode was written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.template import load_template  # noqa: E402 - the repository root first
from scripts.package_tools import (  # noqa: E402
    REQUIREMENTS,
    Interpreter,
    PackageError,
    discovery_venv,
    find_python313,
    uv,
)

# Lambda's python3.13 on arm64, for the requirements' environment markers (pip's names for them).
LAMBDA_MARKERS = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
LAYER_SOURCE = ROOT / "layers" / "imagecore" / "imagecore"
LAYER_ID = "CoreLayer"
PLATFORMS = {
    # Lambda's python3.13 runs on Amazon Linux 2023 (glibc 2.34).
    "arm64": ["--python-platform", "aarch64-manylinux_2_34", "--python-version", "3.13"],
    "host": [],
}
MB = 1024 * 1024
# Where Lambda puts the layer's ``python/`` and a function's code: the source path each .pyc records (tracebacks).
LAMBDA_LAYER_PATH = "/opt/python"
LAMBDA_TASK_PATH = "/var/task"
COLD_IMPORTS = ROOT / "scripts" / "cold_imports.py"
# What scripts/cold_imports.py runs in: a deployed function's environment, imitated. LAMBDA_TASK_ROOT puts
# Powertools in Lambda mode (tracing on, as ``Tracing: Active`` has it, so the X-Ray SDK is imported); nothing
# is called over the network (the endpoints refuse at once).
DISCOVERY_ENVIRONMENT = {
    "LAMBDA_TASK_ROOT": LAMBDA_TASK_PATH,
    "AWS_LAMBDA_FUNCTION_NAME": "package-discovery",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "package-discovery",
    "AWS_SECRET_ACCESS_KEY": "package-discovery",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
    "POWERTOOLS_SERVICE_NAME": "image-service",
    "POWERTOOLS_METRICS_NAMESPACE": "ImageService",
    "IMAGES_BUCKET": "image-service-images",
    "UPSTREAM_BASE_URL": "https://upstream.invalid/v1",
    "UPSTREAM_API_KEY_SECRET_ID": "image-service-upstream-key",
    "API_KEYS_SECRET_ID": "image-service-api-keys",
    "PROMPT_DIGEST_KEY_SECRET_ID": "image-service-prompt-digest-key",
    "CLIENT_TOKEN_SIGNING_SECRET_ID": "image-service-client-token-key",
    "TASKS_TABLE": "image-service-tasks",
    "IDEMPOTENCY_TABLE": "image-service-idempotency",
    "USAGE_TABLE": "image-service-usage",
    "TOKEN_USAGE_TABLE": "image-service-token-usage",
    "JOBS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/image-service-jobs",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/image-service-dlq",
    "EVENT_BUS_NAME": "image-service-events",
    "WEBHOOK_SECRETS_TABLE": "image-service-webhook-secrets",
    "WEBHOOK_SECRETS_KEY_ID": "alias/image-service-webhook-secrets",
    "WEBHOOK_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/image-service-webhooks",
}
UNZIPPED_LIMIT = 250 * MB  # function code and all its layers, unzipped
ZIPPED_LIMIT = 50 * MB  # a zip uploaded directly to Lambda


def pins(requirements: Path = REQUIREMENTS) -> list[str]:
    """The layer's pinned requirements (``name==version``) that apply on Lambda's python3.13: each line of the
    exported file, less those whose environment marker rules Linux out (colorama's ``sys_platform == 'win32'``)."""
    from packaging.markers import Marker

    found = []
    for line in requirements.read_text().splitlines():
        requirement, _, marker = line.partition(";")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", requirement.strip()):
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate(LAMBDA_MARKERS):
            continue
        found.append(requirement.strip())
    return found


def install(requirements: list[str], target: Path, platform: str) -> None:
    """Wheels only, no dependency resolution (the requirements are uv.lock's closure), no bytecode."""
    command = [uv(), "pip", "install", "--quiet", "--target", str(target), "--python", sys.executable]
    command += ["--only-binary", ":all:", "--no-deps", "--no-compile", *PLATFORMS[platform], *requirements]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise PackageError(f"installing {len(requirements)} requirement(s) failed: {done.stderr.strip()[-1500:]}")


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "requirements.txt"))


def function_sources(template: dict[str, Any]) -> dict[str, Path]:
    """Every function of the template and its ``CodeUri`` directory."""
    functions = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            functions[logical_id] = ROOT / resource["Properties"]["CodeUri"]
    return functions


def build_function(logical_id: str, source: Path, out: Path, platform: str) -> None:
    _copy(source, out / logical_id)
    requirements_file = source / "requirements.txt"
    lines = requirements_file.read_text().splitlines() if requirements_file.exists() else []
    own = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if own:  # a function's own dependencies go next to its code, as sam build puts them
        install(own, out / logical_id, platform)


def _point_code_uri(text: str, logical_id: str, relative: str) -> str:
    """``CodeUri: <relative>`` of the resource ``logical_id`` (several functions may share a code directory, as a
    streamed function shares its buffered sibling's) pointed at its built directory."""
    header = re.search(rf"^  {re.escape(logical_id)}:[ \t]*$", text, flags=re.M)
    if header is None:
        raise PackageError(f"{logical_id} not found in template.yaml")
    following = re.search(r"^  \S", text[header.end() :], flags=re.M)
    stop = header.end() + following.start() if following else len(text)
    block, count = re.subn(
        rf"(CodeUri:[ \t]*){re.escape(relative)}/?[ \t]*$", rf"\g<1>{logical_id}", text[header.end() : stop], flags=re.M
    )
    if count != 1:
        raise PackageError(f"{logical_id}: CodeUri {relative} found {count} times in its resource")
    return text[: header.end()] + block + text[stop:]


def write_template(template_text: str, functions: dict[str, Path], out: Path) -> None:
    """The template with each ``CodeUri``/``ContentUri`` pointing at its built directory (as sam build does)."""
    text = template_text
    for logical_id, source in functions.items():
        text = _point_code_uri(text, logical_id, source.relative_to(ROOT).as_posix())
    text, count = re.subn(r"(ContentUri:\s*)layers/imagecore/?\s*$", rf"\g<1>{LAYER_ID}", text, flags=re.M)
    if count != 1:
        raise PackageError(f"the layer's ContentUri was found {count} times in template.yaml")
    (out / "template.yaml").write_text(text)


def unzipped_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def zip_dir(directory: Path, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return target.stat().st_size


def sizes(out: Path, functions: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Unzipped and zipped bytes of the layer and of every function, and each function with the layer."""
    layer = out / LAYER_ID
    found = {LAYER_ID: {"unzipped": unzipped_bytes(layer), "zipped": zip_dir(layer, out / "zips" / f"{LAYER_ID}.zip")}}
    for logical_id in functions:
        directory = out / logical_id
        unzipped = unzipped_bytes(directory)
        found[logical_id] = {
            "unzipped": unzipped,
            "zipped": zip_dir(directory, out / "zips" / f"{logical_id}.zip"),
            "with_layers": unzipped + found[LAYER_ID]["unzipped"],
        }
    return found


def check_limits(found: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for name, figures in found.items():
        if figures["zipped"] > ZIPPED_LIMIT:
            problems.append(f"{name}: {figures['zipped'] / MB:.1f} MB zipped, over the 50 MB direct-upload limit")
        if figures.get("with_layers", 0) > UNZIPPED_LIMIT:
            problems.append(f"{name}: {figures['with_layers'] / MB:.1f} MB unzipped with its layer, over 250 MB")
    return problems


def _module_name(source: Path) -> str:
    return ".".join(source.relative_to(ROOT).parts)


def _entry_module(source: Path) -> str:
    """The module a function starts from: its ``app``, or the package its ``run.sh`` runs with ``python -m``."""
    if (source / "app.py").exists():
        return f"{_module_name(source)}.app"
    found = re.search(r"^exec python -m (\w+)\s*$", (source / "run.sh").read_text(), flags=re.M)
    if found is None:
        raise PackageError(f"{source.relative_to(ROOT)} has neither app.py nor a run.sh that runs a module")
    main = source / found.group(1) / "__main__.py"
    return f"{_module_name(source)}.{found.group(1)}" + (".__main__" if main.exists() else "")


def _servers(functions: dict[str, Path]) -> list[dict[str, Any]]:
    """What each streamed function's ``run.sh`` has uvicorn load (its app factory, loop and HTTP protocol)."""
    servers = []
    for source in sorted(set(functions.values())):
        script = source / "run.sh"
        if not script.exists():
            continue
        text = script.read_text()
        command = re.search(r"-m uvicorn\s+(\S+):(\S+)", text)
        if command is None and re.search(r"^exec python -m \w+\s*$", text, flags=re.M):
            continue  # a plain Python server of its own (the upstream simulator): its code is compiled as it is
        if command is None:
            raise PackageError(f"{script.relative_to(ROOT)} starts no uvicorn app")
        loop, http = re.search(r"--loop\s+(\S+)", text), re.search(r"--http\s+(\S+)", text)
        servers.append(
            {
                "app": f"{_module_name(source)}.{command.group(1)}:{command.group(2)}",
                "factory": "--factory" in text,
                "loop": loop.group(1) if loop else "auto",
                "http": http.group(1) if http else "auto",
            }
        )
    return servers


def discover(python: Path, functions: dict[str, Path]) -> list[Path]:
    """The files of the modules the functions load on a cold start and on their requests' paths, found by
    scripts/cold_imports.py under ``python`` (a discovery venv's)."""
    sources = sorted(set(functions.values()))
    request = {
        "root": str(ROOT),
        "sources_roots": [str(LAYER_SOURCE.parent)],
        "apps": [_entry_module(source) for source in sources],
        "sources": [str(LAYER_SOURCE), *map(str, sources)],
        "servers": _servers(functions),
    }
    prefix = python.parent.parent / "pycache"  # the repository's __pycache__ stays untouched
    command = [str(python), "-I", "-X", f"pycache_prefix={prefix}", str(COLD_IMPORTS), json.dumps(request)]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home()), **DISCOVERY_ENVIRONMENT}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)  # noqa: S603
    if done.returncode != 0:
        raise PackageError(f"importing the functions under Python 3.13 failed: {done.stderr.strip()[-1500:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    for refused in answer["refused"]:
        print(f"bytecode: a builder refused to run in the discovery environment: {refused}", file=sys.stderr)
    return [Path(name) for name in answer["files"]]


_COMPILE = """
import json, py_compile, sys
for source, shown in json.load(sys.stdin):
    py_compile.compile(source, dfile=shown, doraise=True, optimize=0,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def compile_sources(python: str, sources: dict[Path, str]) -> None:
    """Each source's ``__pycache__/<name>.cpython-313.pyc``, unchecked-hash (the package never changes, and a
    timestamp would not survive the zip), recording the path Lambda will show in tracebacks."""
    listing = json.dumps([[str(source), shown] for source, shown in sorted(sources.items())])
    done = subprocess.run(  # noqa: S603
        [python, "-I", "-c", _COMPILE], input=listing, capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        raise PackageError(f"compiling under Python 3.13 failed: {done.stderr.strip()[-1500:]}")


def bytecode_sources(out: Path, functions: dict[str, Path], loaded: list[Path], venv: Path) -> dict[Path, str]:
    """The packaged sources to compile, each with the path Lambda will see: all of imagecore and of every
    function's code, and each module ``loaded`` (a discovery venv's file) at the same place in the layer."""
    layer = out / LAYER_ID / "python"
    chosen: dict[Path, str] = {}
    for path in (layer / "imagecore").rglob("*.py"):
        chosen[path] = f"{LAMBDA_LAYER_PATH}/{path.relative_to(layer).as_posix()}"
    for logical_id, source in functions.items():
        for path in source.rglob("*.py"):
            relative = path.relative_to(source).as_posix()
            chosen[out / logical_id / relative] = f"{LAMBDA_TASK_PATH}/{relative}"
    site_packages = list((venv / "lib").glob("python3.13/site-packages"))
    for path in loaded:
        for site in site_packages:
            if path.suffix == ".py" and path.is_relative_to(site):
                packaged = layer / path.relative_to(site)
                if packaged.is_file():
                    chosen[packaged] = f"{LAMBDA_LAYER_PATH}/{path.relative_to(site).as_posix()}"
    return chosen


NO_PYTHON313 = (
    "bytecode not written: no Python 3.13 found (--python313, PACKAGE_PYTHON313, python3.13 on PATH, "
    "~/.pyenv/versions/3.13*, uv python find 3.13), so Lambda compiles every imported module at each cold start"
)


def write_bytecode(out: Path, functions: dict[str, Path], python: Interpreter | None) -> str:
    """Bytecode for what the functions import (see scripts/cold_imports.py); the line that says what was done."""
    if python is None:
        return NO_PYTHON313
    try:
        venv = discovery_venv(python)
    except PackageError as exc:  # no wheels to be had (offline, say): the package is still whole without
        return f"bytecode not written: {exc}"
    sources = bytecode_sources(out, functions, discover(venv / "bin" / "python", functions), venv)
    compile_sources(python.path, sources)
    written = sum(path.stat().st_size for path in out.rglob("*.cpython-313.pyc"))
    return (
        f"bytecode: {len(sources)} modules compiled (unchecked-hash) by Python {python.version.split()[0]} "
        f"({python.path}), {written / MB:.1f} MB of it"
    )


def build(out: Path, platform: str, *, python313: Interpreter | None = None) -> tuple[dict[str, dict[str, int]], str]:
    """The whole artifact in ``out`` (replaced): its sizes and what was done about bytecode (written by
    ``python313``, none without it), or PackageError when a limit is broken."""
    template_path = ROOT / "template.yaml"
    functions = function_sources(load_template(template_path))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    install(pins(), out / LAYER_ID / "python", platform)
    _copy(LAYER_SOURCE, out / LAYER_ID / "python" / "imagecore")
    for logical_id, source in functions.items():
        build_function(logical_id, source, out, platform)
    write_template(template_path.read_text(), functions, out)
    bytecode = write_bytecode(out, functions, python313)
    found = sizes(out, functions)
    (out / "sizes.json").write_text(json.dumps(found, indent=2) + "\n")
    problems = check_limits(found)
    if problems:
        raise PackageError("; ".join(problems))
    return found, bytecode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--out", type=Path, default=ROOT / ".aws-sam" / "build")
    parser.add_argument("--python313", help="the Python 3.13 that writes the bytecode (else PACKAGE_PYTHON313, ...)")
    parser.add_argument("--no-bytecode", action="store_true", help="ship the sources only (Lambda compiles them)")
    args = parser.parse_args(argv)
    try:
        python313 = None if args.no_bytecode else find_python313(args.python313)
        found, bytecode = build(args.out, args.platform, python313=python313)
    except PackageError as exc:
        print(f"package failed: {exc}", file=sys.stderr)
        return 1
    print("bytecode not written: --no-bytecode" if args.no_bytecode else bytecode)
    for name, figures in found.items():
        extra = f", {figures['with_layers'] / MB:6.1f} MB with the layer" if "with_layers" in figures else ""
        print(f"{name:<22} {figures['unzipped'] / MB:6.1f} MB unzipped, {figures['zipped'] / MB:5.1f} MB zipped{extra}")
    print(f"written to {args.out} (deploy: sam deploy --template-file {args.out / 'template.yaml'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
