"""What a finished job leaves in its folder beside the images, so that any later delivery (or an idempotent replay)
can answer from S3 without the upstream: ``result.json`` (written after the last image) or ``failure.json``.

Each may carry the digest of the request that made it: a message that names the folder with another request does
not get its result.

Before either, each image is stored with a record beside it (``<index>.json``: its revised prompt, its size and
format, what was asked): a run that died after paying (a timeout, a crash) between its first image and its
``result.json`` leaves a folder from which ``read_stored`` rebuilds the result, so the images reach their caller
without a second upstream call. What such a rebuild cannot know is the usage the upstream reported at the end
of its answer (it is None), and the images the dead run never received (the result has the ones it stored).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from imagecore.domain.models import EXTENSIONS
from imagecore.storage.store import ImageStore

MANIFEST = "result.json"
FAILURE = "failure.json"
_DIGEST = "request_digest"
# A final image (not a partial preview, not a record): ``<folder>/<index>.<ext>``.
_IMAGE_NAME = re.compile(r"(\d{1,3})\.(" + "|".join(sorted(set(EXTENSIONS.values()))) + r")\Z")
_FORMATS = {extension: name for name, extension in EXTENSIONS.items()}


@dataclass(frozen=True)
class StoredImageRef:
    key: str
    revised_prompt: str | None = None


@dataclass(frozen=True)
class StoredResult:
    """What a finished generation or edit left in S3: enough to answer again later (an idempotent replay, a task
    poll, a completion event) without the upstream. Plain data, so it is kept as JSON."""

    bucket: str
    images: list[StoredImageRef]
    created: int
    model: str
    size: str
    quality: str
    output_format: str
    background: str | None = None
    usage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredResult:
        fields = dict(data)
        fields["images"] = [StoredImageRef(**ref) for ref in fields["images"]]
        return cls(**fields)

    @property
    def keys(self) -> list[str]:
        return [ref.key for ref in self.images]

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in ("bucket", "images")}


def image_record_key(image_key: str) -> str:
    """Where the record of a stored image is kept: beside it, ``<folder>/<index>.json``."""
    return image_key.rsplit(".", 1)[0] + ".json"


@dataclass(frozen=True)
class Finished:
    """A job's outcome as its folder records it: a stored result, or a failure with its status and error."""

    result: StoredResult | None = None
    http_status: int | None = None
    error: dict[str, Any] | None = None
    digest: str | None = None


def manifest_key(folder: str) -> str:
    return f"{folder}/{MANIFEST}"


def folder_of(stored: StoredResult) -> str:
    return stored.images[0].key.rsplit("/", 1)[0]


def write_result(store: ImageStore, folder: str, stored: StoredResult, *, digest: str | None = None) -> str:
    """Write ``result.json`` (raises ``StorageError``); returns its key."""
    document: dict[str, Any] = stored.to_dict()
    if digest is not None:
        document[_DIGEST] = digest
    key = manifest_key(folder)
    store.write_json(key, document)
    return key


def read_result(store: ImageStore, key: str) -> StoredResult | None:
    """The stored result at ``key`` (a ``result.json``), None when there is none; ``StorageError`` when S3 fails."""
    document = store.read_json(key)
    if not document:
        return None
    document.pop(_DIGEST, None)
    return StoredResult.from_dict(document)


def write_failure(
    store: ImageStore, folder: str, http_status: int, error: dict[str, Any], *, digest: str | None = None
) -> None:
    store.write_json(
        f"{folder}/{FAILURE}", {"http_status": http_status, "error": error, **({_DIGEST: digest} if digest else {})}
    )


def read_finished(store: ImageStore, folder: str) -> Finished | None:
    """What an earlier delivery left in ``folder``: its result first, else its failure, else None. ``StorageError``
    when S3 cannot say (the caller must not take that for "nothing there")."""
    document = store.read_json(manifest_key(folder))
    if document:
        digest = document.pop(_DIGEST, None)
        return Finished(result=StoredResult.from_dict(document), digest=digest)
    failure = store.read_json(f"{folder}/{FAILURE}")
    if failure:
        return Finished(http_status=int(failure["http_status"]), error=failure["error"], digest=failure.get(_DIGEST))
    return None


def read_stored(store: ImageStore, folder: str, asked: dict[str, Any]) -> StoredResult | None:
    """The result rebuilt from the images a run stored in ``folder`` before it died, in their order, with what
    their records say (``asked``, the request's fields, stands in for a record that was not written); None when
    the folder holds no image. ``StorageError`` when S3 cannot say."""
    keys = store.list_folder(folder)
    present = set(keys)
    images = sorted(
        (int(match.group(1)), key)
        for key in keys
        if (match := _IMAGE_NAME.match(key.rsplit("/", 1)[1])) and key.rsplit("/", 1)[0] == folder
    )
    if not images:
        return None
    refs: list[StoredImageRef] = []
    records: list[dict[str, Any]] = []
    for _, key in images:
        record = store.read_json(image_record_key(key)) if image_record_key(key) in present else None
        records.append(record or {})
        refs.append(StoredImageRef(key, (record or {}).get("revised_prompt")))
    first = next((record for record in records if record), {})
    fields = {**asked, **first}
    extension = images[0][1].rsplit(".", 1)[1]
    return StoredResult(
        bucket=store.bucket,
        images=refs,
        created=int(fields.get("created") or time.time()),
        model=str(fields.get("model") or "gpt-image-2"),
        size=str(fields.get("size") or "auto"),
        quality=str(fields.get("quality") or "auto"),
        output_format=str(first.get("output_format") or _FORMATS[extension]),
        background=fields.get("background"),
        usage=None,
    )
