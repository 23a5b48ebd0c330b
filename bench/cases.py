"""What each case asks for, the API Gateway event that carries it, and how an answer is checked."""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Smoke runs (``--quick``) ask for smaller images under the same names, so the ratio lines still appear.
QUICK_SIZES = {"3840x2160": "1536x864"}


class BenchError(Exception):
    """A run did not do what it should: its figures would mean nothing."""


@dataclass(frozen=True)
class Case:
    key: str
    size: str
    n: int
    runs: int = 15  # measured runs per handler: more where a call is short and the noise relatively large

    @property
    def name(self) -> str:
        return f"{self.size} png n={self.n}"

    def request(self) -> dict[str, Any]:
        return {
            "model": "gpt-image-2",
            "prompt": f"benchmark {self.key}: a lighthouse on a cliff at dawn, watercolour",
            "size": self.size,
            "quality": "medium",
            "output_format": "png",
            "n": self.n,
            "response_format": "url",
        }


CASES = (
    Case("1024-n1", "1024x1024", 1, runs=31),
    Case("1024-n4", "1024x1024", 4, runs=21),
    Case("4k-n1", "3840x2160", 1, runs=15),
    Case("4k-n4", "3840x2160", 4, runs=15),
)


def quick(case: Case) -> Case:
    return replace(case, size=QUICK_SIZES.get(case.size, case.size))


def api_event(case: Case) -> dict[str, Any]:
    """The sample API Gateway event with this case's body, as API Gateway would send it now."""
    event = copy.deepcopy(json.loads((ROOT / "events" / "generations.json").read_text()))
    event["body"] = json.dumps(case.request())
    now = time.time()
    context = event["requestContext"]
    context["requestId"] = str(uuid.uuid4())
    context["requestTimeEpoch"] = int(now * 1000)
    context["requestTime"] = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    return event


def checked_urls(case: Case, who: str, response: dict[str, Any], s3_url: str, bucket: str) -> list[str]:
    """The presigned URLs of a 200 answer with exactly n images stored in the bucket, or BenchError."""
    if response.get("statusCode") != 200:
        raise BenchError(f"{who} {case.name}: answered {response.get('statusCode')}: {str(response.get('body'))[:600]}")
    urls = [item.get("url") for item in json.loads(response["body"]).get("data") or []]
    prefix = f"{s3_url}/{bucket}/"
    if len(urls) != case.n or not all(isinstance(url, str) and url.startswith(prefix) for url in urls):
        raise BenchError(f"{who} {case.name}: expected {case.n} URL(s) under {prefix}, got {urls}")
    return urls


def check_stored(case: Case, who: str, url: str) -> None:
    """Download one presigned URL and check it is the image asked for."""
    import httpx

    from imagecore.domain.images import inspect_image

    response = httpx.get(url, timeout=60)
    if response.status_code != 200:
        raise BenchError(f"{who} {case.name}: GET of the presigned URL answered {response.status_code}")
    info = inspect_image(response.content)
    if (info.size, info.format) != (case.size, "png"):
        raise BenchError(f"{who} {case.name}: the stored image is a {info.size} {info.format}")
