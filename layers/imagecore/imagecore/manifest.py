"""What a finished job leaves in its folder beside the images, so that any later delivery (or an idempotent replay)
can answer from S3 without the upstream: ``result.json`` (written after the last image) or ``failure.json``.

Each may carry the digest of the request that made it: a message that names the folder with another request does
not get its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagecore.service import StoredResult
from imagecore.storage import ImageStore

MANIFEST = "result.json"
FAILURE = "failure.json"
_DIGEST = "request_digest"


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
