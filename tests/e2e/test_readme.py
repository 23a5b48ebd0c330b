"""Every snippet in README.md and docs/*.md runs as written against the local stack (``make run``'s, on its own
ports).

The Python, bash and Node snippets are taken from the documents themselves, the stack's URLs and key put in for
``http://127.0.0.1:3000``, ``http://127.0.0.1:4566`` and ``isk-local-...``, and run in a folder that holds the
repository's ``examples/`` (the sample images they send), as a reader runs them from the repository's root. The
Python ones of a document run in order in one namespace, as a reader would paste that page's snippets into one
session. A snippet that cannot run here says why in ``NOT_RUN``; a new snippet that is neither run nor listed
there fails the test, so none is forgotten. The ``make run`` banner the README shows is the one the stack prints."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import API_KEY, ROOT, RunningStack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BASH = shutil.which("bash") or "/bin/bash"
NODE = shutil.which("node")
JS_SDK = ROOT / "tools" / "js" / "node_modules"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Text in a snippet -> why it is not run here (it is covered elsewhere, or needs what a test cannot have).
NOT_RUN = {
    "make run    # serve the API": "the commands that start this stack and run this suite",
    ".venv/bin/sam deploy": "deploys to an AWS account",
    "python scripts/api_key.py create ios-app --plan standard --images-per-day": (
        "needs a deployed stack's keys secret and API Gateway; tests/integration/test_api_key_script.py runs "
        "each of these commands against moto"
    ),
    "const answer = await fetch(": "JavaScript in a web page: run in Chromium by tests/e2e/test_browser.py",
    "make package            # .aws-sam/build": (
        "builds the deploy artifact: tests/package builds the same layout with scripts/package.py"
    ),
    "scripts/api_key.py create smoke --plan standard --stack $STACK": (
        "needs a deployed stack; tests/e2e/test_smoke_e2e.py runs make smoke's checks against the local stack"
    ),
    "scripts/api_key.py revoke smoke --stack $STACK": "needs a deployed stack's keys secret and API Gateway",
}
# Languages whose blocks are not run: output, diagrams and answers (the error answer is checked below).
SHOWN = {"", "json"}


def blocks(document: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(document.read_text())


def snippets(language: str, document: Path | None = None) -> list[str]:
    documents = DOCUMENTS if document is None else [document]
    return [body for doc in documents for lang, body in blocks(doc) if lang == language and not not_run(body)]


def localised(snippet: str, stack: RunningStack) -> str:
    api_origin = stack.api_url.removesuffix("/v1")
    return (
        snippet.replace("http://127.0.0.1:3000", api_origin)
        .replace("http://127.0.0.1:4566", stack.aws_url)
        .replace("isk-local-...", API_KEY)
    )


def not_run(snippet: str) -> bool:
    return any(text in snippet for text in NOT_RUN)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder like the repository's root for the snippets: its examples/ (a copy, so nothing a snippet writes
    lands in the repository)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEY", API_KEY)
    return tmp_path


def test_every_snippet_is_run_or_says_why_not() -> None:
    found = [(lang, body) for document in DOCUMENTS for lang, body in blocks(document)]
    run = {*SHOWN, "bash", "python", "js"}
    unclassified = [body.splitlines()[0] for lang, body in found if lang not in run and not not_run(body)]

    assert unclassified == []
    assert {document.name for document in DOCUMENTS} >= {"README.md", "api.md", "operations.md", "design.md"}
    assert len(snippets("python")) >= 5 and len(snippets("bash")) >= 6 and len(snippets("js")) >= 1
    assert all(any(text in body for _, body in found) for text in NOT_RUN), "NOT_RUN names a gone snippet"


def test_the_examples_name_only_files_the_repository_has() -> None:
    named = {
        name
        for document in DOCUMENTS
        for lang, body in blocks(document)
        if lang in {"bash", "python", "js"}
        for name in re.findall(r"examples/[\w.-]+", body)
    }

    assert named >= {"examples/sofa.png", "examples/sofa-mask.png", "examples/photo.jpg"}
    assert all((ROOT / name).is_file() for name in named), named


def test_the_sample_images_are_small_and_the_mask_matches_its_image() -> None:
    names = ("sofa.png", "sofa-mask.png", "photo.jpg")
    image, mask, photo = (Image.open(ROOT / "examples" / name) for name in names)

    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert (mask.format, mask.size, mask.mode) == ("PNG", image.size, "RGBA")
    alpha = mask.getchannel("A")
    assert alpha.getextrema() == (0, 255), "the mask marks a part to change (transparent) and a part to keep"
    assert photo.format == "JPEG"
    assert all((ROOT / "examples" / name).stat().st_size < 200_000 for name in names)


def test_the_bash_snippets_run(stack: RunningStack, workdir: Path) -> None:
    ran = 0
    for snippet in snippets("bash"):
        # --fail-with-body: an HTTP error fails the snippet (as written, curl would only print it).
        script = localised(snippet, stack).replace("curl -sS", "curl -sS --fail-with-body")
        done = subprocess.run(  # noqa: S603 (the documents' own snippets)
            [BASH, "-euo", "pipefail", "-c", script],
            cwd=workdir,
            env={**os.environ, "API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{snippet}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        if "tee stream.txt" in snippet:
            # the event types, one a line, and no base64 on the terminal
            assert done.stdout.splitlines()[-1] == '"type":"image_generation.completed"', done.stdout
            assert len(done.stdout) < 1000
        ran += 1

    assert ran >= 6
    assert Image.open(workdir / "lighthouse.jpg").format == "JPEG"
    assert json.loads((workdir / "answer.json").read_text())["data"][0]["url"].startswith(stack.aws_url)
    assert Image.open(workdir / "sofa-edited.png").size == (1024, 1024)
    assert json.loads((workdir / "upload.json").read_text())["id"]
    assert json.loads((workdir / "task.txt").read_text().splitlines()[-1])["status"] == "processing"
    assert "event: image_generation.completed" in (workdir / "stream.txt").read_text()


def test_the_python_snippets_run_one_session_a_document(stack: RunningStack, workdir: Path) -> None:
    namespaces: dict[str, dict[str, Any]] = {}
    printed = io.StringIO()
    for document in DOCUMENTS:
        namespace: dict[str, Any] = {"__name__": "readme"}
        namespace["print"] = lambda *args, **kwargs: print(*args, file=printed, **kwargs)
        for snippet in snippets("python", document):
            exec(compile(localised(snippet, stack), document.name, "exec"), namespace)  # noqa: S102
        namespaces[document.name] = namespace

    assert Image.open(workdir / "lighthouse.jpg").format == "JPEG"
    assert namespaces["README.md"]["result"].data[0].url.startswith(stack.aws_url)
    assert namespaces["README.md"]["edited"].data[0].url.startswith(stack.aws_url)
    assert namespaces["api.md"]["edit"]["data"][0]["url"].startswith(stack.aws_url)
    assert '"detail-type"' in printed.getvalue()


def test_the_node_snippets_run_with_the_javascript_sdk(stack: RunningStack, workdir: Path) -> None:
    if NODE is None or not (JS_SDK / "openai").is_dir():
        pytest.skip("no node, or the OpenAI JavaScript SDK is not installed (make install does it where npm exists)")
    node_snippets = [body for body in snippets("js") if 'from "openai"' in body]
    (workdir / "node_modules").symlink_to(JS_SDK, target_is_directory=True)
    assert node_snippets
    for number, snippet in enumerate(node_snippets):
        script = workdir / f"snippet{number}.mjs"
        script.write_text(localised(snippet, stack))
        done = subprocess.run(  # noqa: S603 (the documents' own snippets)
            [NODE, str(script)],
            cwd=workdir,
            env={**os.environ, "API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{snippet}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"

    assert Image.open(workdir / "lighthouse.png").format == "PNG"


def test_every_javascript_snippet_runs_in_node_or_in_the_browser() -> None:
    javascript = [body for document in DOCUMENTS for lang, body in blocks(document) if lang == "js"]

    assert all('from "openai"' in body or not_run(body) for body in javascript)


def test_the_error_example_is_what_the_service_answers(stack: RunningStack) -> None:
    (example,) = [body for body in snippets("json") if '"error"' in body and "1024x1000" in body]
    answer = httpx.post(
        stack.api_url + "/images/generations",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"prompt": "a lighthouse", "size": "1024x1000"},
    )

    assert answer.status_code == 400
    assert answer.json() == json.loads(example)


def test_the_banner_shown_is_the_one_make_run_prints(tmp_path: Path) -> None:
    """``python -m local`` as ``make run`` starts it (a generated key), on free ports: its banner, ports, key and
    simulator port put back to the README's, is the README's."""
    (shown,) = [body for lang, body in blocks(ROOT / "README.md") if body.startswith("image service (local stack)")]
    with running_stack(tmp_path / "stack.log", API_KEYS="") as stack:
        printed = stack.log_path.read_text()
    port = stack.api_url.removesuffix("/v1").rsplit(":", 1)[1]
    aws_port = stack.aws_url.rsplit(":", 1)[1]
    banner = printed[printed.index("image service (local stack)") :]
    key = re.search(r"isk-local-[\w-]+", banner)
    simulator = re.search(r"simulator at http://127\.0\.0\.1:(\d+)/v1", banner)
    assert key and simulator, banner
    banner = (
        banner.replace(f"127.0.0.1:{port}/", "127.0.0.1:3000/")
        .replace(f"127.0.0.1:{aws_port}", "127.0.0.1:4566")
        .replace(f"127.0.0.1:{simulator.group(1)}/", "127.0.0.1:40123/")
        .replace(key.group(0), "isk-local-...")
    )

    assert banner.splitlines()[: len(shown.splitlines())] == shown.splitlines()
