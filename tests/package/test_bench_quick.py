"""A quick run of ``make bench`` (few runs, smaller images), so the benchmark cannot rot: it must finish, check
every answer it gets, and end with the ratio lines in their fixed shape."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RATIO_LINES = [
    "ratio overhead 1024-n1",
    "ratio overhead 4k-n4",
    "ratio memory 4k-n4",
    "ratio memory-flat 4k",
    "ratio cold-start generations",
    "layer-mb",
]


def test_a_quick_bench_run_ends_with_the_ratio_lines(packaged: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "UPSTREAM_"))}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bench", "--quick", "--layer", str(packaged / "CoreLayer")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-len(RATIO_LINES) :]
    for line, label in zip(last, RATIO_LINES, strict=True):
        match = re.fullmatch(rf"{re.escape(label)} (-?\d+\.\d+)", line)
        assert match, f"{line!r} is not '{label} <number>'"
        value = float(match.group(1))
        # Overhead is time beyond a bare fetch of the same answer: in a quick run on a busy machine it can come
        # out just below zero; every other figure is a positive size or ratio.
        assert math.isfinite(value) and (value > 0 or label.startswith("ratio overhead")), line
    assert "naive" in done.stdout and "generations" in done.stdout and "floor" in done.stdout
    # the cold start of the generations function's libraries alone (the naive handler, then every library module
    # the function loads, imported by name): it must run, which it would not if a listed module failed to import
    libraries = re.search(r"none of its\s+own code: (\d+\.\d+)x the naive handler", done.stdout)
    assert libraries and float(libraries.group(1)) > 1, done.stdout[-2000:]
