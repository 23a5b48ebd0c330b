"""Build what ``sam deploy`` uploads, for Lambda's linux/arm64 Python 3.13, without Docker or Python 3.13.

Usage::

    .venv/bin/python scripts/package.py                      # .aws-sam/build for linux/arm64 cp313 (make package)
    .venv/bin/python scripts/package.py --platform host --out DIR --runtime-sdk
                                                             # the same layout with this machine's own wheels

The layout is ``sam build``'s: ``<out>/CoreLayer/python/`` (imagecore and its pinned requirements, wheels for the
target platform only), ``<out>/<FunctionId>/`` (a copy of each function's ``CodeUri``), and ``<out>/template.yaml``
pointing at them, which ``sam deploy`` picks up as it is. Each directory is also zipped under ``<out>/zips/`` and
checked against Lambda's limits: 250 MB unzipped for a function with its layers, 50 MB zipped for a direct upload.

The layer leaves out the AWS SDK (boto3, botocore and their dependencies): the python3.13 runtime provides it,
already compiled (``--bundle-sdk`` puts the pinned one in the layer instead). ``--runtime-sdk`` installs the
pinned SDK into ``<out>/runtime/`` to stand in for the runtime's copy where the layout is imported outside
Lambda (tests). No bytecode is written: it would have to come from the target interpreter.
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

from local.gateway import load_template  # noqa: E402 - the repository root first

REQUIREMENTS = ROOT / "layers" / "imagecore" / "requirements.txt"
LAYER_SOURCE = ROOT / "layers" / "imagecore" / "imagecore"
LAYER_ID = "CoreLayer"
# What Lambda's Python runtimes already hold (the AWS SDK for Python and its dependencies).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"})
PLATFORMS = {
    # Lambda's python3.13 runs on Amazon Linux 2023 (glibc 2.34).
    "arm64": ["--python-platform", "aarch64-manylinux_2_34", "--python-version", "3.13"],
    "host": [],
}
MB = 1024 * 1024
UNZIPPED_LIMIT = 250 * MB  # function code and all its layers, unzipped
ZIPPED_LIMIT = 50 * MB  # a zip uploaded directly to Lambda


class PackageError(Exception):
    """The artifact cannot be built, or breaks one of Lambda's limits."""


def pins(*, sdk: bool) -> list[str]:
    """The layer's pinned requirements: only the AWS SDK's (``sdk``), or all but those."""
    found = []
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==\S+$", line.strip())
        if match and (match.group(1).lower() in RUNTIME_PROVIDED) == sdk:
            found.append(line.strip())
    return found


def _uv() -> str:
    local = ROOT / ".tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if not found:
        raise PackageError("uv is needed (make install puts it in .tools/bin)")
    return found


def install(requirements: list[str], target: Path, platform: str) -> None:
    """Wheels only, no dependency resolution (the requirements are uv.lock's closure), no bytecode."""
    command = [_uv(), "pip", "install", "--quiet", "--target", str(target), "--python", sys.executable]
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


def build(out: Path, platform: str, *, runtime_sdk: bool, bundle_sdk: bool = False) -> dict[str, dict[str, int]]:
    """The whole artifact in ``out`` (replaced), its sizes, or PackageError when a limit is broken."""
    template_path = ROOT / "template.yaml"
    functions = function_sources(load_template(template_path))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    install(pins(sdk=False) + (pins(sdk=True) if bundle_sdk else []), out / LAYER_ID / "python", platform)
    _copy(LAYER_SOURCE, out / LAYER_ID / "python" / "imagecore")
    for logical_id, source in functions.items():
        build_function(logical_id, source, out, platform)
    write_template(template_path.read_text(), functions, out)
    if runtime_sdk:
        install(pins(sdk=True), out / "runtime", platform)
    found = sizes(out, functions)
    (out / "sizes.json").write_text(json.dumps(found, indent=2) + "\n")
    problems = check_limits(found)
    if problems:
        raise PackageError("; ".join(problems))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--out", type=Path, default=ROOT / ".aws-sam" / "build")
    parser.add_argument("--runtime-sdk", action="store_true", help="also install the SDK into <out>/runtime")
    parser.add_argument("--bundle-sdk", action="store_true", help="put the pinned SDK in the layer (about +35 MB)")
    args = parser.parse_args(argv)
    try:
        found = build(args.out, args.platform, runtime_sdk=args.runtime_sdk, bundle_sdk=args.bundle_sdk)
    except PackageError as exc:
        print(f"package failed: {exc}", file=sys.stderr)
        return 1
    for name, figures in found.items():
        extra = f", {figures['with_layers'] / MB:6.1f} MB with the layer" if "with_layers" in figures else ""
        print(f"{name:<22} {figures['unzipped'] / MB:6.1f} MB unzipped, {figures['zipped'] / MB:5.1f} MB zipped{extra}")
    print(f"written to {args.out} (deploy: sam deploy --template-file {args.out / 'template.yaml'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
