"""checkov on the transformed template (what CloudFormation deploys): every failing check must be one of the
skips in tools/checkov-skips.txt, each with its reason, and every skip must still be needed."""

# ruff: noqa: F811 - the template fixtures (sam, cfn) are imported from test_template by name, as pytest needs

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.template.test_template import _offline_aws_env, cfn, sam  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"  # its own environment (make install): it pins boto3
SKIPS = ROOT / "tools" / "checkov-skips.txt"
SKIP_LINE = re.compile(r"(CKV2?_AWS_\d+)\s+(\S.{20,})")


def skips() -> dict[str, str]:
    found = {}
    for line in SKIPS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = SKIP_LINE.fullmatch(line.strip())
        assert match, f"a skip needs its ID and a one-line reason: {line!r}"
        found[match.group(1)] = match.group(2)
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)  # checkov loads some 1,000 checks: tens of seconds on a busy machine
def test_checkov_finds_nothing_but_the_reasoned_skips(cfn: dict[str, Any], tmp_path: Path) -> None:
    assert CHECKOV.exists(), "checkov is not installed: make install"
    template = tmp_path / "transformed.json"
    template.write_text(json.dumps(cfn))

    result = subprocess.run(  # noqa: S603 - fixed argv, our own tools' checkov
        [str(CHECKOV), "-f", str(template), "--framework", "cloudformation", "-o", "json", "--compact", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    report = json.loads(result.stdout[result.stdout.index("{") :])
    failed: dict[str, set[str]] = {}
    for check in report["results"]["failed_checks"]:
        failed.setdefault(check["check_id"], set()).add(check["resource"])
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 100
    new = {check: sorted(resources) for check, resources in failed.items() if check not in skips()}
    assert new == {}, "new checkov failures: fix them, or skip with a reason in tools/checkov-skips.txt"
    assert set(skips()) - set(failed) == set(), "skips no longer needed: remove them"
