"""Every snippet in README.md runs as written against the local stack (``make run``'s, on its own ports).

The Python and bash snippets are taken from the README itself, the stack's URLs and key put in for
``http://127.0.0.1:3000``, ``http://127.0.0.1:4566`` and ``isk-local-...``, and run in a folder holding the
files they name (cat.png, sofa.png, mask.png, photo.jpg). The Python ones run in order in one namespace, as a
reader would paste them into one session. A snippet that cannot run here says why in ``NOT_RUN``; a new snippet
that is neither run nor listed there fails the test, so none is forgotten."""

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

from tests.e2e.conftest import API_KEY, ROOT, RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

BASH = shutil.which("bash") or "/bin/bash"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# Text in a snippet -> why it is not run here (it is covered elsewhere, or needs what a test cannot have).
NOT_RUN = {
    "make run    # serve the API": "the commands that start this stack and run this suite",
    ".venv/bin/sam deploy": "deploys to an AWS account",
    "python scripts/api_key.py create ios-app --plan standard --images-per-day": (
        "needs a deployed stack's keys secret and API Gateway; tests/integration/test_api_key_script.py runs "
        "each of these commands against moto"
    ),
    "const answer = await fetch(": "JavaScript: run in Chromium by tests/e2e/test_browser.py (FETCH_FROM_PAGE)",
}


def snippets(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall((ROOT / "README.md").read_text()) if lang == language]


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
    Image.new("RGB", (1024, 1024), (200, 120, 40)).save(tmp_path / "cat.png")
    Image.new("RGB", (1024, 1024), (40, 120, 200)).save(tmp_path / "sofa.png")
    Image.new("RGBA", (1024, 1024), (0, 0, 0, 0)).save(tmp_path / "mask.png")
    Image.new("RGB", (1024, 768), (90, 160, 90)).save(tmp_path / "photo.jpg", format="JPEG")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_KEY", API_KEY)
    return tmp_path


def test_every_snippet_is_run_or_says_why_not() -> None:
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    # Plain blocks are output or diagrams, json blocks are answers (the error one is checked below).
    unclassified = [
        body.splitlines()[0]
        for lang, body in blocks
        if lang not in {"", "json", "bash", "python"} and not not_run(body)
    ]

    assert unclassified == []
    assert len(snippets("python")) >= 5 and len(snippets("bash")) >= 4
    assert all(any(text in body for _, body in blocks) for text in NOT_RUN), "NOT_RUN names a gone snippet"


def test_the_bash_snippets_run(stack: RunningStack, workdir: Path) -> None:
    ran = 0
    for snippet in snippets("bash"):
        if not_run(snippet):
            continue
        # --fail-with-body: an HTTP error fails the snippet (as written, curl would only print it).
        script = localised(snippet, stack).replace("curl -sS", "curl -sS --fail-with-body")
        done = subprocess.run(  # noqa: S603 (the README's own snippets)
            [BASH, "-euo", "pipefail", "-c", script],
            cwd=workdir,
            env={**os.environ, "API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{snippet}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        ran += 1

    assert ran >= 4
    assert Image.open(workdir / "lighthouse.jpg").format == "JPEG"
    assert json.loads((workdir / "answer.json").read_text())["data"][0]["url"].startswith(stack.aws_url)
    assert json.loads((workdir / "upload.json").read_text())["id"]
    assert json.loads((workdir / "task.txt").read_text().splitlines()[-1])["status"] == "processing"


def test_the_python_snippets_run_in_one_session(stack: RunningStack, workdir: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "readme"}
    printed = io.StringIO()
    namespace["print"] = lambda *args, **kwargs: print(*args, file=printed, **kwargs)
    for snippet in snippets("python"):
        assert not not_run(snippet)
        exec(compile(localised(snippet, stack), "README.md", "exec"), namespace)  # noqa: S102

    assert Image.open(workdir / "lighthouse.jpg").format == "JPEG"
    assert namespace["result"].data[0].url.startswith(stack.aws_url)
    assert namespace["edit"]["data"][0]["url"].startswith(stack.aws_url)
    assert '"detail-type"' in printed.getvalue()


def test_the_error_example_is_what_the_service_answers(stack: RunningStack) -> None:
    (example,) = [body for body in snippets("json") if '"error"' in body]
    answer = httpx.post(
        stack.api_url + "/images/generations",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"prompt": "a lighthouse", "size": "1024x1000"},
    )

    assert answer.status_code == 400
    assert answer.json() == json.loads(example)
