"""``make package`` and ``sam build`` ship the same layer: ``sam build`` installs ``layers/imagecore/requirements.txt``
(exported from ``uv.lock`` by ``make requirements``) into the layer, and ``scripts/package.py`` must install exactly
those distributions at exactly those versions, the AWS SDK included, nothing more and nothing less."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.package import REQUIREMENTS, pins

ROOT = Path(__file__).resolve().parents[2]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions_in(site: Path) -> dict[str, str]:
    """``name -> version`` of every distribution installed in ``site`` (its ``*.dist-info`` METADATA)."""
    found = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        fields = dict(re.findall(r"^(Name|Version): (\S+)$", metadata.read_text(errors="replace"), flags=re.M))
        found[_normalized(fields["Name"])] = fields["Version"]
    return found


def required() -> dict[str, str]:
    """What ``sam build`` installs from the requirements file on Lambda's python3.13 (markers applied)."""
    return {_normalized(name): version for name, version in (pin.split("==", 1) for pin in pins(REQUIREMENTS))}


def test_the_packaged_layer_holds_exactly_the_distributions_sam_build_installs(packaged: Path) -> None:
    installed = distributions_in(packaged / "CoreLayer" / "python")
    assert installed == required()
    # the SDK is the pinned one, not left to the runtime
    for sdk in ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil"):
        assert sdk in installed, sdk


def test_the_requirements_file_is_uv_locks_export_with_a_marker_for_windows_only() -> None:
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line.strip()]
    assert all(re.fullmatch(r"[a-z0-9-]+==\S+( ; .+)?", line) for line in lines), lines
    with_markers = [line.split("==")[0] for line in lines if ";" in line]
    # A marker that applies on Linux would be honoured by both builds; one that does not is left out by both.
    assert set(required()) == {line.split("==")[0] for line in lines} - set(with_markers)
    lock = (ROOT / "uv.lock").read_text()
    for name, version in required().items():
        assert f'name = "{name}"\nversion = "{version}"' in lock, f"{name}=={version} is not uv.lock's pin"
