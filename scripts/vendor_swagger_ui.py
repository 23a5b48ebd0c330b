"""Vendor Swagger UI (the npm package ``swagger-ui-dist``) into the health function, so /v1/docs loads nothing
from outside the service.

The package tarball is fetched from the npm registry, checked against the registry's sha512 integrity, and the
few files the page needs are written to ``functions/health/static/swagger-ui/`` with ``vendor.json`` naming the
version, the tarball's integrity and each file's SHA-256 (a test checks the files against it). Usage:

    python scripts/vendor_swagger_ui.py 5.35.0
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "swagger-ui-dist"
REGISTRY = "https://registry.npmjs.org"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE")
TARGET = Path(__file__).resolve().parent.parent / "functions" / "health" / "static" / "swagger-ui"


def _get(url: str) -> bytes:
    if not url.startswith("https://"):
        raise SystemExit(f"refusing a non-https URL: {url}")
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (https only, checked above)
        return bytes(response.read())


def vendor(version: str) -> None:
    meta = json.loads(_get(f"{REGISTRY}/{PACKAGE}/{version}"))
    integrity = meta["dist"]["integrity"]
    algorithm, _, digest = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"unexpected integrity algorithm {algorithm}")
    tarball = _get(meta["dist"]["tarball"])
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != digest:
        raise SystemExit("the tarball does not match the registry's integrity hash")
    TARGET.mkdir(parents=True, exist_ok=True)
    hashes = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in FILES:
            member = archive.extractfile(f"package/{name}")
            if member is None:
                raise SystemExit(f"{name} is missing from the package")
            data = member.read()
            # Without a source map next to it, the bundle's last line would make developer tools ask for one.
            if name.endswith(".js"):
                data = b"\n".join(line for line in data.split(b"\n") if not line.startswith(b"//# sourceMappingURL="))
            (TARGET / name).write_bytes(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
    record = {"package": PACKAGE, "version": version, "integrity": integrity, "sha256": hashes}
    (TARGET / "vendor.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"vendored {PACKAGE}@{version} into {TARGET}")


if __name__ == "__main__":
    vendor(sys.argv[1] if len(sys.argv) > 1 else "5.35.0")
